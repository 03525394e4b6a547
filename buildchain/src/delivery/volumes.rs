//! Self-contained multi-volume media (issue 12 item 4): `buildchain iso --media M` splits the
//! ISO tree (`_build/root`) into `dist/<name>-<version>-<i>of<N>.iso`, each at most the
//! medium's capacity and valid on its own.
//!
//! - Units of packing: an image repository (`images/<name>/`, every tag, plus its
//!   `images/<name>-<tag>.tar` tarballs) and an RPM. A repository never spans volumes, so no
//!   two volumes serve the same repository name: their registry includes never declare the same
//!   `location` and can all be included by one nginx server. A layer shared by two images
//!   placed on different volumes is repeated on each (within a volume it is one extent).
//! - Everything else (Salt tree, scripts, pillar, SBOM, the repositories' GPG keys) goes on
//!   volume 1, with `/VOLUMES.json`, the table of what is where. Every volume has `product.txt`
//!   and its own `/SHA256SUMS`, `/CONTENTS.json` (+ signature): each verifies alone.
//! - Each volume has `/volume.txt` (which volume of which set), for its images
//!   `/registry/images.inc` (per-repository blocks, root `$<name>_<version>_volume_<i>_images`,
//!   names `<name>-<version>/…` as in the single ISO) and `/registry/common.inc` (the constant
//!   `/v2/` locations, to include once), and for its RPMs their repositories at their usual
//!   paths with repodata regenerated for exactly the RPMs the volume holds.
//! - Packing (`pack`) fills volumes one at a time over estimated sizes (sectors, directories,
//!   index entries): largest first, then the items whose layers the volume already holds (ties
//!   by kind and name, so it is deterministic); then every volume's tree is laid out with the
//!   writer's exact size prediction. A volume over capacity tightens the budget and packs again. Volumes are
//!   mastered into a scratch directory beside `dist/` and renamed into place only when all are
//!   written: an error (e.g. an image larger than a volume) leaves `dist/` as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::config::Settings;

/// Table of contents at the root of volume 1.
pub const TABLE: &str = "VOLUMES.json";
/// Identity of a volume, at the root of every volume.
pub const VOLUME_TXT: &str = "volume.txt";
/// Per-volume registry include (per-repository blocks).
pub const REGISTRY_IMAGES: &str = "registry/images.inc";
/// Per-volume registry include (constant locations).
pub const REGISTRY_COMMON: &str = "registry/common.inc";

/// Files at the root of the tree that describe it, rewritten for each volume's own content.
const SEALS: &[&str] = &["SHA256SUMS", "CONTENTS.json", "CONTENTS.json.asc"];

const SECTOR: u64 = 2048;
/// Estimated directory-record, `/SHA256SUMS` and `/CONTENTS.json` bytes per file (corrected by
/// the exact layout).
const PER_FILE: u64 = 1536;
/// Estimated registry-include bytes per served image file.
const PER_SERVED: u64 = 900;
/// Estimated repodata bytes per RPM.
const PER_RPM: u64 = 2048;

/// What a unit of packing is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Image,
    Rpm,
}

/// One unit of packing: files (paths relative to the tree) that go together.
#[derive(Clone, Debug)]
struct Item {
    kind: Kind,
    /// Repository name (images) or path (RPMs).
    id: String,
    files: Vec<String>,
    /// Estimated bytes on a volume (shared inodes counted once).
    cost: u64,
}

/// One file of the tree, by inode (hard links share it).
#[derive(Clone, Copy, Debug)]
struct FileInfo {
    key: (u64, u64),
    size: u64,
}

/// The volume's plan.
#[derive(Clone, Debug, Default)]
struct Bin {
    used: u64,
    items: Vec<usize>,
    inodes: BTreeSet<(u64, u64)>,
}

