//! Building a [`ContentIndex`] from a tree on disk, and the facts both the index writer and
//! `verify` read from images and RPMs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::contents::{
    BlobEntry, ContentIndex, ImageEntry, CONTENTS_FILE, CONTENTS_SIGNATURE_FILE,
};
use crate::registry_config::manifest;

/// Whether `path` (tree-relative) is covered by the index `files` list.
pub fn indexed(path: &str) -> bool {
    path != CONTENTS_FILE && path != CONTENTS_SIGNATURE_FILE
}

/// Whether `path` is covered by `SHA256SUMS`.
pub fn summed(path: &str) -> bool {
    indexed(path) && path != "SHA256SUMS"
}

/// `os/arch[/variant]` of a platform object (`{"os":…,"architecture":…,"variant":…}`).
pub fn platform_string(p: &Value) -> Option<String> {
    let os = p.get("os")?.as_str()?;
    let arch = p.get("architecture")?.as_str()?;
    Some(match p.get("variant").and_then(Value::as_str) {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    })
}

/// The index entry of one image directory, from its `manifest.json` bytes and a reader of the
/// other files of the directory (child manifests, config blobs; `Ok(None)` when absent). The one
/// definition both the index writer and `verify` use. An index lists the children present (the
/// platforms kept); platforms are informative: a child's comes from its index entry, else from
/// its config, and a config that is absent or not JSON gives none.
pub fn image_entry(
    name: &str,
    tag: &str,
    manifest_bytes: &[u8],
    mut read: impl FnMut(&str) -> Result<Option<Vec<u8>>>,
) -> Result<ImageEntry> {
    let m = manifest::parse(manifest_bytes)?;
    let mut blobs = Vec::new();
    let mut platforms = Vec::new();
    // Adds the config and layers of an image manifest; returns the platform its config names.
    let add_manifest = |m: &manifest::Manifest,
                        read: &mut dyn FnMut(&str) -> Result<Option<Vec<u8>>>,
                        blobs: &mut Vec<BlobEntry>| {
        for b in &m.blobs {
            blobs.push(BlobEntry {
                digest: format!("sha256:{}", b.hex),
                size: b.size,
            });
        }
        let cfg = m.blobs.first()?;
        let v: Value = serde_json::from_slice(&read(&cfg.hex).ok()??).ok()?;
        platform_string(&v)
    };
    if m.is_index() {
        let v: Value = serde_json::from_slice(manifest_bytes)?;
        let entries: Vec<&Value> = v
            .get("manifests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        for c in &m.children {
            let digest = format!("sha256:{}", c.hex);
            let listed = entries
                .iter()
                .find(|e| e.get("digest").and_then(Value::as_str) == Some(digest.as_str()))
                .and_then(|e| e.get("platform"))
                .and_then(platform_string);
            let Some(cb) = read(&format!("{}.manifest.json", c.hex))? else {
                continue;
            };
            blobs.push(BlobEntry {
                digest,
                size: c.size,
            });
            let cm = manifest::parse(&cb)?;
            let from_config = add_manifest(&cm, &mut read, &mut blobs);
            platforms.extend(listed.or(from_config));
        }
    } else {
        platforms.extend(add_manifest(&m, &mut read, &mut blobs));
    }
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    blobs.dedup();
    platforms.sort();
    platforms.dedup();
    Ok(ImageEntry {
        name: name.to_string(),
        tag: tag.to_string(),
        digest: format!("sha256:{}", hex::encode(Sha256::digest(manifest_bytes))),
        media_type: m.media_type.to_string(),
        platforms,
        blobs,
    })
}

/// `name-[epoch:]version-release.arch` of an RPM header.
pub fn rpm_nevra(md: &rpm::PackageMetadata) -> Result<String> {
    let epoch = md.get_epoch().unwrap_or(0);
    let e = if epoch > 0 {
        format!("{epoch}:")
    } else {
        String::new()
    };
    let arch = if md.is_source_package() {
        "src"
    } else {
        md.get_arch()?
    };
    Ok(format!(
        "{}-{e}{}-{}.{arch}",
        md.get_name()?,
        md.get_version()?,
        md.get_release()?
    ))
}

/// Key id (16 upper-case hex) of the first header signature, `None` when unsigned.
pub fn rpm_key_id(md: &rpm::PackageMetadata) -> Option<String> {
    md.signatures()
        .ok()?
        .iter()
        .find_map(|s| s.key_id().map(str::to_ascii_uppercase))
}

/// Builds the index of the tree at `root` the way the build does ([`super::index::build_index`],
/// every file hashed), with `product` from `product.txt` when there is one.
pub fn index_tree(root: &Path, source_date_epoch: Option<u64>) -> Result<ContentIndex> {
    let product_txt = root.join("product.txt");
    let product = if product_txt.is_file() {
        crate::product::read_product_txt(&product_txt)?
    } else {
        BTreeMap::new()
    };
    super::index::build_index(root, product, source_date_epoch, &|p: &Path| {
        crate::fsutil::sha256_file(p)
    })
}
