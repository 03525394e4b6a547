//! Local image builds (no Docker, no network): reproducibility across builds and checkouts,
//! runnable metadata seen by skopeo, shared base layers stored once, docker-archive tarballs,
//! OCI-layout / docker-archive sources, inventory errors with file:line:column.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use buildchain::config::Profile;
use buildchain::images::inventory::Inventory;
use buildchain::images::ImageBuilder;
use buildchain::store::Store;
use serde_json::Value;
use testkit::{require_tool, run_ok, workspace_root};

const PREFIX: &str = "metalk8s-registry-from-config.invalid/metalk8s-130.0.0-dev/";

/// Builds every default-profile image of `repo` into `out` with a store at `store`; returns
/// name → manifest digest.
fn build_all(repo: &Path, store: &Path, out: &Path, epoch: u64) -> BTreeMap<String, String> {
    let inv = Inventory::load(repo, Profile::Default).expect("inventory");
    let b = ImageBuilder::new(repo, Store::open(store).unwrap(), inv.clone(), epoch);
    let mut digests = BTreeMap::new();
    for name in inv.images.keys() {
        b.materialize(name, out, PREFIX, None).unwrap();
        digests.insert(name.clone(), b.resolve(name, None).unwrap().digest());
    }
    digests
}

fn skopeo_json(args: &[&str]) -> Value {
    let out = run_ok(Command::new(require_tool("skopeo")).args(args));
    serde_json::from_slice(&out.stdout).expect("skopeo JSON")
}

#[test]
fn local_builds_are_reproducible_across_builds_and_checkouts() {
    let repo = workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let a = build_all(
        &repo,
        &tmp.path().join("s1"),
        &tmp.path().join("o1"),
        1_700_000_000,
    );
    let b = build_all(
        &repo,
        &tmp.path().join("s2"),
        &tmp.path().join("o2"),
        1_700_000_000,
    );
    assert_eq!(a, b, "two builds gave different digests");
    assert!(a.len() >= 3, "at least three local images: {a:?}");

    // A second checkout (same files, different path and mtimes).
    let checkout = tmp.path().join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(repo.join("images"))
            .arg(&checkout),
    );
    std::fs::write(
        checkout.join("VERSION"),
        std::fs::read(repo.join("VERSION")).unwrap(),
    )
    .unwrap();
    let c = build_all(
        &checkout,
        &tmp.path().join("s3"),
        &tmp.path().join("o3"),
        1_700_000_000,
    );
    assert_eq!(a, c, "another checkout gave different digests");

    // The tarball is byte-identical too.
    let t1 = std::fs::read(tmp.path().join("o1/pause-3.9.tar")).unwrap();
    let t2 = std::fs::read(tmp.path().join("o3/pause-3.9.tar")).unwrap();
    assert_eq!(t1, t2, "docker-archive tarballs differ");

    // A different SOURCE_DATE_EPOCH changes the digests (mtimes are really applied).
    let d = build_all(&repo, &tmp.path().join("s4"), &tmp.path().join("o4"), 0);
    assert_ne!(a["pause"], d["pause"]);
}