/// One volume of [`Table`].
#[derive(Clone, Debug, Serialize)]
pub struct VolumeEntry {
    /// 1-based index.
    pub volume: usize,
    /// File name in `dist/`.
    pub file: String,
    /// ISO volume identifier.
    pub volume_id: String,
    /// Image repositories and tags (`name:tag`), sorted.
    pub images: Vec<String>,
    /// RPM paths, sorted.
    pub rpms: Vec<String>,
    /// Size in bytes (not for volume 1, which holds this table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// sha256 (not for volume 1, which holds this table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `/VOLUMES.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Table {
    /// Format version.
    pub format: u32,
    /// `<name>-<version>`.
    pub set: String,
    /// Medium name.
    pub media: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Every volume.
    pub volumes: Vec<VolumeEntry>,
}

/// What [`build`] wrote.
#[derive(Clone, Debug)]
pub struct Report {
    /// `(path, size, sha256)` per volume.
    pub volumes: Vec<(PathBuf, u64, String)>,
    /// `ceil(single ISO size / capacity)`.
    pub lower_bound: u64,
    /// Size of the single ISO of the same tree.
    pub single_iso_bytes: u64,
    /// Packings tried (more than 1 when the estimate overflowed a volume).
    pub packings: usize,
}

fn rel(p: &Path, root: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// Every regular file and symlink under `root`, sorted, with its inode and size.
fn walk(root: &Path) -> Result<BTreeMap<String, FileInfo>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let e = e?;
            let p = e.path();
            let m = fs::symlink_metadata(&p)?;
            if m.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    rel(&p, root),
                    FileInfo {
                        key: (m.dev(), m.ino()),
                        size: if m.is_file() { m.len() } else { 0 },
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Two sectors (ISO-9660 and Joliet records) per distinct directory holding `paths`.
fn dirs_cost<'a>(paths: impl Iterator<Item = &'a String>) -> u64 {
    let mut dirs = BTreeSet::new();
    for p in paths {
        let mut d = Path::new(p.as_str());
        while let Some(parent) = d.parent().filter(|x| !x.as_os_str().is_empty()) {
            dirs.insert(parent.to_path_buf());
            d = parent;
        }
    }
    dirs.len() as u64 * 2 * SECTOR
}

/// `dvd5 (4707319808-byte)` or `409600-byte`.
fn medium(media: &str, capacity: u64) -> String {
    if media.ends_with(" bytes") {
        format!("{capacity}-byte")
    } else {
        format!("{media} ({capacity}-byte)")
    }
}

fn sectors(n: u64) -> u64 {
    n.div_ceil(SECTOR) * SECTOR
}

/// Splits the tree's files into items, repository extras and volume-1 files.
struct Split {
    items: Vec<Item>,
    /// Repository dir → its extra files (keys…), not RPMs nor repodata.
    repo_extras: BTreeMap<String, Vec<String>>,
    /// Files only volume 1 holds.
    base: Vec<String>,
    /// Repository dir of each RPM item path.
    repo_of: BTreeMap<String, String>,
}

fn split(root: &Path, files: &BTreeMap<String, FileInfo>) -> Split {
    let repos: BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.strip_suffix("/repodata/repomd.xml").map(str::to_string))
        .collect();
    let repo_for = |p: &str| {
        repos
            .iter()
            .rev()
            .find(|r| p.starts_with(&format!("{r}/")))
            .cloned()
    };
    let image_names: BTreeSet<String> = files
        .keys()
        .filter_map(|p| {
            let mut c = p.split('/');
            match (c.next(), c.next(), c.next()) {
                (Some("images"), Some(n), Some(_)) => Some(n.to_string()),
                _ => None,
            }
        })
        .collect();
    let mut images: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut split = Split {
        items: Vec::new(),
        repo_extras: BTreeMap::new(),
        base: Vec::new(),
        repo_of: BTreeMap::new(),
    };
    for p in files.keys() {
        let parts: Vec<&str> = p.split('/').collect();
        if parts[0] == "images" && parts.len() >= 3 {
            images
                .entry(parts[1].to_string())
                .or_default()
                .push(p.clone());
            continue;
        }
        if parts[0] == "images" && parts.len() == 2 {
            // `images/<name>-<tag>.tar`: with the repository `<name>` having tag `<tag>`.
            if let Some(stem) = parts[1].strip_suffix(".tar") {
                let owner = image_names.iter().rev().find(|n| {
                    stem.strip_prefix(n.as_str())
                        .and_then(|t| t.strip_prefix('-'))
                        .is_some_and(|t| root.join("images").join(n).join(t).is_dir())
                });
                if let Some(n) = owner {
                    images.entry(n.clone()).or_default().push(p.clone());
                    continue;
                }
            }
        }
        if let Some(r) = repo_for(p) {
            let inner = &p[r.len() + 1..];
            if inner.starts_with("repodata/") {
                continue;
            }
            if inner.ends_with(".rpm") {
                split.repo_of.insert(p.clone(), r);
                split.items.push(Item {
                    kind: Kind::Rpm,
                    id: p.clone(),
                    files: vec![p.clone()],
                    cost: 0,
                });
            } else {
                split.repo_extras.entry(r).or_default().push(p.clone());
            }
            continue;
        }
        if SEALS.contains(&p.as_str()) {
            // Each volume gets its own (see `Layout::seal`).
            continue;
        }
        split.base.push(p.clone());
    }
    for (name, fs_) in images {
        split.items.push(Item {
            kind: Kind::Image,
            id: name,
            files: fs_,
            cost: 0,
        });
    }
    for it in &mut split.items {
        if it.kind == Kind::Image {
            // Its own directories (`images/` itself is counted as shared below).
            it.cost += dirs_cost(it.files.iter()) - 2 * SECTOR;
        }
        let mut seen = BTreeSet::new();
        for f in &it.files {
            let i = files[f];
            if seen.insert(i.key) {
                it.cost += sectors(i.size) + PER_FILE;
            }
            it.cost += match it.kind {
                Kind::Image => PER_SERVED,
                Kind::Rpm => PER_RPM,
            };
        }
    }
    split
}

