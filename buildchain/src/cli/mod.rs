//! The command line shared by `buildchain` and `cargo xtask` (thin: parsing and printing only).
//!
//! `buildchain [OPTIONS] [TASK…]` builds tasks (default `iso`); engine verbs `list`, `info`,
//! `clean`; standalone verbs `iso …`, `registry-config`, `solution …`, `image fetch`,
//! `store verify|du|gc`.
//! Exit codes: 0 success, 1 build/validation failure, 2 usage or configuration error.

pub mod delivery;
pub mod images;
pub mod iso;
pub mod log;
pub mod output;
pub mod packaging;
pub mod publish;
pub mod registry_config;
pub mod solution;
pub mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{Profile, SettingOverrides, Settings};
use crate::engine::{self, Reporter, RunOptions};

/// An error that is the user's to fix (bad flag, unknown task, bad configuration): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `--reporter`: how a build reports (see [`engine::report`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportStyle {
    /// `STARTED|SUCCESS|…` lines, progress bars on a terminal.
    #[default]
    Text,
    /// One JSON document at the end.
    Json,
}

impl From<ReportStyle> for Reporter {
    fn from(s: ReportStyle) -> Self {
        match s {
            ReportStyle::Text => Reporter::Text,
            ReportStyle::Json => Reporter::Json,
        }
    }
}

/// Options shared by every build-graph command.
#[derive(Args, Debug, Clone, Default)]
pub struct GraphOptions {
    /// Worker threads (default: number of CPUs).
    #[arg(short = 'j', long = "jobs", global = true)]
    pub jobs: Option<usize>,
    /// Say what would run and why, run nothing.
    #[arg(long = "dry-run", global = true)]
    pub dry_run: bool,
    /// Output style.
    #[arg(long, value_enum, default_value_t = ReportStyle::Text, global = true)]
    pub reporter: ReportStyle,
    /// No progress bars even on a terminal.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Repository root (default: found from the current directory upwards).
    #[arg(short = 'C', long = "repo", env = "BUILDCHAIN_REPO", global = true)]
    pub repo: Option<PathBuf>,
    /// PROJECT_NAME (overrides the environment and .env).
    #[arg(long, global = true)]
    pub project_name: Option<String>,
    /// BUILD_ROOT (overrides the environment and .env).
    #[arg(long, global = true)]
    pub build_root: Option<PathBuf>,
    /// Inventory profile: `default` (offline) or `release` (adds pinned upstream images/RPMs).
    #[arg(long, value_enum, global = true)]
    pub profile: Option<Profile>,
    /// Armored OpenPGP secret key that signs RPMs, repodata and /CONTENTS.json
    /// (BUILDCHAIN_SIGNING_KEY; its passphrase from BUILDCHAIN_SIGNING_PASSPHRASE_FILE).
    /// Without it the build is unsigned.
    #[arg(long, global = true)]
    pub signing_key: Option<PathBuf>,
    /// Remote blob cache `oci://HOST[:PORT]/REPO` (BUILDCHAIN_REMOTE_CACHE), asked before
    /// upstream and filled with new blobs.
    #[arg(long, global = true)]
    pub remote_cache: Option<String>,
    /// `read` or `readwrite` (default; BUILDCHAIN_REMOTE_CACHE_MODE).
    #[arg(long, global = true)]
    pub remote_cache_mode: Option<String>,
    /// `BUILDCHAIN_MEDIA`, set by `iso --media` (not a global flag).
    #[arg(skip)]
    pub media: Option<String>,
}

