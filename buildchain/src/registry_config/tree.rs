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
//! exactly one file: one in a tag directory of the same image name when there is one (first tag
//! in order), else the one in the first tag directory in (name, tag) order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::grammar::{is_name, is_name_component, is_sha256_hex, is_tag};
use super::manifest::{self, Descriptor, Manifest};

/// One tag directory.
#[derive(Clone, Debug)]
pub struct TagDir {
    /// `<name>/<tag>`.
    pub rel_dir: String,
    /// sha256 hex of the exact `manifest.json` bytes.
    pub digest: String,
    /// Parsed manifest.
    pub manifest: Manifest,
    /// Hex digests of the `<hex>` files in the directory, with their sizes.
    pub blobs: HashMap<String, u64>,
    /// Hex digests of the `<hex>.manifest.json` files in the directory.
    pub manifests: HashSet<String>,
}

/// The scanned tree (before resolution).
#[derive(Debug, Default)]
pub struct Scan {
    /// name → tag → tag directory.
    pub images: BTreeMap<String, BTreeMap<String, TagDir>>,
}

impl Scan {
    /// digest hex → first tag directory (in name, tag order) holding `<hex>` (`manifests`:
    /// `<hex>.manifest.json`): the fallback when an image's own directories do not hold it.
    fn first_holders(&self, manifests: bool) -> HashMap<&str, &TagDir> {
        let mut m = HashMap::new();
        for t in self.images.values().flat_map(BTreeMap::values) {
            if manifests {
                for h in &t.manifests {
                    m.entry(h.as_str()).or_insert(t);
                }
            } else {
                for h in t.blobs.keys() {
                    m.entry(h.as_str()).or_insert(t);
                }
            }
        }
        m
    }
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

/// Walks the tree once (each directory listed once; sequential: the walk is bound by cheap,
/// warm-cache syscalls and a second thread measured slower on a shared machine): finds tag
/// directories, validates names and tags, records digest-named files and parses every
/// `manifest.json`.
pub fn scan(root: &Path) -> Result<Scan> {
    let meta = fs::metadata(root)
        .with_context(|| format!("cannot read images directory {}", root.display()))?;
    if !meta.is_dir() {
        bail!("images directory {} is not a directory", root.display());
    }
    let found = walk(root, &[])?;
    let mut scan = Scan::default();
    for (name, tag, t) in found {
        scan.images.entry(name).or_default().insert(tag, t);
    }
    Ok(scan)
}

/// Lists the directory `comps` (relative to `root`). A directory holding `manifest.json` is a tag
/// directory (its name must be a valid tag, its parents a valid repository name); any other
/// directory must be a valid name component and is walked further. Symbolic links are refused
/// (the tree must be self-contained).
fn walk(root: &Path, comps: &[String]) -> Result<Vec<(String, String, TagDir)>> {
    let dir: PathBuf = comps.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    let mut subdirs = Vec::new();
    let mut files = Vec::new();
    let mut has_manifest = false;
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
        let fname = entry.file_name();
        if ft.is_dir() {
            subdirs.push(fname);
        } else if fname == "manifest.json" {
            has_manifest = ft.is_file();
        } else if ft.is_file() {
            files.push(entry);
        }
    }
    let Some(last) = comps.last() else {
        // The root: every subdirectory is the first component of a name.
        return walk_subdirs(root, comps, subdirs);
    };
    if !has_manifest {
        if !is_name_component(last) {
            bail!(
                "{}: refusing image name component {last:?}: not valid in an OCI repository \
                 name ([a-z0-9]+ separated by `.`, `_`, `__` or `-`)",
                dir.display()
            );
        }
        return walk_subdirs(root, comps, subdirs);
    }
    // A tag directory.
    let (tag, name_comps) = comps.split_last().expect("non-empty");
    if name_comps.is_empty() {
        bail!(
            "{}: manifest.json directly under the images directory; expected \
             <name>/<tag>/manifest.json",
            dir.display()
        );
    }
    if !is_tag(tag) {
        bail!(
            "{}: refusing image tag {tag:?}: not a valid OCI tag \
             ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})",
            dir.display()
        );
    }
    let name = name_comps.join("/");
    if !is_name(&name) {
        bail!(
            "{}: refusing image name {name:?}: longer than {} characters",
            dir.display(),
            super::grammar::MAX_NAME_LEN
        );
    }
    if let Some(sub) = subdirs.first() {
        bail!(
            "{}: unexpected directory {sub:?} inside an image tag directory",
            dir.display()
        );
    }
    let mut blobs = HashMap::new();
    let mut manifests = HashSet::new();
    for entry in files {
        let fname = entry.file_name();
        let Some(f) = fname.to_str() else { continue };
        match f.strip_suffix(".manifest.json") {
            Some(h) if is_sha256_hex(h) => {
                manifests.insert(h.to_string());
            }
            _ if is_sha256_hex(f) => {
                // fstatat relative to the open directory: no path walk.
                let size = entry
                    .metadata()
                    .with_context(|| format!("cannot stat {}", entry.path().display()))?
                    .len();
                blobs.insert(f.to_string(), size);
            }
            _ => {} // version, signature-N, …
        }
    }
    let mpath = dir.join("manifest.json");
    let bytes = read_small(&mpath)?;
    let manifest = manifest::parse(&bytes)
        .with_context(|| format!("{}: unusable manifest", mpath.display()))?;
    Ok(vec![(
        name,
        tag.clone(),
        TagDir {
            rel_dir: comps.join("/"),
            digest: sha256_hex(&bytes),
            manifest,
            blobs,
            manifests,
        },
    )])
}

