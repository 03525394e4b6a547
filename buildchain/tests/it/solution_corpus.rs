//! A corpus of broken Solution ISOs, each built by the test from the example Solution; every one
//! must give its expected error code and exit 1.

use crate::solution_common;

use std::path::Path;
use std::process::Command;

use solution_common::*;

const VOL: &str = "Example Solution 1.0.0";

/// A layer blob path of `image` in `root`.
fn a_layer(root: &Path, image: &str) -> std::path::PathBuf {
    let dir = root.join(format!("images/{image}/1.0.0"));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let d = m["layers"][0]["digest"].as_str().unwrap();
    dir.join(d.trim_start_matches("sha256:"))
}

fn edit(p: &Path, f: impl Fn(String) -> String) {
    let t = std::fs::read_to_string(p).unwrap();
    let n = f(t.clone());
    assert_ne!(t, n, "edit of {} changed nothing", p.display());
    std::fs::write(p, n).unwrap();
}

fn expect(iso: &Path, code: &str) {
    let (exit, rep) = validate_cli(iso);
    let codes = error_codes(&rep);
    assert_eq!(
        exit,
        1,
        "{}: expected exit 1, report {rep:#}",
        iso.display()
    );
    assert!(
        codes.iter().any(|c| c == code),
        "{}: expected error {code}, got {codes:?}\n{rep:#}",
        iso.display()
    );
}