/// Bytes `it` adds to `bin` (files whose inode the bin already holds are free).
fn marginal(bin: &Bin, it: &Item, files: &BTreeMap<String, FileInfo>) -> u64 {
    let mut seen = BTreeSet::new();
    let mut c = match it.kind {
        Kind::Image => dirs_cost(it.files.iter()) - 2 * SECTOR,
        Kind::Rpm => 0,
    };
    for f in &it.files {
        let i = files[f];
        if !bin.inodes.contains(&i.key) && seen.insert(i.key) {
            c += sectors(i.size) + PER_FILE;
        }
        c += match it.kind {
            Kind::Image => PER_SERVED,
            Kind::Rpm => PER_RPM,
        };
    }
    c
}

/// Packs `items` into bins of `budget` bytes; bin 0 starts at `first_used`, every other bin at
/// `empty`. Bins are filled one at a time: among the items that still fit, the one whose
/// marginal cost is the smallest fraction of its own cost (the most layers already on the
/// volume), then the largest, then by kind and name. On an empty volume that is
/// first-fit-decreasing; afterwards images sharing layers gather, so a shared layer is repeated
/// only on the volumes that need it. Deterministic.
fn pack(
    items: &[Item],
    files: &BTreeMap<String, FileInfo>,
    budget: u64,
    empty: u64,
    first_used: u64,
    media: &str,
) -> Result<Vec<Bin>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&items[a], &items[b]);
        y.cost
            .cmp(&x.cost)
            .then(x.kind.cmp(&y.kind))
            .then(x.id.cmp(&y.id))
    });
    for &i in &order {
        let it = &items[i];
        if empty + it.cost > budget {
            let what = match it.kind {
                Kind::Image => format!("image {}", it.id),
                Kind::Rpm => format!("RPM {}", it.id),
            };
            bail!(
                "{what} is {} bytes: it does not fit one {} volume ({} bytes usable)",
                it.files.iter().map(|f| files[f].size).sum::<u64>(),
                medium(media, budget),
                budget.saturating_sub(empty)
            );
        }
    }
    let mut bins = Vec::new();
    let mut bin = Bin {
        used: first_used,
        ..Default::default()
    };
    while !order.is_empty() {
        // (position in `order`, marginal); `order` is by decreasing cost, so on equal ratios
        // the first candidate is the largest.
        let mut best: Option<(usize, u64)> = None;
        for (pos, &i) in order.iter().enumerate() {
            let it = &items[i];
            let m = marginal(&bin, it, files);
            if bin.used + m > budget {
                continue;
            }
            let better = match best {
                None => true,
                Some((bp, bm)) => {
                    let bc = items[order[bp]].cost.max(1) as u128;
                    (m as u128) * bc < (bm as u128) * (it.cost.max(1) as u128)
                }
            };
            if better {
                best = Some((pos, m));
            }
        }
        match best {
            Some((pos, m)) => {
                let i = order.remove(pos);
                bin.used += m;
                bin.items.push(i);
                for f in &items[i].files {
                    bin.inodes.insert(files[f].key);
                }
            }
            None => {
                bins.push(std::mem::take(&mut bin));
                bin.used = empty;
            }
        }
    }
    bins.push(bin);
    Ok(bins)
}