#[derive(Parser, Debug)]
#[command(
    name = "buildchain",
    version,
    about = "Offline ISO build system: build graph, images, RPM repos, static registry, ISO-9660",
    after_help = "Tasks: iso (default), populate_iso, images, packaging, salt_tree, solutions \
                  (Solution ISOs, not part of iso), and sub-tasks `task:item[/step]` (see \
                  `list --all`); wildcards like `images:*` work."
)]
struct Cli {
    #[command(flatten)]
    opts: GraphOptions,
    #[command(flatten)]
    log: log::LogOptions,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List tasks.
    List {
        /// Also list sub-tasks (`images:pause`, `salt_tree:salt/top.sls`, …).
        #[arg(long)]
        all: bool,
        /// Also list private tasks: sub-tasks and the internal steps that aggregate other
        /// tasks' outputs (repodata, SHA256SUMS, versions.json, registry includes).
        #[arg(long, short = 'p')]
        private: bool,
    },
    /// Show a task's inputs, outputs, dependencies and status (and why it would run).
    Info {
        /// Task name.
        task: String,
    },
    /// Remove the outputs of tasks (all when none given).
    Clean {
        /// Tasks (wildcards allowed).
        tasks: Vec<String>,
        /// Only print what would be removed.
        #[arg(short = 'n', long = "dry-run")]
        dry_run: bool,
    },
    /// ISO-9660 verbs; with no verb, builds the `iso` task.
    Iso {
        /// Split into self-contained volumes of this medium instead (dvd5, dvd9, bd25, bd50 or a
        /// size in bytes): dist/<name>-<version>-<i>of<N>.iso (the `iso_volumes` task).
        #[arg(long)]
        media: Option<String>,
        #[command(subcommand)]
        verb: Option<iso::IsoCommand>,
    },
    /// RPM verbs (`lock`, `repodata`); with no verb, builds the `packaging` task.
    Packaging {
        #[command(subcommand)]
        verb: Option<PackagingCmd>,
    },
    /// Generate the static-registry nginx configuration for an images tree.
    RegistryConfig(registry_config::RegistryConfigArgs),
    /// Build or validate Solution ISOs.
    Solution {
        #[command(subcommand)]
        cmd: solution::SolutionCommand,
    },
    /// Blob store verbs (`BUILDCHAIN_STORE`).
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
    },
    /// Verify a medium offline: MD5, index signature, every file, image and RPM, completeness.
    Verify(verify::VerifyArgs),
    /// Container image verbs.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Plan a build from manifests only: sizes, bytes to fetch, predicted ISO size, media fit.
    Plan(delivery::PlanArgs),
    /// Compare two ISOs or trees (images, RPMs, Salt and scripts, sizes).
    Diff(delivery::DiffArgs),
    /// Delta ISOs: `delta build OLD NEW -o DELTA`, `delta apply OLD DELTA -o NEW`.
    Delta {
        #[command(subcommand)]
        cmd: delivery::DeltaCmd,
    },
    /// Push a built ISO, its SBOM and content index as one OCI artifact.
    Publish(publish::PublishArgs),
    /// Get a published ISO artifact back into a directory, every blob verified.
    Pull(publish::PullArgs),
    /// Tasks to build.
    #[command(external_subcommand)]
    Tasks(Vec<String>),
}

#[derive(Subcommand, Debug)]
enum PackagingCmd {
    /// Resolve requested third-party RPMs to pins (name, EVR, arch, sha256) and write the lock.
    Lock(packaging::LockArgs),
    /// Write `repodata/` for a directory of RPMs (like `createrepo_c --no-database`).
    Repodata(packaging::RepodataArgs),
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Fetch an image into a `dir:` layout (like `skopeo copy docker://REF dir:DEST`).
    Fetch(images::FetchArgs),
}

#[derive(Subcommand, Debug)]
enum StoreCmd {
    /// Re-hash every blob; report and remove those that do not match their name (exit 1 if any).
    Verify,
    /// Print the number and size of blobs and temp files.
    Du,
    /// Remove blobs no build tree hard-links to (they are fetched or rebuilt when needed again).
    Gc,
}

/// Re-parses `TASK… [OPTIONS]` given after the task names.
#[derive(Parser, Debug)]
#[command(name = "buildchain")]
struct TaskArgs {
    #[command(flatten)]
    opts: GraphOptions,
    #[command(flatten)]
    log: log::LogOptions,
    tasks: Vec<String>,
}

