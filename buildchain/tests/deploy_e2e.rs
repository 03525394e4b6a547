//! Deployment-faithful end to end (issue 10): the product ISO and a Solution ISO, built under
//! `umask 077` (a friendly umask must not hide a mode bug), extracted with their modes as a
//! read-only mount presents them, served at once by stock nginx whose workers run as
//! `nobody:nogroup`, and consumed by the clients of a real node: containerd (`ctr` pull by tag and
//! by digest, `images check`, `images import` of the docker-archive tarballs), podman, dnf
//! (`--installroot`, offline, every RPM) and zypper (`--root`, refresh + search).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use buildchain::registry_config::{generate, Options};

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");
const VERSION: &str = "130.0.0-dev";
const PRODUCT_PREFIX: &str = "metalk8s-130.0.0-dev/";

/// Every file this process and its children create gets the most hostile mask.
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

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A directory the deployment creates world-traversable (like `/srv/scality`), whatever the umask.
fn public_dir(p: &Path) -> PathBuf {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    p.to_path_buf()
}

/// Builds the product ISO of a scratch checkout; returns (checkout, ISO path).
fn build_product(tmp: &Path) -> (PathBuf, PathBuf) {
    let repo = tmp.join("checkout");
    fs::create_dir_all(&repo).unwrap();
    testkit::copy_product_repo(&repo);
    testkit::run_ok(
        Command::new(BIN)
            .arg("--repo")
            .arg(&repo)
            .arg("--no-progress")
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("BUILD_HOST", "ci")
            .env("BUILDCHAIN_STORE", tmp.join("store"))
            .env_remove("BUILD_ROOT")
            .env_remove("PROJECT_NAME"),
    );
    let iso = repo.join(format!("dist/metalk8s-{VERSION}.iso"));
    assert!(iso.is_file());
    (repo, iso)
}

/// `bsdtar -tvf`: every entry readable by others, uid/gid 0; returns the number of entries.
fn assert_world_readable(iso: &Path) -> usize {
    let out = testkit::run_ok(
        Command::new(testkit::require_tool("bsdtar"))
            .arg("-tvf")
            .arg(iso),
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    let mut n = 0;
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let perms = f[0].as_bytes();
        assert_eq!(perms.len(), 10, "{line}");
        assert_eq!(
            perms[7],
            b'r',
            "not readable by others in {}: {line}",
            iso.display()
        );
        assert_ne!(
            perms[8],
            b'w',
            "writable by others in {}: {line}",
            iso.display()
        );
        if perms[0] == b'd' {
            assert_eq!(perms[9], b'x', "{line}");
        }
        assert_eq!((f[2], f[3]), ("0", "0"), "{line}");
        n += 1;
    }
    assert!(n > 0, "{listing}");
    n
}

/// Extracts `iso` with its modes into `dest` (`bsdtar -p`, as root: modes as on a mount).
fn extract(iso: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    testkit::run_ok(
        Command::new(testkit::require_tool("bsdtar"))
            .arg("-xpf")
            .arg(iso)
            .arg("-C")
            .arg(dest),
    );
}

/// One image of an `images/` tree (skopeo `dir:` layout), as a registry client names it.
#[derive(Debug, Clone)]
struct Image {
    /// `<prefix><name>`, e.g. `metalk8s-130.0.0-dev/pause`.
    repo: String,
    tag: String,
    /// sha256 of `manifest.json` (the digest clients see).
    digest: String,
    /// Config digest (the image ID podman prints), for single-platform manifests.
    config: Option<String>,
}

fn images_of(images: &Path, prefix: &str) -> Vec<Image> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(images).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_name() != "manifest.json" {
            continue;
        }
        let tag_dir = e.path().parent().unwrap();
        let name = tag_dir
            .parent()
            .unwrap()
            .strip_prefix(images)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let bytes = fs::read(e.path()).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        out.push(Image {
            repo: format!("{prefix}{name}"),
            tag: tag_dir.file_name().unwrap().to_str().unwrap().to_string(),
            digest: buildchain::fsutil::sha256_bytes(&bytes),
            config: m["config"]["digest"].as_str().map(str::to_string),
        });
    }
    out
}