/// `dist/<name>-<version>-<i>of<n>.iso`.
pub fn volume_path(settings: &Settings, i: usize, n: usize) -> PathBuf {
    settings.dist_dir.join(volume_file(settings, i, n))
}

fn volume_file(settings: &Settings, i: usize, n: usize) -> String {
    format!(
        "{}-{}-{i}of{n}.iso",
        settings.project_lower(),
        settings.version.full()
    )
}

/// `dist/<name>-<version>-volumes.sha256`: `sha256  file` per volume.
pub fn sums_path(settings: &Settings) -> PathBuf {
    settings.dist_dir.join(format!(
        "{}-{}-volumes.sha256",
        settings.project_lower(),
        settings.version.full()
    ))
}

fn volume_id(settings: &Settings, i: usize, n: usize) -> String {
    let suffix = format!(" {i}of{n}");
    let base: String = settings
        .volume_id()
        .chars()
        .take(32 - suffix.len())
        .collect();
    format!("{}{suffix}", base.trim_end())
}

/// The nginx variable naming volume `i`'s image tree: `$<name>_<version>_volume_<i>_images`.
pub fn registry_root_var(settings: &Settings, i: usize) -> String {
    format!(
        "${}_{}_volume_{i}_images",
        settings.project_lower(),
        settings.version.full().replace(['.', '-'], "_")
    )
}

struct Layout<'a> {
    settings: &'a Settings,
    root: &'a Path,
    split: &'a Split,
    media: &'a str,
    capacity: u64,
    /// sha256 by (device, inode, size, mtime) of files linked from the ISO tree: repeated
    /// layers and retries hash once.
    hashes: std::sync::Mutex<BTreeMap<(u64, u64, u64, u64), String>>,
}

