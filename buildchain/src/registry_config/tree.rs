//! Reading an `images/` tree (skopeo `dir:` layout) into what the registry serves.
//!
//! Layout: `<name>/<tag>/manifest.json` (+ `version`), blobs as `<hex>` files. `<name>` may
//! contain `/`. A directory is a tag directory when it holds a `manifest.json`; every other
//! directory on the way is a name component. Files outside tag directories (e.g. the
//! `<name>-<tag>.tar` archives) are ignored.
//!
//! Multi-arch: when `manifest.json` is an OCI index or a Docker manifest list, each child manifest
//! must be stored somewhere in the tree, either as `<hex>.manifest.json` (what
//! `skopeo copy --all … dir:` writes) or as a plain `<hex>` file (stored like a blob); it is then
//! served by digest under the image name, and its config and layers as blobs.
//!
//! Blobs are looked up by digest across the whole tree, so a blob stored once (deduplicated)
//! and referenced by several images is served for all of them. Each served digest is mapped to
//! exactly one file: one in a tag directory of the same image name when there is one, else the
//! first in path order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::grammar::{is_name, is_name_component, is_sha256_hex, is_tag};
use super::manifest::{self, Descriptor, Manifest};

/// A file of the tree, by path relative to the tree root (`/`-separated) and size.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileRef {
    /// Path relative to the tree root.
    pub rel: String,
    /// Size in bytes.
    pub size: u64,
}

/// One tag directory.
#[derive(Clone, Debug)]
pub struct TagDir {
    /// `<name>/<tag>`.
    pub rel_dir: String,
    /// sha256 hex of the exact `manifest.json` bytes.
    pub digest: String,
    /// Parsed manifest.
    pub manifest: Manifest,
}

/// The scanned tree (before resolution).
#[derive(Debug, Default)]
pub struct Scan {
    /// name → tag → tag directory.
    pub images: BTreeMap<String, BTreeMap<String, TagDir>>,
    /// digest hex → `<hex>` files (sorted).
    pub blob_files: BTreeMap<String, Vec<FileRef>>,
    /// digest hex → `<hex>.manifest.json` files (sorted).
    pub manifest_files: BTreeMap<String, Vec<FileRef>>,
}

/// A manifest served by digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedManifest {
    /// File served.
    pub rel: String,
    /// Content type.
    pub media_type: &'static str,
}

/// Everything served for one image name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repo {
    /// tag → (manifest file, media type, digest hex).
    pub tags: BTreeMap<String, (String, &'static str, String)>,
    /// digest hex → manifest (tag manifests and index children).
    pub manifests: BTreeMap<String, ServedManifest>,
    /// digest hex → blob file.
    pub blobs: BTreeMap<String, String>,
}

/// Scans `root` (validating every name and tag) and resolves what each name serves.
pub fn load(root: &Path) -> Result<BTreeMap<String, Repo>> {
    let scan = scan(root)?;
    resolve(root, &scan)
}

