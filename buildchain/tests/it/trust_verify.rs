//! `buildchain verify` and the completeness gate, end to end on the product ISO: a scratch
//! checkout is built, its RPMs signed and its tree indexed (`CONTENTS.json` + a gpg detached
//! signature) with throwaway gpg keys, then re-mastered; every tampering must give a named
//! finding and exit 1, the clean medium exit 0.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");
const EPOCH: &str = "1700000000";

/// A throwaway gpg key in its own GNUPGHOME.
struct Key {
    home: PathBuf,
    public: PathBuf,
    secret: Vec<u8>,
}

fn gpg(home: &Path) -> Command {
    let mut c = Command::new(testkit::require_tool("gpg"));
    c.env("GNUPGHOME", home)
        .args(["--batch", "--passphrase", "", "--pinentry-mode", "loopback"]);
    c
}

fn make_key(dir: &Path, name: &str) -> Key {
    use std::os::unix::fs::PermissionsExt;
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    testkit::run_ok(gpg(&home).args([
        "--quick-gen-key",
        &format!("Test {name} <{name}@example.invalid>"),
        "ed25519",
        "sign",
        "never",
    ]));
    let public = dir.join(format!("{name}.pub.asc"));
    let out = testkit::run_ok(gpg(&home).args(["--armor", "--export"]));
    std::fs::write(&public, &out.stdout).unwrap();
    let secret = testkit::run_ok(gpg(&home).args(["--armor", "--export-secret-keys"])).stdout;
    Key {
        home,
        public,
        secret,
    }
}

/// Signs every RPM of `root` with `key` (deterministic timestamp) and rewrites its repodata.
fn sign_rpms(root: &Path, key: &Key, only: Option<&str>) {
    let signer = rpm::signature::pgp::Signer::from_asc_bytes(&key.secret).unwrap();
    let mut dirs = std::collections::BTreeSet::new();
    for e in walkdir::WalkDir::new(root.join("packages")) {
        let e = e.unwrap();
        let p = e.path();
        if p.extension().is_some_and(|x| x == "rpm")
            && only.is_none_or(|o| p.to_string_lossy().contains(o))
        {
            let mut pkg = rpm::Package::open(p).unwrap();
            pkg.clear_signatures().unwrap();
            pkg.sign_with_timestamp(&signer, 1_700_000_000u32).unwrap();
            pkg.write_file(p).unwrap();
            dirs.insert(p.parent().unwrap().to_path_buf());
        }
    }
    for d in dirs {
        let opts = buildchain::packaging::repodata::RepodataOptions {
            revision: 1_700_000_000,
            ..Default::default()
        };
        buildchain::packaging::repodata::write_repodata(&d, &opts).unwrap();
    }
}

/// Rewrites `SHA256SUMS`, `CONTENTS.json` and its signature by `key` (the D1 build order).
fn finalize(root: &Path, key: &Key) {
    let mut sums = String::new();
    let _ = std::fs::remove_file(root.join("CONTENTS.json"));
    let _ = std::fs::remove_file(root.join("CONTENTS.json.asc"));
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let rel = buildchain::tasks::rel_name(e.path(), root);
        if rel == "SHA256SUMS" {
            continue;
        }
        let hex = buildchain::fsutil::sha256_file(e.path()).unwrap();
        sums.push_str(&format!("{hex}  ./{rel}\n"));
    }
    std::fs::write(root.join("SHA256SUMS"), sums).unwrap();
    let index = buildchain::trust::index_reader::index_tree(root, Some(1_700_000_000)).unwrap();
    std::fs::write(root.join("CONTENTS.json"), index.to_json_bytes().unwrap()).unwrap();
    sign_index(root, key);
}

fn sign_index(root: &Path, key: &Key) {
    let asc = root.join("CONTENTS.json.asc");
    let _ = std::fs::remove_file(&asc);
    testkit::run_ok(
        gpg(&key.home)
            .args(["--armor", "--detach-sign", "--output"])
            .arg(&asc)
            .arg(root.join("CONTENTS.json")),
    );
}

