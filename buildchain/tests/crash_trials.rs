//! Crash consistency of the whole product build through the real binary (issue 15, items 1, 4):
//! an image directory left partial by a crash is repaired by the next run, `clean TASK` removes a
//! task's outputs without a state record, and `kill -9` at points inside every phase followed by
//! a rerun yields the ISO and `_build/root` of a clean build.

#[path = "it/images_support.rs"]
mod support;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");

/// A scratch copy of the repository content the build reads, with its own store.
struct Repo {
    dir: tempfile::TempDir,
    store: tempfile::TempDir,
}

impl Repo {
    fn new() -> Self {
        Self::with_inventory_extra("")
    }
    /// A copy whose `images/inventory.yaml` gets `extra` appended.
    fn with_inventory_extra(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        testkit::copy_product_repo(dir.path());
        if !extra.is_empty() {
            let inv = dir.path().join("images/inventory.yaml");
            let mut text = std::fs::read_to_string(&inv).unwrap();
            text.push_str(extra);
            std::fs::write(&inv, text).unwrap();
        }
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
        c.arg("--repo")
            .arg(self.path())
            .arg("--no-progress")
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("BUILDCHAIN_STORE", self.store.path())
            .env("BUILD_HOST", "test-host")
            .env_remove("BUILDCHAIN_TEST_KILL_AT")
            .env_remove("BUILD_ROOT")
            .env_remove("PROJECT_NAME");
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "buildchain {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Relative path → (mode, sha256) of every file under `root`; directories as `(mode, "dir")`.
fn listing(root: &Path) -> BTreeMap<PathBuf, (u32, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        let mode = e.metadata().unwrap().permissions().mode();
        if e.file_type().is_file() {
            m.insert(
                rel,
                (mode, buildchain::fsutil::sha256_file(e.path()).unwrap()),
            );
        } else if e.file_type().is_dir() {
            m.insert(rel, (mode, "dir".to_string()));
        } else {
            m.insert(rel, (mode, "other".to_string()));
        }
    }
    m
}

const UTILS: &str = "_build/root/images/metalk8s-utils/1.0";

#[test]
fn image_dir_without_version_file_is_repaired_by_the_next_run() {
    let repo = Repo::new();
    repo.run(&["iso"]);
    let good = listing(&repo.path().join("_build/root"));
    // Image directories are world-readable like the rest of the tree (served by nginx).
    assert_eq!(
        good[Path::new("images/metalk8s-utils/1.0")].0 & 0o7777,
        0o755
    );
    let iso = std::fs::read(repo.path().join("dist/metalk8s-130.0.0-dev.iso")).unwrap();
    // A crash between the writes of the directory: its `version` file is gone.
    std::fs::remove_file(repo.path().join(UTILS).join("version")).unwrap();
    let out = repo.run(&["iso"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l == "STARTED  images:metalk8s-utils"),
        "{text}"
    );
    assert_eq!(listing(&repo.path().join("_build/root")), good);
    assert_eq!(
        std::fs::read(repo.path().join("dist/metalk8s-130.0.0-dev.iso")).unwrap(),
        iso
    );
    // Also a directory holding a stray file and no manifest (any partial state).
    std::fs::remove_file(repo.path().join(UTILS).join("manifest.json")).unwrap();
    std::fs::remove_file(repo.path().join(UTILS).join("version")).unwrap();
    std::fs::write(repo.path().join(UTILS).join("stray"), b"x").unwrap();
    repo.run(&["iso"]);
    assert_eq!(listing(&repo.path().join("_build/root")), good);
    // And a run after that has nothing to do.
    let out = repo.run(&["iso"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("STARTED"), "{text}");
}

#[test]
fn clean_task_removes_its_outputs_without_a_state_record() {
    let repo = Repo::new();
    repo.run(&["images:metalk8s-utils"]);
    let dir = repo.path().join(UTILS);
    assert!(dir.join("version").is_file());
    // No record at all (a lost or reset state database).
    std::fs::remove_dir_all(repo.path().join("_build/.buildchain")).unwrap();
    std::fs::remove_file(dir.join("version")).unwrap();
    let out = repo.run(&["clean", "images:metalk8s-utils"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !dir.exists(),
        "{} still exists after clean:\n{text}",
        dir.display()
    );
    assert!(
        text.lines()
            .any(|l| l == "removed _build/root/images/metalk8s-utils/1.0"),
        "{text}"
    );
    // The other images are untouched.
    assert!(repo
        .path()
        .join("_build/root/images/metalk8s-base/1.0/version")
        .is_file());
}

/// The phases a crash trial kills in, as `BUILDCHAIN_TEST_KILL_AT` points (see
/// `buildchain::testhook`): registry fetch, local image build, image directory, RPM build,
/// repodata, Salt, mastering.
const PHASES: &[&str] = &[
    "fetch",
    "store",
    "image-layer",
    "image-dir",
    "rpm",
    "repodata",
    "salt",
    "master",
    "write",
];

const ISO: &str = "dist/metalk8s-130.0.0-dev.iso";

/// A local `docker-registry` holding one image (3 MiB layer), and the inventory entry that pulls
/// it into the product.
struct Fixture {
    _registry: testkit::Server,
    _layouts: tempfile::TempDir,
    inventory_extra: String,
}

fn fixture() -> Fixture {
    let registry = testkit::start_docker_registry();
    let layouts = tempfile::tempdir().unwrap();
    let img = support::TestImage {
        layers: vec![
            support::layer(41, "payload.bin", 3 << 20),
            support::layer(42, "small.bin", 10_000),
        ],
        arch: "amd64",
        title: "trial".into(),
    };
    let l = support::layout_dir(layouts.path(), "trial");
    support::write_oci_layout(&l, &img, "1.0");
    let digest = support::push(&l, "1.0", &registry.host(), "trial/fetched", false);
    let inventory_extra = format!(
        "\n  - name: trial-fetched\n    tag: \"1.0\"\n    registry: {}/trial/fetched@{digest}\n",
        registry.host()
    );
    Fixture {
        _registry: registry,
        _layouts: layouts,
        inventory_extra,
    }
}

/// Relative path → (mode, sha256) of a tree.
type Listing = BTreeMap<PathBuf, (u32, String)>;

/// A complete build from nothing: (ISO sha256, `_build/root` listing, passes per kill point).
fn reference(fx: &Fixture) -> (String, Listing, BTreeMap<String, u64>) {
    let repo = Repo::with_inventory_extra(&fx.inventory_extra);
    let log = repo.path().join("points.log");
    let out = repo
        .cmd(&["iso"])
        .env("BUILDCHAIN_TEST_POINTS_LOG", &log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut counts = BTreeMap::new();
    for l in std::fs::read_to_string(&log).unwrap().lines() {
        *counts.entry(l.to_string()).or_insert(0u64) += 1;
    }
    for p in PHASES {
        assert!(
            counts.get(*p).copied().unwrap_or(0) > 0,
            "a clean build never passes the {p} point: {counts:?}"
        );
    }
    let iso = buildchain::fsutil::sha256_file(&repo.path().join(ISO)).unwrap();
    (iso, listing(&repo.path().join("_build/root")), counts)
}

/// The `(point, n, jobs)` of `trials` kills spread over every phase and over each phase's
/// passes; successive trials of a phase alternate `-j 1` and `-j 4` (other interleavings).
fn plan(trials: usize, counts: &BTreeMap<String, u64>) -> Vec<(String, u64, u32)> {
    let per_phase = trials.div_ceil(PHASES.len());
    let mut out = Vec::new();
    for k in 0..per_phase {
        for p in PHASES {
            if out.len() == trials {
                break;
            }
            let c = counts[*p];
            // Spread over 1..=c: first, last and evenly between.
            let n = if per_phase == 1 {
                c.div_ceil(2)
            } else {
                1 + (k as u64 * (c - 1)) / (per_phase as u64 - 1)
            };
            out.push((p.to_string(), n, if k % 2 == 0 { 1 } else { 4 }));
        }
    }
    out
}

/// Kills a fresh build at `point:n`, checks it died of SIGKILL before the ISO existed, reruns,
/// and compares with the reference. Returns a description of any difference.
fn trial(
    fx: &Fixture,
    (point, n, jobs): (&str, u64, u32),
    want_iso: &str,
    want_root: &Listing,
) -> Vec<String> {
    let repo = Repo::with_inventory_extra(&fx.inventory_extra);
    let out = repo
        .cmd(&["iso", "-j", &jobs.to_string()])
        .env("BUILDCHAIN_TEST_KILL_AT", format!("{point}:{n}"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{point}:{n}: the build was not killed: {out:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !repo.path().join(ISO).exists() && !stdout.contains(" tasks: "),
        "{point}:{n}: the build had finished before the kill:\n{stdout}"
    );
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with("STARTED ") || last.starts_with("SUCCESS "),
        "{point}:{n}: killed outside any task? last line {last:?}"
    );
    let rerun = repo.cmd(&["iso"]).output().unwrap();
    let mut diffs = Vec::new();
    if !rerun.status.success() {
        diffs.push(format!(
            "{point}:{n}: the rerun failed:\n{}{}",
            String::from_utf8_lossy(&rerun.stdout),
            String::from_utf8_lossy(&rerun.stderr)
        ));
        return diffs;
    }
    let iso = buildchain::fsutil::sha256_file(&repo.path().join(ISO)).unwrap();
    if iso != want_iso {
        diffs.push(format!(
            "{point}:{n}: ISO sha256 {iso}, clean build {want_iso}"
        ));
    }
    let root = listing(&repo.path().join("_build/root"));
    for (p, v) in &root {
        if want_root.get(p) != Some(v) {
            diffs.push(format!(
                "{point}:{n}: {:?} is {v:?}, in a clean build {:?}",
                p.display().to_string(),
                want_root.get(p)
            ));
        }
    }
    for p in want_root.keys() {
        if !root.contains_key(p) {
            diffs.push(format!("{point}:{n}: {} is missing", p.display()));
        }
    }
    for dir in ["_build", "dist"] {
        for e in walkdir::WalkDir::new(repo.path().join(dir)) {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with(".bctmp-") {
                diffs.push(format!("{point}:{n}: debris {}", e.path().display()));
            }
        }
    }
    // The store holds only sound blobs.
    let verify = Command::new(BIN)
        .args(["store", "verify"])
        .env("BUILDCHAIN_STORE", repo.store.path())
        .output()
        .unwrap();
    if !verify.status.success() {
        diffs.push(format!("{point}:{n}: store verify: {verify:?}"));
    }
    diffs
}

fn crash_trials(trials: usize) {
    // Under umask 077, so that a kill between creating a directory and fixing its mode would show
    // as a 0700 directory in the listing (the ISO tree must stay world-readable after a crash).
    // SAFETY: umask(2) only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let fx = fixture();
    let (iso, root, counts) = reference(&fx);
    let plan = plan(trials, &counts);
    let mut diffs = Vec::new();
    let mut hit: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (point, n, jobs) in &plan {
        diffs.extend(trial(&fx, (point, *n, *jobs), &iso, &root));
        hit.entry(point.clone()).or_default().push(*n);
    }
    let distinct: std::collections::BTreeSet<_> = plan.iter().collect();
    eprintln!(
        "crash trials: {} trials ({} distinct point:n:jobs), phases hit {hit:?} (passes per point in a clean build: {counts:?}), {} diffs",
        plan.len(),
        distinct.len(),
        diffs.len()
    );
    assert_eq!(hit.len(), PHASES.len(), "{hit:?}");
    assert!(diffs.is_empty(), "{diffs:#?}");
}

#[test]
fn kill_9_in_every_phase_then_rerun_equals_clean_build() {
    crash_trials(PHASES.len());
}

#[test]
#[ignore = "50 kill -9 trials; run with --ignored"]
fn kill_9_fifty_times_then_rerun_equals_clean_build() {
    crash_trials(50);
}