/// Entry point: parses `std::env::args`, runs, maps errors to exit codes.
pub fn main_from_env(program: &str) -> ExitCode {
    main_from_env_with(program, &[])
}

/// Caps glibc's malloc at one arena, before any thread starts. With one arena per worker thread
/// (glibc's default), memory freed by a finished task stays held by its thread's arena: on the
/// scale fixture a warm build peaked at 94–98 MiB RSS, with one arena at 70 MiB, in the same time
/// (9.2 s both; the scheduler's threads mostly wait on I/O, not on malloc).
/// An explicit `MALLOC_ARENA_MAX` in the environment wins.
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// [`main_from_env`] for a front end that handles more commands itself (`cargo xtask bench`):
/// `extra` (name, one-line help) are listed by `--help`.
pub fn main_from_env_with(program: &str, extra: &[(&'static str, &'static str)]) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    one_malloc_arena();
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = program.to_string();
    }
    let mut command = Cli::command();
    for (name, about) in extra {
        command = command.subcommand(clap::Command::new(*name).about(*about));
    }
    let parsed = command
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", engine::error_text(&e));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8> {
    let opts = cli.opts;
    if !matches!(cli.cmd, Some(Cmd::Tasks(_))) {
        log::init(cli.log.verbose);
    }
    match cli.cmd {
        None => build(&opts, &["iso".to_string()]),
        Some(Cmd::Tasks(raw)) => {
            let mut argv = vec!["buildchain".to_string()];
            argv.extend(raw);
            let t = TaskArgs::try_parse_from(&argv).map_err(|e| UsageError(e.to_string()))?;
            log::init(cli.log.verbose.saturating_add(t.log.verbose));
            let merged = merge_opts(opts, t.opts);
            build(&merged, &t.tasks)
        }
        Some(Cmd::Iso {
            media: Some(m),
            verb: None,
        }) => {
            crate::delivery::plan::parse_media(&m)
                .map_err(|e| UsageError(format!("--media: {e}")))?;
            // The flag is the BUILDCHAIN_MEDIA setting (flag > environment > .env).
            let opts = GraphOptions {
                media: Some(m),
                ..opts
            };
            build(&opts, &["iso_volumes".to_string()])
        }
        Some(Cmd::Iso { verb: None, .. }) => build(&opts, &["iso".to_string()]),
        Some(Cmd::Iso { verb: Some(v), .. }) => iso::run(&v),
        Some(Cmd::Packaging { verb: None }) => build(&opts, &["packaging".to_string()]),
        Some(Cmd::Packaging {
            verb: Some(PackagingCmd::Lock(a)),
        }) => packaging::lock(&a).map(|()| 0),
        Some(Cmd::Packaging {
            verb: Some(PackagingCmd::Repodata(a)),
        }) => packaging::repodata(&a).map(|()| 0),
        Some(Cmd::List { all, private }) => {
            let (settings, graph) = load(&opts)?;
            let _ = settings;
            let rows = engine::verbs::list(&graph, all, private);
            let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
            for (name, doc) in rows {
                println!("{name:<width$}  {doc}");
            }
            Ok(0)
        }
        Some(Cmd::Info { task }) => {
            let (settings, graph) = load(&opts)?;
            if graph.get(&task).is_none() {
                let near = engine::select::suggestions(&graph, &task);
                let hint = match near.first() {
                    Some(n) => format!("; did you mean `{n}`?"),
                    None => String::new(),
                };
                return Err(
                    UsageError(format!("unknown task {task:?}{hint} (see `list --all`)")).into(),
                );
            }
            let (text, _) = engine::verbs::info(&graph, &task, run_options(&settings, &opts))?;
            print!("{text}");
            Ok(0)
        }
        Some(Cmd::Clean { tasks, dry_run }) => {
            let (settings, graph) = load(&opts)?;
            let names = if tasks.is_empty() {
                graph.tasks().map(|t| t.name.clone()).collect()
            } else {
                engine::expand(&graph, &tasks).map_err(|e| UsageError(e.to_string()))?
            };
            let ropts = run_options(&settings, &opts);
            let removed = {
                let eng = engine::Engine::open(&graph, ropts)?;
                eng.clean(&names, dry_run)?
            };
            for r in &removed {
                println!("{} {r}", if dry_run { "would remove" } else { "removed" });
            }
            if tasks.is_empty() && dry_run {
                println!("would remove {}", settings.build_root.display());
            } else if tasks.is_empty() {
                // Everything under the build root is ours: leave nothing behind.
                if settings.build_root.exists() {
                    std::fs::remove_dir_all(&settings.build_root).with_context(|| {
                        format!("cannot remove {}", settings.build_root.display())
                    })?;
                }
                println!("removed {}", settings.build_root.display());
            }
            Ok(0)
        }
        Some(Cmd::Plan(a)) => {
            let (settings, graph) = load(&opts)?;
            let ropts = run_options(&settings, &opts);
            delivery::plan(&a, &settings, &graph, ropts)
        }
        Some(Cmd::Diff(a)) => delivery::diff(&a),
        Some(Cmd::Delta { cmd }) => delivery::delta(&cmd),
        Some(Cmd::RegistryConfig(a)) => registry_config::run(&a).map(|()| 0),
        Some(Cmd::Solution { cmd }) => solution::run(&cmd),
        Some(Cmd::Verify(a)) => verify::run(&a),
        Some(Cmd::Image {
            cmd: ImageCmd::Fetch(a),
        }) => images::fetch(&a).map(|()| 0),
        Some(Cmd::Store { cmd }) => store_verb(&cmd),
        Some(Cmd::Publish(a)) => publish::publish(&a, &opts),
        Some(Cmd::Pull(a)) => publish::pull(&a),
    }
}