#[test]
fn skopeo_sees_runnable_metadata_and_shared_base_layer() {
    let repo = workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("images");
    let store_dir = tmp.path().join("store");
    let digests = build_all(&repo, &store_dir, &out, 0);

    let utils = out.join("metalk8s-utils/1.0");
    let dir_ref = format!("dir:{}", utils.display());
    let inspect = skopeo_json(&["inspect", &dir_ref]);
    assert_eq!(inspect["Digest"], digests["metalk8s-utils"]);
    let env: Vec<&str> = inspect["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"METALK8S_UTILS_MODE=diagnostics"), "{env:?}");
    assert!(
        env.iter().any(|e| e.starts_with("PATH=")),
        "base Env inherited: {env:?}"
    );
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.title"],
        "metalk8s-utils"
    );
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.vendor"], "Scality",
        "base label inherited"
    );
    assert_eq!(inspect["Architecture"], "amd64");
    let config = skopeo_json(&["inspect", "--config", &dir_ref]);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/metalk8s-utils"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["--help"]));
    assert_eq!(config["config"]["WorkingDir"], "/srv");
    assert!(config["config"]["ExposedPorts"]["8080/tcp"].is_object());
    let pause_cfg = skopeo_json(&[
        "inspect",
        "--config",
        &format!("dir:{}", out.join("pause/3.9").display()),
    ]);
    assert_eq!(
        pause_cfg["config"]["Entrypoint"],
        serde_json::json!(["/pause"])
    );
    assert_eq!(pause_cfg["config"]["User"], "65534:65534");

    // skopeo can copy the layout to an OCI layout that oci-image-tool validates.
    let oci = tmp.path().join("oci");
    run_ok(Command::new(require_tool("skopeo")).args([
        "copy",
        &dir_ref,
        &format!("oci:{}:1.0", oci.display()),
    ]));
    let v = run_ok(
        Command::new(require_tool("oci-image-tool"))
            .args(["validate", "--type", "image", "--ref", "name=1.0"])
            .arg(&oci),
    );
    assert!(String::from_utf8_lossy(&v.stdout).contains("Validation succeeded"));

    // pause and metalk8s-utils share the base layer: same digest, one inode (hard links).
    let layers = |p: &Path| -> Vec<String> {
        let m: Value =
            serde_json::from_slice(&std::fs::read(p.join("manifest.json")).unwrap()).unwrap();
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap()[7..].to_string())
            .collect()
    };
    let pause = out.join("pause/3.9");
    let (lp, lu) = (layers(&pause), layers(&utils));
    assert_eq!(lp[0], lu[0], "base layer shared");
    assert_ne!(lp[1], lu[1]);
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&pause.join(&lp[0])), ino(&utils.join(&lu[0])));
    assert_eq!(
        ino(&pause.join(&lp[0])),
        ino(&store_dir.join("blobs/sha256").join(&lp[0]))
    );
    assert_eq!(
        std::fs::read_to_string(utils.join("version")).unwrap(),
        "Directory Transport Version: 1.1\n"
    );

    // Layer tar content: sorted, uid/gid 0, modes.
    let tar = Command::new("tar")
        .arg("-tvzf")
        .arg(utils.join(&lu[1]))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&tar.stdout).to_string();
    assert!(
        listing.contains("-rwxr-xr-x 0/0") && listing.contains("usr/local/bin/metalk8s-utils"),
        "{listing}"
    );
    assert!(listing.contains("etc/metalk8s-utils.conf"), "{listing}");

    // The tarball is a docker-archive skopeo reads, tagged with the registry prefix.
    let tarball = out.join("pause-3.9.tar");
    let t = skopeo_json(&["inspect", &format!("docker-archive:{}", tarball.display())]);
    assert_eq!(
        t["RepoTags"],
        serde_json::json!([]),
        "skopeo hides RepoTags of archives"
    );
    let list = run_ok(Command::new("tar").arg("-tf").arg(&tarball));
    let names = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        names.contains("manifest.json") && names.contains("repositories"),
        "{names}"
    );
    let m = run_ok(
        Command::new("tar")
            .arg("-xOf")
            .arg(&tarball)
            .arg("manifest.json"),
    );
    let m: Value = serde_json::from_slice(&m.stdout).unwrap();
    assert_eq!(m[0]["RepoTags"][0], format!("{PREFIX}pause:3.9"));
    assert_eq!(m[0]["Layers"].as_array().unwrap().len(), 2);
}

