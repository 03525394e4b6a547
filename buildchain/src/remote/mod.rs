//! Remote blob cache on an OCI registry (SPEC §14, issue 13).
//!
//! `--remote-cache oci://HOST[:PORT]/REPO` (or `BUILDCHAIN_REMOTE_CACHE`) puts a registry
//! repository between the local store and upstream: on a store miss the cache is asked (HEAD,
//! then GET, verified by digest and size) before upstream, and in `readwrite` mode (the default;
//! `--remote-cache-mode` / `BUILDCHAIN_REMOTE_CACHE_MODE`) every blob that enters the store from
//! upstream or a local build is pushed to it. It is a [`crate::store::BlobSource`]: call sites do
//! not know it exists.
//!
//! The cache is never trusted: bytes that do not match their digest are dropped with a warning
//! and the blob comes from upstream; an unreachable, slow or failing cache gives one warning and
//! is bypassed for the rest of the process, so it never fails a build.
//!
//! Transport: HTTPS with the system roots, or only the CA bundle of
//! `BUILDCHAIN_REMOTE_CACHE_CA`; plain HTTP (`oci+http://`) only for loopback hosts. Credentials
//! come from the same docker `config.json` / `REGISTRY_AUTH_FILE` lookup as image fetching
//! (basic auth, or a bearer token with `pull,push` scope).

pub mod artifact;
mod cache;
mod client;
pub mod tasks;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};

pub use cache::{CacheStats, RemoteCache};
pub use tasks::TaskCache;

/// What the build may do with the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Only read: never pushes.
    Read,
    /// Read, and push blobs fetched upstream or built locally.
    ReadWrite,
}

impl Mode {
    /// Parses `read` / `readwrite`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim() {
            "read" => Ok(Mode::Read),
            "readwrite" => Ok(Mode::ReadWrite),
            other => bail!(
                "remote cache mode must be `read` or `readwrite` (--remote-cache-mode, BUILDCHAIN_REMOTE_CACHE_MODE), found {other:?}"
            ),
        }
    }
}

/// Where the cache lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheUrl {
    /// `host[:port]`.
    pub host: String,
    /// Repository path inside the registry.
    pub repository: String,
    /// Plain HTTP (`oci+http://`, loopback only).
    pub plain_http: bool,
}

impl CacheUrl {
    /// Parses `oci://HOST[:PORT]/REPO` (or `oci+http://…` for a loopback host).
    pub fn parse(s: &str) -> Result<Self> {
        let (plain_http, rest) = if let Some(r) = s.strip_prefix("oci://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("oci+http://") {
            (true, r)
        } else {
            bail!("remote cache {s:?}: expected oci://HOST[:PORT]/REPO");
        };
        let Some((host, repo)) = rest
            .split_once('/')
            .filter(|(h, r)| !h.is_empty() && !r.is_empty())
        else {
            bail!("remote cache {s:?}: expected oci://HOST[:PORT]/REPO");
        };
        let repo = repo.trim_end_matches('/');
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if !repo.chars().all(ok) || repo.starts_with(['.', '_', '-', '/']) {
            bail!("remote cache {s:?}: repository {repo:?} must be lower-case letters, digits and . _ - /");
        }
        let url = CacheUrl {
            host: host.to_string(),
            repository: repo.to_string(),
            plain_http,
        };
        if plain_http && !url.is_loopback() {
            bail!(
                "remote cache {s:?}: plain HTTP is allowed only for loopback hosts (127.0.0.1, ::1, localhost); use oci:// (HTTPS)"
            );
        }
        Ok(url)
    }

    /// Host name without the port.
    pub fn hostname(&self) -> &str {
        let h = &self.host;
        if let Some(rest) = h.strip_prefix('[') {
            return rest.split(']').next().unwrap_or("");
        }
        h.rsplit_once(':').map_or(h.as_str(), |(n, _)| n)
    }

    /// Whether the host is loopback.
    pub fn is_loopback(&self) -> bool {
        let n = self.hostname();
        n == "localhost"
            || n.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for CacheUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.plain_http { "oci+http" } else { "oci" };
        write!(f, "{scheme}://{}/{}", self.host, self.repository)
    }
}

/// A resolved cache configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where.
    pub url: CacheUrl,
    /// Read or read-write.
    pub mode: Mode,
    /// CA bundle that replaces the system roots (`BUILDCHAIN_REMOTE_CACHE_CA`).
    pub ca: Option<PathBuf>,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    /// From the flags (which win) and the environment; `None` without a cache.
    pub fn from_flags_and_env(url: Option<&str>, mode: Option<&str>) -> Result<Option<Self>> {
        let Some(u) = url
            .map(str::to_string)
            .or_else(|| env_nonempty("BUILDCHAIN_REMOTE_CACHE"))
        else {
            return Ok(None);
        };
        let mode = match mode
            .map(str::to_string)
            .or_else(|| env_nonempty("BUILDCHAIN_REMOTE_CACHE_MODE"))
        {
            Some(m) => Mode::parse(&m)?,
            None => Mode::ReadWrite,
        };
        Ok(Some(Config {
            url: CacheUrl::parse(u.trim())?,
            mode,
            ca: env_nonempty("BUILDCHAIN_REMOTE_CACHE_CA").map(PathBuf::from),
        }))
    }
}

static INSTALLED: std::sync::Mutex<Option<Arc<RemoteCache>>> = std::sync::Mutex::new(None);

/// The remote cache [`install`] configured for this process, if any.
pub fn installed() -> Option<Arc<RemoteCache>> {
    INSTALLED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Configures the remote cache of this process from the flags and the environment: every store
/// opened with [`crate::store::Store::shared`] afterwards asks it (and, in `readwrite` mode,
/// fills it). A bad setting is an error; an unreachable cache is not (it warns at first use).
pub fn install(url: Option<&str>, mode: Option<&str>) -> Result<Option<Arc<RemoteCache>>> {
    let Some(cfg) = Config::from_flags_and_env(url, mode)? else {
        return Ok(None);
    };
    let cache = Arc::new(RemoteCache::new(cfg)?);
    *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(cache.clone());
    let c = cache.clone();
    crate::store::set_configured_sources(move || {
        Ok(vec![c.clone() as Arc<dyn crate::store::BlobSource>])
    });
    Ok(Some(cache))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_urls() {
        let u = CacheUrl::parse("oci://cache.example:5000/ci/blobs").unwrap();
        assert_eq!(u.host, "cache.example:5000");
        assert_eq!(u.hostname(), "cache.example");
        assert_eq!(u.repository, "ci/blobs");
        assert!(!u.is_loopback());
        assert!(CacheUrl::parse("oci+http://127.0.0.1:5000/c")
            .unwrap()
            .is_loopback());
        assert!(CacheUrl::parse("oci+http://[::1]:5000/c")
            .unwrap()
            .is_loopback());
        assert_eq!(
            CacheUrl::parse("oci+http://cache.example/c").unwrap_err().to_string(),
            "remote cache \"oci+http://cache.example/c\": plain HTTP is allowed only for loopback hosts (127.0.0.1, ::1, localhost); use oci:// (HTTPS)"
        );
        assert_eq!(
            CacheUrl::parse("https://h/r").unwrap_err().to_string(),
            "remote cache \"https://h/r\": expected oci://HOST[:PORT]/REPO"
        );
        assert!(CacheUrl::parse("oci://h/").is_err());
        assert!(CacheUrl::parse("oci://h/UPPER").is_err());
        assert_eq!(Mode::parse("read").unwrap(), Mode::Read);
        assert!(Mode::parse("write").is_err());
    }
}