fn master(root: &Path, iso: &Path) {
    buildchain::isofile::master_atomic(
        root,
        iso,
        "METALK8S 130.0.0-dev",
        true,
        1_700_000_000,
        None,
    )
    .unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    iso: PathBuf,
    a: Key,
    b: Key,
}

fn build_checkout(dir: &Path) -> std::process::Output {
    Command::new(BIN)
        .arg("--repo")
        .arg(dir)
        .arg("--no-progress")
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("BUILD_HOST", "ci")
        .env("BUILDCHAIN_STORE", dir.join(".store"))
        .env_remove("BUILD_ROOT")
        .env_remove("PROJECT_NAME")
        .output()
        .unwrap()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let checkout = dir.path().join("checkout");
        std::fs::create_dir_all(&checkout).unwrap();
        testkit::copy_product_repo(&checkout);
        let out = build_checkout(&checkout);
        assert!(
            out.status.success(),
            "build failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let root = dir.path().join("root");
        testkit::copy_tree(&checkout.join("_build/root"), &root);
        let a = make_key(dir.path(), "a");
        let b = make_key(dir.path(), "b");
        sign_rpms(&root, &a, None);
        finalize(&root, &a);
        let iso = dir.path().join("clean.iso");
        master(&root, &iso);
        Fixture {
            dir,
            root,
            iso,
            a,
            b,
        }
    })
}

/// Runs `buildchain verify` (JSON); returns the exit code and the findings as
/// (severity, code, path).
fn verify(path: &Path, key: Option<&Path>) -> (i32, Vec<(String, String, String)>, String) {
    let mut c = Command::new(BIN);
    c.arg("verify").arg(path).args(["--format", "json"]);
    if let Some(k) = key {
        c.arg("--key").arg(k);
    }
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_string(),
                f["code"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (out.status.code().unwrap_or(-1), f, text)
}

fn has(f: &[(String, String, String)], code: &str, path: &str) -> bool {
    f.iter()
        .any(|(s, c, p)| s == "error" && c == code && p == path)
}

/// A copy of the clean ISO under a new name.
fn copy_iso(name: &str) -> PathBuf {
    let f = fixture();
    let p = f.dir.path().join(name);
    std::fs::copy(&f.iso, &p).unwrap();
    p
}

/// Byte offset in the image of byte `at` of file `path`.
fn offset_of(iso: &Path, path: &str, at: u64) -> u64 {
    let f = std::fs::File::open(iso).unwrap();
    let mut r = iso9660_writer::IsoReader::open(f).unwrap();
    let e = r
        .find(path)
        .unwrap()
        .unwrap_or_else(|| panic!("{path} not in the ISO"));
    assert!(at < e.size, "{path} is {} bytes", e.size);
    e.extents[0].lba as u64 * 2048 + at
}

fn flip(iso: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(iso)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
}

fn rel_files(root: &Path, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| buildchain::tasks::rel_name(e.path(), root))
        .filter(|p| pred(p))
        .collect();
    v.sort();
    v
}

/// The largest layer of `pause` (tar+gzip blob, not the config).
fn a_layer() -> String {
    let f = fixture();
    let m: Value = serde_json::from_slice(
        &std::fs::read(f.root.join("images/pause/3.9/manifest.json")).unwrap(),
    )
    .unwrap();
    let d = m["layers"][0]["digest"].as_str().unwrap();
    format!("images/pause/3.9/{}", d.trim_start_matches("sha256:"))
}

