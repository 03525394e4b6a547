//! `buildchain iso master|check|ls|extract` (through `buildchain::cli::iso::run`, the function the
//! binary dispatches to), checked with the reference tools.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use buildchain::cli::iso::{extract, run, IsoCommand};
use testkit::{require_tool, run_ok};

fn make_tree(root: &Path) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    };
    w("product.txt", b"NAME=MetalK8s\nVERSION=130.0.0-dev\n");
    w(
        "images/blob.bin",
        &testkit::pseudo_random_bytes(11, 1_200_000),
    );
    w("salt/metalk8s/versions.json", b"{}\n");
    w("a file with spaces é.txt", b"x\n");
    w("empty", b"");
    w("install.sh", b"#!/bin/sh\n");
    fs::set_permissions(root.join("install.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("product.txt", root.join("product-link")).unwrap();
}

fn describe(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let desc = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.permissions().mode() & 0o7777)
            } else {
                format!(
                    "file {:o} {}",
                    m.permissions().mode() & 0o7777,
                    buildchain::fsutil::sha256_file(&p).unwrap()
                )
            };
            out.push((rel, desc));
        }
    }
    out.sort();
    out
}

fn master(src: &Path, out: &Path) -> u8 {
    run(&IsoCommand::Master {
        dir: src.to_path_buf(),
        output: out.to_path_buf(),
        volid: "MetalK8s 130.0.0-dev".into(),
        md5: true,
    })
    .unwrap()
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    let iso = dir.path().join("dist/metalk8s-130.0.0-dev.iso");
    assert_eq!(master(&src, &iso), 0);
    (dir, src, iso)
}

#[test]
fn master_leaves_only_the_iso_0644_and_check_passes_then_fails_on_a_flipped_byte() {
    require_tool("checkisomd5");
    let (_dir, _src, iso) = setup();
    // Only the ISO in dist/ (the temp file was renamed into place), mode 0644.
    let names: Vec<_> = fs::read_dir(iso.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![iso.file_name().unwrap().to_owned()]);
    assert_eq!(
        fs::metadata(&iso).unwrap().permissions().mode() & 0o777,
        0o644
    );
    run_ok(Command::new("checkisomd5").arg("--verbose").arg(&iso));
    assert_eq!(run(&IsoCommand::Check { iso: iso.clone() }).unwrap(), 0);
    assert_eq!(run(&IsoCommand::Ls { iso: iso.clone() }).unwrap(), 0);

    let mut bytes = fs::read(&iso).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x80;
    fs::write(&iso, &bytes).unwrap();
    assert_eq!(run(&IsoCommand::Check { iso: iso.clone() }).unwrap(), 1);
    assert!(!Command::new("checkisomd5")
        .arg(&iso)
        .status()
        .unwrap()
        .success());
}

#[test]
fn extract_round_trips_the_tree() {
    let (dir, src, iso) = setup();
    let out = dir.path().join("out");
    assert_eq!(
        run(&IsoCommand::Extract {
            iso: iso.clone(),
            dest: out.clone()
        })
        .unwrap(),
        0
    );
    assert_eq!(describe(&out), describe(&src));
    // Extracting twice into the same place refuses to overwrite.
    assert!(extract(&iso, &out).is_err());
}

/// Replaces the first occurrence of `from` by `to` (same length) in the image.
fn patch(iso: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut b = fs::read(iso).unwrap();
    let at = b
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern in image");
    b[at..at + to.len()].copy_from_slice(to);
    fs::write(iso, b).unwrap();
}

#[test]
fn extract_refuses_path_traversal_and_writing_through_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();

    // 1. A Rock Ridge name rewritten to "..": refused, nothing written anywhere.
    let src = dir.path().join("t1");
    fs::create_dir_all(src.join("zz")).unwrap();
    fs::write(src.join("zz/payload"), b"evil").unwrap();
    let iso = dir.path().join("t1.iso");
    assert_eq!(master(&src, &iso), 0);
    // NM entry of "zz": 'N' 'M' len=7 version=1 flags=0 'z' 'z'.
    patch(&iso, b"NM\x07\x01\x00zz", b"NM\x07\x01\x00..");
    let dest = dir.path().join("d1");
    let err = extract(&iso, &dest).unwrap_err();
    assert!(format!("{err:#}").contains("invalid name"), "{err:#}");
    assert!(!dir.path().join("payload").exists());

    // 2. A directory renamed to the name of a symlink pointing outside: the files under it are
    // written into a real directory and the symlink is refused (never followed).
    let src = dir.path().join("t2");
    fs::create_dir_all(src.join("evim")).unwrap();
    fs::write(src.join("evim/payload"), b"evil").unwrap();
    std::os::unix::fs::symlink(&outside, src.join("evil")).unwrap();
    let iso = dir.path().join("t2.iso");
    assert_eq!(master(&src, &iso), 0);
    patch(&iso, b"NM\x09\x01\x00evim", b"NM\x09\x01\x00evil");
    let dest = dir.path().join("d2");
    assert!(extract(&iso, &dest).is_err());
    assert!(!outside.join("payload").exists());
    assert!(fs::read_dir(&outside).unwrap().next().is_none());
}

#[test]
fn two_masters_are_byte_identical() {
    let (dir, src, iso) = setup();
    let again = dir.path().join("again.iso");
    assert_eq!(master(&src, &again), 0);
    assert!(fs::read(&iso).unwrap() == fs::read(&again).unwrap());
}