fn walk_subdirs(
    root: &Path,
    comps: &[String],
    subdirs: Vec<std::ffi::OsString>,
) -> Result<Vec<(String, String, TagDir)>> {
    let mut names = Vec::with_capacity(subdirs.len());
    for s in subdirs {
        match s.into_string() {
            Ok(s) => names.push(s),
            Err(s) => bail!(
                "{}: directory name is not valid UTF-8",
                comps
                    .iter()
                    .fold(root.to_path_buf(), |p, c| p.join(c))
                    .join(s)
                    .display()
            ),
        }
    }
    names.sort();
    let nested: Vec<Vec<_>> = names
        .iter()
        .map(|n| {
            let mut c = comps.to_vec();
            c.push(n.clone());
            walk(root, &c)
        })
        .collect::<Result<_>>()?;
    Ok(nested.into_iter().flatten().collect())
}

/// Resolves, for each name, the manifests and blobs it serves (see the module doc).
pub fn resolve(root: &Path, scan: &Scan) -> Result<BTreeMap<String, Repo>> {
    // Child manifests (by file), read once whatever the number of names referencing them.
    let mut children: HashMap<String, Manifest> = HashMap::new();
    // Fallback holders for digests not stored in an image's own directories (built on demand).
    let mut blob_holders: Option<HashMap<&str, &TagDir>> = None;
    let mut manifest_holders: Option<HashMap<&str, &TagDir>> = None;
    let mut out = BTreeMap::new();
    for (name, tags) in &scan.images {
        // The tag directory holding `<hex>` (`manifest`: `<hex>.manifest.json` preferred): one of
        // this name's (first tag in order) if any, else the first in (name, tag) order.
        let mut pick = |hex: &str, manifest: bool| -> Option<(String, Option<u64>)> {
            if manifest {
                if let Some(t) = tags.values().find(|t| t.manifests.contains(hex)) {
                    return Some((format!("{}/{hex}.manifest.json", t.rel_dir), None));
                }
            }
            if let Some(t) = tags.values().find(|t| t.blobs.contains_key(hex)) {
                return Some((format!("{}/{hex}", t.rel_dir), Some(t.blobs[hex])));
            }
            if manifest {
                let holders = manifest_holders.get_or_insert_with(|| scan.first_holders(true));
                if let Some(t) = holders.get(hex) {
                    return Some((format!("{}/{hex}.manifest.json", t.rel_dir), None));
                }
            }
            let holders = blob_holders.get_or_insert_with(|| scan.first_holders(false));
            holders
                .get(hex)
                .map(|t| (format!("{}/{hex}", t.rel_dir), Some(t.blobs[hex])))
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
        let mut steps = 0usize;
        while let Some((m, origin)) = todo.pop() {
            steps += 1;
            if steps > 100_000 {
                bail!("{name}: manifest graph too large or cyclic");
            }
            for d in &m.children {
                if repo.manifests.contains_key(&d.hex) {
                    continue;
                }
                let (rel, _) = pick(&d.hex, true).ok_or_else(|| {
                    anyhow!(
                        "{origin}: child manifest sha256:{} of the index is not stored in the \
                         tree (expected a `{}.manifest.json` or `{}` file next to an image's \
                         manifest.json)",
                        d.hex,
                        d.hex,
                        d.hex
                    )
                })?;
                if !children.contains_key(&rel) {
                    let child = load_child(root, &rel, d, &origin)?;
                    children.insert(rel.clone(), child);
                }
                let cm = &children[&rel];
                repo.manifests.insert(
                    d.hex.clone(),
                    ServedManifest {
                        rel,
                        media_type: cm.media_type,
                    },
                );
                todo.push((cm.clone(), format!("{origin} (child sha256:{})", d.hex)));
            }
            for d in &m.blobs {
                if repo.blobs.contains_key(&d.hex) {
                    continue;
                }
                match pick(&d.hex, false) {
                    Some((rel, size)) => {
                        let size = size.unwrap_or(0);
                        if size != d.size {
                            bail!(
                                "{origin}: blob sha256:{} is {size} bytes in {} but the manifest \
                                 says {}",
                                d.hex,
                                root.join(&rel).display(),
                                d.size
                            );
                        }
                        repo.blobs.insert(d.hex.clone(), rel);
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

fn load_child(root: &Path, rel: &str, d: &Descriptor, origin: &str) -> Result<Manifest> {
    let path = root.join(rel);
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

/// Reads a (small) file without the `stat` `fs::read` does for its size hint.
fn read_small(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(4096);
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(buf)
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
