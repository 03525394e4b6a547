//! `buildchain iso master|check|ls|extract` (through `buildchain::cli::iso::run`, the function the
//! binary dispatches to), checked with the reference tools.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use buildchain::cli::iso::{check_iso, extract, run, IsoCommand};
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
        keep_modes: false,
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
    assert!(
        !dest.exists(),
        "a failed extraction left {}",
        dest.display()
    );

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
    let err = extract(&iso, &dest).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "cannot create symlink {}: File exists (os error 17)",
            dest.join("evil").display()
        )
    );
    assert!(!outside.join("payload").exists());
    assert!(fs::read_dir(&outside).unwrap().next().is_none());
    // Nothing partial: no destination (its files were extracted before the failure), no temp.
    assert!(
        !dest.exists(),
        "a failed extraction left {}",
        dest.display()
    );
    let debris: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".bctmp-"))
        .collect();
    assert!(debris.is_empty(), "{debris:?}");
}

#[test]
fn extract_refuses_a_non_empty_destination_and_fills_an_empty_one() {
    let (dir, src, iso) = setup();
    let dest = dir.path().join("full");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("mine"), b"keep").unwrap();
    let err = extract(&iso, &dest).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "refusing to extract into {}: it is not empty",
            dest.display()
        )
    );
    assert_eq!(fs::read(dest.join("mine")).unwrap(), b"keep");
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    extract(&iso, &empty).unwrap();
    assert_eq!(describe(&empty), describe(&src));
}

fn le32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// `iso check` text and exit code.
fn check(iso: &Path) -> (String, u8) {
    check_iso(iso).unwrap()
}

const FAIL: &str = "\nThe media check is complete, the result is: FAIL.\n\nIt is not recommended to use this media.\n";

#[test]
fn check_fails_on_a_truncated_image_that_checkisomd5_passes() {
    require_tool("checkisomd5");
    let (_dir, _src, iso) = setup();
    let (text, code) = check(&iso);
    assert_eq!(code, 0, "{text}");
    let len = fs::metadata(&iso).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&iso).unwrap();
    f.set_len(len - 1).unwrap();
    drop(f);
    // The reference tool does not see it: its MD5 skips the last 15 sectors by design.
    run_ok(Command::new("checkisomd5").arg(&iso));
    let (text, code) = check(&iso);
    assert_eq!(code, 1);
    assert_eq!(
        text,
        format!(
            "{}: truncated: the volume space size is {} sectors ({len} bytes) but the file has {} bytes (1 missing)\n{FAIL}",
            iso.display(),
            len / 2048,
            len - 1
        )
    );
    assert_eq!(run(&IsoCommand::Check { iso }).unwrap(), 1);
}

#[test]
fn check_reports_zero_volume_size_bad_path_table_and_joliet_root_out_of_range() {
    let (dir, _src, iso) = setup();
    let good = fs::read(&iso).unwrap();
    let pvd = 16 * 2048;
    let sectors = good.len() as u64 / 2048;
    let variant = |name: &str, f: &dyn Fn(&mut Vec<u8>)| -> (PathBuf, String, u8) {
        let mut b = good.clone();
        f(&mut b);
        let p = dir.path().join(name);
        fs::write(&p, &b).unwrap();
        let (t, c) = check(&p);
        (p, t, c)
    };
    // Volume space size 0 (both byte orders).
    let (p, text, code) = variant("zero.iso", &|b| b[pvd + 80..pvd + 88].fill(0));
    assert_eq!(code, 1);
    assert!(
        text.starts_with(&format!(
            "{}: the volume space size is 0 sectors\n",
            p.display()
        )),
        "{text}"
    );
    // The root record of the L path table points elsewhere.
    let l = le32_at(&good, pvd + 140) as usize * 2048;
    let root = le32_at(&good, pvd + 156 + 2);
    let (p, text, code) = variant("ptable.iso", &|b| {
        b[l + 2..l + 6].copy_from_slice(&(root + 1).to_le_bytes())
    });
    assert_eq!(code, 1);
    assert_eq!(
        text,
        format!(
            "{}: the L path table: record 1 (root) points to sector {}, but the root directory is at sector {root}\n{FAIL}",
            p.display(),
            root + 1,
        )
    );
    // The L path table location outside the volume.
    let (p, text, _) = variant("ptable-loc.iso", &|b| {
        b[pvd + 140..pvd + 144].copy_from_slice(&0x00ff_ffffu32.to_le_bytes())
    });
    let size = le32_at(&good, pvd + 132);
    assert_eq!(
        text,
        format!(
            "{}: the L path table (sector 16777215, {size} bytes) is outside the volume ({sectors} sectors)\n{FAIL}",
            p.display()
        )
    );
    // The Joliet root directory outside the volume.
    let svd = (17..32)
        .map(|i| i * 2048)
        .find(|&o| {
            good[o] == 2 && &good[o + 1..o + 6] == b"CD001" && &good[o + 88..o + 90] == b"%/"
        })
        .expect("a Joliet descriptor");
    let jlen = le32_at(&good, svd + 156 + 10);
    let (p, text, code) = variant("joliet.iso", &|b| {
        b[svd + 156 + 2..svd + 156 + 6].copy_from_slice(&0x0010_0000u32.to_le_bytes())
    });
    assert_eq!(code, 1);
    assert_eq!(
        text,
        format!(
            "{}: the Joliet root directory (sector 1048576, {jlen} bytes) is outside the volume ({sectors} sectors)\n{FAIL}",
            p.display()
        )
    );
}

