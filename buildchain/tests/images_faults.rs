//! Fault tolerance and dedup, through a proxy the test controls in front of a real
//! `docker-registry`: resets, 500s, 429 + Retry-After and truncated bodies are retried; a blob
//! whose bytes do not match its digest fails naming the image and the digest and never enters
//! the store; a blob shared by two images is fetched once; a second fetch makes zero requests.

#[path = "images_support.rs"]
mod support;

use std::time::Duration;

use buildchain::config::Profile;
use buildchain::images::inventory::Inventory;
use buildchain::images::manifest::Platform;
use buildchain::images::reference::Reference;
use buildchain::images::registry::{fetch_many, ClientOptions, RegistryClient};
use buildchain::images::ImageBuilder;
use buildchain::store::Store;
use support::*;
use testkit::start_docker_registry;

struct Setup {
    reg: testkit::Server,
    proxy: Proxy,
    tmp: tempfile::TempDir,
    /// (repo, manifest digest, layer hexes)
    images: Vec<(String, String, Vec<String>)>,
}

/// Two images sharing a base layer, pushed to a registry, behind a proxy.
fn setup() -> Setup {
    let reg = start_docker_registry();
    let tmp = tempfile::tempdir().unwrap();
    let base = layer(100, "base.bin", 150_000);
    let mut images = Vec::new();
    for (i, name) in ["alpha", "beta"].into_iter().enumerate() {
        let img = TestImage {
            layers: vec![base.clone(), layer(201 + 2 * i as u64, "app.bin", 60_000)],
            arch: "amd64",
            title: name.into(),
        };
        let l = layout_dir(tmp.path(), name);
        write_oci_layout(&l, &img, "1");
        let d = push(&l, "1", &reg.host(), &format!("faults/{name}"), false);
        images.push((
            format!("faults/{name}"),
            d,
            img.layers.iter().map(|(gz, _)| sha(gz)).collect(),
        ));
    }
    let proxy = Proxy::start(reg.port);
    Setup {
        reg,
        proxy,
        tmp,
        images,
    }
}

fn new_client() -> RegistryClient {
    RegistryClient::new(ClientOptions {
        initial_backoff: Duration::from_millis(20),
        ..Default::default()
    })
    .unwrap()
}

fn jobs(s: &Setup, out: &str) -> Vec<(Reference, String, std::path::PathBuf)> {
    s.images
        .iter()
        .map(|(repo, d, _)| {
            let r = Reference::parse(&format!("{}/{repo}@{d}", s.proxy.host())).unwrap();
            (
                r,
                format!("image {repo}"),
                s.tmp.path().join(out).join(repo),
            )
        })
        .collect()
}

fn assert_store_sound(store: &Store) {
    for e in std::fs::read_dir(store.root().join("blobs/sha256")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            store.verify(&name).unwrap(),
            "store holds a bad blob {name}"
        );
    }
    let tmp_left: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .collect();
    assert!(
        tmp_left.is_empty(),
        "partial files left in the store: {tmp_left:?}"
    );
}

