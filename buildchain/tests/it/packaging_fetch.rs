//! Third-party pins against a real yum repository: RPMs built by the test, indexed by
//! `createrepo_c`, served by nginx on 127.0.0.1. Lock (newest + recursive requires) and fetch
//! work; a tampered RPM is refused with its name and digest; a second fetch makes no request;
//! the release profile puts the pins in their product repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use buildchain::config::Settings;
use buildchain::packaging::lock::{self, LockFile};
use buildchain::packaging::product::{build_all, Product};
use buildchain::store::Store;
use rpm::{BuildConfig, Dependency, FileOptions, PackageBuilder};
use testkit::{require_tool, run_ok};

fn mk_rpm(dir: &Path, name: &str, version: &str, requires: &[&str], provides: &[&str]) -> PathBuf {
    let mut b = PackageBuilder::new(name, version, "MIT", "x86_64", &format!("{name} for tests"));
    b.using_config(BuildConfig::v4().source_date(1_700_000_000u32));
    b.release("1.el8");
    for r in requires {
        b.requires(Dependency::any(*r));
    }
    for p in provides {
        b.provides(Dependency::any(*p));
    }
    b.with_file_contents(
        format!("{name} {version}\n").repeat(50),
        FileOptions::new(format!("/usr/share/{name}/README")),
    )
    .unwrap();
    let p = dir.join(format!("{name}-{version}-1.el8.x86_64.rpm"));
    b.build().unwrap().write_file(&p).unwrap();
    p
}

struct Upstream {
    dir: tempfile::TempDir,
    server: testkit::Server,
}

impl Upstream {
    fn start() -> Upstream {
        require_tool("createrepo_c");
        let dir = tempfile::tempdir().unwrap();
        let pk = dir.path().join("Packages");
        std::fs::create_dir_all(&pk).unwrap();
        mk_rpm(&pk, "kubelet", "1.29.9", &["conntrack"], &[]);
        mk_rpm(
            &pk,
            "kubelet",
            "1.30.2",
            &["conntrack", "libnetfilter.so.1"],
            &[],
        );
        mk_rpm(
            &pk,
            "kubelet",
            "1.30.10",
            &["conntrack", "libnetfilter.so.1", "glibc"],
            &[],
        );
        mk_rpm(
            &pk,
            "conntrack-tools",
            "1.4.4",
            &["libnetfilter.so.1"],
            &["conntrack"],
        );
        mk_rpm(&pk, "libnetfilter", "1.0.1", &[], &["libnetfilter.so.1"]);
        mk_rpm(&pk, "unrelated", "9.9", &[], &[]);
        run_ok(
            Command::new("createrepo_c")
                .args(["--no-database", "-q"])
                .arg(dir.path()),
        );
        let server = testkit::start_nginx("", &format!("    root {};\n", dir.path().display()));
        Upstream { dir, server }
    }
    fn requests(&self) -> usize {
        std::fs::read_to_string(self.server.dir.path().join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

fn request_yaml(base: &str) -> String {
    format!(
        "sources:\n  - name: upstream-k8s\n    baseurl: {base}/\n    repository: kubernetes\npackages:\n  - name: kubelet\n    version: \"1.30\"\n    resolve: true\n  - name: unrelated\n"
    )
}

#[test]
fn packaging_lock_and_fetch_from_a_real_yum_repo() {
    let up = Upstream::start();
    let tmp = tempfile::tempdir().unwrap();
    let req = tmp.path().join("release.yaml");
    std::fs::write(&req, request_yaml(&up.server.url())).unwrap();
    let lock_path = tmp.path().join("lock.yaml");
    let res = lock::lock(&req, &lock_path).unwrap();
    let got: Vec<String> = res
        .lock
        .packages
        .iter()
        .map(|p| format!("{}-{}.{}", p.name, p.evr, p.arch))
        .collect();
    // Newest 1.30.x by EVR (1.30.10 > 1.30.2), its recursive requires, and the plain request.
    assert_eq!(
        got,
        [
            "conntrack-tools-0:1.4.4-1.el8.x86_64",
            "kubelet-0:1.30.10-1.el8.x86_64",
            "libnetfilter-0:1.0.1-1.el8.x86_64",
            "unrelated-0:9.9-1.el8.x86_64",
        ]
    );
    assert_eq!(
        res.unresolved,
        [(
            "glibc".to_string(),
            "kubelet-1.30.10-1.el8.x86_64".to_string()
        )]
    );
    // The lock file round-trips and pins the real digests and sizes.
    let lf = LockFile::load(&lock_path).unwrap();
    assert_eq!(lf, res.lock);
    for p in &lf.packages {
        let f = up.dir.path().join("Packages").join(p.file_name());
        assert_eq!(
            p.sha256.as_deref().unwrap(),
            buildchain::fsutil::sha256_file(&f).unwrap()
        );
        assert_eq!(p.size.unwrap(), std::fs::metadata(&f).unwrap().len());
    }

    // Fetch into an empty store.
    let store = Store::open(tmp.path().join("store")).unwrap();
    let (fetched, stats) = lock::fetch(&lf, &lf.packages, &store, &mut |_, _| {}).unwrap();
    assert_eq!(fetched.len(), 4);
    assert_eq!(stats.downloaded, 4);
    assert_eq!(stats.requests, 2 + 4, "repomd + primary + one GET per RPM");
    for f in &fetched {
        assert!(store.verify(f.package.sha256.as_deref().unwrap()).unwrap());
    }

    // Second fetch: everything is in the store, not a single request reaches the server.
    let before = up.requests();
    let (again, stats) = lock::fetch(&lf, &lf.packages, &store, &mut |_, _| {}).unwrap();
    assert_eq!(again.len(), 4);
    assert_eq!(stats.requests, 0);
    assert_eq!(up.requests(), before, "the second fetch made HTTP requests");

    // Tamper with one RPM upstream (same size): refused, naming package and digests.
    let victim = lf.packages.iter().find(|p| p.name == "kubelet").unwrap();
    let path = up.dir.path().join("Packages").join(victim.file_name());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let store2 = Store::open(tmp.path().join("store2")).unwrap();
    let err = format!(
        "{:#}",
        lock::fetch(&lf, std::slice::from_ref(victim), &store2, &mut |_, _| {}).unwrap_err()
    );
    let pinned = victim.sha256.as_deref().unwrap();
    let actual = buildchain::fsutil::sha256_bytes(&bytes);
    assert!(err.contains("kubelet-0:1.30.10-1.el8.x86_64"), "{err}");
    assert!(err.contains(&format!("expected sha256:{pinned}")), "{err}");
    assert!(err.contains(&format!("got sha256:{actual}")), "{err}");
    assert!(!store2.contains(pinned));
}

#[test]
fn packaging_release_profile_adds_locked_repo() {
    require_tool("dnf");
    let up = Upstream::start();
    let ws = testkit::workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("checkout");
    let pk = checkout.join("packages/redhat/8");
    for e in walkdir::WalkDir::new(ws.join("packages")) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(ws.join("packages")).unwrap();
        let d = checkout.join("packages").join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&d).unwrap();
        } else {
            std::fs::copy(e.path(), &d).unwrap();
        }
    }
    std::fs::copy(ws.join("VERSION"), checkout.join("VERSION")).unwrap();
    std::fs::write(pk.join("release.yaml"), request_yaml(&up.server.url())).unwrap();
    lock::lock(&pk.join("release.yaml"), &pk.join("lock.yaml")).unwrap();

