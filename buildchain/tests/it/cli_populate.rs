//! `populate_iso` through the real binary on a copy of the repository: no-op runs, targeted
//! re-runs, version bumps, removed files, and crash consistency after `kill -9`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");

/// A scratch copy of the repository content the build reads.
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
    fn root(&self) -> PathBuf {
        self.path().join("_build/root")
    }
}

fn lines_with(out: &Output, prefix: &str) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .collect()
}

/// path → (mtime, mode, content hash) of every file under `root`.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (std::time::SystemTime, u32, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let meta = e.metadata().unwrap();
            m.insert(
                e.path().strip_prefix(root).unwrap().to_path_buf(),
                (
                    meta.modified().unwrap(),
                    meta.permissions().mode(),
                    buildchain::fsutil::sha256_file(e.path()).unwrap(),
                ),
            );
        }
    }
    m
}

fn contents(root: &Path) -> BTreeMap<PathBuf, (u32, String)> {
    snapshot(root)
        .into_iter()
        .map(|(p, (_, mode, h))| (p, (mode, h)))
        .collect()
}

#[test]
fn list_shows_public_tasks_and_subtasks() {
    let repo = Repo::new();
    let out = repo.run(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for t in ["iso", "populate_iso", "images", "packaging", "salt_tree"] {
        assert!(
            text.lines().any(|l| l.split_whitespace().next() == Some(t)),
            "{t} in:\n{text}"
        );
    }
    assert!(!text.contains("salt_tree:"), "{text}");
    let out = repo.run(&["list", "--all"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("salt_tree:salt/top.sls"), "{text}");
    assert!(text.contains("populate_iso:product.txt"), "{text}");
}

#[test]
fn noop_rerun_skips_everything_and_rewrites_nothing() {
    let repo = Repo::new();
    repo.run(&["populate_iso"]);
    let before = snapshot(&repo.root());
    assert!(before.contains_key(Path::new("product.txt")));
    assert!(before.contains_key(Path::new("salt/metalk8s/versions.json")));
    assert!(before.contains_key(Path::new("SHA256SUMS")));
    let out = repo.run(&["populate_iso"]);
    let ran = lines_with(&out, "STARTED");
    assert!(ran.is_empty(), "second run ran {ran:?}");
    let skipped = lines_with(&out, "SKIPPED");
    assert!(skipped.len() > 5, "{skipped:?}");
    assert!(lines_with(&out, "SUCCESS").is_empty());
    assert_eq!(
        before,
        snapshot(&repo.root()),
        "files rewritten by a no-op run"
    );
    // JSON reporter and the build log.
    let out = repo.run(&["populate_iso", "--reporter", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert!(repo.path().join("_build/build.log").is_file());
    // SHA256SUMS lists every other file, `sha256sum -c` style.
    let sums = std::fs::read_to_string(repo.root().join("SHA256SUMS")).unwrap();
    assert!(
        sums.lines().any(|l| l.ends_with("  ./product.txt")),
        "{sums}"
    );
    assert!(!sums.contains("SHA256SUMS"));
    let check = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(repo.root())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn editing_one_salt_file_reruns_only_its_dependents() {
    let repo = Repo::new();
    repo.run(&["populate_iso"]);
    let src = repo
        .path()
        .join("salt/states/metalk8s/archives/mounted.sls");
    let mut text = std::fs::read_to_string(&src).unwrap();
    text.push_str("# edited\n");
    std::fs::write(&src, text).unwrap();
    let task = "salt_tree:salt/metalk8s/archives/mounted.sls";
    let info = repo.run(&["info", task]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("stale"), "{info}");
    assert!(
        info.contains("changed file salt/states/metalk8s/archives/mounted.sls"),
        "{info}"
    );
    let out = repo.run(&["populate_iso"]);
    let mut ran = lines_with(&out, "STARTED");
    ran.sort();
    // The completeness gate reads every Salt file, so it re-checks them too.
    assert_eq!(
        ran,
        vec![
            "completeness".to_string(),
            "populate_iso:CONTENTS.json".to_string(),
            "populate_iso:SHA256SUMS".to_string(),
            task.to_string()
        ]
    );
    let deployed =
        std::fs::read_to_string(repo.root().join("salt/metalk8s/archives/mounted.sls")).unwrap();
    assert!(deployed.ends_with("# edited\n"));
    let info = repo.run(&["info", task]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("up-to-date"));
}

#[test]
fn version_bump_changes_templated_files_only() {
    let repo = Repo::new();
    repo.run(&["populate_iso"]);
    let before = snapshot(&repo.root());
    std::fs::write(
        repo.path().join("VERSION"),
        "VERSION_MAJOR=130\nVERSION_MINOR=1\nVERSION_PATCH=0\nVERSION_SUFFIX=\n",
    )
    .unwrap();
    let out = repo.run(&["populate_iso"]);
    let ran = lines_with(&out, "STARTED");
    let after = snapshot(&repo.root());
    let product = std::fs::read_to_string(repo.root().join("product.txt")).unwrap();
    assert!(
        product.contains("VERSION=130.1.0\n") && product.contains("DEVELOPMENT_RELEASE=0\n"),
        "{product}"
    );
    assert!(
        std::fs::read_to_string(repo.root().join("salt/metalk8s/versions.json"))
            .unwrap()
            .contains("130.1.0")
    );
    assert!(std::fs::read_to_string(repo.root().join("salt/top.sls"))
        .unwrap()
        .contains("130.1.0"));
    assert!(std::fs::read_to_string(repo.root().join("bootstrap.sh"))
        .unwrap()
        .contains("VERSION=130.1.0"));
    // Plain copies were not touched.
    for plain in [
        "salt/metalk8s/archives/mounted.sls",
        "pillar/metalk8s/roles/minion.sls",
    ] {
        assert_eq!(
            before[Path::new(plain)],
            after[Path::new(plain)],
            "{plain} rewritten"
        );
        assert!(
            !ran.iter().any(|r| r.ends_with(plain)),
            "{plain} re-ran: {ran:?}"
        );
    }
    // Every Salt task that re-ran depends on the version: a template (`*.in`, rendered with the
    // version) or a generated file whose new content holds it.
    for r in &ran {
        let Some(dest) = r.strip_prefix("salt_tree:") else {
            continue;
        };
        let generated = [
            "salt/metalk8s/versions.json",
            "salt/metalk8s/repo/files/metalk8s-registry.inc",
        ];
        if generated.contains(&dest) {
            let text = std::fs::read_to_string(repo.root().join(dest)).unwrap();
            assert!(text.contains("130.1.0"), "{dest}:\n{text}");
            continue;
        }
        let template = match dest.split_once('/') {
            Some(("salt", rest)) => repo.path().join("salt/states").join(format!("{rest}.in")),
            Some(("pillar", rest)) => repo.path().join("salt/pillar").join(format!("{rest}.in")),
            _ => panic!("unexpected Salt task {r}"),
        };
        assert!(template.is_file(), "{r} re-ran but is not a template");
    }
    // Every Salt file whose content changed now says the new version.
    for (p, (_, _, hash)) in &after {
        let salt = p.starts_with("salt") || p.starts_with("pillar");
        if salt && before.get(p).map(|b| &b.2) != Some(hash) {
            let text = std::fs::read_to_string(repo.root().join(p)).unwrap();
            assert!(text.contains("130.1"), "{} changed:\n{text}", p.display());
        }
    }
}

#[test]
fn removed_salt_file_disappears_from_the_tree() {
    let repo = Repo::new();
    repo.run(&["populate_iso"]);
    assert!(repo
        .root()
        .join("pillar/metalk8s/roles/minion.sls")
        .exists());
    std::fs::remove_file(repo.path().join("salt/pillar/metalk8s/roles/minion.sls")).unwrap();
    let out = repo.run(&["populate_iso"]);
    assert!(!repo
        .root()
        .join("pillar/metalk8s/roles/minion.sls")
        .exists());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("pruned stale output _build/root/pillar/metalk8s/roles/minion.sls"));
    let sums = std::fs::read_to_string(repo.root().join("SHA256SUMS")).unwrap();
    assert!(!sums.contains("minion.sls"));
    // A new file ships without any list to update.
    std::fs::write(repo.path().join("salt/states/new.sls"), "new: true\n").unwrap();
    repo.run(&["populate_iso"]);
    assert!(repo.root().join("salt/new.sls").exists());
}

#[test]
fn clean_removes_outputs_and_the_build_root() {
    let repo = Repo::new();
    repo.run(&["populate_iso"]);
    let out = repo.run(&["clean", "salt_tree:*", "-n"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("would remove _build/root/salt/top.sls"));
    assert!(repo.root().join("salt/top.sls").exists());
    repo.run(&["clean", "salt_tree:salt/top.sls"]);
    assert!(!repo.root().join("salt/top.sls").exists());
    repo.run(&["clean"]);
    assert!(!repo.path().join("_build").exists());
}

#[test]
fn usage_errors_exit_2() {
    let repo = Repo::new();
    let out = repo.cmd(&["no_such_task"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task matches"));
    std::fs::write(
        repo.path().join("VERSION"),
        "VERSION_MAJOR=1\nVERSION_MINOR=x\n",
    )
    .unwrap();
    let out = repo.cmd(&["list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("VERSION:2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The run died of SIGKILL before it finished: no summary line, no `SHA256SUMS` (the last
/// output of `populate_iso`).
fn assert_unfinished_kill(status: std::process::ExitStatus, lines: &[String], repo: &Repo) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the run was not killed by SIGKILL: {status:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(" tasks: ")),
        "the run had finished: {lines:?}"
    );
    assert!(
        !repo.root().join("SHA256SUMS").exists(),
        "the run had finished (SHA256SUMS written)"
    );
}

#[test]
fn kill_9_mid_run_then_rerun_equals_clean_run() {
    let repo = Repo::new();
    // Enough work that the kill lands mid-run.
    let bulk = repo.path().join("salt/states/bulk");
    for i in 0..1500 {
        let d = bulk.join(format!("d{}", i % 30));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("f{i}.sls")),
            format!("value: {i}\n").repeat(200),
        )
        .unwrap();
    }
    // 1. An external kill -9 between tasks, once 200 have succeeded.
    let mut child = repo
        .cmd(&["populate_iso", "-j", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().unwrap();
        let mut reader = std::io::BufReader::new(stdout);
        let mut done = 0;
        let mut line = String::new();
        while done < 200 && reader.read_line(&mut line).unwrap() > 0 {
            if line.starts_with("SUCCESS") {
                done += 1;
            }
            lines.push(std::mem::take(&mut line));
        }
        assert_eq!(done, 200, "the run ended before it could be killed");
        // SAFETY: kill(2) on our child, which has not been waited for (its pid is still ours).
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        // Whatever it printed up to its death.
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
        lines.extend(rest.lines().map(str::to_string));
    }
    let status = child.wait().unwrap();
    assert_unfinished_kill(status, &lines, &repo);
    // 2. A rerun killed inside a task: right after a Salt file was written, before the task was
    // journaled (test-only crash point).
    let out = repo
        .cmd(&["populate_iso", "-j", "1"])
        .env("BUILDCHAIN_TEST_KILL_AT", "salt:100")
        .output()
        .unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_unfinished_kill(out.status, &lines, &repo);
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("STARTED  salt_tree:")),
        "not killed inside a Salt task: {:?}",
        lines.last()
    );
    repo.run(&["populate_iso"]);
    let resumed = contents(&repo.root());
    // Reference: a clean run into another build root.
    let clean_root = repo.path().join("_clean");
    let out = repo
        .cmd(&["populate_iso", "--build-root"])
        .arg(&clean_root)
        .output()
        .unwrap();
    assert!(out.status.success());
    let clean = contents(&clean_root.join("root"));
    assert_eq!(resumed.len(), clean.len());
    assert_eq!(
        resumed, clean,
        "tree after kill -9 + rerun differs from a clean run"
    );
    // And no temp debris anywhere.
    for e in walkdir::WalkDir::new(repo.path().join("_build")) {
        let e = e.unwrap();
        assert!(
            !e.file_name().to_string_lossy().starts_with(".bctmp-"),
            "{}",
            e.path().display()
        );
    }
}

#[test]
fn settings_come_from_flags_then_env_then_dotenv() {
    let repo = Repo::new();
    std::fs::write(
        repo.path().join(".env"),
        "# local settings\nPROJECT_NAME=FromDotenv\nBUILD_ROOT=out\n",
    )
    .unwrap();
    repo.run(&["salt_tree"]);
    let top = std::fs::read_to_string(repo.path().join("out/root/salt/top.sls")).unwrap();
    assert!(top.contains("FromDotenv 130.0.0-dev"), "{top}");
    let out = repo
        .cmd(&["populate_iso:product.txt"])
        .env("PROJECT_NAME", "FromEnv")
        .output()
        .unwrap();
    assert!(out.status.success());
    let p = std::fs::read_to_string(repo.path().join("out/root/product.txt")).unwrap();
    assert!(p.starts_with("NAME=FromEnv\n"), "{p}");
    let out = repo
        .cmd(&["--project-name", "FromFlag", "populate_iso:product.txt"])
        .env("PROJECT_NAME", "FromEnv")
        .output()
        .unwrap();
    assert!(out.status.success());
    let p = std::fs::read_to_string(repo.path().join("out/root/product.txt")).unwrap();
    assert!(p.starts_with("NAME=FromFlag\n"), "{p}");
    std::fs::write(
        repo.path().join(".env"),
        "PROJECT_NAME=ok\nthis is not a setting\n",
    )
    .unwrap();
    let out = repo.cmd(&["list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(".env:2:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn solutions_task_builds_every_version_incrementally() {
    let repo = Repo::new();
    repo.run(&["solutions"]);
    let out = repo.path().join("dist/solutions");
    for v in ["1.0.0", "1.1.0"] {
        let iso = out.join(format!("example-solution-{v}.iso"));
        let check = Command::new(BIN)
            .args(["solution", "validate"])
            .arg(&iso)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUM"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(sums.status.success());
    let again = repo.run(&["solutions"]);
    assert!(lines_with(&again, "STARTED").is_empty());
}
