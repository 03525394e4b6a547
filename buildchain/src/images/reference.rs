//! Image references (`registry/repo/name:tag@sha256:…`) with the `docker.io` conventions.

use std::fmt;

use anyhow::{bail, Result};

use crate::store::is_sha256_hex;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host as written (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/nginx`, `etcd`, `prometheus/prometheus`).
    pub repository: String,
    /// Tag, if any.
    pub tag: Option<String>,
    /// `sha256:<hex>`, if any.
    pub digest: Option<String>,
}

/// Default registry for references without a host.
pub const DOCKER_HUB: &str = "docker.io";

/// Validates a repository path against the OCI distribution grammar.
pub fn valid_repository(repo: &str) -> bool {
    !repo.is_empty()
        && repo.len() <= 255
        && repo.split('/').all(|comp| {
            let b = comp.as_bytes();
            if b.is_empty()
                || !b[0].is_ascii_alphanumeric()
                || !b[b.len() - 1].is_ascii_alphanumeric()
            {
                return false;
            }
            let mut prev_sep = false;
            for (i, &c) in b.iter().enumerate() {
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    prev_sep = false;
                } else if matches!(c, b'.' | b'_' | b'-') {
                    // separators: `.`, `_`, `__`, `-+`
                    if prev_sep
                        && !(c == b'_' && b[i - 1] == b'_')
                        && !(c == b'-' && b[i - 1] == b'-')
                    {
                        return false;
                    }
                    prev_sep = true;
                } else {
                    return false;
                }
            }
            true
        })
}

/// Validates a tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Splits `sha256:<hex>` and returns the hex; errors on other algorithms or malformed digests.
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if is_sha256_hex(h) => Ok(h),
        _ => bail!("unsupported or malformed digest {digest:?} (expected sha256:<64 hex>)"),
    }
}

impl Reference {
    /// Parses `[host[:port]/]path[:tag][@sha256:hex]`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let s = s.strip_prefix("docker://").unwrap_or(s);
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                digest_hex(d).map_err(|e| anyhow::anyhow!("image reference {s:?}: {e}"))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        let (registry, mut repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if !valid_repository(&repository) {
            bail!("image reference {s:?}: invalid repository name {repository:?}");
        }
        if let Some(t) = &tag {
            if !valid_tag(t) {
                bail!("image reference {s:?}: invalid tag {t:?}");
            }
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host the HTTP API lives on (`docker.io` → `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// What goes after `/manifests/`: the digest when pinned, else the tag (default `latest`).
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// Whether the host is loopback (plain HTTP allowed without `--insecure`).
    pub fn is_loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.registry);
        matches!(host, "127.0.0.1" | "localhost" | "[::1]")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_conventions() {
        let r = Reference::parse("nginx:1.15.8").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/nginx");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.manifest_ref(), "1.15.8");
        let r = Reference::parse(
            "calico/node@sha256:0a16ddf391c06e065c5b4db75069da9e153f9fc9dd45f92ff64a55616e0bfe26",
        )
        .unwrap();
        assert_eq!(r.repository, "calico/node");
        assert!(r.manifest_ref().starts_with("sha256:"));
    }

    #[test]
    fn hosts_ports_and_errors() {
        let r = Reference::parse("127.0.0.1:5000/metalk8s/hello:1.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "metalk8s/hello");
        assert!(r.is_loopback());
        let r = Reference::parse("registry.k8s.io/etcd").unwrap();
        assert_eq!(r.manifest_ref(), "latest");
        assert!(Reference::parse("Registry.k8s.io/ETCD:1").is_err());
        assert!(Reference::parse("x/y@sha256:abc").is_err());
        assert!(Reference::parse("x/y:bad tag").is_err());
        assert!(valid_repository("a__b/c-d.e"));
        assert!(!valid_repository("a..b"));
    }
}
