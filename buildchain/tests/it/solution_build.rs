//! Building the example Solution: both versions build, validate clean, are byte-reproducible,
//! pass `checkisomd5`, expose `MANIFEST.YAML;1` to `isoinfo`, and PyYAML reads the manifest with
//! string versions; the same trees mastered by xorriso validate clean too.

use crate::solution_common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use solution_common::*;

const VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];

fn build_all(out: &Path, store: &Path) {
    testkit::run_ok(
        Command::new(env!("CARGO_BIN_EXE_buildchain"))
            .args(["solution", "build"])
            .arg(example_dir())
            .arg("-o")
            .arg(out)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("BUILD_HOST", "ci")
            .env("BUILDCHAIN_STORE", store),
    );
}

fn sha256(p: &Path) -> String {
    buildchain::fsutil::sha256_file(p).unwrap()
}

#[test]
fn example_versions_build_validate_and_reproduce() {
    for t in ["checkisomd5", "isoinfo", "sha256sum"] {
        testkit::require_tool(t);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    build_all(&a, &tmp.path().join("store-a"));
    build_all(&b, &tmp.path().join("store-b"));
    // SHA256SUM lists both ISOs and is right.
    let sums = std::fs::read_to_string(a.join("SHA256SUM")).unwrap();
    assert_eq!(sums.lines().count(), 2, "{sums}");
    testkit::run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg("SHA256SUM")
            .current_dir(&a),
    );
    for v in VERSIONS {
        let name = format!("example-solution-{v}.iso");
        let (ia, ib) = (a.join(&name), b.join(&name));
        assert!(ia.metadata().unwrap().len() > 1 << 20);
        assert_eq!(sha256(&ia), sha256(&ib), "{name} is not byte-reproducible");
        // Validates clean (no error, no warning).
        let (code, rep) = validate_cli(&ia);
        assert_eq!(code, 0, "{rep:#}");
        assert_eq!(rep["errors"], 0, "{rep:#}");
        assert_eq!(rep["warnings"], 0, "{rep:#}");
        assert_eq!(rep["md5"], "pass");
        assert_eq!(rep["volume_id"], format!("Example Solution {v}"));
        // Text output too.
        let out = testkit::run_ok(
            Command::new(env!("CARGO_BIN_EXE_buildchain"))
                .args(["solution", "validate"])
                .arg(&ia),
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("0 error(s), 0 warning(s)"));
        // checkisomd5.
        let out = testkit::run_ok(Command::new("checkisomd5").arg("--verbose").arg(&ia));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("PASS"), "{text}");
        // isoinfo reads the manifest by its primary name, as MetalK8s does.
        let out = testkit::run_ok(
            Command::new("isoinfo")
                .arg("-i")
                .arg(&ia)
                .args(["-x", "/MANIFEST.YAML;1"]),
        );
        let manifest = String::from_utf8(out.stdout).unwrap();
        assert!(manifest.contains("kind: Solution"), "{manifest}");
        // PyYAML (YAML 1.1) reads every scalar back as the string we meant.
        let mut py = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(format!(
                r#"
import sys, yaml
d = yaml.safe_load(sys.stdin)
assert d["apiVersion"] == "solutions.metalk8s.scality.com/v1alpha1", d
assert d["kind"] == "Solution"
assert d["metadata"]["name"] == "example-solution"
assert d["spec"]["version"] == "{v}" and isinstance(d["spec"]["version"], str), d
assert d["spec"]["operator"]["image"] == {{"name": "example-solution-operator", "tag": "{v}"}}, d
assert d["spec"]["images"] == ["base-server:{v}", "example-solution-operator:{v}"], d
a = d["metadata"]["annotations"]
p = "solutions.metalk8s.scality.com/"
assert a[p + "display-name"] == "Example Solution"
assert a[p + "build-timestamp"] == "2023-11-14T22:13:20Z"
assert a[p + "build-host"] == "ci"
assert a[p + "development-release"] == "0"
assert isinstance(a[p + "git-revision"], str)
assert d["metadata"]["labels"] == {{}}
for k, x in a.items():
    assert isinstance(x, str), (k, x)
print("ok")
"#
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 (python3-yaml) is required");
        py.stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let o = py.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "PyYAML check failed for {v}:\n{manifest}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn versions_share_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = |root: &Path, img: &str, v: &str| -> Vec<String> {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join(format!("images/{img}/{v}/manifest.json"))).unwrap(),
        )
        .unwrap();
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let r0 = tree(tmp.path(), "1.0.0");
    let r1 = tree(tmp.path(), "1.1.0");
    let base0 = layers(&r0, "base-server", "1.0.0");
    assert_eq!(base0, layers(&r1, "base-server", "1.1.0"));
    let (op0, op1) = (
        layers(&r0, "example-solution-operator", "1.0.0"),
        layers(&r1, "example-solution-operator", "1.1.0"),
    );
    assert_eq!(
        op0[..base0.len()],
        base0[..],
        "operator is built on base-server"
    );
    assert_eq!(op1[..base0.len()], base0[..]);
    assert_ne!(
        op0.last(),
        op1.last(),
        "the operator layer differs per version"
    );
    // role.yaml keeps only the Role of the RBAC sources (ServiceAccount, RoleBinding dropped).
    let role = std::fs::read_to_string(r0.join("operator/deploy/role.yaml")).unwrap();
    assert!(
        role.contains("kind: Role")
            && !role.contains("RoleBinding")
            && !role.contains("ServiceAccount"),
        "{role}"
    );
    assert!(r0
        .join("operator/deploy/crds/examples.solutions.example.com_crd.yaml")
        .is_file());
}

#[test]
fn xorriso_mastered_trees_validate_clean() {
    let tmp = tempfile::tempdir().unwrap();
    for v in VERSIONS {
        let root = tree(tmp.path(), v);
        let iso = tmp.path().join(format!("x-{v}.iso"));
        master_xorriso(&root, &iso, &format!("Example Solution {v}"), &[]);
        let (code, rep) = validate_cli(&iso);
        assert_eq!(code, 0, "{rep:#}");
        assert_eq!(rep["errors"], 0, "{rep:#}");
        // Plain `-R -J` gives the 8.3 primary name MANIFEST.YAM;1, which MetalK8s' isoinfo
        // lookup misses: a warning, not an error.
        assert_eq!(rep["warnings"], 1, "{rep:#}");
        assert_eq!(
            rep["findings"][0]["code"], "MANIFEST_PRIMARY_NAME",
            "{rep:#}"
        );
        // With full ISO-9660 names (as MetalK8s recommends) it is entirely clean.
        let iso = tmp.path().join(format!("xl-{v}.iso"));
        master_xorriso(&root, &iso, &format!("Example Solution {v}"), &["-l"]);
        let (code, rep) = validate_cli(&iso);
        assert_eq!(code, 0, "{rep:#}");
        assert_eq!(rep["errors"], 0, "{rep:#}");
        assert_eq!(rep["warnings"], 0, "{rep:#}");
        assert_eq!(rep["md5"], "not-implanted");
        assert_eq!(rep["stats"]["images"], 2);
        // The directory itself validates clean too (MetalK8s accepts directory archives).
        let (code, rep) = validate_cli(&root);
        assert_eq!(code, 0, "{rep:#}");
        assert_eq!(rep["errors"], 0, "{rep:#}");
    }
}

#[test]
fn genisoimage_mastered_tree_validates_clean() {
    let genisoimage = testkit::require_tool("genisoimage");
    let tmp = tempfile::tempdir().unwrap();
    let root = tree(tmp.path(), "1.1.0");
    let iso = tmp.path().join("g.iso");
    // The flags of the upstream Solution Makefile.
    testkit::run_ok(
        Command::new(genisoimage)
            .args(["-output"])
            .arg(&iso)
            .args([
                "-quiet",
                "-rock",
                "-joliet",
                "-joliet-long",
                "-full-iso9660-filenames",
                "-volid",
                "Example Solution 1.1.0",
                "--iso-level",
                "3",
                "-gid",
                "0",
                "-uid",
                "0",
                "-input-charset",
                "iso8859-1",
                "-output-charset",
                "iso8859-1",
            ])
            .arg(&root),
    );
    let (code, rep) = validate_cli(&iso);
    assert_eq!(code, 0, "{rep:#}");
    assert_eq!(rep["errors"], 0, "{rep:#}");
    assert_eq!(rep["warnings"], 0, "{rep:#}");
    // Then implantisomd5 on it: our check agrees.
    testkit::run_ok(Command::new(testkit::require_tool("implantisomd5")).arg(&iso));
    let (code, rep) = validate_cli(&iso);
    assert_eq!(code, 0, "{rep:#}");
    assert_eq!(rep["md5"], "pass", "{rep:#}");
}

#[test]
fn joliet_only_iso_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tree(tmp.path(), "1.0.0");
    let iso = tmp.path().join("j.iso");
    testkit::run_ok(
        // (xorriso always adds Rock Ridge; genisoimage only with -R.)
        Command::new(testkit::require_tool("genisoimage"))
            .args([
                "-quiet",
                "-J",
                "-joliet-long",
                "-l",
                "-V",
                "Example Solution 1.0.0",
                "-o",
            ])
            .arg(&iso)
            .arg(&root),
    );
    let (code, rep) = validate_cli(&iso);
    assert_eq!(code, 1, "{rep:#}");
    assert_eq!(error_codes(&rep), vec!["NO_ROCK_RIDGE"], "{rep:#}");
}

#[test]
fn shared_blobs_are_hashed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tree(tmp.path(), "1.0.0");
    // Re-link identical blobs (as `hardlink -c` does) so xorriso stores them once.
    let mut seen = std::collections::HashMap::<String, std::path::PathBuf>::new();
    for e in walkdir::WalkDir::new(root.join("images")).sort_by_file_name() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().to_string();
        if e.file_type().is_file() && n.len() == 64 {
            match seen.get(&n) {
                Some(first) => {
                    std::fs::remove_file(e.path()).unwrap();
                    std::fs::hard_link(first, e.path()).unwrap();
                }
                None => {
                    seen.insert(n, e.path().to_path_buf());
                }
            }
        }
    }
    let iso = tmp.path().join("x.iso");
    master_xorriso(&root, &iso, "Example Solution 1.0.0", &["-l"]);
    let (code, rep) = validate_cli(&iso);
    assert_eq!(code, 0, "{rep:#}");
    assert_eq!(rep["stats"]["blob_refs"], 7);
    assert_eq!(rep["stats"]["blobs_hashed"], seen.len() as u64, "{rep:#}");
}
