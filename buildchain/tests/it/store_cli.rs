//! The blob store's hygiene (issue 15, item 2): temp files of killed fetches are swept when the
//! store is opened, and `buildchain store verify|du|gc` through the real binary.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use buildchain::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");

fn store_cmd(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("store")
        .args(args)
        .env("BUILDCHAIN_STORE", root)
        .output()
        .unwrap()
}

fn set_age(p: &Path, age: Duration) {
    let t = SystemTime::now() - age;
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(t).unwrap();
}

#[test]
fn old_temp_files_are_swept_when_the_store_is_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    Store::open(&root).unwrap();
    // Debris of a killed fetch two hours ago, and the temp file of a fetch running right now.
    let old = root.join("tmp/.partial-old");
    let old_dir = root.join("tmp/.tmpOLDDIR");
    let fresh = root.join("tmp/.partial-fresh");
    std::fs::write(&old, vec![0u8; 4096]).unwrap();
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::write(old_dir.join("blob"), b"x").unwrap();
    std::fs::write(&fresh, b"in flight").unwrap();
    // An old directory with a file written just now is in use.
    let busy_dir = root.join("tmp/.tmpBUSY");
    std::fs::create_dir_all(&busy_dir).unwrap();
    std::fs::write(busy_dir.join("layer"), b"being written").unwrap();
    std::fs::File::open(&busy_dir)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    set_age(&old, Duration::from_secs(2 * 3600));
    set_age(&old_dir.join("blob"), Duration::from_secs(2 * 3600));
    // A directory's age is its own mtime.
    let t = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::open(&old_dir)
        .unwrap()
        .set_modified(t)
        .unwrap();
    Store::open(&root).unwrap();
    assert!(!old.exists(), "an hour-old partial file survived");
    assert!(!old_dir.exists(), "an hour-old temp directory survived");
    assert!(fresh.is_file(), "a fresh temp file was removed");
    assert!(
        busy_dir.join("layer").is_file(),
        "a temp directory in use was removed"
    );
}

#[test]
fn failed_puts_leave_no_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let hex = "a".repeat(64);
    // Digest mismatch, size overflow, and a reader error halfway.
    assert!(store
        .put_verified(&hex, None, &mut &b"hello"[..], "blob")
        .is_err());
    assert!(store
        .put_verified(&hex, Some(2), &mut &b"hello"[..], "blob")
        .is_err());
    struct Failing(u32);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0 += 1;
            if self.0 > 3 {
                return Err(std::io::Error::other("connection reset"));
            }
            buf[0] = b'x';
            Ok(1)
        }
    }
    let err = store
        .put_verified(&hex, Some(100), &mut Failing(0), "image a:1")
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "image a:1: read error: connection reset"
    );
    let left: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn store_verify_reports_and_removes_bad_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let good = store.put_bytes(b"good blob").unwrap();
    let bad = store.put_bytes(b"bad blob").unwrap();
    std::fs::write(store.path(&bad), b"bit rot").unwrap();
    std::fs::write(root.join("blobs/sha256/not-a-digest"), b"?").unwrap();
    let out = store_cmd(&root, &["verify"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let got_bad = buildchain::fsutil::sha256_bytes(b"bit rot");
    assert_eq!(
        stdout,
        format!(
            "removed sha256:{bad}: content hashes to sha256:{got_bad}\n\
             removed not-a-digest: not a sha256 blob name\n\
             3 blobs checked, 2 bad (removed)\n"
        )
    );
    assert!(store.contains(&good));
    assert!(!store.path(&bad).exists());
    assert!(!root.join("blobs/sha256/not-a-digest").exists());
    let out = store_cmd(&root, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1 blobs checked, 0 bad\n"
    );
}

#[test]
fn store_du_and_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let linked = store.put_bytes(&[1u8; 1000]).unwrap();
    let unused = store.put_bytes(&[2u8; 500]).unwrap();
    std::fs::write(root.join("tmp/.partial-x"), [0u8; 300]).unwrap();
    // A build tree holds a hard link to one blob.
    store
        .link_to(&linked, &tmp.path().join("tree-blob"))
        .unwrap();
    let out = store_cmd(&root, &["du"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{}: 2 blobs, 1500 bytes; 1 temp files, 300 bytes\n",
            root.display()
        )
    );
    let out = store_cmd(&root, &["gc"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("removed sha256:{unused}\n1 blobs removed, 500 bytes freed\n")
    );
    assert!(store.contains(&linked) && !store.contains(&unused));
}