fn store_verb(cmd: &StoreCmd) -> Result<u8> {
    let store = crate::store::Store::open(crate::store::Store::default_root())?;
    match cmd {
        StoreCmd::Verify => {
            let r = store.verify_all()?;
            for (name, reason) in &r.bad {
                println!("removed {name}: {reason}");
            }
            if r.bad.is_empty() {
                println!("{} blobs checked, 0 bad", r.checked);
                Ok(0)
            } else {
                println!("{} blobs checked, {} bad (removed)", r.checked, r.bad.len());
                Ok(1)
            }
        }
        StoreCmd::Du => {
            let u = store.usage()?;
            println!(
                "{}: {} blobs, {} bytes; {} temp files, {} bytes",
                store.root().display(),
                u.blobs,
                u.blob_bytes,
                u.temp_files,
                u.temp_bytes
            );
            Ok(0)
        }
        StoreCmd::Gc => {
            let removed = store.gc()?;
            for (hex, _) in &removed {
                println!("removed sha256:{hex}");
            }
            println!(
                "{} blobs removed, {} bytes freed",
                removed.len(),
                removed.iter().map(|(_, n)| n).sum::<u64>()
            );
            Ok(0)
        }
    }
}

fn merge_opts(a: GraphOptions, b: GraphOptions) -> GraphOptions {
    GraphOptions {
        jobs: b.jobs.or(a.jobs),
        dry_run: a.dry_run || b.dry_run,
        reporter: if b.reporter != ReportStyle::Text {
            b.reporter
        } else {
            a.reporter
        },
        no_progress: a.no_progress || b.no_progress,
        repo: b.repo.or(a.repo),
        project_name: b.project_name.or(a.project_name),
        build_root: b.build_root.or(a.build_root),
        profile: b.profile.or(a.profile),
        signing_key: b.signing_key.or(a.signing_key),
        remote_cache: b.remote_cache.or(a.remote_cache),
        remote_cache_mode: b.remote_cache_mode.or(a.remote_cache_mode),
        media: b.media.or(a.media),
    }
}

