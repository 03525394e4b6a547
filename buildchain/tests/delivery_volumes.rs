//! Issue 12 item 4: `buildchain iso --media M` splits the product into self-contained volumes.
//! Built under `umask 077`; every volume is checked with `checkisomd5` and `isoinfo`, extracted
//! side by side with `bsdtar -xpf`, served by one stock nginx (root master, `nobody` workers)
//! from all the volumes' registry includes at once, pulled image by image by containerd, and
//! each volume's RPM repository is read by `dnf`; `buildchain verify` passes on each volume.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");
const SET: &str = "metalk8s-130.0.0-dev";
/// The capacity the product is split for: well under its size.
const MEDIA: u64 = 4_000_000;
/// Extra local images (name, random payload bytes), all based on metalk8s-base.
const BIG: &[(&str, usize)] = &[
    ("big-a", 3_000_000),
    ("big-b", 2_500_000),
    ("big-c", 2_000_000),
    ("big-d", 1_500_000),
    ("big-e", 1_000_000),
];

fn umask_077() {
    // SAFETY: umask(2) only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn public_dir(p: &Path) -> PathBuf {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    p.to_path_buf()
}

fn sha256(p: &Path) -> String {
    buildchain::fsutil::sha256_file(p).unwrap()
}

/// A product checkout with the [`BIG`] images added to its inventory.
fn checkout(tmp: &Path, big: &[(&str, usize)]) -> PathBuf {
    let repo = public_dir(&tmp.join("checkout"));
    testkit::copy_product_repo(&repo);
    let mut inv = fs::read_to_string(repo.join("images/inventory.yaml")).unwrap();
    for (k, (name, len)) in big.iter().enumerate() {
        let dir = repo.join("images").join(name);
        fs::create_dir_all(dir.join("rootfs/srv")).unwrap();
        fs::write(
            dir.join("rootfs/srv/payload.bin"),
            testkit::pseudo_random_bytes(1000 + k as u64, *len),
        )
        .unwrap();
        fs::write(
            dir.join("image.yaml"),
            "base: metalk8s-base\nlayers:\n  - comment: payload\n    files:\n      - {src: rootfs, dest: /}\n",
        )
        .unwrap();
        inv.push_str(&format!(
            "\n  - name: {name}\n    tag: \"1.0\"\n    local: images/{name}/\n"
        ));
    }
    fs::write(repo.join("images/inventory.yaml"), inv).unwrap();
    repo
}

fn buildchain(repo: &Path, store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--repo")
        .arg(repo)
        .arg("--no-progress")
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("BUILD_HOST", "ci")
        .env("BUILDCHAIN_STORE", store)
        .env_remove("BUILD_ROOT")
        .env_remove("PROJECT_NAME")
        .env_remove("BUILDCHAIN_MEDIA")
        .output()
        .unwrap()
}

fn ok(repo: &Path, store: &Path, args: &[&str]) -> Output {
    let out = buildchain(repo, store, args);
    assert!(out.status.success(), "{args:?} failed:\n{}", text(&out));
    out
}

