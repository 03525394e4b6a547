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
//!
//! Submodules: `pack` estimates sizes and packs items into volumes; `layout` writes and
//! seals one volume's tree. [`build`] drives both.

mod layout;
mod pack;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::config::Settings;

use layout::{master_options, Layout};
use pack::{dirs_cost, pack, sectors, split, walk, PER_FILE, SECTOR};

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

/// `dvd5 (4707319808-byte)` or `409600-byte`.
fn medium(media: &str, capacity: u64) -> String {
    if media.ends_with(" bytes") {
        format!("{capacity}-byte")
    } else {
        format!("{media} ({capacity}-byte)")
    }
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
