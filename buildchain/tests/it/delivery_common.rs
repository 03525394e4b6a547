//! Helpers of the delivery tests (`plan`, `diff`, `delta`): a product checkout, the example
//! Solution ISOs, JSON and digest helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::solution_common;

pub const BIN: &str = env!("CARGO_BIN_EXE_buildchain");
pub const ISO: &str = "metalk8s-130.0.0-dev.iso";

pub struct Checkout {
    pub dir: tempfile::TempDir,
    pub store: tempfile::TempDir,
}

impl Checkout {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        testkit::copy_product_repo(dir.path());
        Checkout {
            dir,
            store: tempfile::tempdir().unwrap(),
        }
    }
    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--repo")
            .arg(self.dir.path())
            .arg("--no-progress")
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("BUILD_HOST", "ci")
            .env("BUILDCHAIN_STORE", self.store.path())
            .env_remove("BUILD_ROOT")
            .env_remove("PROJECT_NAME")
            .output()
            .unwrap()
    }
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn iso(&self) -> PathBuf {
        self.path().join("dist").join(ISO)
    }
}

pub fn run_ok(args: &[&Path]) -> Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

pub fn sha256(p: &Path) -> String {
    buildchain::fsutil::sha256_file(p).unwrap()
}

pub fn append(p: &Path, text: &str) {
    let mut s = std::fs::read_to_string(p).unwrap();
    s.push_str(text);
    std::fs::write(p, s).unwrap();
}

/// The example Solution's 1.0.0 and 1.1.0 ISOs, mastered with our writer.
pub fn solution_isos(tmp: &Path) -> (PathBuf, PathBuf) {
    let mut out = Vec::new();
    for v in ["1.0.0", "1.1.0"] {
        let root = solution_common::tree(tmp, v);
        let iso = tmp.join(format!("example-solution-{v}.iso"));
        solution_common::master_ours(&root, &iso, &format!("example-solution {v}"));
        out.push(iso);
    }
    (out[0].clone(), out[1].clone())
}

/// Digests (hex) of the config and layers of `images/<name>/<tag>/manifest.json` in `root`.
pub fn blobs(root: &Path, name: &str, tag: &str) -> Vec<(String, u64)> {
    let m: Value = serde_json::from_slice(
        &std::fs::read(root.join(format!("images/{name}/{tag}/manifest.json"))).unwrap(),
    )
    .unwrap();
    let mut v = vec![&m["config"]];
    v.extend(m["layers"].as_array().unwrap());
    v.iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap()[7..].to_string(),
                d["size"].as_u64().unwrap(),
            )
        })
        .collect()
}
