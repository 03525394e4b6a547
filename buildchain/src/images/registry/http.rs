//! The HTTP side of the registry client: options, the ureq agent (system roots, timeouts),
//! GET with authentication, retries with exponential backoff, and the stall-watching reader.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{anyhow, Result};

use super::credentials::load_creds;
use super::RegistryClient;
use crate::images::reference::Reference;
use crate::progress::Progress;

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

pub(crate) enum Failure {
    Retry(anyhow::Error, Option<Duration>),
    Fatal(anyhow::Error),
}

pub(crate) type Attempt<T> = std::result::Result<T, Failure>;

pub(crate) fn retry_after(resp: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(60)))
}

/// A reader that records whether the transport failed and how many bytes came through, and
/// fails with `stalled` set when less than [`STALL_PROGRESS_BYTES`] arrive within `stall`.
pub(super) struct Watch<'a, R> {
    pub(super) inner: R,
    pub(super) n: u64,
    pub(super) io_error: &'a AtomicBool,
    pub(super) stalled: &'a AtomicBool,
    pub(super) stall: Duration,
    pub(super) mark: Instant,
    pub(super) since_mark: u64,
    pub(super) progress: Option<&'a dyn Progress>,
    pub(super) stats: &'a Stats,
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

    pub(super) fn scheme(&self, r: &Reference) -> &'static str {
        if self.opts.insecure || r.is_loopback() {
            "http"
        } else {
            "https"
        }
    }

    pub(super) fn url(&self, r: &Reference, tail: &str) -> String {
        format!(
            "{}://{}/v2/{}/{}",
            self.scheme(r),
            r.api_host(),
            r.repository,
            tail
        )
    }

    pub(super) fn key(r: &Reference) -> (String, String) {
        (r.api_host().to_string(), r.repository.clone())
    }

    pub(super) fn transport_failure(&self, r: &Reference, e: ureq::Error) -> Failure {
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

    /// One GET with auth handling; returns a 200 response.
    pub(super) fn get(
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

    pub(super) fn with_retries<T>(
        &self,
        what: &str,
        mut f: impl FnMut() -> Attempt<T>,
    ) -> Result<T> {
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
}

/// The system's CA bundle (`SSL_CERT_FILE`, else the Debian/RHEL bundle paths); the bundled
/// Mozilla roots when none is found.
pub(crate) fn system_roots() -> ureq::tls::RootCerts {
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
