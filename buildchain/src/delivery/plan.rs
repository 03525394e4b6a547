//! `buildchain plan`: what a build would fetch and how big the ISO will be, from manifests and
//! indexes only (no registry layer is downloaded).
//!
//! Registry images are resolved to their manifests (the store first, else the registry);
//! local builds, OCI-layout and docker-archive imports are cheap and local, so they are built
//! (through the engine, like `images:<name>`). The predicted ISO size is the exact layout size
//! of `iso9660-writer` ([`iso9660_writer::predict_size`]) over the ISO tree: when every image
//! is local the tree is the real `populate_iso` output (exact); otherwise a scratch copy of the
//! tree where every registry image is a `dir:` layout of sparse placeholder files of the blobs'
//! sizes (hard links where the real build hard-links, so shared blobs count once). Files the
//! populate step derives from the images (`SHA256SUMS`, registry includes) are then taken
//! as they stand in the tree, which makes that case an estimate within a few KiB.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::config::Settings;
use crate::engine::{self, Graph, RunOptions};
use crate::images::inventory::{Inventory, Source};
use crate::images::layout::DIR_VERSION;
use crate::images::{ImageBuilder, Resolved};
use crate::store::Store;

/// Standard media and their capacities in bytes.
pub const MEDIA: &[(&str, u64)] = &[
    ("dvd5", 4_707_319_808),
    ("dvd9", 8_543_666_176),
    ("bd25", 25_025_314_816),
    ("bd50", 50_050_629_632),
];

/// Parses `dvd5|dvd9|bd25|bd50|<bytes>` into (name, capacity).
pub fn parse_media(s: &str) -> Result<(String, u64)> {
    if let Some((n, c)) = MEDIA.iter().find(|(n, _)| *n == s) {
        return Ok((n.to_string(), *c));
    }
    match s.parse::<u64>() {
        Ok(b) if b >= 2048 * 200 => Ok((format!("{b} bytes"), b)),
        _ => bail!("invalid media {s:?}: expected dvd5, dvd9, bd25, bd50 or a size in bytes (at least 409600)"),
    }
}

/// One image of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct ImagePlan {
    /// Inventory name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// `registry`, `local`, `oci_layout` or `docker_archive`.
    pub source: String,
    /// Manifest digest.
    pub digest: String,
    /// Manifests + config + layers, compressed, in bytes.
    pub compressed_bytes: u64,
    /// Of those, bytes already in the store.
    pub in_store_bytes: u64,
    /// Of those, bytes of blobs other images of the plan also use.
    pub shared_bytes: u64,
    /// Number of blobs (configs and layers).
    pub blobs: usize,
}

/// Whether the ISO fits one medium.
#[derive(Clone, Debug, Serialize)]
pub struct MediaFit {
    /// `dvd5`… or `<n> bytes`.
    pub media: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// The predicted ISO fits.
    pub fits: bool,
    /// `ceil(predicted / capacity)`: the lower bound on volumes.
    pub volumes_lower_bound: u64,
}

/// The whole plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Per image, in inventory order.
    pub images: Vec<ImagePlan>,
    /// Sum of the images' compressed sizes.
    pub image_bytes: u64,
    /// Bytes of distinct blobs and manifests.
    pub unique_image_bytes: u64,
    /// Distinct registry blobs not in the store, in bytes.
    pub bytes_to_fetch: u64,
    /// `image_bytes / unique_image_bytes` (1.0 without sharing).
    pub dedup_ratio: f64,
    /// Size the ISO will have, in bytes.
    pub predicted_iso_bytes: u64,
    /// `exact` (the real tree) or `placeholders` (registry blobs stood in by sized files).
    pub prediction: String,
    /// Standard media (and the requested one, last).
    pub media: Vec<MediaFit>,
}

fn fit(media: &str, capacity: u64, size: u64) -> MediaFit {
    MediaFit {
        media: media.to_string(),
        capacity,
        fits: size <= capacity,
        volumes_lower_bound: size.div_ceil(capacity),
    }
}

