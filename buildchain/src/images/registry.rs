//! Registry client (OCI distribution / Docker Registry HTTP API v2) over ureq (SPEC §5.2).
//!
//! - manifests with an `Accept` listing OCI manifest + index and Docker v2s2 manifest + list;
//!   indexes resolved to a platform (or kept with every platform);
//! - blobs streamed into the [`Store`], hashed while streaming, refused on digest/size mismatch;
//!   redirects followed (without forwarding credentials to the redirect target);
//! - anonymous bearer tokens from `WWW-Authenticate`, basic auth, credentials from
//!   `REGISTRY_AUTH_FILE` / `$DOCKER_CONFIG/config.json` / `~/.docker/config.json`;
//! - HTTPS with the system roots; plain HTTP only for `--insecure` and loopback hosts;
//! - retries with exponential backoff on connection errors, resets, 429 (honouring
//!   `Retry-After`), 5xx and truncated bodies; a retried blob restarts from zero (the partial temp
//!   file is discarded), never keeps partial bytes;
//! - bounded downloads: connect timeout, per-read and stall timeouts (less than
//!   [`STALL_PROGRESS_BYTES`] received within `BUILDCHAIN_FETCH_STALL_SECS`, default 60, fails the
//!   attempt), and a blob whose declared size exceeds the free space of the store's file system
//!   or `BUILDCHAIN_MAX_BLOB_BYTES` is refused before any byte is fetched;
//! - a blob already in the store is never fetched; concurrent requests for the same blob in one
//!   process are collapsed into one download.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use rayon::prelude::*;
use serde_json::Value;

use super::layout::resolve_from_store;
use super::manifest::{Descriptor, Manifest, Platform, ACCEPT_MANIFESTS};
use super::reference::{digest_hex, Reference};
use super::Resolved;
use crate::fsutil::sha256_bytes;
use crate::progress::Progress;
use crate::store::Store;

/// Largest manifest accepted (bytes), like the reference registry's limit.
pub const MAX_MANIFEST: u64 = 16 << 20;

/// Client options.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Plain HTTP for every registry (`--insecure`); loopback hosts always use HTTP.
    pub insecure: bool,
    /// Attempts per request (first try included).
    pub max_attempts: u32,
    /// First backoff delay (doubles at each retry, capped at 8 s).
    pub initial_backoff: Duration,
    /// Credentials file (default: `REGISTRY_AUTH_FILE`, else docker's `config.json`).
    pub auth_file: Option<std::path::PathBuf>,
    /// A blob download that receives less than [`STALL_PROGRESS_BYTES`] in this long fails
    /// (`BUILDCHAIN_FETCH_STALL_SECS`, default 60); also the per-read timeout.
    pub stall_timeout: Duration,
    /// Largest blob accepted (`BUILDCHAIN_MAX_BLOB_BYTES`; default: no limit but the free space
    /// of the store's file system).
    pub max_blob_bytes: Option<u64>,
}

/// Bytes a download must receive within the stall timeout to count as progressing.
pub const STALL_PROGRESS_BYTES: u64 = 64 * 1024;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: false,
            max_attempts: 6,
            initial_backoff: Duration::from_millis(200),
            auth_file: None,
            stall_timeout: Duration::from_secs(
                env_u64("BUILDCHAIN_FETCH_STALL_SECS").unwrap_or(60),
            ),
            max_blob_bytes: env_u64("BUILDCHAIN_MAX_BLOB_BYTES"),
        }
    }
}

/// Counters of the network work done (for tests and benchmarks).
#[derive(Debug, Default)]
pub struct Stats {
    /// HTTP requests sent (including token requests and retries).
    pub requests: AtomicU64,
    /// Blob bytes received.
    pub blob_bytes: AtomicU64,
    /// Blobs downloaded (verified and stored).
    pub blobs: AtomicU64,
}