#[test]
fn clean_iso_and_tree_pass() {
    let f = fixture();
    let (code, findings, text) = verify(&f.iso, Some(&f.a.public));
    assert_eq!(code, 0, "{text}");
    assert!(findings.is_empty(), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["md5"], "pass");
    assert_eq!(v["name"], "MetalK8s");
    // Without a key: consistent, with a warning that nobody vouched for it.
    let (code, findings, text) = verify(&f.iso, None);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        findings,
        vec![(
            "warning".to_string(),
            "INDEX_NOT_AUTHENTICATED".to_string(),
            "CONTENTS.json".to_string()
        )]
    );
    // The same tree as a directory.
    let (code, _, text) = verify(&f.root, Some(&f.a.public));
    assert_eq!(code, 0, "{text}");
    // gpg agrees with our signature check; rpm -K agrees the RPMs are signed.
    testkit::run_ok(
        gpg(&f.a.home)
            .arg("--verify")
            .arg(f.root.join("CONTENTS.json.asc"))
            .arg(f.root.join("CONTENTS.json")),
    );
    let rpmdb = f.dir.path().join("rpmdb-clean");
    std::fs::create_dir_all(&rpmdb).unwrap();
    testkit::run_ok(
        Command::new(testkit::require_tool("rpm"))
            .arg("--dbpath")
            .arg(&rpmdb)
            .arg("--import")
            .arg(&f.a.public),
    );
    for r in rel_files(&f.root, |p| p.ends_with(".rpm")) {
        let out = testkit::run_ok(
            Command::new("rpm")
                .arg("--dbpath")
                .arg(&rpmdb)
                .arg("-K")
                .arg(f.root.join(&r)),
        );
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.trim_end().ends_with("digests signatures OK"), "{s}");
    }
}

#[test]
fn one_byte_flipped_in_a_layer() {
    let f = fixture();
    let iso = copy_iso("layer.iso");
    let layer = a_layer();
    flip(&iso, offset_of(&iso, &layer, 100));
    let (code, findings, text) = verify(&iso, Some(&f.a.public));
    assert_eq!(code, 1, "{text}");
    assert!(has(&findings, "BLOB_DIGEST_MISMATCH", &layer), "{text}");
    assert!(has(&findings, "FILE_DIGEST_MISMATCH", &layer), "{text}");
    assert!(has(&findings, "MD5_MISMATCH", "/"), "{text}");
}

#[test]
fn one_byte_flipped_in_an_rpm() {
    let f = fixture();
    let iso = copy_iso("rpm.iso");
    let rpm = rel_files(&f.root, |p| {
        p.contains("metalk8s-sosreport") && p.ends_with(".rpm")
    })
    .pop()
    .unwrap();
    let size = std::fs::metadata(f.root.join(&rpm)).unwrap().len();
    flip(&iso, offset_of(&iso, &rpm, size - 20));
    let (code, findings, text) = verify(&iso, Some(&f.a.public));
    assert_eq!(code, 1, "{text}");
    assert!(has(&findings, "RPM_DIGEST_MISMATCH", &rpm), "{text}");
    assert!(has(&findings, "RPM_INDEX_MISMATCH", &rpm), "{text}");
    assert!(text.contains("payload has sha256"), "{text}");
}

#[test]
fn one_byte_flipped_in_the_index() {
    let f = fixture();
    let iso = copy_iso("index.iso");
    // Flip a hex digit of the first file digest: the JSON stays valid.
    let bytes = std::fs::read(f.root.join("CONTENTS.json")).unwrap();
    let at = String::from_utf8_lossy(&bytes)
        .find("\"sha256\": \"")
        .unwrap()
        + 11;
    flip(&iso, offset_of(&iso, "CONTENTS.json", at as u64));
    let (code, findings, text) = verify(&iso, Some(&f.a.public));
    assert_eq!(code, 1, "{text}");
    assert!(
        has(&findings, "INDEX_SIGNATURE_INVALID", "CONTENTS.json.asc"),
        "{text}"
    );
}