/// Computes the plan of the product described by `settings` and `graph`; `ropts` runs the
/// local tasks. `requested` is an extra medium to report.
pub fn plan(
    settings: &Settings,
    graph: &Graph,
    ropts: RunOptions,
    requested: Option<(String, u64)>,
) -> Result<Plan> {
    let inventory = Inventory::load(&settings.repo_root, settings.profile)?;
    let store = Store::shared(&settings.store_root)?;
    let mut registry = BTreeSet::new();
    let mut sources = BTreeMap::new();
    for (name, e) in &inventory.images {
        let kind = match e.source(&settings.repo_root)? {
            Source::Registry(_) => {
                registry.insert(name.clone());
                "registry"
            }
            Source::Local(_) => "local",
            Source::OciLayout { .. } => "oci_layout",
            Source::DockerArchive(_) => "docker_archive",
        };
        sources.insert(name.clone(), kind);
    }
    // No registry image: build the ISO tree itself (everything is local), and the prediction
    // is exact. Otherwise the tree is built in a scratch build root (below).
    if registry.is_empty() {
        let summary = engine::run(graph, &["populate_iso".to_string()], ropts.clone())?;
        check(&summary)?;
    }

    let builder = ImageBuilder::new(
        &settings.repo_root,
        store.clone(),
        inventory.clone(),
        settings.timestamp(),
    );
    let mut resolved: Vec<(String, Resolved)> = Vec::new();
    for (name, e) in &inventory.images {
        let what = format!("image {name}:{}", e.tag);
        let res = match e.source(&settings.repo_root)? {
            Source::Registry(r) => builder
                .client()?
                .resolve(&store, &r, &e.platform()?, e.keep_index, &what)
                .with_context(|| format!("{what}: cannot read the manifest from {}", r.registry))?,
            _ => builder.resolve(name, None)?,
        };
        resolved.push((name.clone(), res));
    }
    // Blob sizes and users.
    let mut users: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
    let mut per_image: Vec<BTreeMap<String, u64>> = Vec::new();
    for (name, res) in &resolved {
        let mut blobs = BTreeMap::new();
        blobs.insert(res.top_hex.clone(), res.top_bytes.len() as u64);
        for i in &res.instances {
            blobs.insert(i.hex.clone(), i.bytes.len() as u64);
            blobs.insert(i.config.hex().to_string(), i.config.size);
            for l in &i.layers {
                blobs.insert(l.hex().to_string(), l.size);
            }
        }
        for (hex, size) in &blobs {
            users
                .entry(hex.clone())
                .or_insert((*size, BTreeSet::new()))
                .1
                .insert(name.clone());
        }
        per_image.push(blobs);
    }
    let mut images = Vec::new();
    let mut image_bytes = 0;
    let mut fetch: BTreeSet<String> = BTreeSet::new();
    for ((name, res), blobs) in resolved.iter().zip(&per_image) {
        let entry = &inventory.images[name];
        let mut p = ImagePlan {
            name: name.clone(),
            tag: entry.tag.clone(),
            source: sources[name].to_string(),
            digest: res.digest(),
            compressed_bytes: 0,
            in_store_bytes: 0,
            shared_bytes: 0,
            blobs: res
                .instances
                .iter()
                .map(|i| 1 + i.layers.len())
                .sum::<usize>(),
        };
        for (hex, size) in blobs {
            p.compressed_bytes += size;
            if store.contains(hex) {
                p.in_store_bytes += size;
            } else if registry.contains(name) {
                fetch.insert(hex.clone());
            }
            if users[hex].1.len() > 1 {
                p.shared_bytes += size;
            }
        }
        image_bytes += p.compressed_bytes;
        images.push(p);
    }
    let unique_image_bytes: u64 = users.values().map(|(s, _)| s).sum();
    let bytes_to_fetch = fetch.iter().map(|h| users[h].0).sum();

    let vo = iso9660_writer::MasterOptions {
        volume_id: settings.volume_id(),
        timestamp: settings.timestamp() as i64,
        implant_md5: true,
        progress: None,
        keep_modes: false,
    };
    let (predicted_iso_bytes, prediction) = if registry.is_empty() {
        (
            iso9660_writer::predict_size(&settings.iso_root, &vo)
                .map_err(|e| anyhow!("cannot lay out {}: {e}", settings.iso_root.display()))?,
            "exact",
        )
    } else {
        let scratch = settings.build_root.join(".buildchain");
        crate::fsutil::create_dir_all(&scratch)?;
        let tmp = tempfile::Builder::new()
            .prefix(".bctmp-plan-")
            .tempdir_in(&scratch)
            .with_context(|| {
                format!("cannot create a scratch directory in {}", scratch.display())
            })?;
        // The product graph over a scratch build root, minus the registry images, whose
        // `dir:` layouts are placeholders: every other task (registry includes, versions,
        // SHA256SUMS…) then runs on a tree of the real shape.
        let mut s2 = settings.clone();
        // (Not the temp dir itself: the engine sweeps `.bctmp-*` debris under its build root.)
        s2.build_root = tmp.path().join("build");
        s2.iso_root = s2.build_root.join("root");
        let tree = s2.iso_root.clone();
        let drop: BTreeSet<String> = registry.iter().map(|n| format!("images:{n}")).collect();
        let full = crate::tasks::build_graph(&s2)?;
        let mut g2 = Graph::new();
        for t in full.tasks() {
            if drop.contains(&t.name) {
                continue;
            }
            let mut t = t.clone();
            t.deps.retain(|d| !drop.contains(d));
            g2.add(t)?;
        }
        let blobdir = tmp.path().join("blobs");
        fs::create_dir_all(&blobdir)?;
        for ((name, res), blobs) in resolved.iter().zip(&per_image) {
            if !registry.contains(name) {
                continue;
            }
            let entry = &inventory.images[name];
            let dest = tree.join("images").join(name).join(&entry.tag);
            fs::create_dir_all(&dest)?;
            fs::write(dest.join("manifest.json"), &res.top_bytes)?;
            fs::write(dest.join("version"), DIR_VERSION)?;
            for (hex, size) in blobs {
                if *hex == res.top_hex {
                    continue;
                }
                // One sparse file per blob, starting with its digest (distinct contents),
                // hard-linked where the build hard-links from the store.
                let ph = blobdir.join(hex);
                if !ph.exists() {
                    let f = fs::File::create(&ph)?;
                    std::io::Write::write_all(&mut &f, hex.as_bytes())?;
                    f.set_len((*size).max(hex.len() as u64))?;
                }
                let is_manifest = res.instances.iter().any(|i| &i.hex == hex);
                let fname = if is_manifest {
                    format!("{hex}.manifest.json")
                } else {
                    hex.clone()
                };
                fs::hard_link(&ph, dest.join(fname))?;
            }
            // `tarball: true`: a docker-archive of the same blobs (tar headers, 512-byte
            // padding, manifest.json and repositories, end blocks).
            if entry.tarball {
                let tar: u64 = blobs
                    .values()
                    .map(|s| 512 + s.div_ceil(512) * 512)
                    .sum::<u64>()
                    + 3 * 1024
                    + 10240;
                let p = tree
                    .join("images")
                    .join(format!("{name}-{}.tar", entry.tag));
                let f = fs::File::create(&p)?;
                std::io::Write::write_all(&mut &f, name.as_bytes())?;
                f.set_len(tar)?;
            }
        }
        let mut r2 = RunOptions::new(&s2.build_root, &settings.repo_root);
        r2.jobs = ropts.jobs;
        r2.reporter = engine::Reporter::Silent;
        r2.progress_bars = false;
        r2.prune_roots = vec![s2.build_root.clone()];
        check(&engine::run(&g2, &["populate_iso".to_string()], r2)?)?;
        (
            iso9660_writer::predict_size(&tree, &vo)
                .map_err(|e| anyhow!("cannot lay out the planned tree: {e}"))?,
            "placeholders",
        )
    };
    let mut media: Vec<MediaFit> = MEDIA
        .iter()
        .map(|(n, c)| fit(n, *c, predicted_iso_bytes))
        .collect();
    if let Some((n, c)) = requested {
        if !MEDIA.iter().any(|(m, _)| *m == n) {
            media.push(fit(&n, c, predicted_iso_bytes));
        }
    }
    Ok(Plan {
        images,
        image_bytes,
        unique_image_bytes,
        bytes_to_fetch,
        dedup_ratio: if unique_image_bytes == 0 {
            1.0
        } else {
            image_bytes as f64 / unique_image_bytes as f64
        },
        predicted_iso_bytes,
        prediction: prediction.to_string(),
        media,
    })
}

