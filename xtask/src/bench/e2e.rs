//! `cargo xtask bench e2e [--json] [--runs N] [--fixture DIR] [fixture flags]`: the classic
//! pipeline against ours on the MetalK8s-scale fixture (`cargo xtask fixture scale`), in the same
//! run, interleaved, medians of `--runs` (default 3) rounds.
//!
//! Each round runs the classic pipeline once — `skopeo copy` by digest of every image into `dir:`,
//! `hardlink -c`, `dnf download` of the pinned RPMs + `createrepo_c`, `cp -a` of the Salt tree,
//! `xorriso -as mkisofs -R -J -joliet-long -l -iso-level 3`, `implantisomd5`, `sha256sum` — which
//! has no incremental mode, so every scenario costs it a full run; then ours (`<this exe> iso`, a
//! release build when run as `cargo run --release -p xtask -- bench e2e`) through the scenarios:
//! `cold` (empty store, build root and dist), `warm` (store kept), `noop`, `salt_edit` (one Salt
//! file edited), `image_bump` (one image moved to its newer version: one small new layer). The
//! time of `iso master --md5` alone on the warm tree is measured too (`master_only_s`), and
//! `salt_edit` (an incremental re-master) is reported against it (`vs_full_master`; goal ≤ 0.4).
//! The registry config (`metalk8s-registry.inc`: bytes, `location` blocks) is served by stock
//! nginx (workers `nobody`), timed until `GET /v2/` answers (`nginx_start_s`).
//!
//! Per command: wall time, peak RSS (`wait4` rusage), bytes read (`rchar` of `/proc/PID/io`,
//! read from the exited child before it is reaped), peak disk of store + build root + dist
//! (sampled every 200 ms, each inode once), bytes sent by the registry and yum servers (counting
//! relays in front of them). `--json` prints one object keyed by scenario.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::fixture::{self, Fixture, Params, Servers};

const SCENARIOS: &[&str] = &["cold", "warm", "noop", "salt_edit", "image_bump"];

/// What one measured command (or pipeline) cost.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cost {
    pub(super) secs: f64,
    rss_kib: u64,
    rchar: u64,
    disk_peak: u64,
    pub(super) registry_bytes: u64,
    yum_bytes: u64,
}

impl Cost {
    fn add(&mut self, o: &Cost) {
        self.secs += o.secs;
        self.rss_kib = self.rss_kib.max(o.rss_kib);
        self.rchar += o.rchar;
        self.disk_peak = self.disk_peak.max(o.disk_peak);
        self.registry_bytes += o.registry_bytes;
        self.yum_bytes += o.yum_bytes;
    }
}

/// Disk used by `paths`, each inode counted once.
fn disk_used(paths: &[PathBuf]) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    for p in paths {
        for e in walkdir::WalkDir::new(p).into_iter().flatten() {
            if let Ok(m) = e.metadata() {
                if !m.is_dir() && seen.insert((m.dev(), m.ino())) {
                    total += m.blocks() * 512;
                }
            }
        }
    }
    total
}

fn rchar_of(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("rchar: ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `cmd` (after an untimed `sync`), sampling the disk use of `disk`; output to `log`.
pub(super) fn measure(
    cmd: &mut Command,
    what: &str,
    disk: &[PathBuf],
    log: &Path,
    servers: &Servers,
) -> Result<Cost> {
    let _ = Command::new("sync").status();
    servers.take_bytes();
    let logf = fs::File::create(log)?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    let pid = child.id() as i32;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, disk) = (stop.clone(), peak.clone(), disk.to_vec());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(disk_used(&disk), Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
    };
    // Wait for the exit without reaping, read its I/O counters, then reap with its rusage.
    // SAFETY: plain waitid/wait4 on our own child's PID with valid out-pointers.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        );
    }
    let secs = start.elapsed().as_secs_f64();
    let rchar = rchar_of(pid);
    let mut status = 0;
    // SAFETY: as above.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut ru);
        ru
    };
    drop(child);
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    peak.fetch_max(disk_used(disk), Ordering::SeqCst);
    let (registry_bytes, yum_bytes) = servers.take_bytes();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        bail!(
            "{what} failed (status {status:#x}); log {}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(Cost {
        secs,
        rss_kib: ru.ru_maxrss as u64,
        rchar,
        disk_peak: peak.load(Ordering::SeqCst),
        registry_bytes,
        yum_bytes,
    })
}