/// Walks the tree: finds tag directories, validates names/tags, lists digest-named files and
/// parses every `manifest.json`.
pub fn scan(root: &Path) -> Result<Scan> {
    let meta = fs::metadata(root)
        .with_context(|| format!("cannot read images directory {}", root.display()))?;
    if !meta.is_dir() {
        bail!("images directory {} is not a directory", root.display());
    }
    let mut tag_dirs = Vec::new();
    find_tag_dirs(root, &mut Vec::new(), &mut tag_dirs)?;

    struct Listed {
        name: String,
        tag: String,
        tag_dir: TagDir,
        blobs: Vec<(String, FileRef)>,
        manifests: Vec<(String, FileRef)>,
    }
    let listed: Vec<Listed> = tag_dirs
        .par_iter()
        .map(|comps: &Vec<String>| -> Result<Listed> {
            let rel_dir = comps.join("/");
            let dir = root.join(&rel_dir);
            let (tag, name_comps) = comps.split_last().expect("tag dirs have ≥ 2 components");
            let name = name_comps.join("/");
            let mut blobs = Vec::new();
            let mut manifests = Vec::new();
            for entry in
                fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
            {
                let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
                let fname = entry.file_name();
                let Some(fname) = fname.to_str() else {
                    continue;
                };
                let (hex, is_manifest) = match fname.strip_suffix(".manifest.json") {
                    Some(h) => (h, true),
                    None => (fname, false),
                };
                if !is_sha256_hex(hex) {
                    continue; // manifest.json, version, signature-N, …
                }
                let path = entry.path();
                let md = fs::metadata(&path)
                    .with_context(|| format!("cannot stat {}", path.display()))?;
                if !md.is_file() {
                    bail!("{} is not a regular file", path.display());
                }
                let fr = FileRef {
                    rel: format!("{rel_dir}/{fname}"),
                    size: md.len(),
                };
                if is_manifest {
                    manifests.push((hex.to_string(), fr));
                } else {
                    blobs.push((hex.to_string(), fr));
                }
            }
            let mpath = dir.join("manifest.json");
            let bytes =
                fs::read(&mpath).with_context(|| format!("cannot read {}", mpath.display()))?;
            let manifest = manifest::parse(&bytes)
                .with_context(|| format!("{}: unusable manifest", mpath.display()))?;
            Ok(Listed {
                name,
                tag: tag.clone(),
                tag_dir: TagDir {
                    rel_dir,
                    digest: sha256_hex(&bytes),
                    manifest,
                },
                blobs,
                manifests,
            })
        })
        .collect::<Result<_>>()?;

    let mut scan = Scan::default();
    for l in listed {
        scan.images
            .entry(l.name)
            .or_default()
            .insert(l.tag, l.tag_dir);
        for (h, f) in l.blobs {
            scan.blob_files.entry(h).or_default().push(f);
        }
        for (h, f) in l.manifests {
            scan.manifest_files.entry(h).or_default().push(f);
        }
    }
    for v in scan
        .blob_files
        .values_mut()
        .chain(scan.manifest_files.values_mut())
    {
        v.sort();
    }
    Ok(scan)
}

/// Recursively finds tag directories (holding `manifest.json`), validating every directory name
/// on the way: name components against the OCI name grammar, tag directories against the tag
/// grammar. Symbolic links are refused (the tree must be self-contained).
fn find_tag_dirs(root: &Path, comps: &mut Vec<String>, out: &mut Vec<Vec<String>>) -> Result<()> {
    let dir: PathBuf = comps.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    let mut entries = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let ft = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", entry.path().display()))?;
        if ft.is_symlink() {
            bail!(
                "{}: symbolic links are not allowed in the images tree",
                entry.path().display()
            );
        }
        if ft.is_dir() {
            entries.push(entry.file_name());
        }
    }
    entries.sort();
    for os_name in entries {
        let path = dir.join(&os_name);
        let Some(c) = os_name.to_str() else {
            bail!("{}: directory name is not valid UTF-8", path.display());
        };
        let is_tag_dir = fs::symlink_metadata(path.join("manifest.json")).is_ok();
        if is_tag_dir {
            if comps.is_empty() {
                bail!(
                    "{}: manifest.json directly under the images directory; expected \
                     <name>/<tag>/manifest.json",
                    path.display()
                );
            }
            if !is_tag(c) {
                bail!(
                    "{}: refusing image tag {c:?}: not a valid OCI tag \
                     ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})",
                    path.display()
                );
            }
            let name = comps.join("/");
            if !is_name(&name) {
                bail!(
                    "{}: refusing image name {name:?}: longer than {} characters",
                    path.display(),
                    super::grammar::MAX_NAME_LEN
                );
            }
            let mut full = comps.clone();
            full.push(c.to_string());
            out.push(full);
        } else {
            if !is_name_component(c) {
                bail!(
                    "{}: refusing image name component {c:?}: not valid in an OCI repository \
                     name ([a-z0-9]+ separated by `.`, `_`, `__` or `-`)",
                    path.display()
                );
            }
            comps.push(c.to_string());
            find_tag_dirs(root, comps, out)?;
            comps.pop();
        }
    }
    Ok(())
}

