//! On-disk image formats: the skopeo `dir:` layout we write (SPEC §5.4), the docker-archive
//! tarball we write for `tarball: true` images, and the OCI layout / docker-archive sources we
//! read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use flate2::read::GzDecoder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::manifest::{
    Descriptor, Manifest, Platform, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST,
};
use super::reference::digest_hex;
use super::{ImageData, Resolved};
use crate::fsutil;
use crate::store::Store;

/// Content of the `version` file of the `dir:` transport.
pub const DIR_VERSION: &str = "Directory Transport Version: 1.1\n";

/// Writes (or updates) the `dir:` layout of `image` in `dest`: `manifest.json` (exact bytes),
/// `version`, one file per blob named by its hex digest (hard links from the store), plus
/// `<hex>.manifest.json` for every platform manifest when an index is kept. Files in `dest` that
/// do not belong to the image are removed. Returns every file of the layout.
///
/// Like skopeo, a non-empty `dest` that is not already a `dir:` layout (no `version` file) is
/// refused rather than overwritten.
pub fn write_dir_layout(store: &Store, image: &Resolved, dest: &Path) -> Result<Vec<PathBuf>> {
    if dest.is_dir()
        && !dest.join("version").is_file()
        && fs::read_dir(dest)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        bail!(
            "refusing to overwrite {}: it is not empty and not an image directory (no `version` file)",
            dest.display()
        );
    }
    fsutil::create_dir_all(dest)?;
    let mut files = Vec::new();
    let manifest = dest.join("manifest.json");
    fsutil::write_if_changed(&manifest, &image.top_bytes, Some(0o644))?;
    files.push(manifest);
    let version = dest.join("version");
    fsutil::write_if_changed(&version, DIR_VERSION.as_bytes(), Some(0o644))?;
    files.push(version);
    let kept_index = image.instances.len() != 1 || image.instances[0].hex != image.top_hex;
    let mut blobs = BTreeSet::new();
    for inst in &image.instances {
        if kept_index {
            let p = dest.join(format!("{}.manifest.json", inst.hex));
            fsutil::write_if_changed(&p, &inst.bytes, Some(0o644))?;
            files.push(p);
        }
        blobs.insert(inst.config.hex().to_string());
        for l in &inst.layers {
            blobs.insert(l.hex().to_string());
        }
    }
    for hex in &blobs {
        let p = dest.join(hex);
        store.materialize(hex, &p)?;
        files.push(p);
    }
    let keep: BTreeSet<PathBuf> = files.iter().cloned().collect();
    for e in fs::read_dir(dest).with_context(|| format!("cannot list {}", dest.display()))? {
        let p = e?.path();
        if !keep.contains(&p) && p.is_file() {
            fs::remove_file(&p).with_context(|| format!("cannot remove stale {}", p.display()))?;
        }
    }
    Ok(files)
}

/// Like [`write_dir_layout`], for a directory the caller owns whole (an image directory of the
/// ISO tree): a `dest` left partial by a crash (no valid `version` file, stray files) is not
/// refused but replaced. The new layout is built in a temp directory beside `dest` and renamed
/// into place whole; a valid layout is updated in place (unchanged files keep their mtimes).
/// Returns every file of the layout, under `dest`.
pub fn replace_dir_layout(store: &Store, image: &Resolved, dest: &Path) -> Result<Vec<PathBuf>> {
    let valid = fs::read(dest.join("version")).is_ok_and(|v| v == DIR_VERSION.as_bytes());
    if valid {
        return write_dir_layout(store, image, dest);
    }
    let parent = dest
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", dest.display()))?;
    fsutil::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(fsutil::TEMP_PREFIX)
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a temp directory in {}", parent.display()))?;
    let tmp_path = tmp.path().to_path_buf();
    // A temp directory is 0700; the image directory is served from the ISO tree: 0755.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp_path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot chmod {}", tmp_path.display()))?;
    }
    let built = write_dir_layout(store, image, &tmp_path)?;
    crate::testhook::kill_point("image-dir");
    if fs::symlink_metadata(dest).is_ok() {
        // Move the partial directory aside (swept by the next run if we die here), then swap.
        let old = tempfile::Builder::new()
            .prefix(fsutil::TEMP_PREFIX)
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a temp directory in {}", parent.display()))?;
        let aside = old.path().join("old");
        fs::rename(dest, &aside)
            .with_context(|| format!("cannot move {} aside", dest.display()))?;
        fs::rename(&tmp_path, dest)
            .with_context(|| format!("cannot rename into {}", dest.display()))?;
        drop(old);
    } else {
        fs::rename(&tmp_path, dest)
            .with_context(|| format!("cannot rename into {}", dest.display()))?;
    }
    // The temp directory is now `dest`: nothing left to delete.
    let _ = tmp.keep();
    Ok(built
        .into_iter()
        .map(|p| dest.join(p.strip_prefix(&tmp_path).unwrap_or(&p)))
        .collect())
}