/// `dist/<set>-<i>of<N>.iso`, sorted by i.
fn volumes(dist: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(usize, PathBuf)> = fs::read_dir(dist)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let n = p.file_name()?.to_str()?.to_string();
            let rest = n.strip_prefix(&format!("{SET}-"))?.strip_suffix(".iso")?;
            let (i, _) = rest.split_once("of")?;
            Some((i.parse().ok()?, p))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

#[test]
fn volumes_split_the_product_and_serve_every_image_and_rpm_side_by_side() {
    umask_077();
    for t in [
        "checkisomd5",
        "isoinfo",
        "bsdtar",
        "dnf",
        "ctr",
        "containerd",
    ] {
        testkit::require_tool(t);
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = public_dir(tmp.path());
    let store = t.join("store");
    let repo = checkout(&t, BIG);
    let dist = repo.join("dist");

    // The single ISO (for the bound and the timing), then the volumes.
    let t0 = std::time::Instant::now();
    ok(&repo, &store, &[]);
    let single_time = t0.elapsed();
    let single = fs::metadata(dist.join(format!("{SET}.iso"))).unwrap().len();
    assert!(single > MEDIA, "the product ({single} bytes) must not fit");
    let t0 = std::time::Instant::now();
    ok(&repo, &store, &["iso", "--media", &MEDIA.to_string()]);
    let split_time = t0.elapsed();
    let vols = volumes(&dist);
    let n = vols.len();
    let bound = single.div_ceil(MEDIA) as usize;
    eprintln!(
        "measure: single ISO {single} bytes (whole build {single_time:?}); \
         {n} volumes of {MEDIA} bytes (lower bound {bound}) split in {split_time:?}"
    );
    assert!(n >= 2 && n <= bound + 1, "{n} volumes, lower bound {bound}");
    for (k, v) in vols.iter().enumerate() {
        assert_eq!(
            v.file_name().unwrap().to_str().unwrap(),
            format!("{SET}-{}of{n}.iso", k + 1)
        );
        let size = fs::metadata(v).unwrap().len();
        assert!(size <= MEDIA, "{}: {size} bytes", v.display());
        let c = testkit::run(Command::new("checkisomd5").arg(v));
        assert!(
            c.status.success(),
            "checkisomd5 {}:\n{}",
            v.display(),
            text(&c)
        );
        // Its own content index and sums: `buildchain verify` passes on the volume alone.
        let vf = testkit::run(Command::new(BIN).arg("verify").arg(v));
        assert!(
            vf.status.success(),
            "verify {}:\n{}",
            v.display(),
            text(&vf)
        );
        let l = testkit::run_ok(Command::new("isoinfo").args(["-R", "-f", "-i"]).arg(v));
        let listing = String::from_utf8(l.stdout).unwrap();
        assert!(listing.lines().any(|l| l == "/volume.txt"), "{listing}");
        assert_eq!(
            listing.lines().any(|l| l == "/VOLUMES.json"),
            k == 0,
            "{listing}"
        );
    }
    let sums = fs::read_to_string(dist.join(format!("{SET}-volumes.sha256"))).unwrap();
    let expect: String = vols
        .iter()
        .map(|v| {
            format!(
                "{}  {}\n",
                sha256(v),
                v.file_name().unwrap().to_str().unwrap()
            )
        })
        .collect();
    assert_eq!(sums, expect);

    // Extracted side by side, as mounts under /srv would be.
    let srv = public_dir(&t.join("srv"));
    let dirs: Vec<PathBuf> = vols
        .iter()
        .map(|v| {
            let d = public_dir(&srv.join(v.file_stem().unwrap()));
            testkit::run_ok(Command::new("bsdtar").arg("-xpf").arg(v).arg("-C").arg(&d));
            d
        })
        .collect();
    for (k, d) in dirs.iter().enumerate() {
        let vt = fs::read_to_string(d.join("volume.txt")).unwrap();
        assert!(
            vt.starts_with(&format!(
                "set={SET}\nvolume={}\nvolumes={n}\nvolume_id=MetalK8s 130.0.0-dev {}of{n}\n",
                k + 1,
                k + 1
            )),
            "{vt}"
        );
    }
    // Volume 1: the Salt tree, the scripts, product.txt and the table.
    for f in [
        "product.txt",
        "bootstrap.sh",
        "salt/top.sls",
        "VOLUMES.json",
    ] {
        assert!(dirs[0].join(f).is_file(), "volume 1 lacks {f}");
    }
    let table: Value =
        serde_json::from_slice(&fs::read(dirs[0].join("VOLUMES.json")).unwrap()).unwrap();
    assert_eq!(table["set"], SET);
    assert_eq!(table["capacity"], MEDIA);
    let entries = table["volumes"].as_array().unwrap();
    assert_eq!(entries.len(), n);
    let mut images: BTreeMap<String, usize> = BTreeMap::new();
    let mut rpms: BTreeMap<String, usize> = BTreeMap::new();
    for (k, e) in entries.iter().enumerate() {
        assert_eq!(e["volume"], k + 1);
        if k > 0 {
            assert_eq!(e["sha256"].as_str().unwrap(), sha256(&vols[k]));
            assert_eq!(e["size"], fs::metadata(&vols[k]).unwrap().len());
        } else {
            assert!(e.get("sha256").is_none());
        }
        for i in e["images"].as_array().unwrap() {
            assert!(images.insert(i.as_str().unwrap().into(), k).is_none());
        }
        for r in e["rpms"].as_array().unwrap() {
            assert!(rpms.insert(r.as_str().unwrap().into(), k).is_none());
        }
    }
    let mut all: BTreeSet<String> = ["metalk8s-base:1.0", "metalk8s-utils:1.0", "pause:3.9"]
        .map(String::from)
        .into();
    all.extend(BIG.iter().map(|(b, _)| format!("{b}:1.0")));
    assert_eq!(images.keys().cloned().collect::<BTreeSet<_>>(), all);
    assert_eq!(rpms.len(), 2, "{rpms:?}");

    // Self-contained: every blob an image's manifest names is on the image's volume; the base
    // layer is repeated on each volume holding an image built on it.
    let mut with_base = BTreeSet::new();
    let base_manifest: Value = serde_json::from_slice(
        &fs::read(repo.join("_build/root/images/metalk8s-base/1.0/manifest.json")).unwrap(),
    )
    .unwrap();
    let base_layer = base_manifest["layers"][0]["digest"].as_str().unwrap()[7..].to_string();
    for (image, &k) in &images {
        let (name, tag) = image.split_once(':').unwrap();
        let dir = dirs[k].join("images").join(name).join(tag);
        let m: Value =
            serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let mut ds = vec![&m["config"]];
        ds.extend(m["layers"].as_array().unwrap());
        for d in ds {
            let hex = &d["digest"].as_str().unwrap()[7..];
            assert!(
                dir.join(hex).is_file(),
                "{image}: {hex} not on volume {}",
                k + 1
            );
            if hex == base_layer {
                with_base.insert(k);
            }
        }
    }
    assert!(
        with_base.len() >= 2,
        "the base layer is on volumes {with_base:?}"
    );

    // One nginx serving all the volumes' includes; the constants once.
    let mut body = String::new();
    let mut common = None;
    for (k, d) in dirs.iter().enumerate() {
        let inc = d.join("registry/images.inc");
        if !inc.is_file() {
            assert!(
                entries[k]["images"].as_array().unwrap().is_empty(),
                "volume {} has images but no include",
                k + 1
            );
            continue;
        }
        body.push_str(&format!(
            "    set $metalk8s_130_0_0_dev_volume_{}_images \"{}/images\";\n    include \"{}\";\n",
            k + 1,
            d.display(),
            inc.display()
        ));
        common.get_or_insert(d.join("registry/common.inc"));
    }
    body.push_str(&format!("    include \"{}\";\n", common.unwrap().display()));
    let nginx = testkit::start_nginx_unprivileged(&body);
    let ctd = testkit::start_containerd();
    for image in images.keys() {
        let r = format!("{}/{SET}/{image}", nginx.host());
        let out = testkit::run(ctd.ctr("k8s.io").args([
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "native",
            &r,
        ]));
        assert!(
            out.status.success(),
            "ctr pull {r}:\n{}\n{}",
            text(&out),
            testkit::nginx_error_log(&nginx)
        );
    }
    let check = testkit::run_ok(ctd.ctr("k8s.io").args(["images", "check"]));
    let listed = String::from_utf8(check.stdout).unwrap();
    assert_eq!(
        listed.lines().filter(|l| l.contains("complete (")).count(),
        images.len(),
        "{listed}"
    );

    // dnf reads each volume's repository: exactly the RPMs the table puts there.
    for (k, d) in dirs.iter().enumerate() {
        let mine: Vec<&String> = rpms
            .iter()
            .filter(|(_, &v)| v == k)
            .map(|(r, _)| r)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let repo_dir = d.join(Path::new(mine[0]).parent().unwrap());
        let root = public_dir(&t.join(format!("dnfroot-{}", k + 1)));
        let out = testkit::run(
            Command::new("dnf")
                .args([
                    "-y",
                    "-q",
                    "--setopt=reposdir=/dev/null",
                    "--releasever=8",
                    "--disablerepo=*",
                    "--setopt=skip_if_unavailable=False",
                ])
                .arg(format!("--installroot={}", root.display()))
                .arg(format!("--repofrompath=vol,file://{}", repo_dir.display()))
                .args(["--enablerepo=vol", "list", "--available"]),
        );
        assert!(out.status.success(), "dnf list:\n{}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut listed: Vec<String> = said
            .lines()
            .filter(|l| l.trim_end().ends_with("vol"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect();
        listed.sort();
        let mut want: Vec<String> = mine
            .iter()
            .map(|r| {
                let o = testkit::run_ok(
                    Command::new("rpm")
                        .args(["-qp", "--qf", "%{NAME}.%{ARCH}"])
                        .arg(d.join(r)),
                );
                String::from_utf8(o.stdout).unwrap()
            })
            .collect();
        want.sort();
        assert_eq!(listed, want, "{said}");
    }

    // Deterministic: a clean rebuild gives the same volumes (here through the setting in
    // .env and the task itself).
    let before: Vec<String> = vols.iter().map(|v| sha256(v)).collect();
    fs::remove_dir_all(&dist).unwrap();
    fs::remove_dir_all(repo.join("_build")).unwrap();
    fs::write(repo.join(".env"), format!("BUILDCHAIN_MEDIA={MEDIA}\n")).unwrap();
    ok(&repo, &store, &["iso_volumes"]);
    let after: Vec<String> = volumes(&dist).iter().map(|v| sha256(v)).collect();
    assert_eq!(before, after);
    assert!(!dist.join(format!("{SET}.iso")).exists());
}

#[test]
fn an_image_larger_than_a_volume_fails_clearly_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = public_dir(tmp.path());
    let store = t.join("store");
    let repo = checkout(&t, &[("big-a", 1_500_000)]);
    let out = buildchain(&repo, &store, &["iso", "--media", "1000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let img = repo.join("_build/root/images/big-a");
    let size: u64 = fs::read_dir(img.join("1.0"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let err = text(&out);
    let want = format!("image big-a is {size} bytes: it does not fit one 1000000-byte volume (");
    assert!(
        err.lines()
            .any(|l| l.starts_with(&want) && l.ends_with(" bytes usable)")),
        "want {want:?} in:\n{err}"
    );
    // No volume, no checksum list, no scratch debris (populate_iso's SBOM copy may be there).
    let dist = repo.join("dist");
    let left: Vec<String> = fs::read_dir(&dist)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(left, [format!("{SET}.spdx.json")], "dist/ holds {left:?}");
    // A bad medium is a usage error.
    let bad = buildchain(&repo, &store, &["iso", "--media", "floppy"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "error: --media: invalid media \"floppy\": expected dvd5, dvd9, bd25, bd50 or a size in bytes (at least 409600)\n"
    );
}