fn check(summary: &engine::RunSummary) -> Result<()> {
    if summary.ok {
        return Ok(());
    }
    let failed: Vec<String> = summary
        .tasks
        .iter()
        .filter(|t| t.error.is_some())
        .map(|t| format!("{}: {}", t.name, t.error.clone().unwrap_or_default()))
        .collect();
    bail!(
        "planning needs the local tasks, which failed:\n{}",
        failed.join("\n")
    )
}

fn gb(b: u64) -> String {
    format!("{:.2} GB", b as f64 / 1e9)
}

/// The plan as text.
pub fn render_text(p: &Plan) -> String {
    let mut s = String::new();
    let w = p
        .images
        .iter()
        .map(|i| i.name.len() + i.tag.len() + 1)
        .max()
        .unwrap_or(5);
    let _ = writeln!(
        s,
        "{:<w$}  {:<14}  {:>14}  {:>14}  {:>14}",
        "IMAGE", "SOURCE", "COMPRESSED", "IN STORE", "SHARED"
    );
    for i in &p.images {
        let _ = writeln!(
            s,
            "{:<w$}  {:<14}  {:>14}  {:>14}  {:>14}",
            format!("{}:{}", i.name, i.tag),
            i.source,
            i.compressed_bytes,
            i.in_store_bytes,
            i.shared_bytes
        );
    }
    let _ = writeln!(
        s,
        "image bytes: {} ({} distinct, dedup ratio {:.3})",
        p.image_bytes, p.unique_image_bytes, p.dedup_ratio
    );
    let _ = writeln!(s, "bytes to fetch: {}", p.bytes_to_fetch);
    let _ = writeln!(
        s,
        "predicted ISO: {} bytes ({}, {})",
        p.predicted_iso_bytes,
        gb(p.predicted_iso_bytes),
        p.prediction
    );
    for m in &p.media {
        let _ = writeln!(
            s,
            "  {:<16} {:>15} bytes: {}",
            m.media,
            m.capacity,
            if m.fits {
                "fits".to_string()
            } else {
                format!("does not fit (at least {} volumes)", m.volumes_lower_bound)
            }
        );
    }
    s
}
