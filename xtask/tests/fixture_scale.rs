//! The MetalK8s-scale fixture at a small size (4 images, 32 MiB, 10 RPMs, 50 Salt files): the
//! product build against its registry and yum repository succeeds, the ISO passes `checkisomd5`,
//! unprivileged nginx + containerd pull a sample of its images from the extracted ISO, `dnf`
//! reads its third-party repository; the fixture is deterministic; `bench e2e --json` reports
//! every scenario.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
const SMALL: &[&str] = &[
    "--images",
    "4",
    "--total-mib",
    "32",
    "--rpms",
    "10",
    "--salt-files",
    "50",
];

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn fixture(out: &Path) -> serde_json::Value {
    let o = testkit::run(
        Command::new(XTASK)
            .args(["fixture", "scale"])
            .args(SMALL)
            .arg("--out")
            .arg(out),
    );
    assert!(o.status.success(), "fixture scale: {}", text(&o));
    serde_json::from_slice(&fs::read(out.join("fixture.json")).unwrap()).unwrap()
}

/// `xtask fixture serve DIR`, stopped by PID (SIGTERM) on drop.
struct Serve(Child);

impl Serve {
    fn start(dir: &Path, f: &serde_json::Value) -> Serve {
        let child = Command::new(XTASK)
            .args(["fixture", "serve"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        for key in ["registry_port", "yum_port"] {
            let port = f[key].as_u64().unwrap() as u16;
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "fixture serve: no {key} {port}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Serve(child)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn public_dir(p: &Path) -> PathBuf {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    p.to_path_buf()
}

#[test]
fn small_fixture_builds_an_iso_that_nodes_consume() {
    // SAFETY: umask(2) only changes this process's file-mode mask.
    unsafe {
        libc::umask(0o077);
    }
    for t in [
        "docker-registry",
        "createrepo_c",
        "checkisomd5",
        "bsdtar",
        "dnf",
    ] {
        testkit::require_tool(t);
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = public_dir(tmp.path());
    let dir = t.join("fixture");
    let f = fixture(&dir);
    let images = f["images"].as_array().unwrap();
    assert_eq!(images.len(), 4);
    assert!(images.iter().any(|i| i["index"] == true), "{images:?}");
    assert!(images.iter().any(|i| !i["bump"].is_null()), "{images:?}");
    let checkout = dir.join("checkout");
    let salt = walkdir::WalkDir::new(checkout.join("salt/states/fixture"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(salt, 50);

    // The build, against the fixture's servers only.
    let serve = Serve::start(&dir, &f);
    let o = testkit::run(
        Command::new(XTASK)
            .arg("iso")
            .current_dir(&checkout)
            .env("BUILDCHAIN_STORE", t.join("store"))
            .env("BUILD_ROOT", t.join("build")),
    );
    assert!(o.status.success(), "xtask iso: {}", text(&o));
    drop(serve);
    let iso = fs::read_dir(checkout.join("dist"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "iso"))
        .expect("an ISO in dist/");
    let o = testkit::run(Command::new("checkisomd5").arg(&iso));
    assert!(o.status.success(), "checkisomd5: {}", text(&o));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        all.lines()
            .any(|l| l.trim() == "The media check is complete, the result is: PASS."),
        "{}",
        text(&o)
    );

    // Extract it like a mount, serve its registry with unprivileged nginx.
    let name = iso.file_stem().unwrap().to_str().unwrap().to_string();
    let version = name.strip_prefix("metalk8s-").unwrap().to_string();
    let srv = public_dir(&public_dir(&t.join("srv")).join("scality"));
    let mount = srv.join(&name);
    fs::create_dir_all(&mount).unwrap();
    testkit::run_ok(
        Command::new("bsdtar")
            .arg("-xpf")
            .arg(&iso)
            .arg("-C")
            .arg(&mount),
    );
    let var = format!("metalk8s_{}_images", version.replace(['.', '-'], "_"));
    let files = mount.join("salt/metalk8s/repo/files");
    let body = format!(
        "    set ${var} \"{}\";\n    include \"{}\";\n    include \"{}\";\n",
        mount.join("images").display(),
        files.join("metalk8s-registry.inc").display(),
        files.join("metalk8s-registry-common.inc").display()
    );
    let nginx = testkit::start_nginx_unprivileged(&body);
    let ctd = testkit::start_containerd();
    // A sample: the multi-arch image (its amd64 manifest) and the last one.
    let sample: Vec<&serde_json::Value> = images
        .iter()
        .filter(|i| i["index"] == true)
        .chain(images.last())
        .collect();
    assert_eq!(sample.len(), 2);
    for im in sample {
        let (n, tag) = (im["name"].as_str().unwrap(), im["tag"].as_str().unwrap());
        let manifest = fs::read(mount.join("images").join(n).join(tag).join("manifest.json"))
            .unwrap_or_else(|e| panic!("{n}:{tag} manifest.json on the ISO: {e}"));
        let digest = format!("sha256:{}", buildchain::fsutil::sha256_bytes(&manifest));
        let r = format!("{}/metalk8s-{version}/{n}:{tag}", nginx.host());
        let o = testkit::run(ctd.ctr("k8s.io").args([
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "native",
            &r,
        ]));
        assert!(o.status.success(), "ctr pull {r}: {}", text(&o));
        let check = testkit::run_ok(ctd.ctr("k8s.io").args(["images", "check"]));
        let line = String::from_utf8_lossy(&check.stdout)
            .lines()
            .find(|l| l.starts_with(&format!("{r} ")))
            .unwrap_or_else(|| panic!("{r} not in ctr images check"))
            .to_string();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[2], digest, "{line}");
        assert_eq!(cols[3], "complete", "{line}");
    }

    // dnf reads the third-party repository of the ISO: exactly the pinned packages.
    let lock =
        buildchain::packaging::lock::LockFile::load(&checkout.join("packages/redhat/8/lock.yaml"))
            .unwrap();
    let mut want: Vec<String> = lock
        .packages
        .iter()
        .map(|p| {
            let e = buildchain::packaging::evr::Evr::parse(&p.evr);
            format!("{}-{}-{}", p.name, e.version, e.release)
        })
        .collect();
    want.sort();
    assert_eq!(want.len(), 10);
    let repo = mount.join("packages/redhat/8/metalk8s-fixture-el8");
    let o = testkit::run_ok(
        Command::new("dnf")
            .arg("-q")
            .arg(format!("--installroot={}", t.join("dnfroot").display()))
            .args([
                "--setopt=reposdir=/dev/null",
                "--releasever=8",
                "--disablerepo=*",
            ])
            .arg(format!("--repofrompath=fx,file://{}", repo.display()))
            .args([
                "--enablerepo=fx",
                "--setopt=skip_if_unavailable=False",
                "repoquery",
                "--available",
                "--qf",
                "%{name}-%{version}-%{release}",
            ]),
    );
    let mut got: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn fixture_is_deterministic_and_bench_reports_every_scenario() {
    for t in [
        "docker-registry",
        "createrepo_c",
        "skopeo",
        "hardlink",
        "xorriso",
        "implantisomd5",
    ] {
        testkit::require_tool(t);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        fixture(&tmp.path().join("a")),
        fixture(&tmp.path().join("b")),
    );
    let key = |f: &serde_json::Value| {
        f["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{} {} {} {} {}",
                    i["name"], i["repo"], i["tag"], i["digest"], i["bump"]
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&a), key(&b));
    assert_eq!(a["unique_bytes"], b["unique_bytes"]);
    let lock = |d: &str| {
        let t = fs::read_to_string(
            tmp.path()
                .join(d)
                .join("checkout/packages/redhat/8/lock.yaml"),
        )
        .unwrap();
        t.lines()
            .filter(|l| !l.contains("baseurl"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(lock("a"), lock("b"));

    let o = testkit::run(
        Command::new(XTASK)
            .args(["bench", "e2e", "--json", "--runs", "1", "--fixture"])
            .arg(tmp.path().join("a")),
    );
    assert!(o.status.success(), "bench e2e: {}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["cold", "warm", "noop", "salt_edit", "image_bump"]);
    for (k, s) in v.as_object().unwrap() {
        assert!(s["ours_s"].as_f64().unwrap() > 0.0, "{k}: {s}");
        assert!(s["classic_s"].as_f64().unwrap() > 0.0, "{k}: {s}");
    }
    // Only cold and image_bump fetch from the registry; the bump fetches far less than cold.
    let reg = |k: &str| v[k]["ours_registry_bytes"].as_u64().unwrap();
    assert!(reg("cold") > 25 << 20, "{v}");
    assert_eq!(
        (reg("warm"), reg("noop"), reg("salt_edit")),
        (0, 0, 0),
        "{v}"
    );
    assert!(reg("image_bump") > 0 && reg("image_bump") < 1 << 20, "{v}");
}