    let o = buildchain::config::SettingOverrides {
        build_root: Some(tmp.path().join("_build")),
        source_date_epoch: Some(1_700_000_000),
        profile: Some(buildchain::config::Profile::Release),
        store_root: Some(tmp.path().join("store")),
        ..Default::default()
    };
    let s = Settings::load(&checkout, &o).unwrap();
    let names: Vec<String> = buildchain::tasks::packaging::tasks(&s)
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(
        names.contains(&"packaging:kubernetes/fetch".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"packaging:kubernetes/repodata".to_string()),
        "{names:?}"
    );
    let p = Product::from_settings(&s);
    let store = Store::open(&s.store_root).unwrap();
    build_all(&p, Some(&store)).unwrap();
    let repo = p.repo_dir("kubernetes");
    assert!(repo.ends_with("packages/redhat/8/metalk8s-kubernetes-el8"));
    let q = run_ok(
        Command::new("dnf")
            .arg("-q")
            .arg(format!(
                "--installroot={}",
                tmp.path().join("dnfroot").display()
            ))
            .args([
                "--setopt=reposdir=/dev/null",
                "--releasever=8",
                "--disablerepo=*",
            ])
            .arg(format!("--repofrompath=k8s,file://{}", repo.display()))
            .args([
                "--enablerepo=k8s",
                "--setopt=skip_if_unavailable=False",
                "repoquery",
                "--available",
                "--qf",
                "%{name}-%{version}",
            ]),
    );
    let mut got: Vec<String> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "conntrack-tools-1.4.4",
            "kubelet-1.30.10",
            "libnetfilter-1.0.1",
            "unrelated-9.9"
        ]
    );
    // The built packages are still in their own repository.
    assert!(p.repo_dir("scality").join("repodata/repomd.xml").is_file());
}

#[test]
fn packaging_shipped_release_lock_is_documented_but_unpinned() {
    // The checked-in release lock lists the upstream packages in the lock format, without the
    // sha256/size that only the lock command (with network) can fill: a release build must say so.
    let p = testkit::workspace_root().join("packages/redhat/8/lock.yaml");
    let l = LockFile::load(&p).unwrap();
    assert!(l.packages.iter().any(|x| x.name == "kubelet"));
    let e = format!("{:#}", l.require_pinned(&p).unwrap_err());
    assert!(
        e.contains("lock.yaml") && e.contains("kubelet") && e.contains("packaging lock"),
        "{e}"
    );
    // And release.yaml parses.
    lock::LockRequest::load(&testkit::workspace_root().join("packages/redhat/8/release.yaml"))
        .unwrap();
}