impl Layout<'_> {
    /// Writes volume `i` (1-based) of `n` into `dir`.
    fn tree(&self, bins: &[Bin], i: usize, dir: &Path, table: Option<&Table>) -> Result<()> {
        let n = bins.len();
        let bin = &bins[i - 1];
        let s = self.split;
        let mut paths: Vec<&String> = Vec::new();
        let mut repos: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for &k in &bin.items {
            let it = &s.items[k];
            paths.extend(&it.files);
            if it.kind == Kind::Rpm {
                let r = &s.repo_of[&it.id];
                repos
                    .entry(r.clone())
                    .or_default()
                    .push(it.id[r.len() + 1..].to_string());
            }
        }
        if i == 1 {
            paths.extend(&s.base);
            for x in s.repo_extras.values() {
                paths.extend(x);
            }
        } else {
            // Every volume says which product it belongs to.
            paths.extend(s.base.iter().filter(|p| *p == "product.txt"));
            for r in repos.keys() {
                paths.extend(s.repo_extras.get(r).into_iter().flatten());
            }
        }
        fs::create_dir_all(dir)?;
        for p in paths {
            crate::fsutil::link_or_copy(&self.root.join(p), &dir.join(p))?;
        }
        let opts = crate::packaging::repodata::RepodataOptions {
            revision: self.settings.timestamp(),
            ..Default::default()
        };
        for (r, mut hrefs) in repos {
            hrefs.sort();
            crate::packaging::repodata::write_repodata_for(&dir.join(&r), &hrefs, &opts)?;
            let repomd = dir.join(&r).join("repodata/repomd.xml");
            let bytes = fs::read(&repomd)?;
            crate::trust::signing::write_detached(
                self.settings.signer.as_deref(),
                &repomd,
                &bytes,
                self.settings.timestamp(),
            )?;
        }
        if dir.join("images").is_dir() {
            use crate::registry_config::{generate, Constants, Options};
            let o = Options {
                name_prefix: format!(
                    "{}-{}/",
                    self.settings.project_lower(),
                    self.settings.version.full()
                ),
                server_root: registry_root_var(self.settings, i),
                constants: Constants::Omit,
            };
            let text = generate(&dir.join("images"), &o)?;
            let common = generate(
                &dir.join("images"),
                &Options {
                    constants: Constants::Only,
                    ..o
                },
            )?;
            fs::create_dir_all(dir.join("registry"))?;
            fs::write(dir.join(REGISTRY_IMAGES), text)?;
            fs::write(dir.join(REGISTRY_COMMON), common)?;
        }
        let set = format!(
            "{}-{}",
            self.settings.project_lower(),
            self.settings.version.full()
        );
        fs::write(
            dir.join(VOLUME_TXT),
            format!(
                "set={set}\nvolume={i}\nvolumes={n}\nvolume_id={}\nmedia={}\ncapacity={}\nregistry_root_var={}\n",
                volume_id(self.settings, i, n),
                self.media,
                self.capacity,
                &registry_root_var(self.settings, i)[1..]
            ),
        )?;
        if let Some(t) = table {
            let mut json = serde_json::to_vec_pretty(t)?;
            json.push(b'\n');
            fs::write(dir.join(TABLE), json)?;
        }
        // Every directory 0755 (the tree's own are, the created ones follow the umask).
        fix_dir_modes(dir)?;
        self.seal(dir)
    }

    /// Writes the volume's own `/SHA256SUMS`, `/CONTENTS.json` and (signed builds) its
    /// signature, as `populate_iso` does for the whole tree: `buildchain verify` checks each
    /// volume on its own.
    fn seal(&self, dir: &Path) -> Result<()> {
        use crate::trust::contents::CONTENTS_FILE;
        for f in SEALS {
            match fs::remove_file(dir.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        let hash = |p: &Path| -> Result<String> {
            // Only files linked from the ISO tree (never rewritten here) are cached.
            let m = fs::metadata(p).with_context(|| format!("cannot stat {}", p.display()))?;
            if m.nlink() < 2 {
                return crate::fsutil::sha256_file(p);
            }
            let key = (
                m.dev(),
                m.ino(),
                m.len(),
                m.mtime_nsec() as u64 ^ m.mtime() as u64,
            );
            if let Some(h) = self.hashes.lock().ok().and_then(|c| c.get(&key).cloned()) {
                return Ok(h);
            }
            let h = crate::fsutil::sha256_file(p)?;
            if let Ok(mut c) = self.hashes.lock() {
                c.insert(key, h.clone());
            }
            Ok(h)
        };
        let mut text = String::new();
        for f in crate::engine::signature::walk_tree(dir)? {
            if !fs::symlink_metadata(&f)?.is_file() {
                continue;
            }
            text.push_str(&format!("{}  ./{}\n", hash(&f)?, rel(&f, dir)));
        }
        fs::write(dir.join("SHA256SUMS"), text)?;
        let product = crate::product::read_product_txt(&dir.join("product.txt"))?;
        let index =
            crate::trust::index::build_index(dir, product, self.settings.source_date_epoch, &hash)?;
        let bytes = index
            .to_json_bytes()
            .context("cannot serialise CONTENTS.json")?;
        let c = dir.join(CONTENTS_FILE);
        fs::write(&c, &bytes)?;
        crate::trust::signing::write_detached(
            self.settings.signer.as_deref(),
            &c,
            &bytes,
            self.settings.timestamp(),
        )?;
        Ok(())
    }

    fn table(&self, bins: &[Bin], done: &BTreeMap<usize, (u64, String)>) -> Table {
        let n = bins.len();
        let s = self.split;
        Table {
            format: 1,
            set: format!(
                "{}-{}",
                self.settings.project_lower(),
                self.settings.version.full()
            ),
            media: self.media.to_string(),
            capacity: self.capacity,
            volumes: bins
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    let i = k + 1;
                    let mut images = BTreeSet::new();
                    let mut rpms = BTreeSet::new();
                    for &x in &b.items {
                        let it = &s.items[x];
                        match it.kind {
                            Kind::Image => {
                                for f in &it.files {
                                    let p: Vec<&str> = f.split('/').collect();
                                    if p.len() >= 4 {
                                        images.insert(format!("{}:{}", p[1], p[2]));
                                    }
                                }
                            }
                            Kind::Rpm => {
                                rpms.insert(it.id.clone());
                            }
                        }
                    }
                    VolumeEntry {
                        volume: i,
                        file: volume_file(self.settings, i, n),
                        volume_id: volume_id(self.settings, i, n),
                        images: images.into_iter().collect(),
                        rpms: rpms.into_iter().collect(),
                        size: done.get(&i).map(|d| d.0),
                        sha256: done.get(&i).map(|d| d.1.clone()),
                    }
                })
                .collect(),
        }
    }
}