#[test]
fn a_file_swapped_for_another_of_the_same_size() {
    let f = fixture();
    let iso = copy_iso("swap.iso");
    let victim = "salt/metalk8s/archives/mounted.sls";
    let size = std::fs::metadata(f.root.join(victim)).unwrap().len() as usize;
    let mut other =
        b"{# replaced #}\nSkip integrity:\n  test.succeed_without_changes: []\n".to_vec();
    other.resize(size, b'\n');
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(&iso).unwrap();
    file.seek(SeekFrom::Start(offset_of(&iso, victim, 0)))
        .unwrap();
    file.write_all(&other).unwrap();
    drop(file);
    let (code, findings, text) = verify(&iso, Some(&f.a.public));
    assert_eq!(code, 1, "{text}");
    assert!(has(&findings, "FILE_DIGEST_MISMATCH", victim), "{text}");
    assert!(has(&findings, "SUMS_MISMATCH", victim), "{text}");
}

#[test]
fn a_signature_made_by_another_key() {
    let f = fixture();
    // The index signed by B, checked against A.
    let root = f.dir.path().join("root-other-key");
    testkit::copy_tree(&f.root, &root);
    sign_index(&root, &f.b);
    let iso = f.dir.path().join("other-key.iso");
    master(&root, &iso);
    let (code, findings, text) = verify(&iso, Some(&f.a.public));
    assert_eq!(code, 1, "{text}");
    assert!(
        has(&findings, "INDEX_SIGNATURE_INVALID", "CONTENTS.json.asc"),
        "{text}"
    );
    assert!(
        text.contains("does not verify with the given key"),
        "{text}"
    );
    // One RPM signed by B (index re-made and signed by A): that RPM is named.
    let root = f.dir.path().join("root-other-rpm-key");
    testkit::copy_tree(&f.root, &root);
    sign_rpms(&root, &f.b, Some("metalk8s-release"));
    finalize(&root, &f.a);
    let rpm = rel_files(&root, |p| {
        p.contains("metalk8s-release") && p.ends_with(".rpm")
    })
    .pop()
    .unwrap();
    let (code, findings, text) = verify(&root, Some(&f.a.public));
    assert_eq!(code, 1, "{text}");
    assert!(has(&findings, "RPM_SIGNATURE_INVALID", &rpm), "{text}");
    assert_eq!(
        findings.iter().filter(|x| x.0 == "error").count(),
        1,
        "{text}"
    );
}

#[test]
fn an_image_referenced_by_salt_but_not_shipped() {
    let f = fixture();
    // The build fails first, naming file and line.
    let dir = tempfile::tempdir().unwrap();
    let checkout = dir.path().join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    testkit::copy_product_repo(&checkout);
    let state = "salt/states/metalk8s/utils/init.sls";
    std::fs::create_dir_all(checkout.join("salt/states/metalk8s/utils")).unwrap();
    std::fs::write(
        checkout.join(state),
        "Run the utils pod:\n  file.managed:\n    - name: /etc/kubernetes/manifests/utils.yaml\n    - contents: |\n        spec:\n          containers:\n            - image: metalk8s-registry-from-config.invalid/metalk8s-130.0.0-dev/metalk8s-utils:1.0\n",
    )
    .unwrap();
    // Served: the build passes.
    let out = build_checkout(&checkout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Removed from the inventory: the gate names it, and nothing is mastered again.
    let inv = checkout.join("images/inventory.yaml");
    let text = std::fs::read_to_string(&inv).unwrap();
    let cut = text.find("  - name: metalk8s-utils").unwrap();
    std::fs::write(&inv, &text[..cut]).unwrap();
    let iso = checkout.join("dist/metalk8s-130.0.0-dev.iso");
    std::fs::remove_file(&iso).unwrap();
    let out = build_checkout(&checkout);
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("salt/metalk8s/utils/init.sls:7: image metalk8s-registry-from-config.invalid/metalk8s-130.0.0-dev/metalk8s-utils:1.0 is not served by the ISO's registry (salt/metalk8s/repo/files/metalk8s-registry.inc)"),
        "{err}"
    );
    assert!(!iso.exists(), "the ISO must not be mastered");
    // verify finds the same on a medium that ships it anyway (index re-made and signed).
    let root = f.dir.path().join("root-dangling");
    testkit::copy_tree(&checkout.join("_build/root"), &root);
    sign_rpms(&root, &f.a, None);
    finalize(&root, &f.a);
    let iso = f.dir.path().join("dangling.iso");
    master(&root, &iso);
    let (code, findings, text) = verify(&iso, Some(&f.a.public));
    assert_eq!(code, 1, "{text}");
    assert!(
        has(
            &findings,
            "IMAGE_NOT_SERVED",
            "salt/metalk8s/utils/init.sls"
        ),
        "{text}"
    );
    assert!(
        text.contains("salt/metalk8s/utils/init.sls:7: image"),
        "{text}"
    );
}

