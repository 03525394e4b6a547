//! First-use behaviour of the real binary on a scratch copy of the repository (issue 15, items
//! 5, 6, 7, 10, 12, 13, 14): messages that name the right file and task, `--dry-run` predicting
//! the real run, help and listing, no-op runs that write nothing, Solutions using the settings.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");

struct Repo {
    dir: tempfile::TempDir,
    store: tempfile::TempDir,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        testkit::copy_product_repo(dir.path());
        Repo {
            dir,
            store: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.path())
            .arg("--no-progress")
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("BUILDCHAIN_STORE", self.store.path())
            .env("BUILD_HOST", "test-host")
            .env_remove("BUILDCHAIN_REPO")
            .env_remove("BUILD_ROOT")
            .env_remove("PROJECT_NAME")
            .env_remove("BUILDCHAIN_PROFILE");
        c
    }
    fn out(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> Output {
        let out = self.out(args);
        assert!(
            out.status.success(),
            "buildchain {args:?} failed:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }
    fn fail(&self, args: &[&str], code: i32) -> String {
        let out = self.out(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "buildchain {args:?}:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        stderr(&out)
    }
    fn edit(&self, rel: &str, f: impl FnOnce(&str) -> String) {
        let p = self.path().join(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        let new = f(&text);
        assert_ne!(text, new, "edit of {rel} changed nothing");
        std::fs::write(&p, new).unwrap();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Task names on lines starting with `label` (`STARTED iso` → `iso`).
fn tasks_labelled(text: &str, label: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(label))
        .filter(|rest| rest.starts_with(' '))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

// ---- item 5: inventory and package-definition errors ----

#[test]
fn inventory_yaml_error_names_the_images_task_and_the_file_once() {
    let repo = Repo::new();
    repo.edit("images/inventory.yaml", |t| {
        t.replacen("    tag: \"3.9\"", "    tag: [x]", 1)
    });
    let err = repo.fail(&["list"], 2);
    let first = err.lines().next().unwrap();
    assert_eq!(
        first, "error: images: images/inventory.yaml:16:10: expected string scalar",
        "{err}"
    );
    assert_eq!(err.matches("error").count(), 1, "`error` once:\n{err}");
    assert!(
        err.lines()
            .any(|l| l.trim() == "--> images/inventory.yaml:16:10"),
        "{err}"
    );
    assert!(!err.contains("<input>"), "{err}");
    assert!(!err.contains("salt_tree"), "{err}");
}

#[test]
fn inventory_validation_error_names_the_images_task() {
    let repo = Repo::new();
    repo.edit("images/inventory.yaml", |t| {
        t.replacen("    tag: \"3.9\"", "    tag: \"bad tag\"", 1)
    });
    let err = repo.fail(&["list"], 2);
    assert_eq!(
        err.trim_end(),
        "error: images: images/inventory.yaml:15: image \"pause\": invalid tag \"bad tag\""
    );
}

#[test]
fn package_definition_error_names_the_packaging_task_and_the_file_once() {
    let repo = Repo::new();
    repo.edit("packages/redhat/8/metalk8s-release.yaml", |t| {
        t.replacen("arch: noarch", "arch: [noarch]", 1)
    });
    let err = repo.fail(&["list"], 2);
    let file = "packages/redhat/8/metalk8s-release.yaml";
    let first = err.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("error: packaging: {file}:6:7: ")),
        "{err}"
    );
    assert_eq!(err.matches("error").count(), 1, "`error` once:\n{err}");
    assert!(
        err.lines().any(|l| l.trim() == format!("--> {file}:6:7")),
        "{err}"
    );
    assert!(!err.contains("<input>"), "{err}");
}

// ---- item 6: mis-indented key, duplicate Salt source ----

#[test]
fn mis_indented_tag_is_reported_on_its_own_line() {
    let repo = Repo::new();
    // `tag:` of `pause` (line 16) indented by 3 spaces instead of 4.
    repo.edit("images/inventory.yaml", |t| {
        t.replacen("\n    tag: \"3.9\"", "\n   tag: \"3.9\"", 1)
    });
    let err = repo.fail(&["list"], 2);
    let first = err.lines().next().unwrap();
    assert!(
        first.starts_with("error: images: images/inventory.yaml:16:4: "),
        "{err}"
    );
    assert!(first.contains("`tag:`"), "{err}");
    assert!(first.contains("indent"), "{err}");
}

#[test]
fn duplicate_salt_source_names_both_files() {
    let repo = Repo::new();
    let states = repo.path().join("salt/states");
    std::fs::copy(states.join("top.sls.in"), states.join("top.sls")).unwrap();
    let err = repo.fail(&["list"], 2);
    assert_eq!(
        err.trim_end(),
        "error: salt_tree: salt/states/top.sls and salt/states/top.sls.in both produce salt/top.sls \
         in the ISO tree: remove one of them"
    );
}

// ---- item 7: VERSION_SUFFIX ----

#[test]
fn version_suffix_without_dash_is_refused() {
    let repo = Repo::new();
    repo.edit("VERSION", |t| {
        t.replace("VERSION_SUFFIX=-dev", "VERSION_SUFFIX=dev")
    });
    let err = repo.fail(&["list"], 2);
    let version = repo.path().canonicalize().unwrap().join("VERSION");
    assert_eq!(
        err.trim_end(),
        format!(
            "error: {}:4: VERSION_SUFFIX must be empty or start with `-` (for example `-dev`), \
             found \"dev\"",
            version.display()
        )
    );
    assert!(!repo.path().join("dist").exists());
}

// ---- item 10: --dry-run predicts the real run ----

#[test]
fn dry_run_predicts_exactly_the_tasks_the_real_run_runs() {
    let repo = Repo::new();
    repo.ok(&["iso"]);
    repo.edit("salt/states/top.sls.in", |t| format!("{t}# edited\n"));
    let dry = repo.ok(&["--dry-run", "iso"]);
    let dry_out = stdout(&dry);
    assert!(!dry_out.contains("SUCCESS"), "{dry_out}");
    assert!(!dry_out.contains("SKIPPED"), "{dry_out}");
    assert!(!dry_out.contains("STARTED"), "{dry_out}");
    let would = tasks_labelled(&dry_out, "WOULD-RUN");
    // The real run: task lines are STARTED (tasks with an action) or SUCCESS (groups).
    let real = repo.ok(&["iso"]);
    let real_out = stdout(&real);
    let ran = tasks_labelled(&real_out, "SUCCESS");
    assert_eq!(would, ran, "dry run:\n{dry_out}\nreal run:\n{real_out}");
    assert!(ran.contains(&"iso".to_string()), "{real_out}");
    assert!(
        dry_out.lines().any(|l| l.starts_with("WOULD-RUN iso (")
            && l.contains("dependency populate_iso:SHA256SUMS would run")),
        "{dry_out}"
    );
    assert!(
        dry_out
            .lines()
            .any(|l| l == "WOULD-RUN salt_tree:salt/top.sls (changed file salt/states/top.sls.in)"),
        "{dry_out}"
    );
    let up = tasks_labelled(&dry_out, "UP-TO-DATE");
    let total: usize = stderr(&real)
        .lines()
        .find_map(|l| l.split_once(" tasks: ").and_then(|(n, _)| n.parse().ok()))
        .expect("the real run's summary line");
    assert_eq!(up.len() + would.len(), total, "{dry_out}");
    assert!(
        stderr(&dry).contains(&format!(
            "{} would run, {} up to date",
            would.len(),
            up.len()
        )),
        "{}",
        stderr(&dry)
    );
    // After the real run, a dry run predicts nothing.
    let again = repo.ok(&["--dry-run", "iso"]);
    assert!(tasks_labelled(&stdout(&again), "WOULD-RUN").is_empty());
}

// ---- item 12: help and listing ----

#[test]
fn help_lists_the_solutions_task() {
    let repo = Repo::new();
    let out = repo.ok(&["--help"]);
    let text = stdout(&out);
    assert!(text.contains("solutions"), "{text}");
}

#[test]
fn misspelled_task_gets_ranked_suggestions() {
    let repo = Repo::new();
    let err = repo.fail(&["isoo"], 2);
    assert_eq!(
        err.trim_end(),
        "error: no task matches \"isoo\"; did you mean `iso`? (see `list --all`)"
    );
    let err = repo.fail(&["imagse"], 2);
    assert_eq!(
        err.trim_end(),
        "error: no task matches \"imagse\"; did you mean `images`? (see `list --all`)"
    );
    // Ranked by distance: `salt_tree` (1 edit) before `salt_tree:…` candidates.
    let err = repo.fail(&["salt_tre"], 2);
    assert!(
        err.starts_with("error: no task matches \"salt_tre\"; did you mean `salt_tree`?"),
        "{err}"
    );
}

#[test]
fn list_all_and_list_private_differ() {
    let repo = Repo::new();
    let names = |args: &[&str]| -> Vec<String> {
        stdout(&repo.ok(args))
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    };
    let public = names(&["list"]);
    let all = names(&["list", "--all"]);
    let private = names(&["list", "--private"]);
    assert!(public.iter().all(|n| !n.contains(':')), "{public:?}");
    assert!(public.iter().all(|n| all.contains(n)));
    assert!(all.iter().all(|n| private.contains(n)));
    assert!(all.contains(&"images:pause".to_string()), "{all:?}");
    assert!(
        all.contains(&"salt_tree:salt/top.sls".to_string()),
        "{all:?}"
    );
    let only_private: Vec<&String> = private.iter().filter(|n| !all.contains(n)).collect();
    assert_eq!(
        only_private,
        [
            "packaging:scality/repodata",
            "populate_iso:SHA256SUMS",
            "salt_tree:salt/metalk8s/repo/files/metalk8s-registry.inc",
            "salt_tree:salt/metalk8s/versions.json",
        ]
    );
}

#[test]
fn task_descriptions_are_consistent() {
    let repo = Repo::new();
    let text = stdout(&repo.ok(&["list", "--private"]));
    for line in text.lines() {
        let (name, doc) = line.split_once(' ').unwrap();
        let doc = doc.trim();
        assert!(
            doc.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
            "{name}: description starts lower-case: {doc:?}"
        );
        let words: Vec<&str> = doc.split_whitespace().collect();
        for w in words.windows(2) {
            assert_ne!(w[0], w[1], "{name}: repeated word in {doc:?}");
        }
        assert!(!doc.ends_with('.'), "{name}: {doc:?}");
    }
}

#[test]
fn clean_dry_run_prints_the_build_root_line() {
    let repo = Repo::new();
    repo.ok(&["iso"]);
    let dry = stdout(&repo.ok(&["clean", "-n"]));
    let root = repo.path().canonicalize().unwrap().join("_build");
    let want = format!("would remove {}", root.display());
    assert_eq!(dry.lines().last(), Some(want.as_str()), "{dry}");
    assert!(root.exists());
    let real = stdout(&repo.ok(&["clean"]));
    assert_eq!(
        real.lines().last(),
        Some(format!("removed {}", root.display()).as_str())
    );
    assert!(!root.exists());
}

#[test]
fn iso_task_prints_the_path_it_wrote() {
    let repo = Repo::new();
    let out = repo.ok(&["iso"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.lines()
            .any(|l| l == "iso: wrote dist/metalk8s-130.0.0-dev.iso"),
        "{text}"
    );
    assert!(repo.path().join("dist/metalk8s-130.0.0-dev.iso").is_file());
}

// ---- item 13: a no-op run writes nothing ----

fn stamp(p: &Path) -> (std::time::SystemTime, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    (m.modified().unwrap(), m.ino())
}

#[test]
fn noop_run_does_not_rewrite_state_or_build_log() {
    let repo = Repo::new();
    repo.ok(&["iso"]);
    let state = repo.path().join("_build/.buildchain/state.json");
    let log = repo.path().join("_build/build.log");
    let (s0, l0) = (stamp(&state), stamp(&log));
    let journal = repo.path().join("_build/.buildchain");
    let listing = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let files0 = listing(&journal);
    let out = repo.ok(&["iso"]);
    assert!(tasks_labelled(&stdout(&out), "STARTED").is_empty());
    assert_eq!(stamp(&state), s0, "state.json rewritten by a no-op run");
    assert_eq!(stamp(&log), l0, "build.log rewritten by a no-op run");
    assert_eq!(listing(&journal), files0);
    // A dry run writes nothing either.
    repo.edit("salt/states/top.sls.in", |t| format!("{t}# edited\n"));
    repo.ok(&["--dry-run", "iso"]);
    assert_eq!(stamp(&state), s0);
    assert_eq!(stamp(&log), l0);
    // A run that does work does write them.
    repo.ok(&["iso"]);
    assert_ne!(stamp(&log), l0);
}

// ---- item 14: Solutions use the settings; no `git` while building the graph ----

/// A `git` on PATH that records each call, then runs the real one.
fn git_probe(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let real = testkit::require_tool("git");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("git-calls");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{}'\nexec '{}' \"$@\"\n",
        log.display(),
        real.display()
    );
    std::fs::write(bin.join("git"), script).unwrap();
    std::fs::set_permissions(bin.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    (bin, log)
}

#[test]
fn list_and_info_do_not_run_git() {
    let repo = Repo::new();
    let probe = tempfile::tempdir().unwrap();
    let (bin, log) = git_probe(probe.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    for args in [
        &["list", "--private"][..],
        &["info", "solutions:example-solution"][..],
    ] {
        let out = repo.cmd(args).env("PATH", &path).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(
        !log.exists(),
        "git ran while building the graph: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn solutions_take_source_date_epoch_from_dotenv() {
    let xorriso = testkit::require_tool("xorriso");
    let repo = Repo::new();
    std::fs::write(repo.path().join(".env"), "SOURCE_DATE_EPOCH=1600000000\n").unwrap();
    let out = repo
        .cmd(&["solutions"])
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let iso = repo
        .path()
        .join("dist/solutions/example-solution-1.0.0.iso");
    let dest = tempfile::tempdir().unwrap();
    let manifest = dest.path().join("manifest.yaml");
    testkit::run_ok(
        Command::new(xorriso)
            .args(["-osirrox", "on", "-indev"])
            .arg(&iso)
            .args(["-extract", "/manifest.yaml"])
            .arg(&manifest),
    );
    let text = std::fs::read_to_string(&manifest).unwrap();
    // 1600000000 = 2020-09-13T12:26:40Z
    assert!(
        text.lines().any(|l| l.trim()
            == "solutions.metalk8s.scality.com/build-timestamp: \"2020-09-13T12:26:40Z\""),
        "{text}"
    );
}

#[test]
fn format_values_are_checked_by_the_parser() {
    let r = Repo::new();
    let expected = "error: invalid value 'yaml' for '--format <FORMAT>'\n  \
                    [possible values: text, json]\n\nFor more information, try '--help'.\n";
    for args in [
        &["verify", "x.iso", "--format", "yaml"][..],
        &["solution", "validate", "x.iso", "--format", "yaml"],
        &["plan", "--format", "yaml"],
    ] {
        assert_eq!(r.fail(args, 2), expected, "{args:?}");
    }
    let err = r.fail(&["diff", "a", "b", "--format", "yaml"], 2);
    assert_eq!(
        err,
        "error: invalid value 'yaml' for '--format <FORMAT>'\n  \
         [possible values: text, json, html]\n\nFor more information, try '--help'.\n"
    );
}