struct Opts {
    runs: usize,
    json: bool,
    fixture: Option<PathBuf>,
    params: Params,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        runs: 3,
        json: false,
        fixture: None,
        params: Params::default(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if o.params.parse_flag(a, &mut it)? {
            continue;
        }
        match a.as_str() {
            "--json" => o.json = true,
            "--runs" => o.runs = super::option_value::<usize>(&mut it, a)?.max(1),
            "--fixture" => {
                o.fixture = Some(PathBuf::from(
                    it.next().context("--fixture needs a directory")?,
                ))
            }
            other => bail!("unknown option {other:?}"),
        }
    }
    Ok(o)
}

/// The classic pipeline, one full run into `work/classic`.
fn classic(
    f: &Fixture,
    inventory_bump: Option<&str>,
    work: &Path,
    servers: &Servers,
) -> Result<Cost> {
    let dir = work.join("classic");
    let _ = fs::remove_dir_all(&dir);
    let root = dir.join("root");
    fs::create_dir_all(root.join("images"))?;
    let logs = work.join("logs");
    let disk = vec![dir.clone()];
    let mut total = Cost::default();
    let start = Instant::now();
    for im in &f.images {
        let (tag, digest) = match (&im.bump, inventory_bump) {
            (Some((t, d)), Some(b)) if b == im.name => (t.clone(), d.clone()),
            _ => (im.tag.clone(), im.digest.clone()),
        };
        let dest = root.join("images").join(&im.name).join(&tag);
        fs::create_dir_all(dest.parent().unwrap_or(&root))?;
        let c = measure(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!(
                    "docker://127.0.0.1:{}/{}@{digest}",
                    f.registry_port, im.repo
                ))
                .arg(format!("dir:{}", dest.display())),
            &format!("skopeo copy {}", im.name),
            &disk,
            &logs.join("classic-skopeo.log"),
            servers,
        )?;
        total.add(&c);
    }
    let c = measure(
        Command::new("hardlink")
            .args(["-c", "-q"])
            .arg(root.join("images")),
        "hardlink",
        &disk,
        &logs.join("classic-hardlink.log"),
        servers,
    )?;
    total.add(&c);
    let repo = root.join("packages/redhat/8/metalk8s-fixture-el8");
    fs::create_dir_all(&repo)?;
    let lock = buildchain::packaging::lock::LockFile::load(
        &f.checkout().join("packages/redhat/8/lock.yaml"),
    )?;
    let mut dnf = Command::new("dnf");
    dnf.args([
        "download",
        "-q",
        "--setopt=reposdir=/dev/null",
        "--releasever=8",
        "--disablerepo=*",
    ])
    .arg(format!(
        "--setopt=cachedir={}",
        dir.join("dnfcache").display()
    ))
    .arg(format!(
        "--repofrompath=fixture,http://127.0.0.1:{}/",
        f.yum_port
    ))
    .arg("--enablerepo=fixture")
    .arg(format!("--destdir={}", repo.display()));
    for p in &lock.packages {
        let e = buildchain::packaging::evr::Evr::parse(&p.evr);
        dnf.arg(format!("{}-{}-{}.{}", p.name, e.version, e.release, p.arch));
    }
    total.add(&measure(
        &mut dnf,
        "dnf download",
        &disk,
        &logs.join("classic-dnf.log"),
        servers,
    )?);
    total.add(&measure(
        Command::new("createrepo_c")
            .args(["--no-database", "-q"])
            .arg(&repo),
        "createrepo_c",
        &disk,
        &logs.join("classic-createrepo.log"),
        servers,
    )?);
    total.add(&measure(
        Command::new("cp")
            .arg("-a")
            .arg(f.checkout().join("salt"))
            .arg(root.join("salt")),
        "cp salt",
        &disk,
        &logs.join("classic-cp.log"),
        servers,
    )?);
    let iso = dir.join("product.iso");
    total.add(&measure(
        Command::new("xorriso")
            .args([
                "-as",
                "mkisofs",
                "-quiet",
                "-R",
                "-J",
                "-joliet-long",
                "-l",
                "-iso-level",
                "3",
                "-V",
                "MetalK8s",
            ])
            .arg("-o")
            .arg(&iso)
            .arg(&root),
        "xorriso",
        &disk,
        &logs.join("classic-xorriso.log"),
        servers,
    )?);
    total.add(&measure(
        Command::new("implantisomd5").arg(&iso),
        "implantisomd5",
        &disk,
        &logs.join("classic-implant.log"),
        servers,
    )?);
    total.add(&measure(
        Command::new("sha256sum").arg(&iso),
        "sha256sum",
        &disk,
        &logs.join("classic-sha256sum.log"),
        servers,
    )?);
    total.secs = start.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(&dir);
    Ok(total)
}