/// Each case: a mutation of a fresh tree, mastered by our writer.
#[test]
fn broken_trees_give_their_error() {
    type Mutate = fn(&Path);
    let cases: Vec<(&str, &str, Mutate)> = vec![
        ("manifest-missing", "MANIFEST_MISSING", |r| {
            std::fs::remove_file(r.join("manifest.yaml")).unwrap()
        }),
        ("manifest-not-yaml", "MANIFEST_INVALID", |r| {
            std::fs::write(r.join("manifest.yaml"), "kind: [Solution\n  : :\n").unwrap()
        }),
        ("manifest-wrong-kind", "MANIFEST_KIND", |r| {
            edit(&r.join("manifest.yaml"), |t| {
                t.replace("kind: Solution", "kind: Deployment")
            })
        }),
        ("manifest-wrong-api", "MANIFEST_API_VERSION", |r| {
            edit(&r.join("manifest.yaml"), |t| t.replace("v1alpha1", "v9"))
        }),
        ("bad-name", "MANIFEST_NAME_INVALID", |r| {
            edit(&r.join("manifest.yaml"), |t| {
                t.replace("name: example-solution\n", "name: Example_Solution-\n")
            })
        }),
        ("version-not-string", "MANIFEST_VERSION_INVALID", |r| {
            edit(&r.join("manifest.yaml"), |t| {
                t.replace("  version: \"1.0.0\"", "  version: 1.0")
            })
        }),
        ("operator-image-missing", "OPERATOR_IMAGE_MISSING", |r| {
            edit(&r.join("manifest.yaml"), |t| {
                t.replace("name: example-solution-operator", "name: other-operator")
            })
        }),
        ("image-missing", "IMAGE_MISSING", |r| {
            std::fs::remove_dir_all(r.join("images/base-server")).unwrap()
        }),
        ("blob-missing", "BLOB_MISSING", |r| {
            std::fs::remove_file(a_layer(r, "example-solution-operator")).unwrap()
        }),
        ("blob-corrupt", "BLOB_DIGEST_MISMATCH", |r| {
            let p = a_layer(r, "base-server");
            let mut b = std::fs::read(&p).unwrap();
            let i = b.len() / 2;
            b[i] ^= 0x55;
            std::fs::write(&p, b).unwrap();
        }),
        ("blob-wrong-size", "BLOB_SIZE_MISMATCH", |r| {
            let p = a_layer(r, "base-server");
            let mut b = std::fs::read(&p).unwrap();
            b.push(0);
            std::fs::write(&p, b).unwrap();
        }),
        ("role-with-deployment", "ROLE_FORBIDDEN_KIND", |r| {
            edit(&r.join("operator/deploy/role.yaml"), |t| {
                t + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: evil\n"
            })
        }),
        ("role-alias-bomb", "ROLE_INVALID", |r| {
            let mut t = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
            for i in 1..12 {
                t.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n", p = if i == 1 { String::new() } else { (i - 1).to_string() }));
            }
            t.push_str("kind: Role\n");
            std::fs::write(r.join("operator/deploy/role.yaml"), t).unwrap()
        }),
        ("role-missing", "ROLE_MISSING", |r| {
            std::fs::remove_file(r.join("operator/deploy/role.yaml")).unwrap()
        }),
        ("crd-not-a-crd", "CRD_NOT_A_CRD", |r| {
            std::fs::write(
                r.join("operator/deploy/crds/evil_crd.yaml"),
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
            )
            .unwrap()
        }),
        ("registry-config-missing", "REGISTRY_CONFIG_MISSING", |r| {
            std::fs::remove_file(r.join("registry-config.inc.j2")).unwrap()
        }),
        (
            "registry-config-incomplete",
            "REGISTRY_CONFIG_INCOMPLETE",
            |r| {
                edit(&r.join("registry-config.inc.j2"), |t| {
                    t.replace(
                        "/base-server/manifests/1.0.0\"",
                        "/base-server/manifests/0.0.1\"",
                    )
                })
            },
        ),
        ("symlink-outside", "SYMLINK_ESCAPES", |r| {
            std::os::unix::fs::symlink("../../../etc/passwd", r.join("images/passwd")).unwrap()
        }),
        ("symlink-absolute", "SYMLINK_ESCAPES", |r| {
            std::os::unix::fs::symlink("/etc/shadow", r.join("operator/shadow")).unwrap()
        }),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tree(tmp.path(), "1.0.0");
    for (name, code, mutate) in cases {
        let root = tmp.path().join(name);
        testkit::run_ok(Command::new("cp").arg("-a").arg(&pristine).arg(&root));
        mutate(&root);
        let iso = tmp.path().join(format!("{name}.iso"));
        master_ours(&root, &iso, VOL);
        expect(&iso, code);
    }
}

/// Cases on the image itself: version mismatch (volume id), truncation, MD5 mismatch (all
/// mastered by our writer), a FIFO (mastered by xorriso: our writer refuses FIFOs), a non-ISO
/// file.
#[test]
fn broken_images_give_their_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tree(tmp.path(), "1.0.0");
    let good = tmp.path().join("good.iso");
    master_ours(&root, &good, VOL);
    let (exit, rep) = validate_cli(&good);
    assert_eq!(exit, 0, "{rep:#}");

    let vm = tmp.path().join("version-mismatch.iso");
    master_ours(&root, &vm, "Example Solution 1.1.0");
    expect(&vm, "VERSION_MISMATCH");

    let bytes = std::fs::read(&good).unwrap();
    let tr = tmp.path().join("truncated.iso");
    std::fs::write(&tr, &bytes[..bytes.len() / 2]).unwrap();
    expect(&tr, "ISO_TRUNCATED");
    let tr2 = tmp.path().join("truncated-early.iso");
    std::fs::write(&tr2, &bytes[..40 * 1024]).unwrap();
    expect(&tr2, "ISO_UNREADABLE");

    // One byte flipped in the padding (hashed by isomd5sum, in no file).
    let mut b = bytes.clone();
    let at = b.len() - 100 * 2048;
    b[at] ^= 1;
    let md5 = tmp.path().join("md5-mismatch.iso");
    std::fs::write(&md5, &b).unwrap();
    expect(&md5, "MD5_MISMATCH");
    let (_, rep) = validate_cli(&md5);
    assert_eq!(error_codes(&rep), vec!["MD5_MISMATCH"], "{rep:#}");

    let fifo_root = tmp.path().join("fifo");
    testkit::run_ok(Command::new("cp").arg("-a").arg(&root).arg(&fifo_root));
    testkit::run_ok(Command::new("mkfifo").arg(fifo_root.join("pipe")));
    let fifo = tmp.path().join("fifo.iso");
    master_xorriso(&fifo_root, &fifo, VOL, &["-l"]);
    expect(&fifo, "SPECIAL_FILE");

    let junk = tmp.path().join("junk.iso");
    std::fs::write(&junk, testkit::pseudo_random_bytes(7, 100_000)).unwrap();
    expect(&junk, "ISO_UNREADABLE");

    // A missing file is reported, not a crash.
    expect(&tmp.path().join("absent.iso"), "ISO_UNREADABLE");
}
