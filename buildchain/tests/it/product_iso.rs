//! End to end: `buildchain iso` (what `cargo xtask` runs) on scratch checkouts of this
//! repository, checked with the tools the users' world uses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");
const ISO: &str = "metalk8s-130.0.0-dev.iso";

struct Checkout {
    dir: tempfile::TempDir,
    store: tempfile::TempDir,
}

impl Checkout {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        testkit::copy_product_repo(dir.path());
        Checkout {
            dir,
            store: tempfile::tempdir().unwrap(),
        }
    }
    fn build(&self, args: &[&str]) -> Output {
        let out = Command::new(BIN)
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
            .unwrap();
        assert!(
            out.status.success(),
            "build failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    fn iso(&self) -> PathBuf {
        self.dir.path().join("dist").join(ISO)
    }
}

fn sha256(p: &Path) -> String {
    buildchain::fsutil::sha256_file(p).unwrap()
}

#[test]
fn product_iso_is_valid_reproducible_and_serves_its_images() {
    let a = Checkout::new();
    a.build(&[]);
    let iso = a.iso();
    assert!(iso.is_file());

    // checkisomd5 accepts the implanted MD5; SHA256SUM verifies with sha256sum -c.
    let check = testkit::run(
        Command::new(testkit::require_tool("checkisomd5"))
            .arg("--verbose")
            .arg(&iso),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{said}");
    assert!(said.contains("PASS"), "{said}");
    testkit::run_ok(
        Command::new("sha256sum")
            .args(["-c", "SHA256SUM"])
            .current_dir(a.dir.path().join("dist")),
    );
    let ours = testkit::run(Command::new(BIN).args(["iso", "check"]).arg(&iso));
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stdout)
    );

    // Plain ISO-9660 name of product.txt, as consumers read it; Rock Ridge and Joliet present.
    let isoinfo = testkit::require_tool("isoinfo");
    let product = testkit::run_ok(
        Command::new(&isoinfo)
            .arg("-i")
            .arg(&iso)
            .args(["-x", "/PRODUCT.TXT;1"]),
    );
    let dist_product = std::fs::read(a.dir.path().join("dist/product.txt")).unwrap();
    assert_eq!(product.stdout, dist_product);
    let text = String::from_utf8_lossy(&dist_product);
    assert!(
        text.contains("VERSION=130.0.0-dev\n")
            && text.contains("BUILD_TIMESTAMP=2023-11-14T22:13:20Z\n"),
        "{text}"
    );
    let d = testkit::run_ok(Command::new(&isoinfo).arg("-d").arg("-i").arg(&iso));
    let d = String::from_utf8_lossy(&d.stdout);
    assert!(d.contains("Rock Ridge signatures"), "{d}");
    assert!(d.contains("Joliet"), "{d}");
    assert!(d.contains("Volume id: MetalK8s 130.0.0-dev"), "{d}");

    // A no-op rebuild re-masters nothing and rewrites nothing in dist/.
    let mtime = std::fs::metadata(&iso).unwrap().modified().unwrap();
    let again = a.build(&[]);
    let started = String::from_utf8_lossy(&again.stdout)
        .lines()
        .filter(|l| l.starts_with("STARTED"))
        .count();
    assert_eq!(started, 0, "{}", String::from_utf8_lossy(&again.stdout));
    assert_eq!(std::fs::metadata(&iso).unwrap().modified().unwrap(), mtime);

    // Another checkout with its own empty store gives the same bytes.
    let b = Checkout::new();
    b.build(&["-j", "1"]);
    assert_eq!(
        sha256(&a.iso()),
        sha256(&b.iso()),
        "ISO is not reproducible"
    );

    // Extract with an independent reader, then serve the image tree with stock nginx and the
    // nginx includes the build put in the Salt tree; pull every image with skopeo.
    let x = tempfile::tempdir().unwrap();
    testkit::run_ok(
        Command::new(testkit::require_tool("bsdtar"))
            .arg("-xf")
            .arg(&iso)
            .arg("-C")
            .arg(x.path()),
    );
    testkit::run_ok(Command::new("chmod").arg("-R").arg("u+w").arg(x.path()));
    let sums = testkit::run(
        Command::new("sha256sum")
            .args(["-c", "--quiet", "SHA256SUMS"])
            .current_dir(x.path()),
    );
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
    let files = x.path().join("salt/metalk8s/repo/files");
    let server = testkit::start_nginx(
        "",
        &format!(
            "    set $metalk8s_130_0_0_dev_images {};\n    include {};\n    include {};\n",
            x.path().join("images").display(),
            files.join("metalk8s-registry.inc").display(),
            files.join("metalk8s-registry-common.inc").display()
        ),
    );
    let skopeo = testkit::require_tool("skopeo");
    let versions: serde_json::Value = serde_json::from_slice(
        &std::fs::read(x.path().join("salt/metalk8s/versions.json")).unwrap(),
    )
    .unwrap();
    let images = versions["images"].as_object().unwrap();
    assert!(images.len() >= 3, "{versions}");
    for (name, v) in images {
        let tag = v["version"].as_str().unwrap();
        let reference = format!(
            "docker://{}/metalk8s-130.0.0-dev/{name}:{tag}",
            server.host()
        );
        let dest = x.path().join("pulled").join(name);
        std::fs::create_dir_all(&dest).unwrap();
        testkit::run_ok(
            Command::new(&skopeo)
                .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
                .arg(&reference)
                .arg(format!("dir:{}", dest.display())),
        );
        let src_manifest = std::fs::read(
            x.path()
                .join("images")
                .join(name)
                .join(tag)
                .join("manifest.json"),
        )
        .unwrap();
        assert_eq!(
            std::fs::read(dest.join("manifest.json")).unwrap(),
            src_manifest,
            "{name}"
        );
    }

    // The yum repositories on the ISO are read by dnf.
    let repo = x.path().join("packages/redhat/8/metalk8s-scality-el8");
    let root = tempfile::tempdir().unwrap();
    let q = testkit::run_ok(
        Command::new(testkit::require_tool("dnf"))
            .args([
                "-q",
                "--setopt=reposdir=/dev/null",
                "--releasever=8",
                "--disablerepo=*",
            ])
            .arg(format!("--installroot={}", root.path().display()))
            .arg(format!("--repofrompath=iso,file://{}", repo.display()))
            .args([
                "--enablerepo=iso",
                "--setopt=skip_if_unavailable=False",
                "repoquery",
                "--available",
                "--qf",
                "%{name}",
            ]),
    );
    let names = String::from_utf8_lossy(&q.stdout);
    assert!(names.contains("metalk8s-sosreport"), "{names}");
}

