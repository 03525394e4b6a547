//! Manifest media types and a small parser for image manifests and indexes (OCI + Docker v2s2).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::reference::digest_hex;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `Accept` header sent for manifests.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

impl Descriptor {
    /// The hex part of the digest (validated at parse time).
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }
}

/// A platform (`os/arch[/variant]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`…
    pub architecture: String,
    /// `v8`, …
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => bail!("invalid platform {s:?} (expected os/arch[/variant], e.g. linux/amd64)"),
        }
    }
    /// `linux/amd64`.
    pub fn default_linux_amd64() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
    fn matches(&self, p: &Value) -> bool {
        let os = p.get("os").and_then(Value::as_str).unwrap_or("");
        let arch = p.get("architecture").and_then(Value::as_str).unwrap_or("");
        let variant = p.get("variant").and_then(Value::as_str);
        os == self.os
            && arch == self.architecture
            && (self.variant.is_none() || variant == self.variant.as_deref())
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A parsed manifest.
#[derive(Clone, Debug)]
pub enum Manifest {
    /// An image manifest.
    Image {
        /// Its media type.
        media_type: String,
        /// The config blob.
        config: Descriptor,
        /// The layer blobs, in order.
        layers: Vec<Descriptor>,
    },
    /// An index / manifest list.
    Index {
        /// Its media type.
        media_type: String,
        /// Entries with their (raw) platform objects.
        manifests: Vec<(Descriptor, Option<Value>)>,
    },
}

fn descriptor(v: &Value, what: &str) -> Result<Descriptor> {
    let digest = v
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{what}: descriptor without digest"))?;
    digest_hex(digest).with_context(|| what.to_string())?;
    Ok(Descriptor {
        media_type: v
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        digest: digest.to_string(),
        size: v
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("{what}: descriptor {digest} without size"))?,
    })
}

impl Manifest {
    /// Parses manifest bytes; `content_type` (HTTP header) is used when the JSON has no
    /// `mediaType`.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes).context("manifest is not valid JSON")?;
        let json_mt = v.get("mediaType").and_then(Value::as_str);
        let header_mt = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| c.starts_with("application/vnd."));
        let schema = v.get("schemaVersion").and_then(Value::as_u64).unwrap_or(0);
        if schema == 1 {
            bail!("Docker schema 1 manifests are not supported (re-push the image with a schema 2 or OCI manifest)");
        }
        let media_type = json_mt
            .or(header_mt)
            .map(str::to_string)
            .unwrap_or_else(|| {
                if v.get("manifests").is_some() {
                    OCI_INDEX.to_string()
                } else {
                    OCI_MANIFEST.to_string()
                }
            });
        match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                let list = v
                    .get("manifests")
                    .and_then(Value::as_array)
                    .ok_or_else(|| anyhow!("index without `manifests`"))?;
                let manifests = list
                    .iter()
                    .map(|m| Ok((descriptor(m, "index entry")?, m.get("platform").cloned())))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Manifest::Index {
                    media_type,
                    manifests,
                })
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let config = descriptor(
                    v.get("config")
                        .ok_or_else(|| anyhow!("manifest without `config`"))?,
                    "config",
                )?;
                let layers = v
                    .get("layers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| anyhow!("manifest without `layers`"))?
                    .iter()
                    .map(|l| descriptor(l, "layer"))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Manifest::Image {
                    media_type,
                    config,
                    layers,
                })
            }
            other => bail!("unsupported manifest media type {other:?}"),
        }
    }

    /// The media type.
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Image { media_type, .. } | Manifest::Index { media_type, .. } => media_type,
        }
    }

    /// For an index: the entry for `platform`.
    pub fn select(&self, platform: &Platform) -> Result<Descriptor> {
        match self {
            Manifest::Index { manifests, .. } => {
                let mut available = Vec::new();
                for (d, p) in manifests {
                    if let Some(p) = p {
                        if platform.matches(p) {
                            return Ok(d.clone());
                        }
                        available.push(format!(
                            "{}/{}",
                            p.get("os").and_then(Value::as_str).unwrap_or("?"),
                            p.get("architecture").and_then(Value::as_str).unwrap_or("?")
                        ));
                    }
                }
                bail!(
                    "no manifest for platform {platform} in the index (available: {})",
                    available.join(", ")
                )
            }
            Manifest::Image { .. } => bail!("not an index"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_select() {
        let h = "a".repeat(64);
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{h}","size":3,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":4,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            "b".repeat(64)
        );
        let m = Manifest::parse(idx.as_bytes(), None).unwrap();
        assert_eq!(m.select(&Platform::default_linux_amd64()).unwrap().size, 4);
        assert_eq!(
            m.select(&Platform::parse("linux/arm64").unwrap())
                .unwrap()
                .size,
            3
        );
        let err = m
            .select(&Platform::parse("linux/s390x").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("linux/arm64"), "{err}");
        assert!(Manifest::parse(br#"{"schemaVersion":1}"#, None).is_err());
    }
}
