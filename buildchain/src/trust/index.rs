//! Builds the content index ([`super::contents::ContentIndex`]) of a tree: every regular file,
//! every image of `images/<name>/<tag>/` (skopeo `dir:` layouts) and every `.rpm`.
//!
//! Each file is hashed once, through the caller's hasher (the engine's content cache). A blob of
//! an image layout is named by its digest and was verified by the store when it was written, so
//! its name is its sha256 (no re-read).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use rayon::prelude::*;

use super::contents::{
    Builder, ContentIndex, FileEntry, ImageEntry, RpmEntry, CONTENTS_FILE, CONTENTS_SCHEMA,
    CONTENTS_SIGNATURE_FILE,
};
use crate::images::layout::DIR_VERSION;

/// sha256 (hex) of a file.
pub type Hasher<'a> = &'a (dyn Fn(&Path) -> Result<String> + Sync);

/// An RPM of the tree with what the SBOM needs beyond the index entry.
#[derive(Clone, Debug)]
pub struct RpmInfo {
    /// The index entry.
    pub entry: RpmEntry,
    /// Name.
    pub name: String,
    /// Epoch (0 = none).
    pub epoch: u32,
    /// `version-release`.
    pub version_release: String,
    /// Architecture.
    pub arch: String,
    /// `License:` of the header.
    pub license: String,
}

/// `/`-separated path of `p` relative to `root`.
pub fn rel(p: &Path, root: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Directories `images/<name>/<tag>/` of `root` that hold a `dir:` layout, as
/// `(name, tag, dir)` sorted by (name, tag).
pub fn image_dirs(root: &Path) -> Result<Vec<(String, String, PathBuf)>> {
    let images = root.join("images");
    let mut out = Vec::new();
    if !images.is_dir() {
        return Ok(out);
    }
    for e in walkdir::WalkDir::new(&images)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.with_context(|| format!("cannot walk {}", images.display()))?;
        if !e.file_type().is_dir() {
            continue;
        }
        let dir = e.path();
        let is_layout = dir.join("manifest.json").is_file()
            && std::fs::read(dir.join("version")).is_ok_and(|v| v == DIR_VERSION.as_bytes());
        if !is_layout {
            continue;
        }
        let r = rel(dir, &images);
        if let Some((name, tag)) = r.rsplit_once('/') {
            out.push((name.to_string(), tag.to_string(), dir.to_path_buf()));
        }
    }
    out.sort();
    Ok(out)
}

/// The index entry of the `dir:` layout in `dir` ([`super::index_reader::image_entry`] over the
/// files of the directory).
pub fn image_entry(name: &str, tag: &str, dir: &Path) -> Result<ImageEntry> {
    let mpath = dir.join("manifest.json");
    let bytes =
        std::fs::read(&mpath).with_context(|| format!("cannot read {}", mpath.display()))?;
    super::index_reader::image_entry(name, tag, &bytes, |f| {
        let p = dir.join(f);
        if !p.is_file() {
            return Ok(None);
        }
        std::fs::read(&p)
            .map(Some)
            .with_context(|| format!("cannot read {}", p.display()))
    })
    .with_context(|| mpath.display().to_string())
}

/// Every image of the tree.
pub fn scan_images(root: &Path) -> Result<Vec<ImageEntry>> {
    image_dirs(root)?
        .iter()
        .map(|(n, t, d)| image_entry(n, t, d))
        .collect()
}

/// Every `.rpm` of the tree (outside `images/`), read in parallel, sorted by path.
pub fn scan_rpms(root: &Path, hash: Hasher<'_>) -> Result<Vec<RpmInfo>> {
    scan_rpms_in(root, &crate::engine::signature::walk_tree(root)?, hash)
}

/// [`scan_rpms`] over a listing of the tree already taken (`walk_tree` order).
pub fn scan_rpms_in(root: &Path, listing: &[PathBuf], hash: Hasher<'_>) -> Result<Vec<RpmInfo>> {
    let files: Vec<&PathBuf> = listing
        .iter()
        .filter(|p| {
            p.extension().is_some_and(|x| x == "rpm")
                && !p.starts_with(root.join("images"))
                && std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
        })
        .collect();
    let mut out: Vec<RpmInfo> = files
        .par_iter()
        .map(|p| rpm_info(root, p, hash))
        .collect::<Result<_>>()?;
    out.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
    Ok(out)
}

