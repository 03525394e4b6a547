//! The fetch pool: bounded parallel downloads of many images' blobs, each blob once.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::RegistryClient;
use crate::images::manifest::{Descriptor, Platform};
use crate::images::reference::Reference;
use crate::images::Resolved;
use crate::progress::Progress;
use crate::store::Store;

/// Bounded pool for network work (`BUILDCHAIN_FETCH_JOBS`, default 8).
pub fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::env::var("BUILDCHAIN_FETCH_JOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(8);
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("fetch-{i}"))
            .build()
            .expect("cannot start the fetch thread pool")
    })
}

/// Blobs (config + layers of every platform) of `image` not yet in the store, deduplicated.
pub fn missing_blobs(store: &Store, image: &Resolved) -> Vec<Descriptor> {
    let mut seen = BTreeMap::new();
    for inst in &image.instances {
        for d in std::iter::once(&inst.config).chain(inst.layers.iter()) {
            if !store.contains(d.hex()) {
                seen.entry(d.hex().to_string()).or_insert_with(|| d.clone());
            }
        }
    }
    seen.into_values().collect()
}

/// Fetches several registry images at once: manifests first (in parallel), then every missing
/// blob exactly once across all images (in parallel), then each image's `dir:` layout.
/// `jobs` = (reference, label for errors, destination directory).
pub fn fetch_many(
    client: &RegistryClient,
    store: &Store,
    jobs: &[(Reference, String, std::path::PathBuf)],
    platform: &Platform,
    progress: Option<&dyn Progress>,
) -> Result<Vec<Resolved>> {
    if jobs.is_empty() {
        bail!("nothing to fetch");
    }
    let resolved: Vec<Resolved> = pool().install(|| {
        jobs.par_iter()
            .map(|(r, what, _)| client.resolve(store, r, platform, false, what))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut unique: BTreeMap<String, (usize, Descriptor)> = BTreeMap::new();
    for (i, res) in resolved.iter().enumerate() {
        for d in missing_blobs(store, res) {
            unique.entry(d.hex().to_string()).or_insert((i, d));
        }
    }
    if let Some(p) = progress {
        p.add_total(unique.values().map(|(_, d)| d.size).sum());
    }
    let work: Vec<(usize, Descriptor)> = unique.into_values().collect();
    for (i, d) in &work {
        client.check_size(store, d, &jobs[*i].1)?;
    }
    pool().install(|| {
        work.par_iter().try_for_each(|(i, d)| {
            let (r, what, _) = &jobs[*i];
            client.fetch_blob(store, r, d, what, progress).map(|_| ())
        })
    })?;
    for ((_, _, dest), res) in jobs.iter().zip(&resolved) {
        crate::images::layout::write_dir_layout(store, res, dest)?;
    }
    Ok(resolved)
}