#[test]
fn oci_layout_and_docker_archive_sources_are_imported() {
    let repo = workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("images");
    let digests = build_all(&repo, &tmp.path().join("store"), &out, 0);
    let skopeo = require_tool("skopeo");
    // Make sources with skopeo in a fresh "repo".
    let r2 = tmp.path().join("repo2");
    std::fs::create_dir_all(r2.join("images/src")).unwrap();
    let src_dir = format!("dir:{}", out.join("metalk8s-utils/1.0").display());
    run_ok(Command::new(&skopeo).args([
        "copy",
        &src_dir,
        &format!("oci:{}:v1", r2.join("images/src/layout").display()),
    ]));
    run_ok(Command::new(&skopeo).args([
        "copy",
        &src_dir,
        &format!(
            "docker-archive:{}:utils:v1",
            r2.join("images/src/utils.tar").display()
        ),
    ]));
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(r2.join("images/src/layout.tar"))
            .arg("-C")
            .arg(r2.join("images/src/layout"))
            .arg("."),
    );
    std::fs::write(
        r2.join("images/inventory.yaml"),
        "images:\n  - {name: from-oci, tag: v1, oci_layout: \"images/src/layout:v1\"}\n  - {name: from-oci-tar, tag: v1, oci_layout: images/src/layout.tar}\n  - {name: from-archive, tag: v1, docker_archive: images/src/utils.tar}\n",
    )
    .unwrap();
    let out2 = tmp.path().join("out2");
    let d2 = build_all(&r2, &tmp.path().join("store2"), &out2, 0);
    // An OCI layout keeps the manifest bytes: same digest as the local build.
    assert_eq!(d2["from-oci"], digests["metalk8s-utils"]);
    assert_eq!(d2["from-oci-tar"], digests["metalk8s-utils"]);
    for n in ["from-oci", "from-oci-tar", "from-archive"] {
        let i = skopeo_json(&[
            "inspect",
            &format!("dir:{}", out2.join(n).join("v1").display()),
        ]);
        assert_eq!(
            i["Labels"]["org.opencontainers.image.title"], "metalk8s-utils",
            "{n}"
        );
    }
}

#[test]
fn inventory_errors_name_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    let inv = tmp.path().join("images/inventory.yaml");
    std::fs::write(
        &inv,
        "images:\n  - name: a\n    tag: \"1\"\n    regsitry: x\n",
    )
    .unwrap();
    let e = format!(
        "{:#}",
        Inventory::load(tmp.path(), Profile::Default).unwrap_err()
    );
    // `regsitry:` is line 4, column 5.
    assert!(
        e.starts_with("images/inventory.yaml:4:5: unknown field `regsitry`"),
        "{e}"
    );
    assert!(
        e.lines()
            .any(|l| l.trim() == "--> images/inventory.yaml:4:5"),
        "{e}"
    );

    std::fs::write(&inv, "images:\n  - name: a\n    tag: \"1\"\n\n  - name: b\n    tag: \"1\"\n    registry: x/b:1\n    local: images/b/\n").unwrap();
    let e = format!(
        "{:#}",
        Inventory::load(tmp.path(), Profile::Default).unwrap_err()
    );
    assert!(
        e.contains("inventory.yaml:2") && e.contains("exactly one source"),
        "{e}"
    );

    std::fs::write(
        &inv,
        "images:\n  - name: a\n    tag: \"1\"\n    registry: quay.io/x/a:1\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join("images/release.yaml"), "images: []\n").unwrap();
    assert!(Inventory::load(tmp.path(), Profile::Default).is_ok());
    let e = format!(
        "{:#}",
        Inventory::load(tmp.path(), Profile::Release).unwrap_err()
    );
    assert!(e.contains("not pinned by digest"), "{e}");

    // The repository's own inventories are valid (release: every entry pinned by digest).
    let repo = workspace_root();
    let def = Inventory::load(&repo, Profile::Default).unwrap();
    let rel = Inventory::load(&repo, Profile::Release).unwrap();
    assert!(rel.images.len() >= def.images.len() + 15);
    assert!(
        rel.images["pause"].registry.is_some(),
        "release replaces the local pause"
    );
}
