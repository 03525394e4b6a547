//! Shared fixtures of the iso9660-writer integration tests.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use iso9660_writer::{master, MasterOptions, MasterReport};

/// SOURCE_DATE_EPOCH used by the tests.
pub const EPOCH: i64 = 1_700_000_000;

/// A 64-hex-character name.
pub const HEX_NAME: &str = "3f1c2e9a7b8d4f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";

/// The 120-character name used in the fixture tree.
pub fn long_name() -> String {
    let mut s = String::from("a-very-long-file-name-");
    while s.len() < 116 {
        s.push('x');
    }
    s.push_str(".txt");
    assert_eq!(s.len(), 120);
    s
}

/// Builds the must-show test tree under `root` (≥ 1 MiB): nested dirs, 64-hex and 120-char
/// names, spaces and UTF-8, a symlink, two hard-linked files, an identical copy, an executable,
/// an empty file, `product.txt` and `manifest.yaml`.
pub fn make_tree(root: &Path) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    };
    w(
        "product.txt",
        b"NAME=MetalK8s\nVERSION=130.0.0-dev\nSHORT_VERSION=130.0\n",
    );
    w(
        "manifest.yaml",
        b"apiVersion: solutions.metalk8s.scality.com/v1alpha1\nkind: Solution\n",
    );
    let blob = testkit::pseudo_random_bytes(7, 1_300_000);
    w(&format!("images/etcd/3.5.9/{HEX_NAME}"), &blob);
    w(
        "images/etcd/3.5.9/manifest.json",
        b"{\"schemaVersion\": 2}\n",
    );
    w(
        "images/etcd/3.5.9/version",
        b"Directory Transport Version: 1.1\n",
    );
    w(
        &format!("deep/a/b/c/d/e/f/g/h/i/{}", long_name()),
        b"long name\n",
    );
    w("names/with space and ünïcødé – 日本.txt", b"utf8\n");
    w("names/UPPER.TXT", b"upper\n");
    w("names/upper.txt", b"lower\n");
    w(
        "names/same-prefix-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-1.tar.gz",
        b"1\n",
    );
    w(
        "names/same-prefix-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-2.tar.gz",
        b"2\n",
    );
    w("empty", b"");
    w("scripts/install.sh", b"#!/bin/sh\necho installing\n");
    fs::set_permissions(
        root.join("scripts/install.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let shared = testkit::pseudo_random_bytes(9, 300_000);
    w("links/original.bin", &shared);
    fs::hard_link(
        root.join("links/original.bin"),
        root.join("links/hardlink.bin"),
    )
    .unwrap();
    w("links/copy.bin", &shared);
    std::os::unix::fs::symlink("../product.txt", root.join("links/product-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("links/absolute-link")).unwrap();
}

/// Masters `src` into `out` with the test options.
pub fn master_to(src: &Path, out: &Path, implant: bool) -> MasterReport {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .unwrap();
    master(
        src,
        &mut f,
        &MasterOptions {
            volume_id: "MetalK8s 130.0.0-dev".into(),
            timestamp: EPOCH,
            implant_md5: implant,
            progress: None,
            keep_modes: false,
        },
    )
    .unwrap()
}

/// A fresh temp dir with the fixture tree under `src/` and its image at `test.iso`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub iso: PathBuf,
    pub report: MasterReport,
}

/// Builds the tree and masters it (MD5 implanted).
pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    let iso = dir.path().join("test.iso");
    let report = master_to(&src, &iso, true);
    Fixture {
        dir,
        src,
        iso,
        report,
    }
}

/// Sorted (relative path, kind+mode, symlink target or content sha) of every entry under `root`.
pub fn describe_tree(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let desc = if m.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.permissions().mode() & 0o7777)
            } else {
                use sha2::Digest;
                let data = fs::read(&p).unwrap();
                format!(
                    "file {:o} {}",
                    m.permissions().mode() & 0o7777,
                    hex::encode(sha2::Sha256::digest(&data))
                )
            };
            out.push((rel, desc));
        }
    }
    out.sort();
    out
}
