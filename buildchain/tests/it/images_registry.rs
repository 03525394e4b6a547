//! Fetching from a real `docker-registry` seeded by the test with skopeo: single- and
//! multi-platform images by digest, OCI and Docker v2s2 manifests; the written `dir:` layouts are
//! byte-for-byte what `skopeo copy docker://… dir:` writes, and skopeo reads them back.

use crate::images_support as support;

use std::path::Path;
use std::process::Command;

use buildchain::images::layout::write_dir_layout;
use buildchain::images::manifest::Platform;
use buildchain::images::reference::Reference;
use buildchain::images::registry::{fetch_many, ClientOptions, RegistryClient};
use buildchain::store::Store;
use support::*;
use testkit::{require_tool, run_ok, start_docker_registry};

fn fetch(client: &RegistryClient, store: &Store, reference: &str, dest: &Path) -> String {
    let r = Reference::parse(reference).unwrap();
    let res = fetch_many(
        client,
        store,
        &[(r, format!("image {reference}"), dest.to_path_buf())],
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap();
    res[0].digest()
}

fn skopeo_inspect_ok(dir: &Path) -> serde_json::Value {
    let out = run_ok(
        Command::new(require_tool("skopeo")).args(["inspect", &format!("dir:{}", dir.display())]),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn single_platform_oci_and_v2s2_match_skopeo() {
    let reg = start_docker_registry();
    let tmp = tempfile::tempdir().unwrap();
    let img = TestImage {
        layers: vec![layer(1, "base.bin", 200_000), layer(2, "app.bin", 50_000)],
        arch: "amd64",
        title: "single".into(),
    };
    let layout = layout_dir(tmp.path(), "single");
    write_oci_layout(&layout, &img, "1.0");
    let oci_digest = push(&layout, "1.0", &reg.host(), "test/single", false);
    let v2_digest = {
        // Same image pushed as Docker v2s2 under another repository.
        push(&layout, "1.0", &reg.host(), "test/single-v2s2", true)
    };
    assert_ne!(oci_digest, v2_digest);
    let store = Store::open(tmp.path().join("store")).unwrap();
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    for (repo, digest, media) in [
        (
            "test/single",
            &oci_digest,
            "application/vnd.oci.image.manifest.v1+json",
        ),
        (
            "test/single-v2s2",
            &v2_digest,
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
    ] {
        let reference = format!("{}/{repo}@{digest}", reg.host());
        let ours = tmp.path().join(format!("ours-{}", repo.replace('/', "_")));
        let theirs = tmp
            .path()
            .join(format!("skopeo-{}", repo.replace('/', "_")));
        assert_eq!(&fetch(&client, &store, &reference, &ours), digest);
        skopeo_pull(&reference, &theirs, false);
        assert_same_dir(&ours, &theirs);
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ours.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["mediaType"], media);
        let i = skopeo_inspect_ok(&ours);
        assert_eq!(&i["Digest"], digest.as_str());
        assert_eq!(i["Labels"]["title"], "single");
    }
    // Tag references work too (resolved then verified).
    let ours = tmp.path().join("by-tag");
    assert_eq!(
        fetch(
            &client,
            &store,
            &format!("{}/test/single:1.0", reg.host()),
            &ours
        ),
        oci_digest
    );
}

#[test]
fn multi_platform_index_resolves_to_platform_or_is_kept() {
    let reg = start_docker_registry();
    let tmp = tempfile::tempdir().unwrap();
    let common = layer(10, "common.bin", 100_000);
    let mut descs = Vec::new();
    for (i, arch) in ["amd64", "arm64"].into_iter().enumerate() {
        let img = TestImage {
            layers: vec![common.clone(), layer(21 + 2 * i as u64, "arch.bin", 30_000)],
            arch,
            title: format!("multi-{arch}"),
        };
        let layout = layout_dir(tmp.path(), arch);
        write_oci_layout(&layout, &img, arch);
        let d = push(&layout, arch, &reg.host(), "test/multi", false);
        let raw = run_ok(Command::new(require_tool("skopeo")).args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{}/test/multi@{d}", reg.host()),
        ]));
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": raw.stdout.len(),
            "platform": {"os": "linux", "architecture": arch}
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs,
    }))
    .unwrap();
    let index_digest = format!("sha256:{}", sha(&index));
    assert_eq!(
        put_manifest(
            reg.port,
            "test/multi",
            "latest",
            "application/vnd.oci.image.index.v1+json",
            &index
        ),
        201
    );

    let store = Store::open(tmp.path().join("store")).unwrap();
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    let reference = format!("{}/test/multi@{index_digest}", reg.host());
    let ours = tmp.path().join("ours");
    assert_eq!(
        fetch(&client, &store, &reference, &ours),
        descs[0]["digest"].as_str().unwrap()
    );
    let theirs = tmp.path().join("theirs");
    skopeo_pull(&reference, &theirs, false);
    assert_same_dir(&ours, &theirs);
    assert_eq!(skopeo_inspect_ok(&ours)["Architecture"], "amd64");

    // Another platform.
    let r = Reference::parse(&reference).unwrap();
    let arm = client
        .resolve(
            &store,
            &r,
            &Platform::parse("linux/arm64").unwrap(),
            false,
            "multi",
        )
        .unwrap();
    assert_eq!(arm.digest(), descs[1]["digest"].as_str().unwrap());

    // Keeping the index (every platform): same files as `skopeo copy --all`.
    let kept = client
        .resolve(&store, &r, &Platform::default_linux_amd64(), true, "multi")
        .unwrap();
    client
        .fetch_image_blobs(&store, &r, &kept, "multi", None)
        .unwrap();
    let ours_all = tmp.path().join("ours-all");
    write_dir_layout(&store, &kept, &ours_all).unwrap();
    assert_eq!(
        std::fs::read(ours_all.join("manifest.json")).unwrap(),
        index
    );
    let theirs_all = tmp.path().join("theirs-all");
    skopeo_pull(&reference, &theirs_all, true);
    assert_same_dir(&ours_all, &theirs_all);
}