/// After a Salt edit the `iso` task re-masters incrementally (it copies the previous ISO's
/// stable prefix and resumes the isomd5sum state recorded in the build root), and the result is
/// the same bytes as a cold build of the edited checkout.
#[test]
fn salt_edit_remasters_incrementally_and_equals_a_cold_build() {
    testkit::require_tool("checkisomd5");
    let edit = |c: &Checkout| {
        let p = c
            .dir
            .path()
            .join("salt/states/metalk8s/archives/mounted.sls");
        let mut t = std::fs::read(&p).unwrap();
        t.extend_from_slice(b"# edited\n");
        std::fs::write(&p, t).unwrap();
    };
    let a = Checkout::new();
    a.build(&[]);
    let state = a.dir.path().join("_build").join(format!(".{ISO}.resume"));
    assert!(state.is_file(), "no resume state at {}", state.display());
    let before = sha256(&a.iso());
    edit(&a);
    let out = Command::new(BIN)
        .arg("--repo")
        .arg(a.dir.path())
        .arg("--no-progress")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("BUILD_HOST", "ci")
        .env("BUILDCHAIN_STORE", a.store.path())
        .env("ISO9660_WRITER_TRACE", "1")
        .env_remove("BUILD_ROOT")
        .env_remove("PROJECT_NAME")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build failed:\n{err}");
    assert!(
        err.contains("prefix copied, sha256 of the image"),
        "the re-master was not incremental:\n{err}"
    );
    let after = sha256(&a.iso());
    assert_ne!(before, after);

    let b = Checkout::new();
    edit(&b);
    b.build(&[]);
    assert_eq!(
        sha256(&b.iso()),
        after,
        "incremental ISO differs from a cold build"
    );
    let out = testkit::run(Command::new("checkisomd5").arg("--verbose").arg(a.iso()));
    assert!(
        out.status.success(),
        "checkisomd5 failed on the incremental ISO"
    );
}