/// `solution validate --key`: the index signature and every file against the index, plus the
/// images the operator manifests reference.
#[test]
fn solution_validate_checks_index_signature_and_operator_images() {
    let f = fixture();
    let work = f.dir.path().join("solution");
    testkit::run_ok(
        Command::new(BIN)
            .args(["solution", "build"])
            .arg(testkit::workspace_root().join("solutions/example-solution"))
            .args(["--version", "1.0.0", "-o"])
            .arg(&work)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("BUILD_HOST", "ci")
            .env("BUILDCHAIN_STORE", work.join("store")),
    );
    let root = work.join("root");
    std::fs::create_dir_all(&root).unwrap();
    testkit::run_ok(
        Command::new(testkit::require_tool("bsdtar"))
            .arg("-xf")
            .arg(work.join("example-solution-1.0.0.iso"))
            .arg("-C")
            .arg(&root),
    );
    let index = buildchain::trust::index_reader::index_tree(&root, Some(1_700_000_000)).unwrap();
    std::fs::write(root.join("CONTENTS.json"), index.to_json_bytes().unwrap()).unwrap();
    sign_index(&root, &f.a);
    let validate = |p: &Path| {
        let out = Command::new(BIN)
            .args(["solution", "validate", "--format", "json", "--key"])
            .arg(&f.a.public)
            .arg(p)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let codes: Vec<(String, String)> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["severity"] == "error")
            .map(|x| {
                (
                    x["code"].as_str().unwrap().to_string(),
                    x["path"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (out.status.code().unwrap(), codes, v)
    };
    let iso = work.join("indexed.iso");
    buildchain::isofile::master_atomic(
        &root,
        &iso,
        "Example Solution 1.0.0",
        true,
        1_700_000_000,
        None,
    )
    .unwrap();
    let (code, errors, v) = validate(&iso);
    assert_eq!(code, 0, "{v:#}");
    assert!(errors.is_empty(), "{v:#}");
    // Signed by another key.
    sign_index(&root, &f.b);
    let (code, errors, v) = validate(&root);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(
        errors,
        vec![(
            "INDEX_SIGNATURE_INVALID".to_string(),
            "CONTENTS.json.asc".to_string()
        )]
    );
    sign_index(&root, &f.a);
    // A file changed after indexing, and an operator manifest naming an absent image.
    std::fs::write(
        root.join("operator/deploy/extra.yaml"),
        "spec:\n  template:\n    spec:\n      containers:\n        - image: \"{{ repository }}/not-shipped:1.0\"\n",
    )
    .unwrap();
    let (code, errors, v) = validate(&root);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(
        errors,
        vec![
            (
                "FILE_NOT_INDEXED".to_string(),
                "operator/deploy/extra.yaml".to_string()
            ),
            (
                "IMAGE_NOT_SERVED".to_string(),
                "operator/deploy/extra.yaml".to_string()
            ),
        ],
        "{v:#}"
    );
    assert!(v.to_string().contains(
        "operator/deploy/extra.yaml:5: image {{ repository }}/not-shipped:1.0 is not served by the Solution's images/"
    ));
}