/// Size of the generated registry config and the time stock nginx (master as root, workers
/// `user nobody nogroup;`) takes to start with it until it answers `GET /v2/` (config test,
/// parse, listen, first request), serving the build tree `root` like a mounted ISO.
fn registry_config_cost(root: &Path, version: &str) -> Result<(u64, u64, f64)> {
    let files = root.join("salt/metalk8s/repo/files");
    let inc = files.join("metalk8s-registry.inc");
    let common = files.join("metalk8s-registry-common.inc");
    let size = fs::metadata(&inc)
        .with_context(|| format!("cannot stat {}", inc.display()))?
        .len();
    let locations = fs::read_to_string(&inc)?.matches("location").count() as u64;
    let var = format!("metalk8s_{}_images", version.replace(['.', '-'], "_"));
    let body = format!(
        "    set ${var} \"{}\";\n    include \"{}\";\n    include \"{}\";\n",
        root.join("images").display(),
        inc.display(),
        common.display()
    );
    let start = Instant::now();
    let nginx = testkit::start_nginx_unprivileged(&body);
    let (status, _, _) = testkit::http_request(nginx.port, "GET", "/v2/", &[]);
    let secs = start.elapsed().as_secs_f64();
    if status != 200 {
        bail!("nginx with the registry config answered {status} to GET /v2/");
    }
    drop(nginx);
    Ok((size, locations, secs))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the benchmark.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    for t in [
        "skopeo",
        "hardlink",
        "dnf",
        "createrepo_c",
        "xorriso",
        "implantisomd5",
        "sha256sum",
        "docker-registry",
    ] {
        testkit::require_tool(t);
    }
    let exe = std::env::current_exe()?;
    if exe.components().any(|c| c.as_os_str() == "debug") {
        eprintln!("warning: {} is a debug build; run `cargo run --release -p xtask -- bench e2e` for real numbers", exe.display());
    }
    let f = match &o.fixture {
        Some(d) => Fixture::load(d)?,
        None => {
            let dir = fixture::default_dir();
            eprintln!("generating the fixture in {} …", dir.display());
            fixture::generate(&o.params, &dir)?
        }
    };
    let checkout = f.checkout();
    let work = f.dir.join("bench");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("logs"))?;
    let servers = Servers::start(&f)?;
    let store = work.join("store-ours");
    let build_root = work.join("build-ours");
    let dist = checkout.join("dist");
    let disk = vec![store.clone(), build_root.clone(), dist.clone()];
    let inv_path = checkout.join("images/inventory.yaml");
    let salt = fixture::salt_edit_target(&checkout);
    let salt_orig = fs::read(&salt)?;
    let bump = f
        .images
        .iter()
        .find(|i| i.bump.is_some())
        .map(|i| i.name.clone())
        .context("the fixture has no image with a second version")?;
    let ours = |what: &str, servers: &Servers| -> Result<Cost> {
        let mut c = Command::new(&exe);
        c.arg("iso")
            .current_dir(&checkout)
            .env("BUILDCHAIN_STORE", &store)
            .env("BUILD_ROOT", &build_root)
            .env("SOURCE_DATE_EPOCH", "1700000000");
        measure(
            &mut c,
            &format!("ours ({what})"),
            &disk,
            &work.join("logs").join(format!("ours-{what}.log")),
            servers,
        )
    };

    let mut classic_runs: Vec<Cost> = Vec::new();
    let mut ours_runs: BTreeMap<&str, Vec<Cost>> = BTreeMap::new();
    let mut master_only = Vec::new();
    let mut nginx_cost = Vec::new();
    for round in 0..o.runs {
        fs::write(&inv_path, f.inventory(None))?;
        fs::write(&salt, &salt_orig)?;
        let c = classic(&f, None, &work, &servers)?;
        eprintln!("round {}: classic {:.2}s", round + 1, c.secs);
        classic_runs.push(c);
        for s in SCENARIOS {
            match *s {
                "cold" => {
                    for d in &disk {
                        let _ = fs::remove_dir_all(d);
                    }
                }
                "warm" => {
                    let _ = fs::remove_dir_all(&build_root);
                    let _ = fs::remove_dir_all(&dist);
                }
                "salt_edit" => {
                    let mut t = salt_orig.clone();
                    t.extend_from_slice(
                        format!("# edited by bench e2e, round {round}\n").as_bytes(),
                    );
                    fs::write(&salt, t)?;
                }
                "image_bump" => fs::write(&inv_path, f.inventory(Some(&bump)))?,
                _ => {}
            }
            let c = ours(s, &servers)?;
            eprintln!(
                "round {}: ours {s:<10} {:7.2}s  rss {:4} MiB  read {:6} MiB  registry {:6} MiB",
                round + 1,
                c.secs,
                c.rss_kib / 1024,
                c.rchar >> 20,
                c.registry_bytes >> 20
            );
            ours_runs.entry(s).or_default().push(c);
            if *s == "noop" {
                // Mastering alone on the same tree, for the `warm` goal.
                let out = work.join("master-only.iso");
                let mut m = Command::new(&exe);
                m.args(["iso", "master"])
                    .arg(build_root.join("root"))
                    .arg("-o")
                    .arg(&out)
                    .args(["--volid", "MetalK8s", "--md5"])
                    .env("SOURCE_DATE_EPOCH", "1700000000");
                let c = measure(
                    &mut m,
                    "iso master",
                    &[],
                    &work.join("logs/master.log"),
                    &servers,
                )?;
                let _ = fs::remove_file(&out);
                master_only.push(c.secs);
                let version = fs::read_dir(&dist)?
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .find_map(|n| {
                        n.strip_prefix("metalk8s-")?
                            .strip_suffix(".iso")
                            .map(str::to_string)
                    })
                    .context("no ISO in dist/")?;
                nginx_cost.push(registry_config_cost(&build_root.join("root"), &version)?);
            }
        }
    }
    fs::write(&inv_path, f.inventory(None))?;
    fs::write(&salt, &salt_orig)?;
    drop(servers);

    let cm = median(classic_runs.iter().map(|c| c.secs).collect());
    let crss = classic_runs.iter().map(|c| c.rss_kib).max().unwrap_or(0);
    let cdisk = classic_runs.iter().map(|c| c.disk_peak).max().unwrap_or(0);
    let creg = classic_runs.last().map(|c| c.registry_bytes).unwrap_or(0);
    let master = median(master_only);
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mut out = serde_json::Map::new();
    if !o.json {
        println!(
            "e2e benchmark: {} images ({:.2} GiB unique, {:.2} GiB counted per image), {} RPMs, {} Salt files; {} round(s), medians; exe {}",
            f.images.len(),
            f.unique_bytes as f64 / (1u64 << 30) as f64,
            f.counted_bytes as f64 / (1u64 << 30) as f64,
            f.params.rpms,
            f.params.salt_files,
            o.runs,
            exe.display()
        );
        println!("| scenario | classic s | ours s | ratio | ours peak RSS MiB | ours peak disk MiB | ours read (rchar) MiB | ours registry MiB | ours yum MiB |");
        println!("|---|---|---|---|---|---|---|---|---|");
    }
    for s in SCENARIOS {
        let runs = &ours_runs[s];
        let om = median(runs.iter().map(|c| c.secs).collect());
        let rss = runs.iter().map(|c| c.rss_kib).max().unwrap_or(0);
        let disk = runs.iter().map(|c| c.disk_peak).max().unwrap_or(0);
        let rchar = median(runs.iter().map(|c| c.rchar as f64).collect()) as u64;
        let reg = runs.last().map(|c| c.registry_bytes).unwrap_or(0);
        let yum = runs.last().map(|c| c.yum_bytes).unwrap_or(0);
        let mut v = json!({
            "ours_s": om,
            "classic_s": cm,
            "ratio": cm / om,
            "ours_peak_rss_mib": rss / 1024,
            "classic_peak_rss_mib": crss / 1024,
            "ours_peak_disk_mib": disk >> 20,
            "classic_peak_disk_mib": cdisk >> 20,
            "ours_rchar_mib": rchar >> 20,
            "ours_registry_bytes": reg,
            "ours_yum_bytes": yum,
            "classic_registry_bytes": creg,
        });
        if *s == "salt_edit" {
            // The goal: ≤ 0.4× a full re-master, byte-identical (tests/resume.rs).
            v["vs_full_master"] = json!(om / master);
        }
        if *s == "warm" {
            v["master_only_s"] = json!(master);
            if let Some((size, locs, _)) = nginx_cost.last() {
                v["registry_inc_bytes"] = json!(size);
                v["registry_inc_locations"] = json!(locs);
                v["nginx_start_s"] = json!(median(nginx_cost.iter().map(|c| c.2).collect()));
            }
        }
        if !o.json {
            println!(
                "| {s} | {cm:.2} | {om:.3} | {:.2}x | {} | {} | {} | {:.2} | {:.2} |",
                cm / om,
                rss / 1024,
                disk >> 20,
                rchar >> 20,
                mib(reg),
                mib(yum)
            );
        }
        out.insert(s.to_string(), v);
    }
    if o.json {
        println!("{}", serde_json::Value::Object(out));
    } else {
        println!(
            "classic (every scenario is a full run): peak RSS {} MiB, peak disk {} MiB, registry {:.1} MiB; iso master --md5 alone on the warm tree: {master:.2}s",
            crss / 1024,
            cdisk >> 20,
            mib(creg)
        );
        let salt = median(ours_runs["salt_edit"].iter().map(|c| c.secs).collect());
        println!(
            "salt_edit (incremental re-master + pipeline): {salt:.2}s = {:.2}x a full re-master ({master:.2}s)",
            salt / master
        );
        if let Some((size, locs, _)) = nginx_cost.last() {
            println!(
                "registry config: metalk8s-registry.inc {size} bytes, {locs} `location` blocks; nginx (workers nobody) start-up until GET /v2/ answers {:.3}s (median)",
                median(nginx_cost.iter().map(|c| c.2).collect())
            );
        }
    }
    Ok(())
}