/// Finds the repository root: `--repo`, else the nearest ancestor of the current directory
/// holding `VERSION` and `salt/`.
pub fn find_repo_root(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut dir = Some(cwd.as_path());
    while let Some(d) = dir {
        if d.join("VERSION").is_file() && d.join("salt").is_dir() {
            return Ok(d.to_path_buf());
        }
        dir = d.parent();
    }
    Err(UsageError(format!(
        "no buildchain repository (a directory with VERSION and salt/) at or above {}; use --repo",
        cwd.display()
    ))
    .into())
}

fn load(opts: &GraphOptions) -> Result<(Settings, engine::Graph)> {
    let repo = find_repo_root(opts.repo.as_deref())?;
    crate::remote::install(
        opts.remote_cache.as_deref(),
        opts.remote_cache_mode.as_deref(),
    )
    .map_err(|e| UsageError(format!("{e:#}")))?;
    // The key flag is relative to the working directory (the setting, to the repository).
    let signing_key = match &opts.signing_key {
        Some(k) => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            Some(cwd.join(k))
        }
        None => None,
    };
    let overrides = SettingOverrides {
        project_name: opts.project_name.clone(),
        build_root: opts.build_root.clone(),
        profile: opts.profile,
        signing_key,
        media: opts.media.clone(),
        ..SettingOverrides::default()
    };
    let settings =
        Settings::load(&repo, &overrides).map_err(|e| UsageError(engine::error_text(&e)))?;
    let graph =
        crate::tasks::build_graph(&settings).map_err(|e| UsageError(engine::error_text(&e)))?;
    Ok((settings, graph))
}

fn run_options(settings: &Settings, opts: &GraphOptions) -> RunOptions {
    let mut r = RunOptions::new(&settings.build_root, &settings.repo_root);
    if let Some(j) = opts.jobs {
        r.jobs = j.max(1);
    }
    r.dry_run = opts.dry_run;
    r.reporter = opts.reporter.into();
    r.progress_bars = !opts.no_progress;
    r.prune_roots = vec![settings.build_root.clone(), settings.dist_dir.clone()];
    r.tool_version = env!("CARGO_PKG_VERSION").to_string();
    if let Some(remote) = crate::remote::installed() {
        r.result_cache = Some(std::sync::Arc::new(crate::remote::TaskCache::new(
            remote,
            &settings.build_root,
            &settings.repo_root,
            &settings.store_root,
        )));
    }
    r
}

fn build(opts: &GraphOptions, patterns: &[String]) -> Result<u8> {
    let (settings, graph) = load(opts)?;
    let patterns = if patterns.is_empty() {
        vec!["iso".to_string()]
    } else {
        patterns.to_vec()
    };
    let targets = engine::expand(&graph, &patterns).map_err(|e| UsageError(e.to_string()))?;
    let ropts = run_options(&settings, opts);
    let reporter = ropts.reporter;
    let summary = engine::run(&graph, &targets, ropts)?;
    // The JSON reporter printed its document at the end of the run.
    match reporter {
        Reporter::Json => {}
        _ => {
            let count = |s: engine::Status| summary.tasks.iter().filter(|t| t.status == s).count();
            for p in &summary.pruned {
                eprintln!("pruned stale output {p}");
            }
            if opts.dry_run {
                eprintln!(
                    "{} tasks: {} would run, {} up to date (dry run: nothing was run)",
                    summary.tasks.len(),
                    count(engine::Status::WouldRun),
                    count(engine::Status::Skipped) + count(engine::Status::Success),
                );
                return Ok(if summary.ok { 0 } else { 1 });
            }
            eprintln!(
                "{} tasks: {} ran, {}{} up to date, {} failed, {} blocked ({:.2}s); log: {}",
                summary.tasks.len(),
                count(engine::Status::Success),
                match count(engine::Status::Cached) {
                    0 => String::new(),
                    n => format!("{n} from remote cache, "),
                },
                count(engine::Status::Skipped),
                count(engine::Status::Error),
                count(engine::Status::Blocked),
                summary.duration_s,
                settings.build_root.join("build.log").display()
            );
        }
    }
    Ok(if summary.ok { 0 } else { 1 })
}