/// A registry client; cheap to share between threads.
pub struct RegistryClient {
    agent: ureq::Agent,
    opts: ClientOptions,
    creds: BTreeMap<String, (String, String)>,
    auth: Mutex<HashMap<(String, String), String>>,
    /// Network counters.
    pub stats: Stats,
}

enum Failure {
    Retry(anyhow::Error, Option<Duration>),
    Fatal(anyhow::Error),
}

type Attempt<T> = std::result::Result<T, Failure>;

/// Bounded pool for network work (`BUILDCHAIN_FETCH_JOBS`, default 8).
pub fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::env::var("BUILDCHAIN_FETCH_JOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(8);
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("fetch-{i}"))
            .build()
            .expect("cannot start the fetch thread pool")
    })
}

fn inflight_lock(hex: &str) -> Arc<Mutex<()>> {
    static INFLIGHT: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    let m = INFLIGHT.get_or_init(Default::default);
    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
    g.entry(hex.to_string()).or_default().clone()
}

fn load_creds(path: Option<&std::path::Path>) -> Result<BTreeMap<String, (String, String)>> {
    let file = match path {
        Some(p) => Some(p.to_path_buf()),
        None => std::env::var_os("REGISTRY_AUTH_FILE")
            .map(Into::into)
            .or_else(|| {
                std::env::var_os("DOCKER_CONFIG")
                    .map(|d| std::path::PathBuf::from(d).join("config.json"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| {
                    std::path::PathBuf::from(h)
                        .join(".docker")
                        .join("config.json")
                })
            }),
    };
    let mut out = BTreeMap::new();
    let Some(file) = file.filter(|f| f.is_file()) else {
        return Ok(out);
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", file.display()))?;
    if let Some(auths) = v.get("auths").and_then(Value::as_object) {
        for (k, a) in auths {
            let host = k
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            let pair = if let Some(enc) = a
                .get("auth")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                let dec = base64::engine::general_purpose::STANDARD
                    .decode(enc)
                    .with_context(|| format!("{}: bad base64 `auth` for {k}", file.display()))?;
                let s = String::from_utf8_lossy(&dec).to_string();
                let (u, p) = s.split_once(':').ok_or_else(|| {
                    anyhow!("{}: `auth` for {k} is not user:password", file.display())
                })?;
                (u.to_string(), p.to_string())
            } else if let (Some(u), Some(p)) = (
                a.get("username").and_then(Value::as_str),
                a.get("password").and_then(Value::as_str),
            ) {
                (u.to_string(), p.to_string())
            } else {
                continue;
            };
            let host = if host == "index.docker.io" || host == "registry-1.docker.io" {
                "docker.io".to_string()
            } else {
                host
            };
            out.insert(host, pair);
        }
    }
    Ok(out)
}

/// Parses `Bearer realm="…",service="…",scope="…"` (or `Basic realm="…"`).
fn parse_challenge(h: &str) -> (String, BTreeMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, remaining) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(k, v.to_string());
        s = remaining.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    (scheme.to_ascii_lowercase(), params)
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn retry_after(resp: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(60)))
}

/// A reader that records whether the transport failed and how many bytes came through, and
/// fails with `stalled` set when less than [`STALL_PROGRESS_BYTES`] arrive within `stall`.
struct Watch<'a, R> {
    inner: R,
    n: u64,
    io_error: &'a AtomicBool,
    stalled: &'a AtomicBool,
    stall: Duration,
    mark: Instant,
    since_mark: u64,
    progress: Option<&'a dyn Progress>,
    stats: &'a Stats,
}

