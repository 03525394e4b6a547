//! Incremental re-master (`master_resuming`): after each edit, the image written by reusing the
//! previous one's stable prefix is byte-identical to a full master of the edited tree; edits
//! inside the prefix (a bulk file) fall back to a full master. The incremental results pass
//! `checkisomd5` and read back with `bsdtar` (a streaming reader: the directories must still
//! come before the files they list) and `isoinfo`.

mod common;

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::describe_tree;
use iso9660_writer::{master, master_resuming, MasterOptions, MasterReport, Previous, ResumeState};
use sha2::Digest;
use testkit::{pseudo_random_bytes, require_tool, run_ok};

fn opts() -> MasterOptions<'static> {
    MasterOptions {
        volume_id: "RESUME TEST".into(),
        timestamp: 1_700_000_000,
        implant_md5: true,
        progress: None,
        keep_modes: false,
    }
}

/// Bulk files (≥ 1 MiB; 33 MiB in all, so the volume size grain is 16 sectors) under `images/`,
/// small files under `salt/` and at the root.
fn make_tree(root: &Path) {
    for (i, (dir, size)) in [
        ("images/a/blobs", 32 << 20),
        ("images/b/blobs", (1 << 20) + 5),
    ]
    .into_iter()
    .enumerate()
    {
        fs::create_dir_all(root.join(dir)).unwrap();
        fs::write(
            root.join(dir).join("layer"),
            pseudo_random_bytes(i as u64 + 1, size),
        )
        .unwrap();
        fs::write(
            root.join(dir).join("manifest.json"),
            format!("{{\"n\":{i}}}"),
        )
        .unwrap();
    }
    for d in 0..4 {
        let dir = root.join(format!("salt/states/d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..12 {
            fs::write(
                dir.join(format!("f{f}.sls")),
                format!("state {d}/{f}\n").repeat(f + 1),
            )
            .unwrap();
        }
    }
    symlink("d0/f0.sls", root.join("salt/states/link.sls")).unwrap();
    fs::write(root.join("product.txt"), "NAME=test\n").unwrap();
}

/// A full master of `src` into memory (the `Image` API): its report and bytes.
fn full(src: &Path) -> (MasterReport, Vec<u8>) {
    let mut c = Cursor::new(Vec::new());
    let r = master(src, &mut c, &opts()).unwrap();
    (r, c.into_inner())
}

/// Masters `src` into `out`, reusing `prev` (image + state) when possible; returns the report
/// and the state bound to `out`.
fn step(
    src: &Path,
    out: &Path,
    prev: Option<(&Path, &ResumeState)>,
) -> (MasterReport, ResumeState) {
    let image = prev.map(|(p, _)| fs::File::open(p).unwrap());
    let previous = match (&image, prev) {
        (Some(image), Some((_, state))) => Some(Previous { image, state }),
        _ => None,
    };
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(out)
        .unwrap();
    let (report, state) = master_resuming(src, &mut f, &opts(), previous, &|_| {}).unwrap();
    drop(f);
    let state = state.expect("a state with implant_md5");
    (report, state.bind(&fs::metadata(out).unwrap()))
}

fn sha_of(p: &Path) -> String {
    hex::encode(sha2::Sha256::digest(fs::read(p).unwrap()))
}

struct Run {
    dir: tempfile::TempDir,
    src: PathBuf,
    n: usize,
    iso: PathBuf,
    state: ResumeState,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src);
        let iso = dir.path().join("0.iso");
        let (r, state) = step(&src, &iso, None);
        assert_eq!(r.reused_bytes, 0);
        let (fr, bytes) = full(&src);
        assert_eq!(
            fs::read(&iso).unwrap(),
            bytes,
            "first master differs from a full one"
        );
        assert_eq!(r.sha256_hex, fr.sha256_hex);
        Run {
            dir,
            src,
            n: 0,
            iso,
            state,
        }
    }

    /// Re-masters after an edit; asserts the result equals a full master; returns the bytes
    /// reused from the previous image.
    fn remaster(&mut self) -> u64 {
        self.n += 1;
        let iso = self.dir.path().join(format!("{}.iso", self.n));
        let (r, state) = step(&self.src, &iso, Some((&self.iso, &self.state)));
        let (fr, bytes) = full(&self.src);
        assert_eq!(
            r.sha256_hex, fr.sha256_hex,
            "step {}: incremental report differs from a full master",
            self.n
        );
        assert_eq!(sha_of(&iso), fr.sha256_hex, "step {}: image bytes", self.n);
        assert_eq!(fs::read(&iso).unwrap(), bytes);
        self.iso = iso;
        self.state = state;
        r.reused_bytes
    }
}