/// NEVRA, license and header-signature key id of one RPM.
pub fn rpm_info(root: &Path, p: &Path, hash: Hasher<'_>) -> Result<RpmInfo> {
    let what = p.display();
    let md = rpm::PackageMetadata::open(p).map_err(|e| anyhow!("{what}: not an RPM: {e}"))?;
    let field = |r: std::result::Result<&str, rpm::Error>, f: &str| {
        r.map(str::to_string)
            .map_err(|e| anyhow!("{what}: no {f} in the header: {e}"))
    };
    let name = field(md.get_name(), "name")?;
    let version = field(md.get_version(), "version")?;
    let release = field(md.get_release(), "release")?;
    let arch = field(md.get_arch(), "arch")?;
    let license = md.get_license().unwrap_or("").to_string();
    let epoch = md.get_epoch().unwrap_or(0);
    // The same NEVRA and key id `verify` computes, so the two never disagree.
    let key_id = super::index_reader::rpm_key_id(&md);
    let nevra = super::index_reader::rpm_nevra(&md).map_err(|e| anyhow!("{what}: {e}"))?;
    Ok(RpmInfo {
        entry: RpmEntry {
            path: rel(p, root),
            nevra,
            sha256: hash(p)?,
            key_id,
        },
        name,
        epoch,
        version_release: format!("{version}-{release}"),
        arch,
        license,
    })
}

/// Every regular file of the tree except the index and its signature, sorted by path.
pub fn scan_files(root: &Path, hash: Hasher<'_>) -> Result<Vec<FileEntry>> {
    scan_files_in(root, &crate::engine::signature::walk_tree(root)?, hash)
}