impl<R: Read> Read for Watch<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.n += n as u64;
                self.stats.blob_bytes.fetch_add(n as u64, Ordering::Relaxed);
                if let Some(p) = self.progress {
                    p.inc(n as u64);
                }
                // One crash point per 64 KiB boundary crossed (a count independent of read sizes).
                for _ in (self.n - n as u64) / STALL_PROGRESS_BYTES..self.n / STALL_PROGRESS_BYTES {
                    crate::testhook::kill_point("fetch");
                }
                self.since_mark += n as u64;
                if n == 0 || self.since_mark >= STALL_PROGRESS_BYTES {
                    self.mark = Instant::now();
                    self.since_mark = 0;
                } else if self.mark.elapsed() > self.stall {
                    self.stalled.store(true, Ordering::Relaxed);
                    self.io_error.store(true, Ordering::Relaxed);
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "stalled"));
                }
                Ok(n)
            }
            Err(e) => {
                self.io_error.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

impl RegistryClient {
    /// A client with `opts`.
    pub fn new(opts: ClientOptions) -> Result<Self> {
        let config = ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(system_roots())
                    .build(),
            )
            .http_status_as_error(false)
            .max_redirects(10)
            .accept_encoding("identity")
            .user_agent(concat!("buildchain/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_recv_body(None)
            .timeout_per_read(Some(opts.stall_timeout))
            .max_idle_connections_per_host(16)
            .build();
        Ok(RegistryClient {
            agent: ureq::Agent::new_with_config(config),
            creds: load_creds(opts.auth_file.as_deref())?,
            opts,
            auth: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        })
    }

    fn scheme(&self, r: &Reference) -> &'static str {
        if self.opts.insecure || r.is_loopback() {
            "http"
        } else {
            "https"
        }
    }

    fn url(&self, r: &Reference, tail: &str) -> String {
        format!(
            "{}://{}/v2/{}/{}",
            self.scheme(r),
            r.api_host(),
            r.repository,
            tail
        )
    }

    fn key(r: &Reference) -> (String, String) {
        (r.api_host().to_string(), r.repository.clone())
    }

    fn transport_failure(&self, r: &Reference, e: ureq::Error) -> Failure {
        match e {
            ureq::Error::HostNotFound => Failure::Fatal(anyhow!(
                "cannot resolve registry host {} (no network or DNS?)",
                r.api_host()
            )),
            ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::BadUri(_)
            | ureq::Error::TooManyRedirects => {
                Failure::Fatal(anyhow!("registry {}: {e}", r.registry))
            }
            other => Failure::Retry(anyhow!("registry {}: {other}", r.registry), None),
        }
    }

    /// Obtains an `Authorization` value answering a 401 challenge.
    fn authenticate(&self, r: &Reference, challenge: &str) -> Attempt<String> {
        let (scheme, params) = parse_challenge(challenge);
        let creds = self
            .creds
            .get(&r.registry)
            .or_else(|| self.creds.get(r.api_host()));
        let basic = creds.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        match scheme.as_str() {
            "basic" => basic.ok_or_else(|| {
                Failure::Fatal(anyhow!(
                    "registry {} requires credentials: add them to ~/.docker/config.json or REGISTRY_AUTH_FILE",
                    r.registry
                ))
            }),
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| Failure::Fatal(anyhow!("registry {}: bearer challenge without realm", r.registry)))?;
                let mut url = format!("{realm}?");
                if let Some(s) = params.get("service") {
                    url.push_str(&format!("service={}&", pct(s)));
                }
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", r.repository));
                url.push_str(&format!("scope={}", pct(&scope)));
                let mut req = self.agent.get(&url);
                if let Some(b) = &basic {
                    req = req.header("Authorization", b);
                }
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                let resp = req.call().map_err(|e| self.transport_failure(r, e))?;
                let status = resp.status().as_u16();
                if status == 429 || status >= 500 {
                    return Err(Failure::Retry(anyhow!("token server {realm}: HTTP {status}"), retry_after(&resp)));
                }
                if status != 200 {
                    return Err(Failure::Fatal(anyhow!(
                        "token server {realm} refused access to {} (HTTP {status}); check credentials",
                        r.repository
                    )));
                }
                let body = resp
                    .into_body()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_string()
                    .map_err(|e| Failure::Retry(anyhow!("token server {realm}: {e}"), None))?;
                let v: Value = serde_json::from_str(&body)
                    .map_err(|e| Failure::Fatal(anyhow!("token server {realm}: bad JSON: {e}")))?;
                let tok = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| Failure::Fatal(anyhow!("token server {realm}: no token in the answer")))?;
                Ok(format!("Bearer {tok}"))
            }
            other => Err(Failure::Fatal(anyhow!("registry {}: unsupported auth scheme {other:?}", r.registry))),
        }
    }

    /// One GET with auth handling; returns a 200 response.
    fn get(
        &self,
        r: &Reference,
        url: &str,
        accept: Option<&str>,
    ) -> Attempt<ureq::http::Response<ureq::Body>> {
        let mut tried_auth = false;
        loop {
            let mut req = self.agent.get(url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            let cached = self
                .auth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&Self::key(r))
                .cloned();
            if let Some(h) = &cached {
                req = req.header("Authorization", h);
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let resp = req.call().map_err(|e| self.transport_failure(r, e))?;
            let status = resp.status().as_u16();
            match status {
                200 => return Ok(resp),
                401 if !tried_auth => {
                    tried_auth = true;
                    let challenge = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    if challenge.is_empty() {
                        return Err(Failure::Fatal(anyhow!("{url}: HTTP 401 without WWW-Authenticate")));
                    }
                    let h = self.authenticate(r, &challenge)?;
                    self.auth.lock().unwrap_or_else(|e| e.into_inner()).insert(Self::key(r), h);
                }
                401 | 403 => {
                    return Err(Failure::Fatal(anyhow!(
                        "{url}: access denied (HTTP {status}); check credentials in ~/.docker/config.json or REGISTRY_AUTH_FILE"
                    )))
                }
                404 => return Err(Failure::Fatal(anyhow!("{url}: not found (HTTP 404)"))),
                408 | 429 | 500..=599 => {
                    return Err(Failure::Retry(anyhow!("{url}: HTTP {status}"), retry_after(&resp)))
                }
                _ => return Err(Failure::Fatal(anyhow!("{url}: unexpected HTTP {status}"))),
            }
        }
    }

    fn with_retries<T>(&self, what: &str, mut f: impl FnMut() -> Attempt<T>) -> Result<T> {
        let mut delay = self.opts.initial_backoff;
        let mut attempt = 1;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e.context(what.to_string())),
                Err(Failure::Retry(e, after)) => {
                    if attempt >= self.opts.max_attempts {
                        return Err(
                            e.context(format!("{what}: giving up after {attempt} attempts"))
                        );
                    }
                    tracing::warn!("{what}: {e:#}; retrying (attempt {attempt})");
                    std::thread::sleep(after.unwrap_or(delay));
                    delay = (delay * 2).min(Duration::from_secs(8));
                    attempt += 1;
                }
            }
        }
    }

    /// Fetches a manifest (by tag or digest); verifies it when `reference` is a digest. Returns
    /// its bytes and `Content-Type`. A manifest over 16 MiB is refused.
    pub fn get_manifest(
        &self,
        r: &Reference,
        reference: &str,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let url = self.url(r, &format!("manifests/{reference}"));
        let (bytes, ct) = self.with_retries(&format!("{what}: manifest {reference}"), || {
            let resp = self.get(r, &url, Some(ACCEPT_MANIFESTS))?;
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut body = Vec::new();
            resp.into_body()
                .into_reader()
                .take(MAX_MANIFEST + 1)
                .read_to_end(&mut body)
                .map_err(|e| Failure::Retry(anyhow!("{url}: body: {e}"), None))?;
            if body.len() as u64 > MAX_MANIFEST {
                return Err(Failure::Fatal(anyhow!(
                    "manifest {reference} is larger than the 16 MiB limit"
                )));
            }
            if let Ok(hex) = digest_hex(reference) {
                let got = sha256_bytes(&body);
                if got != hex {
                    return Err(Failure::Fatal(anyhow!(
                        "manifest content does not match its digest: expected {reference}, got sha256:{got}"
                    )));
                }
            }
            Ok((body, ct))
        })?;
        Ok((bytes, ct))
    }

    /// Resolves `r` into manifests stored in `store` (image manifest for `platform`, or the
    /// whole index when `keep_index`). A digest reference whose manifests are already in the
    /// store needs no network.
    pub fn resolve(
        &self,
        store: &Store,
        r: &Reference,
        platform: &Platform,
        keep_index: bool,
        what: &str,
    ) -> Result<Resolved> {
        if let Some(d) = &r.digest {
            let hex = digest_hex(d)?;
            if store.contains(hex) {
                if let Ok(res) = resolve_from_store(store, hex, platform, keep_index, what) {
                    return Ok(res);
                }
            }
        }
        let (bytes, ct) = self.get_manifest(r, r.manifest_ref(), what)?;
        let m = Manifest::parse(&bytes, ct.as_deref())
            .with_context(|| format!("{what}: manifest of {r}"))?;
        let top_hex = store.put_bytes(&bytes)?;
        if let Manifest::Index { manifests, .. } = &m {
            let wanted: Vec<Descriptor> = if keep_index {
                manifests.iter().map(|(d, _)| d.clone()).collect()
            } else {
                vec![m.select(platform).with_context(|| format!("{what}: {r}"))?]
            };
            for d in wanted {
                if !store.contains(d.hex()) {
                    let (b, _) = self.get_manifest(r, &d.digest, what)?;
                    store.put_bytes(&b)?;
                }
            }
        }
        resolve_from_store(store, &top_hex, platform, keep_index, what)
    }

    /// Downloads one blob into the store unless present. Returns bytes downloaded (0 if it was
    /// already there).
    pub fn fetch_blob(
        &self,
        store: &Store,
        r: &Reference,
        d: &Descriptor,
        what: &str,
        progress: Option<&dyn Progress>,
    ) -> Result<u64> {
        let hex = d.hex().to_string();
        let lock = inflight_lock(&hex);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        if store.contains(&hex) {
            return Ok(0);
        }
        self.check_size(store, d, what)?;
        let url = self.url(r, &format!("blobs/{}", d.digest));
        let stall = self.opts.stall_timeout;
        let n = self.with_retries(&format!("{what}: blob {}", d.digest), || {
            let resp = self.get(r, &url, None)?;
            let io_error = AtomicBool::new(false);
            let stalled = AtomicBool::new(false);
            let mut w = Watch {
                inner: resp.into_body().into_reader(),
                n: 0,
                io_error: &io_error,
                stalled: &stalled,
                stall,
                mark: Instant::now(),
                since_mark: 0,
                progress,
                stats: &self.stats,
            };
            match store.put_verified(&hex, Some(d.size), &mut w, what) {
                Ok(n) => Ok(n),
                Err(_) if stalled.load(Ordering::Relaxed) => Err(Failure::Retry(
                    anyhow!(
                        "{url}: stalled: less than {STALL_PROGRESS_BYTES} bytes received in {} s (BUILDCHAIN_FETCH_STALL_SECS)",
                        stall.as_secs_f64()
                    ),
                    None,
                )),
                Err(e) if io_error.load(Ordering::Relaxed) || w.n < d.size => Err(Failure::Retry(
                    anyhow!(
                        "{url}: incomplete body ({} of {} bytes): {e:#}",
                        w.n,
                        d.size
                    ),
                    None,
                )),
                Err(e) => Err(Failure::Fatal(e)),
            }
        })?;
        self.stats.blobs.fetch_add(1, Ordering::Relaxed);
        Ok(n)
    }

    /// Refuses a blob whose declared size exceeds the configured maximum or the free space of
    /// the store's file system.
    pub fn check_size(&self, store: &Store, d: &Descriptor, what: &str) -> Result<()> {
        store.check_room(
            &format!("{what}: blob {}", d.digest),
            d.size,
            self.opts.max_blob_bytes,
        )
    }

    /// Downloads every blob of `image` missing from the store, in parallel (bounded pool).
    pub fn fetch_image_blobs(
        &self,
        store: &Store,
        r: &Reference,
        image: &Resolved,
        what: &str,
        progress: Option<&dyn Progress>,
    ) -> Result<()> {
        let missing = missing_blobs(store, image);
        for d in &missing {
            self.check_size(store, d, what)?;
        }
        if let Some(p) = progress {
            p.add_total(missing.iter().map(|d| d.size).sum());
        }
        pool().install(|| {
            missing
                .par_iter()
                .try_for_each(|d| self.fetch_blob(store, r, d, what, progress).map(|_| ()))
        })
    }
}

