//! `buildchain iso ls` lists what the image holds (issue 15, item 19: its output was never
//! checked): every entry of the source tree, with its mode and size, and the same paths as an
//! independent reader (libarchive's bsdtar) sees.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");

/// `-rwxr-xr-x` style, as `ls -l` prints it.
fn mode_string(dir: bool, mode: u32) -> String {
    let mut s = String::from(if dir { "d" } else { "-" });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn expected(root: &Path) -> BTreeSet<(String, u64, String)> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let size = if m.is_dir() { 0 } else { m.len() };
            (
                mode_string(m.is_dir(), m.permissions().mode() & 0o777),
                size,
                rel,
            )
        })
        .collect()
}

#[test]
fn iso_ls_lists_every_entry_with_mode_and_size() {
    let bsdtar = testkit::require_tool("bsdtar");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("salt/metalk8s")).unwrap();
    std::fs::create_dir_all(root.join("images/pause/3.9")).unwrap();
    let files: [(&str, usize, u32); 5] = [
        ("product.txt", 134, 0o644),
        ("bootstrap.sh", 573, 0o755),
        ("salt/top.sls", 0, 0o644),
        ("salt/metalk8s/versions.json", 4100, 0o644),
        ("images/pause/3.9/manifest.json", 70_000, 0o600),
    ];
    for (i, (p, size, mode)) in files.iter().enumerate() {
        let f = root.join(p);
        std::fs::write(&f, testkit::pseudo_random_bytes(i as u64, *size)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let iso = tmp.path().join("t.iso");
    testkit::run_ok(
        Command::new(BIN)
            .args(["iso", "master"])
            .arg(&root)
            .arg("-o")
            .arg(&iso)
            // Source modes verbatim (0600 included), so the listing shows each file's own mode.
            .args(["--volid", "LS TEST", "--keep-modes"]),
    );
    let out = testkit::run_ok(Command::new(BIN).args(["iso", "ls"]).arg(&iso));
    let text = String::from_utf8(out.stdout).unwrap();
    let listed: Vec<(String, u64, String)> = text
        .lines()
        .map(|l| {
            let mut it = l.split_whitespace();
            let mode = it.next().unwrap().to_string();
            let size = it.next().unwrap().parse().unwrap();
            let path = it.collect::<Vec<_>>().join(" ");
            (mode, size, path)
        })
        .collect();
    let listed_set: BTreeSet<_> = listed.iter().cloned().collect();
    assert_eq!(listed.len(), listed_set.len(), "duplicates:\n{text}");
    assert_eq!(listed_set, expected(&root), "{text}");

    // The same paths as an independent reader.
    let out = testkit::run_ok(Command::new(bsdtar).arg("-tf").arg(&iso));
    let theirs: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != ".")
        .collect();
    let ours: BTreeSet<String> = listed.into_iter().map(|(_, _, p)| p).collect();
    assert_eq!(ours, theirs);
}