#[test]
fn incremental_remaster_is_byte_identical_to_a_full_master() {
    let mut run = Run::new();
    let prefix = run.state.prefix_bytes();
    assert!(
        prefix > (4 << 20),
        "the bulk files are in the prefix ({prefix})"
    );
    let salt = run.src.join("salt/states/d2/f3.sls");

    // One Salt file edited, same sector count: the whole prefix is reused.
    let mut t = fs::read(&salt).unwrap();
    t.extend_from_slice(b"# edited\n");
    fs::write(&salt, &t).unwrap();
    assert_eq!(run.remaster(), prefix);

    // The same file grown across a sector boundary (later small files move).
    fs::write(&salt, "x".repeat(5000)).unwrap();
    assert_eq!(run.remaster(), prefix);

    // A file added, then removed (the directory keeps its size: still reused).
    fs::write(run.src.join("salt/states/d1/new.sls"), "new: true\n").unwrap();
    assert_eq!(run.remaster(), prefix);
    fs::remove_file(run.src.join("salt/states/d1/new.sls")).unwrap();
    assert_eq!(run.remaster(), prefix);

    // A small file in a directory of the prefix (next to a bulk file): full master.
    fs::write(run.src.join("images/a/blobs/manifest.json"), "{\"n\":42}").unwrap();
    assert_eq!(run.remaster(), 0);
    // The state of that full master is reusable again.
    fs::write(&salt, "y\n").unwrap();
    assert_eq!(run.remaster(), prefix);

    // A bulk file edited (same size, new content): full master.
    let layer = run.src.join("images/b/blobs/layer");
    fs::write(&layer, pseudo_random_bytes(99, (1 << 20) + 5)).unwrap();
    assert_eq!(run.remaster(), 0);

    // A bulk file added under the Salt tree: its directory joins the prefix, full master.
    fs::write(
        run.src.join("salt/big.bin"),
        pseudo_random_bytes(7, 2 << 20),
    )
    .unwrap();
    assert_eq!(run.remaster(), 0);

    // The previous image touched after its state was recorded: not trusted, full master.
    fs::write(&salt, "z\n").unwrap();
    let mut b = fs::read(&run.iso).unwrap();
    b[40_000] ^= 1;
    fs::write(&run.iso, b).unwrap();
    assert_eq!(run.remaster(), 0);
}

#[test]
fn incremental_result_passes_checkisomd5_and_reads_back_with_bsdtar_and_isoinfo() {
    require_tool("checkisomd5");
    require_tool("bsdtar");
    require_tool("isoinfo");
    let mut run = Run::new();
    let salt = run.src.join("salt/states/d0/f7.sls");
    fs::write(&salt, "grown\n".repeat(700)).unwrap();
    assert!(run.remaster() > 0);
    let iso = run.iso.to_str().unwrap().to_string();

    let out = testkit::run(Command::new("checkisomd5").args(["--verbose", &iso]));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "checkisomd5 failed:\n{text}");
    assert!(text.contains("the result is: PASS"), "{text}");

    let x = run.dir.path().join("x");
    fs::create_dir(&x).unwrap();
    let out = run_ok(
        Command::new("bsdtar")
            .arg("-xf")
            .arg(&iso)
            .arg("-C")
            .arg(&x),
    );
    assert!(
        out.stderr.is_empty(),
        "bsdtar warnings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let strip_modes = |v: Vec<(String, String)>| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = v
            .into_iter()
            .map(|(p, d)| {
                let d = match d.split_once(' ') {
                    Some(("file", rest)) => {
                        format!("file {}", rest.split_once(' ').unwrap().1)
                    }
                    Some(("dir", _)) => "dir".to_string(),
                    _ => d,
                };
                (p, d)
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        strip_modes(describe_tree(&x)),
        strip_modes(describe_tree(&run.src))
    );

    let listing = String::from_utf8_lossy(
        &run_ok(Command::new("isoinfo").args(["-R", "-f", "-i", &iso])).stdout,
    )
    .into_owned();
    let mut lines: Vec<&str> = listing.lines().collect();
    lines.sort();
    assert!(lines.contains(&"/salt/states/d0/f7.sls"), "{listing}");
    assert!(lines.contains(&"/images/a/blobs/layer"), "{listing}");
    assert_eq!(lines.len(), describe_tree(&run.src).len(), "{listing}");
}
