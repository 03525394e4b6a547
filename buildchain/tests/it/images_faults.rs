//! Fault tolerance and dedup, through a proxy the test controls in front of a real
//! `docker-registry`: resets, 500s, 429 + Retry-After and truncated bodies are retried; a blob
//! whose bytes do not match its digest fails naming the image and the digest and never enters
//! the store; a blob shared by two images is fetched once; a second fetch makes zero requests.

use crate::images_support as support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
    // A loopback port held by a socket that is bound but not listening: connecting is refused,
    // and no other process can take the port meanwhile. No name is resolved.
    let closed = ClosedPort::new();
    let port = closed.port;
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
    assert_eq!(
        msg,
        format!(
            "image y: manifest sha256:{}: giving up after 2 attempts: registry 127.0.0.1:{port}: io: Connection refused (os error 111)",
            "a".repeat(64)
        )
    );
}

/// A TCP socket bound to 127.0.0.1 on an ephemeral port, never listening.
struct ClosedPort {
    fd: i32,
    port: u16,
}

impl ClosedPort {
    fn new() -> Self {
        // SAFETY: plain socket(2)/bind(2)/getsockname(2) calls on a fresh descriptor and
        // stack-allocated, correctly sized address structures.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut a: libc::sockaddr_in = std::mem::zeroed();
            a.sin_family = libc::AF_INET as libc::sa_family_t;
            a.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            a.sin_port = 0;
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let r = libc::bind(fd, &a as *const _ as *const libc::sockaddr, len);
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            let mut out: libc::sockaddr_in = std::mem::zeroed();
            let mut olen = len;
            let r = libc::getsockname(fd, &mut out as *mut _ as *mut libc::sockaddr, &mut olen);
            assert_eq!(r, 0, "getsockname: {}", std::io::Error::last_os_error());
            ClosedPort {
                fd,
                port: u16::from_be(out.sin_port),
            }
        }
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value owns.
        unsafe {
            libc::close(self.fd);
        }
    }
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

/// How the hostile registry serves the layer blob.
#[derive(Clone, Copy)]
enum LayerMode {
    /// Declares `size` bytes and streams zeros until the client goes away.
    Endless,
    /// Sends one byte every 100 ms.
    Trickle,
}

/// A registry served by this test on 127.0.0.1: one repository `hostile/x` whose manifest
/// declares a layer of `layer_size` bytes, served according to `mode`.
struct Hostile {
    port: u16,
    manifest_digest: String,
    layer_hex: String,
    layer_requests: Arc<AtomicUsize>,
}

impl Hostile {
    fn start(layer_size: u64, mode: LayerMode) -> Hostile {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let config_hex = sha(&config);
        let layer_hex = sha(format!("hostile layer {layer_size}").as_bytes());
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{config_hex}"), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": format!("sha256:{layer_hex}"), "size": layer_size}],
        }))
        .unwrap();
        let manifest_digest = format!("sha256:{}", sha(&manifest));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let layer_requests = Arc::new(AtomicUsize::new(0));
        let (lr, lh) = (layer_requests.clone(), layer_hex.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (config, manifest, lr, lh) =
                    (config.clone(), manifest.clone(), lr.clone(), lh.clone());
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if conn.read(&mut b).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(b[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let reply = |conn: &mut TcpStream, ct: &str, body: &[u8]| {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = conn.write_all(body);
                    };
                    if path.contains("/manifests/") {
                        reply(
                            &mut conn,
                            "application/vnd.oci.image.manifest.v1+json",
                            &manifest,
                        );
                    } else if path.ends_with(&sha(&config)) {
                        reply(&mut conn, "application/octet-stream", &config);
                    } else if path.ends_with(&lh) {
                        lr.fetch_add(1, Ordering::SeqCst);
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {layer_size}\r\nConnection: close\r\n\r\n"
                        );
                        match mode {
                            LayerMode::Endless => {
                                let zeros = vec![0u8; 64 * 1024];
                                while conn.write_all(&zeros).is_ok() {}
                            }
                            LayerMode::Trickle => {
                                while conn.write_all(b"x").is_ok() {
                                    std::thread::sleep(Duration::from_millis(100));
                                }
                            }
                        }
                    } else {
                        let _ = conn.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                });
            }
        });
        Hostile {
            port,
            manifest_digest,
            layer_hex,
            layer_requests,
        }
    }

    fn job(&self, out: &Path) -> Vec<(Reference, String, std::path::PathBuf)> {
        let r = Reference::parse(&format!(
            "127.0.0.1:{}/hostile/x@{}",
            self.port, self.manifest_digest
        ))
        .unwrap();
        vec![(r, "image hostile/x".to_string(), out.join("x"))]
    }
}