fn fix_dir_modes(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            fix_dir_modes(&e.path())?;
        }
    }
    Ok(())
}

fn master_options(volume_id: String, timestamp: i64) -> iso9660_writer::MasterOptions<'static> {
    iso9660_writer::MasterOptions {
        volume_id,
        timestamp,
        implant_md5: true,
        progress: None,
        keep_modes: false,
    }
}

/// Splits `settings.iso_root` into volumes of `capacity` bytes (`media` names it in messages)
/// and writes them into `dist/` (see the module documentation).
pub fn build(settings: &Settings, media: &str, capacity: u64) -> Result<Report> {
    let root = settings.iso_root.as_path();
    let files = walk(root)?;
    let split = split(root, &files);
    let ts = settings.timestamp() as i64;
    crate::fsutil::create_dir_all(&settings.dist_dir)?;
    let tmp = tempfile::Builder::new()
        .prefix(".bctmp-volumes-")
        .tempdir_in(&settings.dist_dir)
        .with_context(|| {
            format!(
                "cannot create a scratch directory in {}",
                settings.dist_dir.display()
            )
        })?;
    let single_iso_bytes =
        iso9660_writer::predict_size(root, &master_options(settings.volume_id(), ts))
            .map_err(|e| anyhow!("cannot lay out {}: {e}", root.display()))?;
    // Size of a volume holding only its identity, and of volume 1's own files.
    let probe = tmp.path().join("probe");
    fs::create_dir_all(&probe)?;
    fs::write(probe.join(VOLUME_TXT), vec![b'x'; 300])?;
    let empty = iso9660_writer::predict_size(&probe, &master_options(settings.volume_id(), ts))
        .map_err(|e| anyhow!("cannot lay out an empty volume: {e}"))?;
    let mut base_cost = empty + 4 * SECTOR;
    let mut seen = BTreeSet::new();
    // The set's own sums and index stand for volume 1's (which list fewer files).
    let seals: Vec<String> = SEALS
        .iter()
        .map(|s| s.to_string())
        .filter(|s| files.contains_key(s))
        .collect();
    for p in split
        .base
        .iter()
        .chain(split.repo_extras.values().flatten())
        .chain(&seals)
    {
        if seen.insert(files[p].key) {
            base_cost += sectors(files[p].size) + PER_FILE;
        }
    }
    base_cost += dirs_cost(split.base.iter());
    // `images/`, `registry/` and a repository's `repodata/` with its four files, per volume.
    let empty = empty + 2 * 3 * SECTOR + 4 * SECTOR;
    if base_cost > capacity {
        bail!(
            "volume 1's own files (Salt tree, scripts, product.txt, content index…) need about \
             {base_cost} bytes: they do not fit one {} volume",
            medium(media, capacity)
        );
    }
    // Every item must fit a volume of its own.
    pack(&split.items, &files, capacity, empty, base_cost, media)?;
    let layout = Layout {
        settings,
        root,
        split: &split,
        media,
        capacity,
        hashes: Default::default(),
    };
    let mut slack = 0u64;
    for attempt in 1..=8 {
        let budget = capacity.saturating_sub(slack);
        let bins = pack(&split.items, &files, budget, empty, base_cost, media)
            .with_context(|| format!("cannot split {} into {media} volumes", root.display()))?;
        let n = bins.len();
        // Lay out every volume; volume 1 with a table of the longest values.
        let mut worst = 0u64;
        let mut trees = Vec::new();
        for i in 1..=n {
            let dir = tmp.path().join(format!("v{i}"));
            let _ = fs::remove_dir_all(&dir);
            let placeholder: BTreeMap<usize, (u64, String)> =
                (2..=n).map(|k| (k, (capacity, "0".repeat(64)))).collect();
            let table = (i == 1).then(|| layout.table(&bins, &placeholder));
            layout.tree(&bins, i, &dir, table.as_ref())?;
            let size =
                iso9660_writer::predict_size(&dir, &master_options(volume_id(settings, i, n), ts))
                    .map_err(|e| anyhow!("cannot lay out volume {i}: {e}"))?;
            worst = worst.max(size.saturating_sub(capacity));
            trees.push(dir);
        }
        if worst > 0 {
            slack += worst.div_ceil(16 * SECTOR) * 16 * SECTOR;
            continue;
        }
        // Master volumes 2..N, then volume 1 with their digests in its table.
        let out_dir = tmp.path().join("out");
        fs::create_dir_all(&out_dir)?;
        let mut done: BTreeMap<usize, (u64, String)> = BTreeMap::new();
        let mut order: Vec<usize> = (2..=n).collect();
        order.push(1);
        for i in order {
            let dir = &trees[i - 1];
            if i == 1 {
                fs::write(dir.join(TABLE), {
                    let mut j = serde_json::to_vec_pretty(&layout.table(&bins, &done))?;
                    j.push(b'\n');
                    j
                })?;
                layout.seal(dir)?;
            }
            let out = out_dir.join(volume_file(settings, i, n));
            let rep = crate::isofile::master_atomic(
                dir,
                &out,
                &volume_id(settings, i, n),
                true,
                ts,
                None,
            )?;
            if rep.size > capacity {
                bail!(
                    "volume {i} of {n} is {} bytes: over one {} volume",
                    rep.size,
                    medium(media, capacity)
                );
            }
            done.insert(i, (rep.size, rep.sha256_hex));
        }
        // All written: stale volumes of another split go, the new ones move into dist/.
        let prefix = format!("{}-{}-", settings.project_lower(), settings.version.full());
        for e in fs::read_dir(&settings.dist_dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".iso"))
            {
                let is_volume = rest
                    .split_once("of")
                    .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
                if is_volume {
                    fs::remove_file(settings.dist_dir.join(&name))?;
                }
            }
        }
        let mut report = Report {
            volumes: Vec::new(),
            lower_bound: single_iso_bytes.div_ceil(capacity),
            single_iso_bytes,
            packings: attempt,
        };
        let mut sums = String::new();
        for (i, (size, sha)) in &done {
            let name = volume_file(settings, *i, n);
            let dest = settings.dist_dir.join(&name);
            fs::rename(out_dir.join(&name), &dest)
                .with_context(|| format!("cannot rename into {}", dest.display()))?;
            sums.push_str(&format!("{sha}  {name}\n"));
            report.volumes.push((dest, *size, sha.clone()));
        }
        crate::fsutil::write_if_changed(&sums_path(settings), sums.as_bytes(), Some(0o644))?;
        return Ok(report);
    }
    bail!(
        "cannot split {} into {media} volumes: the layout keeps exceeding {capacity} bytes",
        root.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fi(ino: u64, size: u64) -> FileInfo {
        FileInfo {
            key: (1, ino),
            size,
        }
    }

    fn kind_is_image(it: &Item) -> bool {
        it.kind == Kind::Image
    }

    fn item(kind: Kind, id: &str, files: &[&str], all: &BTreeMap<String, FileInfo>) -> Item {
        let mut it = Item {
            kind,
            id: id.to_string(),
            files: files.iter().map(|f| f.to_string()).collect(),
            cost: 0,
        };
        if kind_is_image(&it) {
            it.cost += dirs_cost(it.files.iter()) - 2 * SECTOR;
        }
        let mut seen = BTreeSet::new();
        for f in files {
            if seen.insert(all[*f].key) {
                it.cost += sectors(all[*f].size) + PER_FILE;
            }
            it.cost += PER_SERVED;
        }
        it
    }

    /// Images a (60 KiB, shares layer L), b (40 KiB + L), c (30 KiB): FFD in decreasing
    /// order; L is counted once where a and b meet and repeated where they do not.
    #[test]
    fn ffd_is_deterministic_and_counts_shared_layers_once_per_volume() {
        let mut all = BTreeMap::new();
        all.insert("images/a/1/x".to_string(), fi(1, 60 << 10));
        all.insert("images/a/1/l".to_string(), fi(9, 8 << 10));
        all.insert("images/b/1/y".to_string(), fi(2, 40 << 10));
        all.insert("images/b/1/l".to_string(), fi(9, 8 << 10));
        all.insert("images/c/1/z".to_string(), fi(3, 30 << 10));
        let items = vec![
            item(Kind::Image, "c", &["images/c/1/z"], &all),
            item(Kind::Image, "a", &["images/a/1/x", "images/a/1/l"], &all),
            item(Kind::Image, "b", &["images/b/1/y", "images/b/1/l"], &all),
        ];
        // Room for a + b sharing L, not for a + b + c.
        let budget = items[1].cost + items[2].cost - (sectors(8 << 10) + PER_FILE) + 1000;
        let bins = pack(&items, &all, budget, 0, 0, "test").unwrap();
        let ids: Vec<Vec<&str>> = bins
            .iter()
            .map(|b| b.items.iter().map(|&i| items[i].id.as_str()).collect())
            .collect();
        assert_eq!(ids, [vec!["a", "b"], vec!["c"]]);
        // Without the sharing discount, b would not fit next to a.
        let tight = budget - 2000;
        let bins = pack(&items, &all, tight, 0, 0, "test").unwrap();
        let ids: Vec<Vec<&str>> = bins
            .iter()
            .map(|b| b.items.iter().map(|&i| items[i].id.as_str()).collect())
            .collect();
        assert_eq!(ids, [vec!["a", "c"], vec!["b"]]);
    }

    #[test]
    fn an_item_larger_than_a_volume_is_named() {
        let mut all = BTreeMap::new();
        all.insert("images/huge/1/x".to_string(), fi(1, 100_000));
        let items = vec![item(Kind::Image, "huge", &["images/huge/1/x"], &all)];
        let e = pack(&items, &all, 90_000, 20_000, 30_000, "90000 bytes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "image huge is 100000 bytes: it does not fit one 90000-byte volume (70000 bytes usable)"
        );
    }
}