fn tar_header(size: u64, mtime: u64, dir: bool) -> std::io::Result<tar::Header> {
    if dir {
        super::tarball::header(tar::EntryType::Directory, 0o755, size, mtime)
    } else {
        super::tarball::header(tar::EntryType::Regular, 0o644, size, mtime)
    }
}

fn is_gzip(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 2];
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(f.read(&mut magic)? == 2 && magic == [0x1f, 0x8b])
}

/// Writes a docker-archive tarball (`docker save` format: `manifest.json`, `repositories`,
/// `<config hex>.json`, one uncompressed `<diff_id hex>.tar` per layer) of `image`'s first
/// platform, tagged `repo_tag` (`name:tag`), deterministically (fixed order, uid/gid 0, `mtime`).
pub fn write_docker_archive(
    store: &Store,
    image: &Resolved,
    repo_tag: &str,
    dest: &Path,
    mtime: u64,
) -> Result<()> {
    let inst = image
        .instances
        .first()
        .ok_or_else(|| anyhow!("image has no manifest"))?;
    let config_bytes = store
        .read_blob(inst.config.hex())
        .with_context(|| format!("config {} missing from the store", inst.config.digest))?;
    let config: Value =
        serde_json::from_slice(&config_bytes).context("image config is not JSON")?;
    let diff_ids: Vec<String> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("image config without rootfs.diff_ids"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("bad diff_id"))
        })
        .collect::<Result<_>>()?;
    if diff_ids.len() != inst.layers.len() {
        bail!(
            "config has {} diff_ids but the manifest {} layers",
            diff_ids.len(),
            inst.layers.len()
        );
    }
    let (repo, tag) = repo_tag
        .rsplit_once(':')
        .filter(|(r, _)| !r.is_empty())
        .ok_or_else(|| anyhow!("repo tag {repo_tag:?} must be name:tag"))?;
    let mut out = fsutil::AtomicFile::create(dest)?;
    {
        let mut b = tar::Builder::new(io::BufWriter::new(out.file()));
        let config_name = format!("{}.json", inst.config.hex());
        b.append_data(
            &mut tar_header(config_bytes.len() as u64, mtime, false)?,
            &config_name,
            &config_bytes[..],
        )?;
        let mut layer_names = Vec::new();
        let scratch = store.temp_dir()?;
        let mut seen = BTreeSet::new();
        for (l, diff) in inst.layers.iter().zip(&diff_ids) {
            let dhex = digest_hex(diff)?.to_string();
            let name = format!("{dhex}.tar");
            layer_names.push(name.clone());
            if !seen.insert(dhex.clone()) {
                continue;
            }
            // Decompress into a temp file (tar headers need the size), checking the diff_id.
            let tmp = scratch.path().join(&dhex);
            let mut h = Sha256::new();
            {
                let src = io::BufReader::new(store.open_blob(l.hex())?);
                let mut r: Box<dyn Read> = if store.is_gzip(l.hex())? {
                    Box::new(GzDecoder::new(src))
                } else {
                    Box::new(src)
                };
                let mut w = io::BufWriter::new(File::create(&tmp)?);
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = r
                        .read(&mut buf)
                        .with_context(|| format!("cannot decompress layer {}", l.digest))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    w.write_all(&buf[..n])?;
                }
                w.flush()?;
            }
            if hex::encode(h.finalize()) != dhex {
                bail!(
                    "layer {} does not decompress to its diff_id {diff}",
                    l.digest
                );
            }
            let size = fs::metadata(&tmp)?.len();
            b.append_data(
                &mut tar_header(size, mtime, false)?,
                &name,
                File::open(&tmp)?,
            )?;
            fs::remove_file(&tmp)?;
        }
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": layer_names,
        }]))?;
        b.append_data(
            &mut tar_header(manifest.len() as u64, mtime, false)?,
            "manifest.json",
            &manifest[..],
        )?;
        let top = diff_ids
            .last()
            .map(|d| digest_hex(d).map(str::to_string))
            .transpose()?
            .unwrap_or_default();
        let repositories = serde_json::to_vec(&json!({ repo: { tag: top } }))?;
        b.append_data(
            &mut tar_header(repositories.len() as u64, mtime, false)?,
            "repositories",
            &repositories[..],
        )?;
        b.into_inner()?.flush()?;
    }
    out.set_mode(0o644)?;
    out.commit()
}

