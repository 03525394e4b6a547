//! The RPM closure of the completeness gate agrees with `dnf repoclosure` on the product
//! repository: with no base-OS provides, with the declared list (served by a stub repository),
//! and with an entry taken out of it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use buildchain::trust::completeness::{self, RpmDeps};

fn build_product(dir: &Path) -> PathBuf {
    let checkout = dir.join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    testkit::copy_product_repo(&checkout);
    let out = Command::new(env!("CARGO_BIN_EXE_buildchain"))
        .arg("--repo")
        .arg(&checkout)
        .args(["--no-progress", "packaging"])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("BUILDCHAIN_STORE", dir.join("store"))
        .env_remove("BUILD_ROOT")
        .env_remove("PROJECT_NAME")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    checkout.join("_build/root/packages/redhat/8/metalk8s-scality-el8")
}

fn our_deps(repo: &Path) -> Vec<RpmDeps> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rpm") {
            let f = std::fs::File::open(&p).unwrap();
            let md = rpm::PackageMetadata::parse(&mut std::io::BufReader::new(f)).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            out.push(RpmDeps::from_metadata(&name, &md).unwrap());
        }
    }
    out
}

/// Our verdict as (nevra, requirement) pairs.
fn ours(rpms: &[RpmDeps], base: &BTreeSet<String>) -> BTreeSet<(String, String)> {
    completeness::check_rpm_closure(rpms, base)
        .into_iter()
        .map(|d| {
            let (nevra, rest) = d.message.split_once(" requires ").unwrap();
            let req = rest.split(", provided by").next().unwrap();
            (nevra.to_string(), req.to_string())
        })
        .collect()
}

/// A repository with one package providing every name of `base`.
fn stub_repo(dir: &Path, base: &BTreeSet<String>) -> PathBuf {
    let repo = dir.join("stub");
    std::fs::create_dir_all(&repo).unwrap();
    let mut b = rpm::PackageBuilder::new("base-os-stub", "1", "MIT", "noarch", "base-OS stub");
    b.release("1");
    for n in base {
        b.provides(rpm::Dependency::any(n.as_str()));
    }
    let pkg = b.build().unwrap();
    pkg.write_file(repo.join("base-os-stub-1-1.noarch.rpm"))
        .unwrap();
    testkit::run_ok(
        Command::new(testkit::require_tool("createrepo_c"))
            .arg("--quiet")
            .arg(&repo),
    );
    repo
}

/// `dnf repoclosure --check ours`, parsed to (nevra, requirement) pairs.
fn repoclosure(dir: &Path, ours: &Path, stub: Option<&Path>) -> (bool, BTreeSet<(String, String)>) {
    let mut c = Command::new(testkit::require_tool("dnf"));
    c.arg("repoclosure")
        .arg("--setopt=reposdir=/dev/null")
        .arg(format!(
            "--setopt=cachedir={}",
            dir.join("dnf-cache").display()
        ))
        .arg(format!("--installroot={}", dir.join("dnf-root").display()))
        .arg("--releasever=8")
        .arg(format!("--repofrompath=ours,{}", ours.display()))
        .args(["--repo", "ours", "--check", "ours"]);
    if let Some(s) = stub {
        c.arg(format!("--repofrompath=base,{}", s.display()))
            .args(["--repo", "base"]);
    }
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut set = BTreeSet::new();
    let mut pkg = String::new();
    for l in text.lines() {
        if let Some(p) = l.strip_prefix("package: ") {
            pkg = p.split(" from ").next().unwrap().to_string();
        } else if l.starts_with("    ") {
            set.insert((pkg.clone(), l.trim().to_string()));
        }
    }
    (out.status.success(), set)
}

#[test]
fn rpm_closure_agrees_with_dnf_repoclosure() {
    let dir = tempfile::tempdir().unwrap();
    let repo = build_product(dir.path());
    let rpms = our_deps(&repo);
    assert_eq!(rpms.len(), 2);

    // No base OS at all: both list the same unresolved requirements.
    let none = ours(&rpms, &BTreeSet::new());
    let (ok, theirs) = repoclosure(dir.path(), &repo, None);
    assert!(!ok);
    assert_eq!(none, theirs);
    assert!(none.contains(&(
        "metalk8s-sosreport-130.0.0~dev-1.el8.noarch".to_string(),
        "sos >= 3.1".to_string()
    )));

    // The declared base-OS provides close the product repository.
    let base = completeness::load_base_provides(&testkit::workspace_root()).unwrap();
    assert!(ours(&rpms, &base).is_empty());
    let stub = stub_repo(&dir.path().join("full"), &base);
    let (ok, theirs) = repoclosure(&dir.path().join("full"), &repo, Some(&stub));
    assert!(ok, "{theirs:?}");

    // Without `sos`: both name exactly that requirement.
    let mut partial = base.clone();
    partial.remove("sos");
    let mine = ours(&rpms, &partial);
    assert_eq!(
        mine,
        BTreeSet::from([(
            "metalk8s-sosreport-130.0.0~dev-1.el8.noarch".to_string(),
            "sos >= 3.1".to_string()
        )])
    );
    let stub = stub_repo(&dir.path().join("partial"), &partial);
    let (ok, theirs) = repoclosure(&dir.path().join("partial"), &repo, Some(&stub));
    assert!(!ok);
    assert_eq!(mine, theirs);
}

#[test]
fn the_build_fails_on_an_unresolved_requires() {
    let dir = tempfile::tempdir().unwrap();
    let checkout = dir.path().join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    testkit::copy_product_repo(&checkout);
    let list = checkout.join(completeness::BASE_OS_PROVIDES);
    let text = std::fs::read_to_string(&list).unwrap();
    assert!(text.contains("\nsos\n"));
    std::fs::write(&list, text.replace("\nsos\n", "\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_buildchain"))
        .arg("--repo")
        .arg(&checkout)
        .arg("--no-progress")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("BUILD_HOST", "ci")
        .env("BUILDCHAIN_STORE", dir.path().join("store"))
        .env_remove("BUILD_ROOT")
        .env_remove("PROJECT_NAME")
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("packages/redhat/8/metalk8s-scality-el8/metalk8s-sosreport-130.0.0~dev-1.el8.noarch.rpm: metalk8s-sosreport-130.0.0~dev-1.el8.noarch requires sos >= 3.1, provided by no shipped RPM nor by packages/redhat/8/base-os-provides.txt"),
        "{said}"
    );
    assert!(!checkout.join("dist/metalk8s-130.0.0-dev.iso").exists());
}