/// Resolves, for each name, the manifests and blobs it serves (see the module doc).
pub fn resolve(root: &Path, scan: &Scan) -> Result<BTreeMap<String, Repo>> {
    // Child manifests, read once whatever the number of names referencing them.
    let mut children: HashMap<String, Manifest> = HashMap::new();
    let mut out = BTreeMap::new();
    for (name, tags) in &scan.images {
        let own_dirs: BTreeSet<&str> = tags.values().map(|t| t.rel_dir.as_str()).collect();
        let pick = |files: &[FileRef]| -> FileRef {
            files
                .iter()
                .find(|f| {
                    f.rel
                        .rsplit_once('/')
                        .is_some_and(|(d, _)| own_dirs.contains(d))
                })
                .unwrap_or(&files[0])
                .clone()
        };
        let mut repo = Repo::default();
        // (manifest, where it came from) still to walk for blobs / children.
        let mut todo: Vec<(Manifest, String)> = Vec::new();
        for (tag, t) in tags {
            let rel = format!("{}/manifest.json", t.rel_dir);
            repo.tags.insert(
                tag.clone(),
                (rel.clone(), t.manifest.media_type, t.digest.clone()),
            );
            repo.manifests
                .entry(t.digest.clone())
                .or_insert(ServedManifest {
                    rel,
                    media_type: t.manifest.media_type,
                });
            todo.push((t.manifest.clone(), format!("{name}:{tag}")));
        }
        let mut depth_guard = 0usize;
        while let Some((m, origin)) = todo.pop() {
            depth_guard += 1;
            if depth_guard > 100_000 {
                bail!("{name}: manifest graph too large or cyclic");
            }
            for d in &m.children {
                if repo.manifests.contains_key(&d.hex) {
                    continue;
                }
                let files = candidates(scan, &d.hex).ok_or_else(|| {
                    anyhow!(
                        "{origin}: child manifest sha256:{} of the index is not stored in the \
                         tree (expected a `{}.manifest.json` or `{}` file next to an image's \
                         manifest.json)",
                        d.hex,
                        d.hex,
                        d.hex
                    )
                })?;
                let f = pick(&files);
                if !children.contains_key(&f.rel) {
                    let child = load_child(root, &f, d, &origin)?;
                    children.insert(f.rel.clone(), child);
                }
                let cm = &children[&f.rel];
                repo.manifests.insert(
                    d.hex.clone(),
                    ServedManifest {
                        rel: f.rel.clone(),
                        media_type: cm.media_type,
                    },
                );
                todo.push((cm.clone(), format!("{origin} (child sha256:{})", d.hex)));
            }
            for d in &m.blobs {
                if repo.blobs.contains_key(&d.hex) {
                    continue;
                }
                match scan.blob_files.get(&d.hex) {
                    Some(files) => {
                        let f = pick(files);
                        if f.size != d.size {
                            bail!(
                                "{origin}: blob sha256:{} is {} bytes in {} but the manifest \
                                 says {}",
                                d.hex,
                                f.size,
                                root.join(&f.rel).display(),
                                d.size
                            );
                        }
                        repo.blobs.insert(d.hex.clone(), f.rel);
                    }
                    None if d.foreign => {}
                    None => bail!(
                        "{origin}: blob sha256:{} is not stored anywhere under {}",
                        d.hex,
                        root.display()
                    ),
                }
            }
        }
        out.insert(name.clone(), repo);
    }
    Ok(out)
}

/// All files that may hold the manifest `hex`: `<hex>.manifest.json` first, then `<hex>`.
fn candidates(scan: &Scan, hex: &str) -> Option<Vec<FileRef>> {
    scan.manifest_files
        .get(hex)
        .or_else(|| scan.blob_files.get(hex))
        .cloned()
}

fn load_child(root: &Path, f: &FileRef, d: &Descriptor, origin: &str) -> Result<Manifest> {
    let path = root.join(&f.rel);
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let got = sha256_hex(&bytes);
    if got != d.hex {
        bail!(
            "{}: content has digest sha256:{got}, not the sha256:{} its name says",
            path.display(),
            d.hex
        );
    }
    if bytes.len() as u64 != d.size {
        bail!(
            "{origin}: child manifest {} is {} bytes but the index says {}",
            path.display(),
            bytes.len(),
            d.size
        );
    }
    manifest::parse(&bytes).with_context(|| format!("{}: unusable child manifest", path.display()))
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
