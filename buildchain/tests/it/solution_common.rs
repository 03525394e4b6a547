//! Helpers of the Solution tests: assemble the example Solution tree, master it with our writer or
//! xorriso, run `buildchain solution validate`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use buildchain::solution::build::{assemble, BuildInfo};
use buildchain::solution::definition::Definition;
use buildchain::store::Store;

/// Fixed build facts (reproducible).
pub fn info() -> BuildInfo {
    BuildInfo {
        epoch: 1_700_000_000,
        host: "test-host".into(),
        git_revision: "0123456789abcdef0123456789abcdef01234567".into(),
        signer: None,
    }
}

/// `solutions/example-solution` of this checkout.
pub fn example_dir() -> PathBuf {
    testkit::workspace_root()
        .join("solutions")
        .join("example-solution")
}

/// A store private to the test process.
pub fn store(tmp: &Path) -> Store {
    Store::open(tmp.join("store")).expect("store")
}

/// Assembles the example Solution `version` into `<tmp>/root-<version>` and returns it. Blobs are
/// copied (not hard-linked) so tests may corrupt them without touching the store.
pub fn tree(tmp: &Path, version: &str) -> PathBuf {
    let def = Definition::load(&example_dir()).expect("definition");
    let root = tmp.join(format!("root-{version}"));
    assemble(&def, &example_dir(), version, &root, &store(tmp), &info()).expect("assemble");
    unshare(&root);
    root
}

/// Replaces every file by a private copy (breaks hard links to the store).
pub fn unshare(root: &Path) {
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let b = std::fs::read(e.path()).unwrap();
            std::fs::remove_file(e.path()).unwrap();
            std::fs::write(e.path(), b).unwrap();
        }
    }
}

/// Masters `root` with our writer (MD5 implanted).
pub fn master_ours(root: &Path, iso: &Path, volume_id: &str) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(iso)
        .unwrap();
    let opts = iso9660_writer::MasterOptions {
        volume_id: volume_id.into(),
        timestamp: 1_700_000_000,
        implant_md5: true,
        progress: None,
        keep_modes: false,
    };
    iso9660_writer::master(root, &mut f, &opts).expect("master");
}

/// Masters `root` with `xorriso -as mkisofs -R -J` (no MD5).
pub fn master_xorriso(root: &Path, iso: &Path, volume_id: &str, extra: &[&str]) {
    testkit::require_tool("xorriso");
    testkit::run_ok(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-R", "-J", "-joliet-long", "-V"])
            .arg(volume_id)
            .args(extra)
            .arg("-o")
            .arg(iso)
            .arg(root)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
}

/// Runs `buildchain solution validate --format json`; returns (exit code, report JSON).
pub fn validate_cli(iso: &Path) -> (i32, serde_json::Value) {
    let out = testkit::run(
        Command::new(env!("CARGO_BIN_EXE_buildchain"))
            .args(["solution", "validate", "--format", "json"])
            .arg(iso),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "validate output is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// Codes of the error findings of a report.
pub fn error_codes(report: &serde_json::Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}