#[test]
fn image_fetch_verb_writes_the_dir_layout() {
    let reg = start_docker_registry();
    let tmp = tempfile::tempdir().unwrap();
    let layout = layout_dir(tmp.path(), "verb");
    write_oci_layout(
        &layout,
        &TestImage {
            layers: vec![layer(5, "f", 10_000)],
            arch: "amd64",
            title: "verb".into(),
        },
        "v1",
    );
    let digest = push(&layout, "v1", &reg.host(), "verb/img", false);
    // The verb uses the default store: point it at a temp dir (only this test reads it).
    std::env::set_var("BUILDCHAIN_STORE", tmp.path().join("store"));
    let dest = tmp.path().join("out");
    buildchain::cli::images::fetch(&buildchain::cli::images::FetchArgs {
        reference: format!("{}/verb/img:v1", reg.host()),
        dest: dest.clone(),
        insecure: true,
    })
    .unwrap();
    let theirs = tmp.path().join("theirs");
    skopeo_pull(&format!("{}/verb/img@{digest}", reg.host()), &theirs, false);
    assert_same_dir(&dest, &theirs);
    // An unknown image fails with an error naming it.
    let err = buildchain::cli::images::fetch(&buildchain::cli::images::FetchArgs {
        reference: format!("{}/verb/nope:v1", reg.host()),
        dest: tmp.path().join("nope"),
        insecure: true,
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("verb/nope") && msg.contains("404"), "{msg}");
}

#[test]
fn refuses_to_overwrite_a_non_image_directory() {
    let reg = start_docker_registry();
    let tmp = tempfile::tempdir().unwrap();
    let layout = layout_dir(tmp.path(), "x");
    write_oci_layout(
        &layout,
        &TestImage {
            layers: vec![layer(7, "f", 1000)],
            arch: "amd64",
            title: "x".into(),
        },
        "v1",
    );
    let digest = push(&layout, "v1", &reg.host(), "x/img", false);
    let dest = tmp.path().join("precious");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("notes.txt"), "keep me").unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    let r = Reference::parse(&format!("{}/x/img@{digest}", reg.host())).unwrap();
    let err = fetch_many(
        &client,
        &store,
        &[(r, "x".into(), dest.clone())],
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("refusing to overwrite"),
        "{err:#}"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("notes.txt")).unwrap(),
        "keep me"
    );
}