/// docker-archive tarballs shipped beside the image directories.
fn tarballs(images: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(images)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect()
}

/// Renders a Solution's `registry-config.inc.j2` the way MetalK8s does: Python jinja2 with
/// `StrictUndefined` (an unknown placeholder fails).
fn render_j2(template: &Path, out: &Path, repository: &str, root: &Path) {
    let script = "import sys, jinja2\n\
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)\n\
        t = env.from_string(open(sys.argv[1]).read())\n\
        open(sys.argv[2], 'w').write(t.render(repository=sys.argv[3], registry_root=sys.argv[4]))\n";
    testkit::run_ok(
        Command::new(testkit::require_tool("python3"))
            .arg("-c")
            .arg(script)
            .arg(template)
            .arg(out)
            .arg(repository)
            .arg(root),
    );
}

/// `ctr images check` rows: ref → (digest, status).
fn ctr_check(ctd: &testkit::Containerd) -> std::collections::BTreeMap<String, (String, String)> {
    let out = testkit::run_ok(ctd.ctr("k8s.io").args(["images", "check"]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), (f[2].to_string(), f[3..5].join(" ")))
        })
        .collect()
}

/// Pulls every image by tag and by digest with containerd; `ctr images check` says complete.
fn containerd_pulls(ctd: &testkit::Containerd, host: &str, imgs: &[Image]) -> Vec<String> {
    let mut pulled = Vec::new();
    for img in imgs {
        for r in [
            format!("{host}/{}:{}", img.repo, img.tag),
            format!("{host}/{}@sha256:{}", img.repo, img.digest),
        ] {
            let out = testkit::run(ctd.ctr("k8s.io").args([
                "images",
                "pull",
                "--plain-http",
                "--snapshotter",
                "native",
                &r,
            ]));
            assert!(out.status.success(), "ctr pull {r}:\n{}", text(&out));
            pulled.push(r);
        }
    }
    let check = ctr_check(ctd);
    for (img, r) in imgs.iter().flat_map(|i| [i, i]).zip(&pulled) {
        let (digest, status) = check
            .get(r)
            .unwrap_or_else(|| panic!("{r} not in ctr images check: {check:?}"));
        assert_eq!(digest, &format!("sha256:{}", img.digest), "{r}");
        assert!(status.starts_with("complete ("), "{r}: {status}");
    }
    pulled
}