/// [`scan_files`] over a listing of the tree already taken (`walk_tree` order).
pub fn scan_files_in(root: &Path, listing: &[PathBuf], hash: Hasher<'_>) -> Result<Vec<FileEntry>> {
    let skip = [root.join(CONTENTS_FILE), root.join(CONTENTS_SIGNATURE_FILE)];
    let files: Vec<&PathBuf> = listing.iter().filter(|p| !skip.contains(p)).collect();
    let mut out: Vec<Option<FileEntry>> = files
        .par_iter()
        .map(|p| {
            let md = std::fs::symlink_metadata(p)
                .with_context(|| format!("cannot stat {}", p.display()))?;
            if !md.is_file() {
                return Ok(None);
            }
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let in_layout = p.starts_with(root.join("images"))
                && p.parent().is_some_and(|d| {
                    d.join("version").is_file() && d.join("manifest.json").is_file()
                });
            // Layout blobs are named by their (store-verified) digest.
            let sha256 = if in_layout && is_hex64(&name) {
                name.to_string()
            } else {
                hash(p)?
            };
            Ok(Some(FileEntry {
                path: rel(p, root),
                size: md.len(),
                sha256,
            }))
        })
        .collect::<Result<_>>()?;
    let mut out: Vec<FileEntry> = out.drain(..).flatten().collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The content index of `root` (run after `sbom.spdx.json` and `SHA256SUMS` are written).
pub fn build_index(
    root: &Path,
    product: BTreeMap<String, String>,
    source_date_epoch: Option<u64>,
    hash: Hasher<'_>,
) -> Result<ContentIndex> {
    let listing = crate::engine::signature::walk_tree(root)?;
    build_index_in(root, &listing, product, source_date_epoch, hash)
}

/// [`build_index`] over a listing of the tree already taken (files and RPMs share it).
pub fn build_index_in(
    root: &Path,
    listing: &[PathBuf],
    product: BTreeMap<String, String>,
    source_date_epoch: Option<u64>,
    hash: Hasher<'_>,
) -> Result<ContentIndex> {
    Ok(ContentIndex {
        schema: CONTENTS_SCHEMA.to_string(),
        product,
        builder: Builder {
            name: "buildchain".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        source_date_epoch,
        files: scan_files_in(root, listing, hash)?,
        images: scan_images(root)?,
        rpms: scan_rpms_in(root, listing, hash)?
            .into_iter()
            .map(|r| r.entry)
            .collect(),
    })
}

/// Writes `<root>/CONTENTS.json` and, with a key, `<root>/CONTENTS.json.asc` signed at
/// `sign_time` (a stale signature is removed from an unsigned build). Returns the files written.
pub fn write_index(
    root: &Path,
    index: &ContentIndex,
    key: Option<&super::signing::SigningKey>,
    sign_time: u64,
) -> Result<Vec<PathBuf>> {
    let bytes = index
        .to_json_bytes()
        .context("cannot serialise CONTENTS.json")?;
    let path = root.join(CONTENTS_FILE);
    crate::fsutil::write_if_changed(&path, &bytes, Some(0o644))?;
    let mut out = vec![path.clone()];
    out.extend(super::signing::write_detached(
        key, &path, &bytes, sign_time,
    )?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::sha256_bytes;

    fn put(dir: &Path, bytes: &[u8]) -> String {
        let hex = sha256_bytes(bytes);
        std::fs::write(dir.join(&hex), bytes).unwrap();
        hex
    }

    /// An index with two platforms of which one is kept: the entry lists the kept child
    /// manifest, its config and layer, and only the kept platform.
    #[test]
    fn index_layout_lists_kept_platforms_and_their_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let dir = root.join("images/tools/extra/2.0");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("version"), DIR_VERSION).unwrap();
        let cfg = br#"{"os":"linux","architecture":"arm64","variant":"v8"}"#;
        let cfg_hex = put(&dir, cfg);
        let layer_hex = put(&dir, b"layer bytes");
        let child = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{cfg_hex}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_hex}","size":11}}]}}"#,
            cfg.len()
        );
        let child_hex = sha256_bytes(child.as_bytes());
        std::fs::write(dir.join(format!("{child_hex}.manifest.json")), &child).unwrap();
        let absent = "e".repeat(64);
        let top = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{absent}","size":9,"platform":{{"os":"linux","architecture":"amd64"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{child_hex}","size":{},"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            child.len()
        );
        std::fs::write(dir.join("manifest.json"), &top).unwrap();

        let images = scan_images(root).unwrap();
        assert_eq!(images.len(), 1);
        let img = &images[0];
        assert_eq!(
            (img.name.as_str(), img.tag.as_str()),
            ("tools/extra", "2.0")
        );
        assert_eq!(
            img.digest,
            format!("sha256:{}", sha256_bytes(top.as_bytes()))
        );
        assert_eq!(img.media_type, "application/vnd.oci.image.index.v1+json");
        assert_eq!(img.platforms, vec!["linux/arm64/v8".to_string()]);
        let mut want = vec![
            (format!("sha256:{cfg_hex}"), cfg.len() as u64),
            (format!("sha256:{layer_hex}"), 11),
            (format!("sha256:{child_hex}"), child.len() as u64),
        ];
        want.sort();
        let got: Vec<(String, u64)> = img
            .blobs
            .iter()
            .map(|b| (b.digest.clone(), b.size))
            .collect();
        assert_eq!(got, want);

        // Files: blobs by name, everything else hashed; the index itself is left out.
        std::fs::write(root.join(CONTENTS_FILE), b"{}").unwrap();
        let hashed = std::sync::Mutex::new(Vec::new());
        let hash = |p: &Path| {
            hashed.lock().unwrap().push(rel(p, root));
            crate::fsutil::sha256_file(p)
        };
        let files = scan_files(root, &hash).unwrap();
        assert_eq!(files.len(), 5);
        assert!(files.iter().all(|f| f.path != CONTENTS_FILE));
        for f in &files {
            assert_eq!(
                f.sha256,
                crate::fsutil::sha256_file(&root.join(&f.path)).unwrap(),
                "{}",
                f.path
            );
        }
        let mut hashed = hashed.into_inner().unwrap();
        hashed.sort();
        assert_eq!(
            hashed,
            vec![
                format!("images/tools/extra/2.0/{child_hex}.manifest.json"),
                "images/tools/extra/2.0/manifest.json".to_string(),
                "images/tools/extra/2.0/version".to_string(),
            ]
        );
    }

    #[test]
    fn a_non_rpm_named_rpm_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("bad.rpm");
        std::fs::write(&p, b"not an rpm").unwrap();
        let hash = |p: &Path| crate::fsutil::sha256_file(p);
        let err = scan_rpms(tmp.path(), &hash).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: not an RPM: ", p.display())),
            "{err}"
        );
    }
}
