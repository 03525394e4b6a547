//! Minimal OCI distribution client for the cache repository: HEAD/GET/push of blobs, with
//! basic or bearer auth, custom CA, and bounded timeouts (a slow cache is a failing cache).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;

use super::Config;
use crate::images::registry::{
    bearer_from_answer, load_creds, parse_challenge, pct, system_roots, token_url,
};

/// Above this size a push is chunked (POST, PATCH…, PUT); below, one monolithic PUT
/// (`BUILDCHAIN_REMOTE_CACHE_CHUNK_BYTES` overrides it).
pub const CHUNK_BYTES: u64 = 16 << 20;

type Response = ureq::http::Response<ureq::Body>;

/// A request body that can be produced again (after a 401 the request is sent once more).
pub(crate) type BodyFn<'a> = &'a dyn Fn() -> Result<(Box<dyn Read + 'a>, u64)>;

pub(crate) struct Client {
    agent: ureq::Agent,
    /// `scheme://host`.
    origin: String,
    repo: String,
    basic: Option<String>,
    /// `Authorization` value in use (basic or bearer), set after the first challenge.
    auth: Mutex<Option<String>>,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Chunk size of big pushes.
    chunk: u64,
}

fn roots(cfg: &Config) -> Result<ureq::tls::RootCerts> {
    let Some(ca) = &cfg.ca else {
        return Ok(system_roots());
    };
    let pem = std::fs::read(ca)
        .with_context(|| format!("BUILDCHAIN_REMOTE_CACHE_CA: cannot read {}", ca.display()))?;
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        bail!(
            "BUILDCHAIN_REMOTE_CACHE_CA: {} holds no PEM certificate",
            ca.display()
        );
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

impl Client {
    pub(crate) fn new(cfg: &Config) -> Result<Self> {
        let timeout = std::env::var("BUILDCHAIN_REMOTE_CACHE_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(30);
        let config = ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(roots(cfg)?)
                    .build(),
            )
            .http_status_as_error(false)
            .max_redirects(5)
            .accept_encoding("identity")
            .user_agent(concat!("buildchain/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(timeout.min(10))))
            .timeout_recv_response(Some(Duration::from_secs(timeout)))
            .timeout_per_read(Some(Duration::from_secs(timeout)))
            .timeout_send_body(Some(Duration::from_secs(timeout)))
            .max_idle_connections_per_host(16)
            .build();
        let creds = load_creds(None)?;
        let basic = creds
            .get(&cfg.url.host)
            .or_else(|| creds.get(cfg.url.hostname()))
            .map(|(u, p)| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                )
            });
        let scheme = if cfg.url.plain_http { "http" } else { "https" };
        Ok(Client {
            agent: ureq::Agent::new_with_config(config),
            origin: format!("{scheme}://{}", cfg.url.host),
            repo: cfg.url.repository.clone(),
            basic,
            auth: Mutex::new(None),
            requests: AtomicU64::new(0),
            chunk: std::env::var("BUILDCHAIN_REMOTE_CACHE_CHUNK_BYTES")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(CHUNK_BYTES),
        })
    }

    pub(crate) fn blob_url(&self, hex: &str) -> String {
        format!("{}/v2/{}/blobs/sha256:{hex}", self.origin, self.repo)
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.origin)
        }
    }

    /// One request; answers one 401 challenge and sends again.
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<BodyFn<'_>>,
    ) -> Result<Response> {
        let mut tried_auth = false;
        loop {
            let mut b = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                b = b.header(*k, v);
            }
            let auth = self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(a) = auth {
                b = b.header("Authorization", a);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let resp = match body {
                Some(f) => {
                    let (mut r, len) = f()?;
                    if !headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                    {
                        b = b.header("Content-Type", "application/octet-stream");
                    }
                    let req = b
                        .header("Content-Length", len.to_string())
                        .body(ureq::SendBody::from_reader(&mut *r))?;
                    self.agent.run(req)
                }
                None => {
                    let req = if matches!(method, "POST" | "PUT" | "PATCH") {
                        b.header("Content-Length", "0").body(())?
                    } else {
                        b.body(())?
                    };
                    self.agent.run(req)
                }
            }
            .map_err(|e| anyhow!("{method} {url}: {e}"))?;
            if resp.status() == 401 && !tried_auth {
                tried_auth = true;
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let a = self.answer(&challenge, url)?;
                *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
                continue;
            }
            if resp.status() == 401 || resp.status() == 403 {
                bail!(
                    "{method} {url}: access denied (HTTP {}); check credentials in ~/.docker/config.json or REGISTRY_AUTH_FILE",
                    resp.status().as_u16()
                );
            }
            return Ok(resp);
        }
    }

    /// An `Authorization` value answering `challenge`.
    fn answer(&self, challenge: &str, url: &str) -> Result<String> {
        let (scheme, params) = parse_challenge(challenge);
        match scheme.as_str() {
            "basic" => self.basic.clone().ok_or_else(|| {
                anyhow!("{url}: the remote cache requires credentials: add them to ~/.docker/config.json or REGISTRY_AUTH_FILE")
            }),
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| anyhow!("{url}: bearer challenge without realm"))?;
                let scope = format!("repository:{}:pull,push", self.repo);
                let t = token_url(realm, params.get("service"), &scope);
                let mut req = self.agent.get(&t);
                if let Some(b) = &self.basic {
                    req = req.header("Authorization", b);
                }
                self.requests.fetch_add(1, Ordering::Relaxed);
                let resp = req.call().map_err(|e| anyhow!("token server {realm}: {e}"))?;
                if resp.status() != 200 {
                    bail!(
                        "token server {realm} refused access to {} (HTTP {}); check credentials",
                        self.repo,
                        resp.status().as_u16()
                    );
                }
                let body = resp
                    .into_body()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_string()?;
                bearer_from_answer(realm, &body)
            }
            "" => bail!("{url}: HTTP 401 without WWW-Authenticate"),
            other => bail!("{url}: unsupported auth scheme {other:?}"),
        }
    }

    /// Size of blob `hex` in the cache, `None` when absent.
    pub(crate) fn head(&self, hex: &str) -> Result<Option<u64>> {
        let url = self.blob_url(hex);
        let resp = self.send("HEAD", &url, &[], None)?;
        match resp.status().as_u16() {
            200 => {
                let len = resp
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| anyhow!("HEAD {url}: no Content-Length"))?;
                Ok(Some(len))
            }
            404 => Ok(None),
            s => bail!("HEAD {url}: HTTP {s}"),
        }
    }

    /// Body of blob `hex` (status 200 checked).
    pub(crate) fn get(&self, hex: &str) -> Result<ureq::Body> {
        let url = self.blob_url(hex);
        let resp = self.send("GET", &url, &[], None)?;
        match resp.status().as_u16() {
            200 => Ok(resp.into_body()),
            s => bail!("GET {url}: HTTP {s}"),
        }
    }

    fn location(&self, resp: &Response, what: &str) -> Result<String> {
        let l = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("{what}: no Location in the answer"))?;
        Ok(self.absolute(l))
    }

    /// Pushes blob `hex` of `size` bytes read by `open(offset, len)`: a mount request first
    /// (`?mount=` answers 201 when the registry already knows the blob), then one PUT, or
    /// PATCH chunks (default [`CHUNK_BYTES`]) and a closing PUT for a big blob. Returns whether bytes
    /// were sent (false when mounted).
    pub(crate) fn push(
        &self,
        hex: &str,
        size: u64,
        from: Option<&str>,
        open: &dyn Fn(u64, u64) -> Result<Box<dyn Read>>,
    ) -> Result<bool> {
        let mut url = format!(
            "{}/v2/{}/blobs/uploads/?mount=sha256:{hex}",
            self.origin, self.repo
        );
        if let Some(f) = from {
            url.push_str(&format!("&from={}", pct(f)));
        }
        let resp = self.send("POST", &url, &[], None)?;
        match resp.status().as_u16() {
            201 => return Ok(false),
            202 => {}
            s => bail!("POST {url}: HTTP {s}"),
        }
        let mut loc = self.location(&resp, &url)?;
        let digest_param = |loc: &str| {
            let sep = if loc.contains('?') { '&' } else { '?' };
            format!("{loc}{sep}digest=sha256%3A{hex}")
        };
        if size <= self.chunk {
            let body = || -> Result<(Box<dyn Read>, u64)> { Ok((open(0, size)?, size)) };
            let put = digest_param(&loc);
            let resp = self.send("PUT", &put, &[], Some(&body))?;
            return match resp.status().as_u16() {
                201 => Ok(true),
                s => bail!("PUT {put}: HTTP {s}"),
            };
        }
        let mut off = 0;
        while off < size {
            let len = self.chunk.min(size - off);
            let body = || -> Result<(Box<dyn Read>, u64)> { Ok((open(off, len)?, len)) };
            let range = format!("{off}-{}", off + len - 1);
            let resp = self.send("PATCH", &loc, &[("Content-Range", range)], Some(&body))?;
            match resp.status().as_u16() {
                202 => loc = self.location(&resp, &loc)?,
                s => bail!("PATCH {loc}: HTTP {s}"),
            }
            off += len;
        }
        let put = digest_param(&loc);
        let resp = self.send("PUT", &put, &[], None)?;
        match resp.status().as_u16() {
            201 => Ok(true),
            s => bail!("PUT {put}: HTTP {s}"),
        }
    }

    /// Stores manifest `body` (of `media_type`) under `reference` (a tag or digest).
    pub(crate) fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<()> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.origin, self.repo);
        let f = || -> Result<(Box<dyn Read + '_>, u64)> { Ok((Box::new(body), body.len() as u64)) };
        let resp = self.send(
            "PUT",
            &url,
            &[("Content-Type", media_type.to_string())],
            Some(&f),
        )?;
        match resp.status().as_u16() {
            201 => Ok(()),
            s => {
                let text = resp
                    .into_body()
                    .with_config()
                    .limit(64 << 10)
                    .read_to_string()
                    .unwrap_or_default();
                bail!("PUT {url}: HTTP {s}: {}", text.trim())
            }
        }
    }

    /// The manifest bytes under `reference` (at most 4 MiB), `None` when the registry has no
    /// such manifest (HTTP 404).
    pub(crate) fn get_manifest_opt(
        &self,
        reference: &str,
        accept: &str,
    ) -> Result<Option<Vec<u8>>> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.origin, self.repo);
        let resp = self.send("GET", &url, &[("Accept", accept.to_string())], None)?;
        match resp.status().as_u16() {
            200 => Ok(Some(
                resp.into_body()
                    .with_config()
                    .limit(4 << 20)
                    .read_to_vec()?,
            )),
            404 => Ok(None),
            s => bail!("GET {url}: HTTP {s}"),
        }
    }

    /// The manifest bytes under `reference` (at most 4 MiB), asking for `accept`.
    pub(crate) fn get_manifest(&self, reference: &str, accept: &str) -> Result<Vec<u8>> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.origin, self.repo);
        let resp = self.send("GET", &url, &[("Accept", accept.to_string())], None)?;
        match resp.status().as_u16() {
            200 => Ok(resp
                .into_body()
                .with_config()
                .limit(4 << 20)
                .read_to_vec()?),
            404 => bail!("GET {url}: no such manifest (HTTP 404)"),
            s => bail!("GET {url}: HTTP {s}"),
        }
    }
}