#[test]
fn two_masters_are_byte_identical() {
    let (dir, src, iso) = setup();
    let again = dir.path().join("again.iso");
    assert_eq!(master(&src, &again), 0);
    assert!(fs::read(&iso).unwrap() == fs::read(&again).unwrap());
}

/// `(mode, uid/gid, name)` of every entry of `bsdtar -tvf iso` (symlinks excluded).
fn bsdtar_modes(iso: &Path) -> Vec<(String, String)> {
    let out = run_ok(Command::new("bsdtar").arg("-tvf").arg(iso));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut v: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.starts_with('l'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[8..].join(" "), format!("{} {} {}", f[0], f[2], f[3]))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn master_normalizes_modes_unless_keep_modes() {
    require_tool("bsdtar");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    let set = |rel: &str, mode: u32| {
        fs::set_permissions(src.join(rel), fs::Permissions::from_mode(mode)).unwrap()
    };
    fs::create_dir_all(src.join("private/sub")).unwrap();
    fs::write(src.join("private/sub/blob"), b"secret-ish blob\n").unwrap();
    fs::write(src.join("world-writable"), b"w\n").unwrap();
    fs::write(src.join("tool"), b"#!/bin/sh\n").unwrap();
    fs::write(src.join("setuid"), b"#!/bin/sh\n").unwrap();
    set("private/sub/blob", 0o600);
    set("private/sub", 0o700);
    set("private", 0o711);
    set("world-writable", 0o666);
    set("tool", 0o700);
    set("setuid", 0o4775);
    set(".", 0o750);
    let norm = dir.path().join("norm.iso");
    assert_eq!(master(&src, &norm), 0);
    let want = |rows: &[(&str, &str)]| -> Vec<(String, String)> {
        rows.iter()
            .map(|(n, m)| (n.to_string(), format!("{m} 0 0")))
            .collect()
    };
    assert_eq!(
        bsdtar_modes(&norm),
        want(&[
            (".", "drwxr-xr-x"),
            ("private", "drwxr-xr-x"),
            ("private/sub", "drwxr-xr-x"),
            ("private/sub/blob", "-rw-r--r--"),
            ("setuid", "-rwxr-xr-x"),
            ("tool", "-rwxr-xr-x"),
            ("world-writable", "-rw-r--r--"),
        ])
    );
    // The binary's flag keeps them verbatim.
    let kept = dir.path().join("kept.iso");
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_buildchain"))
            .args(["iso", "master", "--keep-modes", "--volid", "KEPT", "-o"])
            .arg(&kept)
            .arg(&src),
    );
    assert_eq!(
        bsdtar_modes(&kept),
        want(&[
            (".", "drwxr-x---"),
            ("private", "drwx--x--x"),
            ("private/sub", "drwx------"),
            ("private/sub/blob", "-rw-------"),
            ("setuid", "-rwsrwxr-x"),
            ("tool", "-rwx------"),
            ("world-writable", "-rw-rw-rw-"),
        ])
    );
}
