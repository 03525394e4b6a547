//! Building a [`ContentIndex`] from a tree on disk, and the facts both the index writer and
//! `verify` read from images and RPMs.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::contents::{
    BlobEntry, Builder, ContentIndex, FileEntry, ImageEntry, RpmEntry, CONTENTS_FILE,
    CONTENTS_SCHEMA, CONTENTS_SIGNATURE_FILE,
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
/// other files of the directory (child manifests, config blobs).
pub fn image_entry(
    name: &str,
    tag: &str,
    manifest_bytes: &[u8],
    mut read: impl FnMut(&str) -> Result<Vec<u8>>,
) -> Result<ImageEntry> {
    let m = manifest::parse(manifest_bytes)?;
    let mut blobs = Vec::new();
    let mut platforms = Vec::new();
    let add_manifest = |m: &manifest::Manifest,
                        read: &mut dyn FnMut(&str) -> Result<Vec<u8>>,
                        blobs: &mut Vec<BlobEntry>,
                        platforms: &mut Vec<String>|
     -> Result<()> {
        for b in &m.blobs {
            blobs.push(BlobEntry {
                digest: format!("sha256:{}", b.hex),
                size: b.size,
            });
        }
        if let Some(cfg) = m.blobs.first() {
            let bytes = read(&cfg.hex)?;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if let Some(p) = platform_string(&v) {
                platforms.push(p);
            }
        }
        Ok(())
    };
    if m.is_index() {
        let v: Value = serde_json::from_slice(manifest_bytes)?;
        for c in v
            .get("manifests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(p) = c.get("platform").and_then(platform_string) {
                platforms.push(p);
            }
        }
        for c in &m.children {
            blobs.push(BlobEntry {
                digest: format!("sha256:{}", c.hex),
                size: c.size,
            });
            let cb = read(&format!("{}.manifest.json", c.hex))?;
            let cm = manifest::parse(&cb)?;
            let mut ignored = Vec::new();
            add_manifest(&cm, &mut read, &mut blobs, &mut ignored)?;
        }
    } else {
        add_manifest(&m, &mut read, &mut blobs, &mut platforms)?;
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

/// `KEY=VALUE` lines of `product.txt`.
pub fn parse_product_txt(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty() && !k.starts_with('#'))
        .collect()
}

/// Builds the index of the tree at `root` (everything but `CONTENTS.json{,.asc}`), with
/// `product` from `product.txt` when there is one.
pub fn index_tree(root: &Path, source_date_epoch: Option<u64>) -> Result<ContentIndex> {
    let mut files = Vec::new();
    let mut images = Vec::new();
    let mut rpms = Vec::new();
    let mut product = BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.with_context(|| format!("cannot walk {}", root.display()))?;
        if !e.file_type().is_file() {
            continue;
        }
        let rel = crate::tasks::rel_name(e.path(), root);
        if !indexed(&rel) {
            continue;
        }
        let mut f = std::fs::File::open(e.path())
            .with_context(|| format!("cannot open {}", e.path().display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", e.path().display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        let sha256 = hex::encode(h.finalize());
        if rel == "product.txt" {
            product = parse_product_txt(&std::fs::read_to_string(e.path())?);
        }
        if let Some(d) = rel
            .strip_prefix("images/")
            .and_then(|d| d.strip_suffix("/manifest.json"))
        {
            if let Some((name, tag)) = d.rsplit_once('/') {
                let dir = e.path().parent().unwrap_or(root).to_path_buf();
                let bytes = std::fs::read(e.path())?;
                let entry = image_entry(name, tag, &bytes, |f| {
                    std::fs::read(dir.join(f))
                        .with_context(|| format!("cannot read {}/{f}", dir.display()))
                })
                .with_context(|| format!("{rel}: cannot index the image"))?;
                images.push(entry);
            }
        }
        if rel.ends_with(".rpm") {
            let f = std::fs::File::open(e.path())?;
            let md = rpm::PackageMetadata::parse(&mut std::io::BufReader::new(f))
                .with_context(|| format!("{rel}: not a readable RPM"))?;
            rpms.push(RpmEntry {
                path: rel.clone(),
                nevra: rpm_nevra(&md)?,
                sha256: sha256.clone(),
                key_id: rpm_key_id(&md),
            });
        }
        files.push(FileEntry {
            path: rel,
            size,
            sha256,
        });
    }
    Ok(ContentIndex {
        schema: CONTENTS_SCHEMA.to_string(),
        product,
        builder: Builder {
            name: "buildchain".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        source_date_epoch,
        files,
        images,
        rpms,
    })
}