/// The system's CA bundle (`SSL_CERT_FILE`, else the Debian/RHEL bundle paths); the bundled
/// Mozilla roots when none is found.
fn system_roots() -> ureq::tls::RootCerts {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .iter()
            .map(std::path::PathBuf::from),
        );
    for path in candidates {
        if let Ok(pem) = std::fs::read(&path) {
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if !certs.is_empty() {
                return ureq::tls::RootCerts::new_with_certs(&certs);
            }
        }
    }
    ureq::tls::RootCerts::WebPki
}

/// Blobs (config + layers of every platform) of `image` not yet in the store, deduplicated.
pub fn missing_blobs(store: &Store, image: &Resolved) -> Vec<Descriptor> {
    let mut seen = BTreeMap::new();
    for inst in &image.instances {
        for d in std::iter::once(&inst.config).chain(inst.layers.iter()) {
            if !store.contains(d.hex()) {
                seen.entry(d.hex().to_string()).or_insert_with(|| d.clone());
            }
        }
    }
    seen.into_values().collect()
}

/// Fetches several registry images at once: manifests first (in parallel), then every missing
/// blob exactly once across all images (in parallel), then each image's `dir:` layout.
/// `jobs` = (reference, label for errors, destination directory).
pub fn fetch_many(
    client: &RegistryClient,
    store: &Store,
    jobs: &[(Reference, String, std::path::PathBuf)],
    platform: &Platform,
    progress: Option<&dyn Progress>,
) -> Result<Vec<Resolved>> {
    if jobs.is_empty() {
        bail!("nothing to fetch");
    }
    let resolved: Vec<Resolved> = pool().install(|| {
        jobs.par_iter()
            .map(|(r, what, _)| client.resolve(store, r, platform, false, what))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut unique: BTreeMap<String, (usize, Descriptor)> = BTreeMap::new();
    for (i, res) in resolved.iter().enumerate() {
        for d in missing_blobs(store, res) {
            unique.entry(d.hex().to_string()).or_insert((i, d));
        }
    }
    if let Some(p) = progress {
        p.add_total(unique.values().map(|(_, d)| d.size).sum());
    }
    let work: Vec<(usize, Descriptor)> = unique.into_values().collect();
    for (i, d) in &work {
        client.check_size(store, d, &jobs[*i].1)?;
    }
    pool().install(|| {
        work.par_iter().try_for_each(|(i, d)| {
            let (r, what, _) = &jobs[*i];
            client.fetch_blob(store, r, d, what, progress).map(|_| ())
        })
    })?;
    for ((_, _, dest), res) in jobs.iter().zip(&resolved) {
        super::layout::write_dir_layout(store, res, dest)?;
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/nginx:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "Registry Realm");
        assert_eq!(pct("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }

    #[test]
    fn docker_config_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(
            &f,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"quay.io":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let c = load_creds(Some(&f)).unwrap();
        assert_eq!(c["docker.io"], ("user".to_string(), "pass".to_string()));
        assert_eq!(c["quay.io"], ("u".to_string(), "p".to_string()));
    }
}