fn hostile_client(opts: ClientOptions) -> RegistryClient {
    RegistryClient::new(ClientOptions {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        ..opts
    })
    .unwrap()
}

#[test]
fn blob_larger_than_the_free_space_is_refused_before_download() {
    let h = Hostile::start(1 << 62, LayerMode::Endless);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let client = hostile_client(ClientOptions::default());
    let err = fetch_many(
        &client,
        &store,
        &h.job(tmp.path()),
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    let head = format!(
        "image hostile/x: blob sha256:{} declares 4611686018427387904 bytes, more than the ",
        h.layer_hex
    );
    let tail = format!(
        " bytes free on the file system of the store {}",
        store.root().display()
    );
    assert!(msg.starts_with(&head) && msg.ends_with(&tail), "{msg}");
    let free = &msg[head.len()..msg.len() - tail.len()];
    assert!(free.parse::<u64>().is_ok(), "{msg}");
    assert_eq!(h.layer_requests.load(Ordering::SeqCst), 0);
    assert!(!store.contains(&h.layer_hex));
    assert_store_sound(&store);
}

#[test]
fn blob_larger_than_the_configured_maximum_is_refused() {
    let h = Hostile::start(60_000, LayerMode::Endless);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let client = hostile_client(ClientOptions {
        max_blob_bytes: Some(1000),
        ..Default::default()
    });
    let err = fetch_many(
        &client,
        &store,
        &h.job(tmp.path()),
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "image hostile/x: blob sha256:{} declares 60000 bytes, more than the maximum of 1000 bytes (BUILDCHAIN_MAX_BLOB_BYTES)",
            h.layer_hex
        )
    );
    assert_eq!(h.layer_requests.load(Ordering::SeqCst), 0);
    assert_store_sound(&store);
}

#[test]
fn trickling_registry_fails_on_the_stall_timeout() {
    let h = Hostile::start(100_000, LayerMode::Trickle);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let client = hostile_client(ClientOptions {
        stall_timeout: Duration::from_secs(1),
        ..Default::default()
    });
    let err = fetch_many(
        &client,
        &store,
        &h.job(tmp.path()),
        &Platform::default_linux_amd64(),
        None,
    )
    .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "image hostile/x: blob sha256:{hex}: giving up after 2 attempts: http://127.0.0.1:{port}/v2/hostile/x/blobs/sha256:{hex}: stalled: less than 65536 bytes received in 1 s (BUILDCHAIN_FETCH_STALL_SECS)",
            hex = h.layer_hex,
            port = h.port
        )
    );
    assert_eq!(h.layer_requests.load(Ordering::SeqCst), 2);
    assert!(!store.contains(&h.layer_hex));
    assert_store_sound(&store);
}

/// The CLI installs a `tracing` subscriber: a retried request shows one warning on standard
/// error by default; `RUST_LOG=off` silences it.
#[test]
fn retry_warning_is_shown_on_stderr() {
    let s = setup();
    let (repo, digest, _) = &s.images[0];
    let reference = format!("{}/{repo}@{digest}", s.proxy.host());
    let run = |dest: &str, rust_log: Option<&str>| {
        s.proxy
            .inject("/manifests/", FaultKind::Status(500, None), 1);
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_buildchain"));
        c.args(["image", "fetch", "--insecure", &reference])
            .arg(s.tmp.path().join(dest))
            .env(
                "BUILDCHAIN_STORE",
                s.tmp.path().join(format!("{dest}-store")),
            )
            .env_remove("RUST_LOG");
        if let Some(l) = rust_log {
            c.env("RUST_LOG", l);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(s.proxy.pending().is_empty(), "the fault was not hit");
        String::from_utf8(out.stderr).unwrap()
    };
    assert_eq!(
        run("out", None),
        format!(
            " WARN image {reference}: manifest {digest}: http://{}/v2/{repo}/manifests/{digest}: \
             HTTP 500; retrying (attempt 1)\n",
            s.proxy.host()
        )
    );
    assert_eq!(run("out2", Some("off")), "");
}