/// Streams `reader` into the store under its computed digest; returns (hex, size).
pub fn put_unknown(store: &Store, reader: &mut dyn Read) -> Result<(String, u64)> {
    store.put_unknown(reader)
}

/// Loads a manifest (image or index) already in the store and resolves it into a [`Resolved`].
pub fn resolve_from_store(
    store: &Store,
    top_hex: &str,
    platform: &Platform,
    keep_index: bool,
    what: &str,
) -> Result<Resolved> {
    let load = |hex: &str| -> Result<(Vec<u8>, Manifest)> {
        // A manifest missing here may come from a blob source (remote cache).
        store.fetch_chain(hex, None, what, &mut || Ok(0))?;
        let bytes = store
            .read_blob(hex)
            .with_context(|| format!("{what}: manifest sha256:{hex} not found"))?;
        let m = Manifest::parse(&bytes, None)
            .with_context(|| format!("{what}: manifest sha256:{hex}"))?;
        Ok((bytes, m))
    };
    let (top_bytes, top) = load(top_hex)?;
    let image = |hex: &str, bytes: Vec<u8>, m: Manifest| -> Result<ImageData> {
        match m {
            Manifest::Image { config, layers, .. } => Ok(ImageData {
                hex: hex.to_string(),
                bytes,
                config,
                layers,
            }),
            Manifest::Index { .. } => bail!("{what}: nested index sha256:{hex} is not supported"),
        }
    };
    match &top {
        Manifest::Image { .. } => Ok(Resolved {
            top_hex: top_hex.to_string(),
            top_bytes: top_bytes.clone(),
            media_type: top.media_type().to_string(),
            instances: vec![image(top_hex, top_bytes, top.clone())?],
        }),
        Manifest::Index {
            manifests,
            media_type,
        } => {
            if keep_index {
                let mut instances = Vec::new();
                for (d, _) in manifests {
                    let (b, m) = load(d.hex())?;
                    instances.push(image(d.hex(), b, m)?);
                }
                Ok(Resolved {
                    top_hex: top_hex.into(),
                    top_bytes,
                    media_type: media_type.clone(),
                    instances,
                })
            } else {
                let d = top.select(platform).with_context(|| what.to_string())?;
                let (b, m) = load(d.hex())?;
                let mt = m.media_type().to_string();
                Ok(Resolved {
                    top_hex: d.hex().into(),
                    top_bytes: b.clone(),
                    media_type: mt,
                    instances: vec![image(d.hex(), b, m)?],
                })
            }
        }
    }
}