#[test]
fn node_clients_consume_the_product_and_solution_isos() {
    umask_077();
    for t in [
        "rpmbuild",
        "createrepo_c",
        "dnf",
        "rpm",
        "isoinfo",
        "podman",
    ] {
        testkit::require_tool(t);
    }
    let zypper = testkit::zypper_bin();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (repo, product_iso) = build_product(t);

    // Blobs are world-readable in the store; all of _build/root (a "directory archive" too) is
    // world-readable and its directories traversable.
    let store_blobs = t.join("store/blobs/sha256");
    let mut n = 0;
    for e in fs::read_dir(&store_blobs).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o644, "{}", p.display());
        n += 1;
    }
    assert!(n >= 5, "{n} blobs in the store");
    let mut entries = 0;
    for e in walkdir::WalkDir::new(repo.join("_build/root")) {
        let e = e.unwrap();
        let m = mode(e.path());
        if e.file_type().is_dir() {
            assert_eq!(m, 0o755, "{}", e.path().display());
        } else if e.file_type().is_file() {
            assert!(m == 0o644 || m == 0o755, "{:o} {}", m, e.path().display());
        }
        entries += 1;
    }
    assert!(entries > 30, "{entries}");

    // The product ISO: nothing without o+r, Joliet names without `;1`.
    assert!(assert_world_readable(&product_iso) > 30);
    let pj = testkit::run_ok(
        Command::new("isoinfo")
            .args(["-J", "-i"])
            .arg(&product_iso)
            .args(["-x", "/product.txt"]),
    );
    assert_eq!(pj.stdout, fs::read(repo.join("dist/product.txt")).unwrap());

    // A Solution ISO (both versions of the example).
    let sol_dist = t.join("solutions-dist");
    testkit::run_ok(
        Command::new(BIN)
            .args(["solution", "build"])
            .arg(repo.join("solutions/example-solution"))
            .arg("-o")
            .arg(&sol_dist)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("BUILD_HOST", "ci")
            .env("BUILDCHAIN_STORE", t.join("store")),
    );

    // "Mount" both as a node does: /srv/scality/<name>-<version>, modes as on the ISO.
    let srv = public_dir(&public_dir(&t.join("srv")).join("scality"));
    let _ = public_dir(t);
    let product = srv.join(format!("metalk8s-{VERSION}"));
    extract(&product_iso, &product);
    let mut body = format!(
        "    set $metalk8s_130_0_0_dev_images \"{}\";\n    include \"{}\";\n",
        product.join("images").display(),
        product
            .join("salt/metalk8s/repo/files/metalk8s-registry.inc")
            .display()
    );
    let mut all: Vec<Image> = images_of(&product.join("images"), PRODUCT_PREFIX);
    assert_eq!(
        all.iter()
            .map(|i| format!("{}:{}", i.repo, i.tag))
            .collect::<Vec<_>>(),
        [
            "metalk8s-130.0.0-dev/metalk8s-base:1.0",
            "metalk8s-130.0.0-dev/metalk8s-utils:1.0",
            "metalk8s-130.0.0-dev/pause:3.9",
        ]
    );
    let mut archives = tarballs(&product.join("images"));
    let incs = public_dir(&t.join("incs"));
    for v in ["1.0.0", "1.1.0"] {
        let iso = sol_dist.join(format!("example-solution-{v}.iso"));
        assert!(assert_world_readable(&iso) > 10);
        let mount = srv.join(format!("example-solution-{v}"));
        extract(&iso, &mount);
        let repository = format!("example-solution-{v}");
        let inc = incs.join(format!("{repository}-registry-config.inc"));
        render_j2(
            &mount.join("registry-config.inc.j2"),
            &inc,
            &repository,
            &mount.join("images"),
        );
        body.push_str(&format!("    include \"{}\";\n", inc.display()));
        let imgs = images_of(&mount.join("images"), &format!("{repository}/"));
        assert_eq!(imgs.len(), 2, "{imgs:?}");
        all.extend(imgs);
        archives.extend(tarballs(&mount.join("images")));
    }
    body.push_str(&format!(
        "    include \"{}\";\n",
        product
            .join("salt/metalk8s/repo/files/metalk8s-registry-common.inc")
            .display()
    ));
    let nginx = testkit::start_nginx_unprivileged(&body);
    let host = nginx.host();

    // containerd: every image by tag and by digest, check, import every docker-archive tarball.
    let ctd = testkit::start_containerd();
    let pulled = containerd_pulls(&ctd, &host, &all);
    assert_eq!(pulled.len(), 2 * all.len());
    for r in &pulled {
        println!("containerd pulled {r}");
    }
    assert!(!archives.is_empty());
    for tar in &archives {
        let out = testkit::run(
            ctd.ctr("k8s.io")
                .args(["images", "import", "--snapshotter", "native"])
                .arg(tar),
        );
        assert!(
            out.status.success(),
            "ctr import {}:\n{}",
            tar.display(),
            text(&out)
        );
        // The RepoTags of the archive's manifest.json are now images.
        let m = testkit::run_ok(
            Command::new("bsdtar")
                .arg("-xOf")
                .arg(tar)
                .arg("manifest.json"),
        );
        let m: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
        let check = ctr_check(&ctd);
        for tag in m[0]["RepoTags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            let (_, status) = check
                .get(tag)
                .unwrap_or_else(|| panic!("{tag} not imported: {check:?}"));
            assert!(status.starts_with("complete ("), "{tag}: {status}");
            println!("containerd imported {tag} from {}", tar.display());
        }
    }

    // podman: every image by tag and by digest; the image ID is the config digest.
    let pod = t.join("podman");
    let policy = {
        let _ = testkit::podman(&pod);
        pod.join("policy.json")
    };
    for img in &all {
        for r in [
            format!("{host}/{}:{}", img.repo, img.tag),
            format!("{host}/{}@sha256:{}", img.repo, img.digest),
        ] {
            let out = testkit::run(
                testkit::podman(&pod)
                    .args(["pull", "--tls-verify=false", "--signature-policy"])
                    .arg(&policy)
                    .arg(&r),
            );
            assert!(out.status.success(), "podman pull {r}:\n{}", text(&out));
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if let Some(cfg) = &img.config {
                assert_eq!(format!("sha256:{id}"), *cfg, "{r}");
            }
            println!("podman pulled {r} (image id {id})");
        }
        let out = testkit::run_ok(
            testkit::podman(&pod)
                .args(["image", "inspect", "--format", "{{json .RepoDigests}}"])
                .arg(format!("{host}/{}:{}", img.repo, img.tag)),
        );
        let digests: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
        let want = format!("{host}/{}@sha256:{}", img.repo, img.digest);
        assert!(digests.contains(&want), "{want} not in {digests:?}");
    }

    // A push to either ISO's registry is refused the way a read-only registry does.
    for img in &all {
        for (method, path) in [
            ("POST", format!("/v2/{}/blobs/uploads/", img.repo)),
            ("PUT", format!("/v2/{}/manifests/{}", img.repo, img.tag)),
        ] {
            let (status, h, body) = testkit::http_request(nginx.port, method, &path, &[]);
            assert_eq!(status, 405, "{method} {path}");
            let hv = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            assert_eq!(hv("content-type"), Some("application/json"), "{path}");
            assert_eq!(hv("docker-distribution-api-version"), Some("registry/2.0"));
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["errors"][0]["code"], "UNSUPPORTED", "{method} {path}");
        }
    }

    // No worker was refused a file.
    let log = testkit::nginx_error_log(&nginx);
    assert!(!log.contains("Permission denied"), "{log}");
    drop(ctd);
    drop(nginx);

    // dnf installs every RPM of the ISO's repository offline into an empty root; a stub repo
    // provides the base-OS requires (a static busybox as /bin/sh runs the scriptlets for real).
    let yum_repo = product.join("packages/redhat/8/metalk8s-scality-el8");
    let rpms: Vec<PathBuf> = fs::read_dir(&yum_repo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rpm"))
        .collect();
    let names: BTreeSet<String> = rpms
        .iter()
        .map(|p| {
            let o = testkit::run_ok(Command::new("rpm").args(["-qp", "--qf", "%{NAME}"]).arg(p));
            String::from_utf8(o.stdout).unwrap()
        })
        .collect();
    assert_eq!(
        names.iter().map(String::as_str).collect::<Vec<_>>(),
        ["metalk8s-release", "metalk8s-sosreport"]
    );
    let stub = stub_repo(&t.join("stub"));
    let root = t.join("installroot");
    fs::create_dir_all(&root).unwrap();
    let out = testkit::run(
        Command::new("dnf")
            .args([
                "-y",
                "--setopt=reposdir=/dev/null",
                "--releasever=8",
                "--disablerepo=*",
                "--setopt=skip_if_unavailable=False",
                "--setopt=install_weak_deps=False",
                "--setopt=gpgcheck=0",
            ])
            .arg(format!("--installroot={}", root.display()))
            .arg(format!("--repofrompath=iso,file://{}", yum_repo.display()))
            .arg(format!("--repofrompath=stub,file://{}", stub.display()))
            .args(["--enablerepo=iso", "--enablerepo=stub", "install"])
            .args(&names),
    );
    let said = text(&out);
    assert!(out.status.success(), "dnf install:\n{said}");
    assert!(said.contains("Complete!"), "{said}");
    assert!(!said.to_lowercase().contains("scriptlet failed"), "{said}");
    let q = testkit::run_ok(Command::new("rpm").arg("--root").arg(&root).args([
        "-qa",
        "--qf",
        "%{NAME}\\n",
    ]));
    let installed: BTreeSet<String> = String::from_utf8(q.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(installed.is_superset(&names), "{installed:?}");
    println!("dnf installed {installed:?}");
    // The %pre scriptlet of metalk8s-sosreport ran in the root.
    assert!(root.join("var/log/metalk8s/sosreport").is_dir());
    assert!(root.join("etc/yum.repos.d/metalk8s.repo").is_file());

    // zypper refreshes the same repository and finds every package.
    let zroot = t.join("zypper-root");
    fs::create_dir_all(&zroot).unwrap();
    let z = |args: &[&str]| {
        let out = testkit::run(
            Command::new(&zypper)
                .args(["--non-interactive", "--root"])
                .arg(&zroot)
                .args(args),
        );
        assert!(out.status.success(), "zypper {args:?}:\n{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let url = format!("dir:{}", yum_repo.display());
    z(&["addrepo", "--no-gpgcheck", &url, "iso"]);
    let r = z(&["refresh"]);
    assert!(r.contains("All repositories have been refreshed."), "{r}");
    let s = z(&["search", "--details", "metalk8s"]);
    for n in &names {
        assert!(
            s.lines()
                .any(|l| l.split('|').nth(1).map(str::trim) == Some(n.as_str())
                    && l.contains("130.0.0~dev-1.el8")),
            "{n} not found by zypper:\n{s}"
        );
        println!("zypper found {n}");
    }
}

/// A yum repository with one package providing what the ISO's RPMs expect from the base OS
/// (`/bin/sh` and the few commands the scriptlets use, through a static busybox; `yum`,
/// `python3`, `sos`), built with rpmbuild and createrepo_c.
fn stub_repo(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: run scripts/test.sh (installs busybox-static)"
    );
    fs::create_dir_all(dir).unwrap();
    let spec = dir.join("stub.spec");
    fs::write(
        &spec,
        "Name: node-base-stub\nVersion: 1\nRelease: 1\nSummary: Base-OS stand-in\n\
         License: GPL-2.0\nBuildArch: noarch\nProvides: yum\nProvides: python3\n\
         Provides: sos = 4.5\n\
         %define debug_package %{nil}\n%define __os_install_post %{nil}\n\
         %define _binaries_in_noarch_packages_terminate_build 0\n\
         %description\nStand-in for the base OS of an offline install test.\n\
         %install\nmkdir -p %{buildroot}/bin %{buildroot}/var/tmp %{buildroot}/tmp\n\
         cp /bin/busybox %{buildroot}/bin/busybox\n\
         for a in sh mkdir rm; do ln -s busybox %{buildroot}/bin/$a; done\n\
         %files\n/bin/busybox\n/bin/sh\n/bin/mkdir\n/bin/rm\n%dir /var/tmp\n%dir /tmp\n",
    )
    .unwrap();
    testkit::run_ok(
        Command::new("rpmbuild")
            .arg("--define")
            .arg(format!("_topdir {}", dir.join("top").display()))
            .arg("-bb")
            .arg(&spec),
    );
    let repo = dir.join("repo");
    fs::create_dir_all(&repo).unwrap();
    let rpm = dir.join("top/RPMS/noarch/node-base-stub-1-1.noarch.rpm");
    fs::copy(&rpm, repo.join("node-base-stub-1-1.noarch.rpm")).unwrap();
    testkit::run_ok(Command::new("createrepo_c").arg("-q").arg(&repo));
    repo
}

/// Copies `images/pause/3.9` of the product into a fresh tree whose blobs are 0600 and
/// directories 0700, with its registry include (root variable `$mode_images`).
fn private_tree(tmp: &Path) -> (PathBuf, Image) {
    let (repo, _) = build_product(tmp);
    let src = repo.join("_build/root/images/pause/3.9");
    let tree = tmp.join("tree");
    let tag_dir = tree.join("images/pause/3.9");
    fs::create_dir_all(&tag_dir).unwrap();
    for e in fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let dest = tag_dir.join(p.file_name().unwrap());
        fs::copy(&p, &dest).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
    }
    for d in [
        &tree,
        &tree.join("images"),
        &tree.join("images/pause"),
        &tag_dir,
    ] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let inc = generate(
        &tree.join("images"),
        &Options {
            name_prefix: "mode-test/".into(),
            server_root: "$mode_images".into(),
            constants: buildchain::registry_config::Constants::Include,
        },
    )
    .unwrap();
    buildchain::fsutil::write_atomic(&tree.join("registry.inc"), inc.as_bytes()).unwrap();
    let img = images_of(&tree.join("images"), "mode-test/").remove(0);
    (tree, img)
}

/// Masters `tree` (extra `args` for `iso master`), extracts it under a 0755 mount point and
/// serves it with unprivileged nginx workers.
fn master_and_serve(tmp: &Path, tree: &Path, name: &str, args: &[&str]) -> testkit::Server {
    let iso = tmp.join(format!("{name}.iso"));
    testkit::run_ok(
        Command::new(BIN)
            .args(["iso", "master", "--volid", "MODES"])
            .args(args)
            .arg("-o")
            .arg(&iso)
            .arg(tree),
    );
    let mount = public_dir(&tmp.join("srv")).join(name);
    extract(&iso, &mount);
    testkit::start_nginx_unprivileged(&format!(
        "    set $mode_images \"{}\";\n    include \"{}\";\n",
        mount.join("images").display(),
        mount.join("registry.inc").display()
    ))
}

#[test]
fn a_tree_with_0600_blobs_is_still_served_to_unprivileged_workers() {
    umask_077();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fs::set_permissions(t, fs::Permissions::from_mode(0o755)).unwrap();
    let (tree, img) = private_tree(t);
    let blob = img.config.clone().unwrap();
    let blob_path = format!("/v2/{}/blobs/{blob}", img.repo);

    // Default mastering (mkisofs -r modes): served, and containerd pulls it.
    let iso = t.join("normalized.iso");
    let nginx = master_and_serve(t, &tree, "normalized", &[]);
    assert_eq!(assert_world_readable(&iso), 10);
    let (status, _, body) = testkit::http_request(nginx.port, "GET", &blob_path, &[]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let ctd = testkit::start_containerd();
    containerd_pulls(&ctd, &nginx.host(), std::slice::from_ref(&img));
    drop(nginx);

    // The control: modes kept verbatim reproduce the node failure (403, ctr refuses).
    let nginx = master_and_serve(t, &tree, "kept", &["--keep-modes"]);
    let (status, _, _) = testkit::http_request(nginx.port, "GET", &blob_path, &[]);
    assert_eq!(status, 403);
    let r = format!("{}/{}:{}", nginx.host(), img.repo, img.tag);
    let out = testkit::run(ctd.ctr("k8s.io").args([
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        &r,
    ]));
    assert!(!out.status.success());
    assert!(text(&out).contains("403 Forbidden"), "{}", text(&out));
    assert!(
        testkit::nginx_error_log(&nginx).contains("(13: Permission denied)"),
        "{}",
        testkit::nginx_error_log(&nginx)
    );
}

#[test]
fn store_blobs_are_0644_and_old_0600_blobs_are_fixed_when_linked() {
    umask_077();
    let tmp = tempfile::tempdir().unwrap();
    let store = buildchain::store::Store::open(tmp.path().join("store")).unwrap();
    let hex = store.put_bytes(b"layer bytes").unwrap();
    assert_eq!(mode(&store.path(&hex)), 0o644);
    // A blob left 0600 by an older version is made world-readable when it is linked out.
    fs::set_permissions(store.path(&hex), fs::Permissions::from_mode(0o600)).unwrap();
    let dest = tmp.path().join("root/images/x/1.0").join(&hex);
    store.link_to(&hex, &dest).unwrap();
    assert_eq!(mode(&dest), 0o644);
    assert_eq!(mode(&store.path(&hex)), 0o644);
    // Atomic writes too.
    let f = tmp.path().join("root/version");
    buildchain::fsutil::write_atomic(&f, b"Directory Transport Version: 1.1\n").unwrap();
    assert_eq!(mode(&f), 0o644);
}