#[test]
fn transient_faults_are_retried() {
    let s = setup();
    let (alpha_app, beta_app, base) = (&s.images[0].2[1], &s.images[1].2[1], &s.images[0].2[0]);
    s.proxy.inject("/manifests/", FaultKind::Reset, 1);
    s.proxy
        .inject(&format!("sha256:{base}"), FaultKind::Truncate, 1);
    s.proxy.inject(
        &format!("sha256:{alpha_app}"),
        FaultKind::Status(500, None),
        1,
    );
    s.proxy.inject(
        &format!("sha256:{beta_app}"),
        FaultKind::Status(429, Some(1)),
        1,
    );
    s.proxy
        .inject(&format!("sha256:{beta_app}"), FaultKind::Reset, 1);
    let store = Store::open(s.tmp.path().join("store")).unwrap();
    let client = new_client();
    let res = fetch_many(
        &client,
        &store,
        &jobs(&s, "out"),
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap();
    assert_eq!(res.len(), 2);
    assert!(
        s.proxy.pending().is_empty(),
        "every fault was hit: {:?}",
        s.proxy.pending()
    );
    let got: std::collections::BTreeSet<String> = res.iter().map(|r| r.digest()).collect();
    let want: std::collections::BTreeSet<String> =
        s.images.iter().map(|(_, d, _)| d.clone()).collect();
    assert_eq!(got, want);
    for (repo, d, layers) in &s.images {
        // The manifest written is the one the registry serves under that digest.
        let m = std::fs::read(s.tmp.path().join("out").join(repo).join("manifest.json")).unwrap();
        assert_eq!(&format!("sha256:{}", sha(&m)), d);
        for l in layers {
            assert!(s.tmp.path().join("out").join(repo).join(l).is_file());
        }
        // Same layout as skopeo writes (straight from the registry: skopeo probes TLS first,
        // which the proxy does not answer).
        let theirs = s.tmp.path().join("skopeo").join(repo);
        skopeo_pull(&format!("{}/{repo}@{d}", s.reg.host()), &theirs, false);
        assert_same_dir(&s.tmp.path().join("out").join(repo), &theirs);
    }
    assert_store_sound(&store);
}

#[test]
fn corrupted_blob_fails_naming_image_and_digest() {
    let s = setup();
    let bad = s.images[1].2[1].clone();
    s.proxy
        .inject(&format!("sha256:{bad}"), FaultKind::Corrupt, 1000);
    let store = Store::open(s.tmp.path().join("store")).unwrap();
    let client = new_client();
    let err = fetch_many(
        &client,
        &store,
        &jobs(&s, "out"),
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("faults/beta") && msg.contains(&bad),
        "error names image and digest: {msg}"
    );
    assert!(msg.contains("does not match"), "{msg}");
    assert!(
        !store.contains(&bad),
        "the corrupted blob must not be in the store"
    );
    // Not retried: a digest mismatch with a complete body is not transient.
    assert_eq!(s.proxy.count(&format!("sha256:{bad}")), 1);
    assert_store_sound(&store);
}

#[test]
fn shared_blob_fetched_once_and_second_fetch_makes_no_request() {
    let s = setup();
    let store = Store::open(s.tmp.path().join("store")).unwrap();
    let client = new_client();
    fetch_many(
        &client,
        &store,
        &jobs(&s, "first"),
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap();
    let base = &s.images[0].2[0];
    assert_eq!(s.images[1].2[0], *base);
    assert_eq!(
        s.proxy.count(&format!("blobs/sha256:{base}")),
        1,
        "shared base layer fetched once"
    );
    // 2 manifests + 2 configs + 3 unique layers.
    assert_eq!(
        s.proxy.requests.load(std::sync::atomic::Ordering::SeqCst),
        7
    );
    let unique: u64 = {
        let mut all: Vec<&String> = s.images.iter().flat_map(|i| &i.2).collect();
        all.sort();
        all.dedup();
        all.iter()
            .map(|h| std::fs::metadata(store.path(h)).unwrap().len())
            .sum()
    };
    assert!(
        client
            .stats
            .blob_bytes
            .load(std::sync::atomic::Ordering::SeqCst)
            >= unique
    );

    // Same images again into new directories, same store: no HTTP request at all.
    let before = s.proxy.requests.load(std::sync::atomic::Ordering::SeqCst);
    let again = new_client();
    fetch_many(
        &again,
        &store,
        &jobs(&s, "second"),
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap();
    assert_eq!(
        s.proxy.requests.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "second fetch made requests"
    );
    assert_eq!(
        again
            .stats
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    for (repo, _, _) in &s.images {
        assert_same_dir(
            &s.tmp.path().join("first").join(repo),
            &s.tmp.path().join("second").join(repo),
        );
    }

    // Through the inventory (what `images:*` tasks run): first run fetches, second none.
    let repo_root = s.tmp.path().join("checkout");
    std::fs::create_dir_all(repo_root.join("images")).unwrap();
    let mut yaml = String::from("images:\n");
    for (repo, d, _) in &s.images {
        let name = repo.rsplit('/').next().unwrap();
        yaml.push_str(&format!(
            "  - {{name: {name}, tag: \"1\", registry: \"{}/{repo}@{d}\", tarball: true}}\n",
            s.proxy.host()
        ));
    }
    std::fs::write(repo_root.join("images/inventory.yaml"), yaml).unwrap();
    let inv = Inventory::load(&repo_root, Profile::Release).unwrap_or_else(|_| {
        std::fs::write(repo_root.join("images/release.yaml"), "images: []\n").unwrap();
        Inventory::load(&repo_root, Profile::Release).unwrap()
    });
    let store2 = Store::open(s.tmp.path().join("store2")).unwrap();
    let before = s.proxy.requests.load(std::sync::atomic::Ordering::SeqCst);
    let b = ImageBuilder::new(&repo_root, store2.clone(), inv.clone(), 0);
    for name in inv.images.keys() {
        b.materialize(name, &s.tmp.path().join("iso/images"), "x/", None)
            .unwrap();
    }
    let used = s.proxy.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(used, 7, "inventory fetch: each blob once");
    assert!(s.tmp.path().join("iso/images/alpha-1.tar").is_file());
    let b2 = ImageBuilder::new(&repo_root, store2, inv.clone(), 0);
    let before = s.proxy.requests.load(std::sync::atomic::Ordering::SeqCst);
    for name in inv.images.keys() {
        b2.materialize(name, &s.tmp.path().join("iso2/images"), "x/", None)
            .unwrap();
    }
    assert_eq!(
        s.proxy.requests.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "second inventory run made requests"
    );
}

#[test]
fn unreachable_registry_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let c = RegistryClient::new(ClientOptions {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        ..Default::default()
    })
    .unwrap();
    // A port nothing listens on (bound then released).
    let port = testkit::free_port();
    let r = Reference::parse(&format!("127.0.0.1:{port}/x/y@sha256:{}", "a".repeat(64))).unwrap();
    let err = c
        .resolve(
            &store,
            &r,
            &Platform::default_linux_amd64(),
            false,
            "image y",
        )
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("image y"),
        "{msg}"
    );
    // A host name that cannot resolve names the registry.
    let r = Reference::parse(&format!("registry.invalid/x/y@sha256:{}", "a".repeat(64))).unwrap();
    let err = c
        .resolve(
            &store,
            &r,
            &Platform::default_linux_amd64(),
            false,
            "image y",
        )
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("registry.invalid"), "{msg}");
}

#[test]
fn bearer_token_and_basic_auth() {
    let s = setup();
    let tmp = tempfile::tempdir().unwrap();
    // Anonymous bearer token flow.
    *s.proxy.auth.lock().unwrap() = Some(AuthMode::Bearer("tok123".into()));
    let store = Store::open(tmp.path().join("store")).unwrap();
    fetch_many(
        &new_client(),
        &store,
        &jobs(&s, "bearer"),
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap();
    assert!(s
        .proxy
        .paths
        .lock()
        .unwrap()
        .iter()
        .any(|p| p
            .starts_with("/token?service=test-registry&scope=repository%3Afaults%2Falpha%3Apull")));

    // Basic auth from a docker config.json (REGISTRY_AUTH_FILE equivalent).
    *s.proxy.auth.lock().unwrap() = Some(AuthMode::Basic("dXNlcjpzZWNyZXQ=".into())); // user:secret
    let auth_file = tmp.path().join("auth.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"dXNlcjpzZWNyZXQ="}}}}}}"#,
            s.proxy.host()
        ),
    )
    .unwrap();
    let with_creds = RegistryClient::new(ClientOptions {
        auth_file: Some(auth_file),
        initial_backoff: Duration::from_millis(20),
        ..Default::default()
    })
    .unwrap();
    let store2 = Store::open(tmp.path().join("store2")).unwrap();
    fetch_many(
        &with_creds,
        &store2,
        &jobs(&s, "basic"),
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap();
    // Without credentials: a clear error.
    let store3 = Store::open(tmp.path().join("store3")).unwrap();
    let err = fetch_many(
        &new_client_no_creds(tmp.path()),
        &store3,
        &jobs(&s, "nocreds"),
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("requires credentials"),
        "{err:#}"
    );
}

fn new_client_no_creds(dir: &std::path::Path) -> RegistryClient {
    let empty = dir.join("empty-auth.json");
    std::fs::write(&empty, "{}").unwrap();
    RegistryClient::new(ClientOptions {
        auth_file: Some(empty),
        initial_backoff: Duration::from_millis(20),
        ..Default::default()
    })
    .unwrap()
}