/// Imports an OCI image layout (directory or tar) into the store and resolves the image named
/// `reference` (`org.opencontainers.image.ref.name`; optional when the layout holds one image).
pub fn import_oci_layout(
    store: &Store,
    path: &Path,
    reference: Option<&str>,
    platform: &Platform,
    keep_index: bool,
    what: &str,
) -> Result<Resolved> {
    let index: Value = if path.is_dir() {
        let blobs = path.join("blobs").join("sha256");
        let idx_bytes = fs::read(path.join("index.json"))
            .with_context(|| format!("{what}: {}/index.json", path.display()))?;
        if blobs.is_dir() {
            for e in fs::read_dir(&blobs)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().to_string();
                if crate::store::is_sha256_hex(&name) && !store.contains(&name) {
                    let mut f = File::open(e.path())?;
                    store.put_verified(&name, Some(e.metadata()?.len()), &mut f, what)?;
                }
            }
        }
        serde_json::from_slice(&idx_bytes)
            .with_context(|| format!("{what}: index.json is not JSON"))?
    } else {
        let mut index = None;
        let f =
            File::open(path).with_context(|| format!("{what}: cannot open {}", path.display()))?;
        let r: Box<dyn Read> = if is_gzip(path)? {
            Box::new(GzDecoder::new(f))
        } else {
            Box::new(f)
        };
        let mut ar = tar::Archive::new(r);
        for e in ar.entries()? {
            let mut e = e?;
            let p = e
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            if p == "index.json" || p.starts_with("blobs/sha256/") {
                if let Some(link) = link_entry(&e)? {
                    bail!(
                        "{what}: {}: entry {p} is a {link}: unsupported link entry (blobs must be \
                         regular files)",
                        path.display()
                    );
                }
            }
            if p == "index.json" {
                let mut b = Vec::new();
                e.read_to_end(&mut b)?;
                index = Some(
                    serde_json::from_slice(&b)
                        .with_context(|| format!("{what}: index.json is not JSON"))?,
                );
            } else if let Some(hex) = p.strip_prefix("blobs/sha256/") {
                if crate::store::is_sha256_hex(hex) && !store.contains(hex) {
                    let size = e.size();
                    store.put_verified(hex, Some(size), &mut e, what)?;
                }
            }
        }
        index.ok_or_else(|| anyhow!("{what}: {} has no index.json", path.display()))?
    };
    let entries = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let name_of = |m: &Value| {
        m.pointer("/annotations/org.opencontainers.image.ref.name")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let chosen = match reference {
        Some(r) => entries
            .iter()
            .find(|m| name_of(m).as_deref() == Some(r))
            .ok_or_else(|| {
                anyhow!(
                    "{what}: no image named {r:?} in {} (names: {})",
                    path.display(),
                    entries
                        .iter()
                        .filter_map(name_of)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
        None if entries.len() == 1 => &entries[0],
        None => bail!(
            "{what}: {} holds {} images; name one with `path:ref`",
            path.display(),
            entries.len()
        ),
    };
    let digest = chosen
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{what}: index entry without digest"))?;
    let hex = digest_hex(digest)?;
    resolve_from_store(store, hex, platform, keep_index, what)
}

/// `hard link to T` / `symbolic link to T` when the entry is a link (its data is empty: read as
/// a blob it would look like a digest mismatch of empty content).
fn link_entry<R: Read>(e: &tar::Entry<'_, R>) -> Result<Option<String>> {
    let kind = match e.header().entry_type() {
        tar::EntryType::Link => "hard link",
        tar::EntryType::Symlink => "symbolic link",
        _ => return Ok(None),
    };
    let target = e
        .link_name()?
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Some(format!("{kind} to {target}")))
}

/// Imports a docker-archive tarball (`docker save` output) into the store as an OCI image: the
/// config and the layer files keep their bytes (and so their digests); uncompressed layers get
/// the `tar` media type.
pub fn import_docker_archive(store: &Store, path: &Path, what: &str) -> Result<Resolved> {
    let f = File::open(path).with_context(|| format!("{what}: cannot open {}", path.display()))?;
    let mut ar = tar::Archive::new(f);
    let mut files: BTreeMap<String, (String, u64)> = BTreeMap::new();
    // Link entries by path: refused only if the manifest names them.
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut manifest = None;
    for e in ar.entries()? {
        let mut e = e?;
        let p = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if let Some(link) = link_entry(&e)? {
            links.insert(p, link);
            continue;
        }
        if !e.header().entry_type().is_file() {
            continue;
        }
        if p == "manifest.json" {
            let mut b = Vec::new();
            e.read_to_end(&mut b)?;
            manifest = Some(b);
        } else if p != "repositories" {
            let put = put_unknown(store, &mut e).with_context(|| format!("{what}: {p}"))?;
            files.insert(p, put);
        }
    }
    let manifest: Value = serde_json::from_slice(
        &manifest.ok_or_else(|| anyhow!("{what}: {} has no manifest.json", path.display()))?,
    )
    .with_context(|| format!("{what}: manifest.json is not JSON"))?;
    let first = manifest
        .get(0)
        .ok_or_else(|| anyhow!("{what}: empty manifest.json"))?;
    let get = |name: &str| {
        let name = name.trim_start_matches("./");
        if let Some(link) = links.get(name) {
            bail!(
                "{what}: {}: entry {name} is a {link}: unsupported link entry (the config and \
                 layers must be regular files)",
                path.display()
            );
        }
        files
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("{what}: {name} missing from the archive"))
    };
    let config_name = first
        .get("Config")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{what}: no Config"))?;
    let (chex, csize) = get(config_name)?;
    let mut layers = Vec::new();
    for l in first
        .get("Layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let n = l
            .as_str()
            .ok_or_else(|| anyhow!("{what}: bad layer name"))?;
        let (hex, size) = get(n)?;
        let mt = if store.is_gzip(&hex)? {
            OCI_LAYER_GZIP
        } else {
            OCI_LAYER_TAR
        };
        layers.push(Descriptor {
            media_type: mt.into(),
            digest: format!("sha256:{hex}"),
            size,
        });
    }
    let config = Descriptor {
        media_type: OCI_CONFIG.into(),
        digest: format!("sha256:{chex}"),
        size: csize,
    };
    let dj =
        |d: &Descriptor| json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size});
    let bytes = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": dj(&config),
        "layers": layers.iter().map(dj).collect::<Vec<_>>(),
    }))?;
    let hex = store.put_bytes(&bytes)?;
    Ok(Resolved {
        top_hex: hex.clone(),
        top_bytes: bytes.clone(),
        media_type: OCI_MANIFEST.into(),
        instances: vec![ImageData {
            hex,
            bytes,
            config,
            layers,
        }],
    })
}
