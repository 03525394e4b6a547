//! Issue 13: a remote blob cache on a real `docker-registry` (TLS from a test CA, htpasswd
//! auth). A runner fills it; with upstream stopped a fresh runner builds the same ISO from it;
//! a poisoned blob is refused with a warning and the ISO is still right.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");
pub(crate) const ISO: &str = "metalk8s-130.0.0-dev.iso";

/// A separate checkout with its own empty store (also `remote_task_cache`'s runner).
pub(crate) struct Runner {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) store: tempfile::TempDir,
}

impl Runner {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        testkit::copy_product_repo(dir.path());
        Runner {
            dir,
            store: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn cmd(&self, args: &[&str], env: &[(&str, String)]) -> Output {
        let mut c = Command::new(BIN);
        c.arg("--repo")
            .arg(self.dir.path())
            .arg("--no-progress")
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("BUILD_HOST", "ci")
            .env("BUILDCHAIN_STORE", self.store.path())
            .env_remove("BUILD_ROOT")
            .env_remove("PROJECT_NAME")
            .env_remove("BUILDCHAIN_REMOTE_CACHE")
            .env_remove("BUILDCHAIN_REMOTE_CACHE_MODE")
            .env_remove("BUILDCHAIN_REMOTE_CACHE_CA");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    pub(crate) fn ok(&self, args: &[&str], env: &[(&str, String)]) -> Output {
        let out = self.cmd(args, env);
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn iso(&self) -> PathBuf {
        self.dir.path().join("dist").join(ISO)
    }

    /// Pins metalk8s-utils to `reference` in the upstream registry instead of building it.
    fn pin_utils(&self, reference: &str) {
        let inv = self.dir.path().join("images/inventory.yaml");
        let text = std::fs::read_to_string(&inv).unwrap();
        assert!(text.contains("local: images/metalk8s-utils/"));
        std::fs::write(
            &inv,
            text.replace(
                "local: images/metalk8s-utils/",
                &format!("registry: \"{reference}\""),
            ),
        )
        .unwrap();
    }
}

pub(crate) fn sha256(p: &Path) -> String {
    buildchain::fsutil::sha256_file(p).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn warnings(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .map(str::to_string)
        .collect()
}

/// Seeds `upstream` with the product's metalk8s-utils image; returns its manifest digest (hex)
/// and manifest.
fn seed_upstream(upstream: &testkit::Server) -> (String, Value) {
    let a = Runner::new();
    a.ok(&["images:metalk8s-utils"], &[]);
    let layout = a.dir.path().join("_build/root/images/metalk8s-utils/1.0");
    let skopeo = testkit::require_tool("skopeo");
    testkit::run_ok(
        Command::new(&skopeo)
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("dir:{}", layout.display()))
            .arg(format!("docker://{}/test/utils:1.0", upstream.host())),
    );
    let raw = testkit::run_ok(Command::new(&skopeo).args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/test/utils:1.0", upstream.host()),
    ]));
    (
        buildchain::fsutil::sha256_bytes(&raw.stdout),
        serde_json::from_slice(&raw.stdout).unwrap(),
    )
}

#[test]
fn cache_serves_a_fresh_runner_without_upstream_and_refuses_poisoned_blobs() {
    let upstream = testkit::start_docker_registry();
    let cache = testkit::start_docker_registry_tls();
    let (digest, manifest) = seed_upstream(&upstream);
    let reference = format!("{}/test/utils@sha256:{digest}", upstream.host());
    let creds = tempfile::tempdir().unwrap();
    let auth = creds.path().join("auth.json");
    std::fs::write(&auth, cache.auth_json()).unwrap();
    let cache_url = format!("oci://{}/buildchain/cache", cache.host());
    let env = vec![
        ("BUILDCHAIN_REMOTE_CACHE", cache_url.clone()),
        ("BUILDCHAIN_REMOTE_CACHE_CA", cache.ca.display().to_string()),
        ("REGISTRY_AUTH_FILE", auth.display().to_string()),
    ];

    // Runner 1: empty store, upstream up, cache empty: builds and fills the cache.
    let r1 = Runner::new();
    r1.pin_utils(&reference);
    let o1 = r1.ok(&[], &env);
    assert_eq!(warnings(&o1), Vec::<String>::new(), "{}", stderr(&o1));
    let iso = sha256(&r1.iso());
    // Every blob of the pinned image is now in the cache (bytes as upstream has them).
    let layers = manifest["layers"].as_array().unwrap();
    for d in layers.iter().chain(std::iter::once(&manifest["config"])) {
        let hex = &d["digest"].as_str().unwrap()[7..];
        let data = cache.blob_data(hex);
        assert_eq!(sha256(&data), hex, "{}", data.display());
    }
    assert_eq!(sha256(&cache.blob_data(&digest)), digest);

    // Runner 2: upstream stopped, fresh checkout and empty store: same ISO, from the cache.
    drop(upstream);
    let r2 = Runner::new();
    r2.pin_utils(&reference);
    let o2 = r2.ok(&[], &env);
    assert_eq!(warnings(&o2), Vec::<String>::new(), "{}", stderr(&o2));
    assert_eq!(sha256(&r2.iso()), iso);

    // Runner 3: a layer's bytes replaced in the cache storage (same size): refused with a
    // warning, fetched from upstream (started again, on a new port).
    let upstream = testkit::start_docker_registry();
    let (digest2, _) = seed_upstream(&upstream);
    assert_eq!(digest2, digest, "the fixture image is reproducible");
    let reference = format!("{}/test/utils@sha256:{digest}", upstream.host());
    let top = &layers.last().unwrap()["digest"].as_str().unwrap()[7..];
    let data = cache.blob_data(top);
    let mut bytes = std::fs::read(&data).unwrap();
    for b in bytes.iter_mut() {
        *b = !*b;
    }
    std::fs::write(&data, &bytes).unwrap();
    let poisoned = buildchain::fsutil::sha256_bytes(&bytes);
    let r3 = Runner::new();
    r3.pin_utils(&reference);
    let o3 = r3.ok(&[], &env);
    assert_eq!(
        warnings(&o3),
        vec![format!(
            "warning: remote cache {cache_url}: image metalk8s-utils:1.0 ({reference}): sha256:{top}: wrong bytes in the cache, ignored: content does not match its digest: expected sha256:{top}, got sha256:{poisoned}"
        )],
        "{}",
        stderr(&o3)
    );
    assert_eq!(sha256(&r3.iso()), iso);
    cache.garbage_collect_dry_run();
}

#[test]
fn bad_cache_settings_are_usage_errors() {
    let r = Runner::new();
    let o = r.cmd(
        &["list"],
        &[(
            "BUILDCHAIN_REMOTE_CACHE",
            "oci+http://cache.example/ci".into(),
        )],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "error: remote cache \"oci+http://cache.example/ci\": plain HTTP is allowed only for loopback hosts (127.0.0.1, ::1, localhost); use oci:// (HTTPS)\n"
    );
    let o = r.cmd(
        &[
            "list",
            "--remote-cache",
            "oci://127.0.0.1:1/c",
            "--remote-cache-mode",
            "write",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "error: remote cache mode must be `read` or `readwrite` (--remote-cache-mode, BUILDCHAIN_REMOTE_CACHE_MODE), found \"write\"\n"
    );
}

#[test]
fn unreachable_cache_warns_once_and_never_fails_the_build() {
    let r = Runner::new();
    let url = format!("oci+http://127.0.0.1:{}/ci/cache", testkit::free_port());
    let o = r.ok(
        &["images:metalk8s-base"],
        &[("BUILDCHAIN_REMOTE_CACHE", url.clone())],
    );
    let w = warnings(&o);
    assert_eq!(w.len(), 1, "{}", stderr(&o));
    let prefix = format!(
        "warning: remote cache {url}: unreachable or failing, bypassed for the rest of this run: "
    );
    assert!(w[0].starts_with(&prefix), "{}", w[0]);
}

/// `(method, uri, status, body bytes)` of every request nginx relayed to upstream.
fn relayed(log: &Path) -> Vec<(String, String, u16, u64)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_farm_of_runners_gets_each_upstream_blob_once() {
    let upstream = testkit::start_docker_registry();
    let cache = testkit::start_docker_registry_tls();
    let (digest, manifest) = seed_upstream(&upstream);
    // Runners reach upstream through nginx, which logs every request with its body bytes.
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("upstream.log");
    let proxy = testkit::start_nginx(
        "  log_format relay '$request_method $uri $status $body_bytes_sent';",
        &format!(
            "    access_log {} relay;\n    location / {{ proxy_pass http://127.0.0.1:{}; proxy_buffering off; }}",
            log.display(),
            upstream.port
        ),
    );
    let reference = format!("{}/test/utils@sha256:{digest}", proxy.host());
    let creds = tempfile::tempdir().unwrap();
    let auth = creds.path().join("auth.json");
    std::fs::write(&auth, cache.auth_json()).unwrap();
    let env = vec![
        (
            "BUILDCHAIN_REMOTE_CACHE",
            format!("oci://{}/farm/blobs", cache.host()),
        ),
        ("BUILDCHAIN_REMOTE_CACHE_CA", cache.ca.display().to_string()),
        ("REGISTRY_AUTH_FILE", auth.display().to_string()),
    ];

    // The first runner misses everywhere: each upstream blob it needs is fetched exactly once.
    // It pushes in 256-byte chunks (POST, PATCH…, PUT), which the others read back verified.
    let first = Runner::new();
    first.pin_utils(&reference);
    let mut chunked = env.clone();
    chunked.push(("BUILDCHAIN_REMOTE_CACHE_CHUNK_BYTES", "256".to_string()));
    let o = first.ok(&[], &chunked);
    assert_eq!(warnings(&o), Vec::<String>::new(), "{}", stderr(&o));
    let iso = sha256(&first.iso());
    let sizes: std::collections::BTreeMap<String, u64> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(std::iter::once(&manifest["config"]))
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let phase1 = relayed(&log);
    let blob_gets: Vec<_> = phase1
        .iter()
        .filter(|(m, u, s, _)| m == "GET" && *s == 200 && u.contains("/blobs/"))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for (_, u, _, bytes) in &blob_gets {
        let d = u.rsplit('/').next().unwrap().to_string();
        assert!(seen.insert(d.clone()), "{d} fetched twice: {phase1:?}");
        assert_eq!(Some(bytes), sizes.get(&d), "{u}");
    }
    // The config and the layer only this image has can come from nowhere else.
    let own_layer = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap();
    assert!(seen.contains(own_layer), "{phase1:?}");
    assert!(seen.contains(manifest["config"]["digest"].as_str().unwrap()));
    let upstream_bytes: u64 = blob_gets.iter().map(|r| r.3).sum();
    let unique: u64 = seen.iter().map(|d| sizes[d]).sum();
    assert_eq!(upstream_bytes, unique);
    eprintln!(
        "first runner: {upstream_bytes} blob bytes from upstream ({} blobs)",
        seen.len()
    );

    // Four more runners (separate checkouts and stores) at once: all from the cache.
    let runners: Vec<Runner> = (0..4).map(|_| Runner::new()).collect();
    for r in &runners {
        r.pin_utils(&reference);
    }
    std::thread::scope(|s| {
        let hs: Vec<_> = runners
            .iter()
            .map(|r| {
                let env = env.clone();
                s.spawn(move || r.ok(&[], &env))
            })
            .collect();
        for h in hs {
            let o = h.join().unwrap();
            assert_eq!(warnings(&o), Vec::<String>::new(), "{}", stderr(&o));
        }
    });
    for r in &runners {
        assert_eq!(sha256(&r.iso()), iso);
    }
    let all = relayed(&log);
    assert_eq!(
        &all[phase1.len()..],
        &[] as &[(String, String, u16, u64)],
        "the farm asked upstream again"
    );
    cache.garbage_collect_dry_run();
}

#[test]
fn read_mode_reads_but_never_pushes() {
    let cache = testkit::start_docker_registry_tls();
    let creds = tempfile::tempdir().unwrap();
    let auth = creds.path().join("auth.json");
    std::fs::write(&auth, cache.auth_json()).unwrap();
    let env = |mode: &str| {
        vec![
            (
                "BUILDCHAIN_REMOTE_CACHE",
                format!("oci://{}/ro/blobs", cache.host()),
            ),
            ("BUILDCHAIN_REMOTE_CACHE_MODE", mode.to_string()),
            ("BUILDCHAIN_REMOTE_CACHE_CA", cache.ca.display().to_string()),
            ("REGISTRY_AUTH_FILE", auth.display().to_string()),
        ]
    };
    let blobs = cache.storage.join("docker/registry/v2/blobs");
    let r = Runner::new();
    let o = r.ok(&["images:metalk8s-base"], &env("read"));
    assert_eq!(warnings(&o), Vec::<String>::new(), "{}", stderr(&o));
    assert!(!blobs.exists(), "read mode pushed to {}", blobs.display());
    // The same build in readwrite mode pushes the image's blobs.
    let w = Runner::new();
    let o = w.ok(&["images:metalk8s-base"], &env("readwrite"));
    assert_eq!(warnings(&o), Vec::<String>::new(), "{}", stderr(&o));
    let layout = w.dir.path().join("_build/root/images/metalk8s-base");
    let mut n = 0;
    for e in walkdir::WalkDir::new(&layout) {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if e.file_type().is_file() && buildchain::store::is_sha256_hex(&name) {
            assert_eq!(sha256(&cache.blob_data(&name)), name);
            n += 1;
        }
    }
    assert!(n >= 2, "no blobs in {}", layout.display());
    // A wrong password: one warning naming the refusal, and the build goes on.
    std::fs::write(
        &auth,
        format!(
            "{{\"auths\":{{\"{}\":{{\"username\":\"runner\",\"password\":\"wrong\"}}}}}}",
            cache.host()
        ),
    )
    .unwrap();
    let denied = Runner::new();
    let o = denied.ok(&["images:metalk8s-base"], &env("readwrite"));
    let w = warnings(&o);
    assert_eq!(w.len(), 1, "{}", stderr(&o));
    // (The first request is the lookup of the local build's task record.)
    let prefix = format!(
        "warning: remote cache oci://{0}/ro/blobs: unreachable or failing, bypassed for the rest of this run: GET https://{0}/v2/ro/blobs/manifests/task-",
        cache.host()
    );
    assert!(w[0].starts_with(&prefix), "{}", w[0]);
    assert!(
        w[0].ends_with(": access denied (HTTP 401); check credentials in ~/.docker/config.json or REGISTRY_AUTH_FILE"),
        "{}",
        w[0]
    );
}

#[test]
fn a_cache_that_never_answers_is_bypassed_after_its_timeout() {
    // Accepts connections and never answers (a hung cache).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h2 = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            h2.lock().unwrap().push(s);
        }
    });
    let r = Runner::new();
    let url = format!("oci+http://127.0.0.1:{port}/ci/cache");
    let o = r.ok(
        &["images:metalk8s-base"],
        &[
            ("BUILDCHAIN_REMOTE_CACHE", url.clone()),
            ("BUILDCHAIN_REMOTE_CACHE_TIMEOUT_SECS", "1".into()),
        ],
    );
    let w = warnings(&o);
    assert_eq!(w.len(), 1, "{}", stderr(&o));
    // (The first request is the lookup of the local build's task record.)
    let prefix = format!(
        "warning: remote cache {url}: unreachable or failing, bypassed for the rest of this run: GET http://127.0.0.1:{port}/v2/ci/cache/manifests/task-"
    );
    assert!(w[0].starts_with(&prefix), "{}", w[0]);
    assert!(w[0].contains("timeout"), "{}", w[0]);
    assert!(
        !held.lock().unwrap().is_empty(),
        "the build never asked the cache"
    );
}
