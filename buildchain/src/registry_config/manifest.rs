//! Just enough manifest parsing to serve a manifest: its media type, the blobs it references and,
//! for indexes, its child manifests.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::grammar::is_sha256_hex;

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A content descriptor (sha256 only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Lower-case hex of the sha256 digest.
    pub hex: String,
    /// Declared size in bytes.
    pub size: u64,
    /// Whether the descriptor carries `urls` (a foreign / non-distributable layer, which may be
    /// absent from the tree).
    pub foreign: bool,
}

/// What the generator needs from a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// One of the four supported media types (a `&'static str`: nothing from the file ends up in
    /// the configuration).
    pub media_type: &'static str,
    /// Config and layers (image manifests).
    pub blobs: Vec<Descriptor>,
    /// Child manifests (indexes and manifest lists).
    pub children: Vec<Descriptor>,
}

impl Manifest {
    /// Whether this is an index / manifest list.
    pub fn is_index(&self) -> bool {
        !matches!(self.media_type, DOCKER_MANIFEST | OCI_MANIFEST)
    }
}

/// Parses manifest bytes. The media type comes from the `mediaType` field, or is inferred from the
/// content when absent (OCI allows omitting it): `manifests` → OCI index, `config` → OCI manifest.
pub fn parse(bytes: &[u8]) -> Result<Manifest> {
    let v: Value = serde_json::from_slice(bytes).context("manifest is not valid JSON")?;
    let obj = v.as_object().context("manifest is not a JSON object")?;
    match obj.get("schemaVersion").and_then(Value::as_u64) {
        Some(2) => {}
        Some(1) => {
            bail!("Docker schema 1 manifests are not supported (re-fetch it as v2s2 or OCI)")
        }
        other => bail!("unsupported manifest schemaVersion {other:?}"),
    }
    let media_type = match obj.get("mediaType") {
        Some(Value::String(mt)) => match mt.as_str() {
            DOCKER_MANIFEST => DOCKER_MANIFEST,
            DOCKER_LIST => DOCKER_LIST,
            OCI_MANIFEST => OCI_MANIFEST,
            OCI_INDEX => OCI_INDEX,
            other => bail!("unsupported manifest mediaType {other:?}"),
        },
        Some(_) => bail!("manifest mediaType is not a string"),
        None if obj.contains_key("manifests") => OCI_INDEX,
        None if obj.contains_key("config") => OCI_MANIFEST,
        None => bail!("cannot infer the manifest media type (no mediaType, config nor manifests)"),
    };
    let mut m = Manifest {
        media_type,
        blobs: Vec::new(),
        children: Vec::new(),
    };
    if m.is_index() {
        let list = obj
            .get("manifests")
            .and_then(Value::as_array)
            .context("index has no `manifests` array")?;
        for (i, d) in list.iter().enumerate() {
            m.children
                .push(descriptor(d).with_context(|| format!("manifests[{i}]"))?);
        }
    } else {
        let config = obj
            .get("config")
            .context("image manifest has no `config`")?;
        m.blobs.push(descriptor(config).context("config")?);
        let layers = obj
            .get("layers")
            .and_then(Value::as_array)
            .context("image manifest has no `layers` array")?;
        for (i, d) in layers.iter().enumerate() {
            m.blobs
                .push(descriptor(d).with_context(|| format!("layers[{i}]"))?);
        }
    }
    Ok(m)
}

fn descriptor(v: &Value) -> Result<Descriptor> {
    let digest = v
        .get("digest")
        .and_then(Value::as_str)
        .context("descriptor has no digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| is_sha256_hex(h))
        .with_context(|| format!("digest {digest:?} is not `sha256:<64 lower-case hex>`"))?;
    let size = v
        .get("size")
        .and_then(Value::as_u64)
        .context("descriptor has no valid size")?;
    let foreign = v
        .get("urls")
        .and_then(Value::as_array)
        .is_some_and(|u| !u.is_empty());
    Ok(Descriptor {
        hex: hex.to_string(),
        size,
        foreign,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn media_types() {
        let d = format!(r#"{{"digest":"sha256:{H}","size":3}}"#);
        let m = parse(
            format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{d},"layers":[{d}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        assert_eq!(m.blobs.len(), 2);
        let m =
            parse(format!(r#"{{"schemaVersion":2,"config":{d},"layers":[]}}"#).as_bytes()).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        let m = parse(format!(r#"{{"schemaVersion":2,"manifests":[{d}]}}"#).as_bytes()).unwrap();
        assert_eq!(m.media_type, OCI_INDEX);
        assert_eq!(m.children[0].hex, H);
        let m = parse(
            format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{d}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert!(m.is_index());
        for bad in [
            r#"{"schemaVersion":1}"#.to_string(),
            r#"[]"#.to_string(),
            r#"{"schemaVersion":2}"#.to_string(),
            r#"{"schemaVersion":2,"mediaType":"text/html\";"}"#.to_string(),
            format!(
                r#"{{"schemaVersion":2,"config":{{"digest":"sha512:{H}","size":1}},"layers":[]}}"#
            ),
            format!(
                r#"{{"schemaVersion":2,"config":{{"digest":"sha256:{H}\"","size":1}},"layers":[]}}"#
            ),
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
