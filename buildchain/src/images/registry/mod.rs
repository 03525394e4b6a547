//! Registry client (OCI distribution / Docker Registry HTTP API v2) over ureq (SPEC §5.2).
//!
//! - manifests with an `Accept` listing OCI manifest + index and Docker v2s2 manifest + list;
//!   indexes resolved to a platform (or kept with every platform);
//! - blobs streamed into the [`Store`], hashed while streaming, refused on digest/size mismatch;
//!   redirects followed (without forwarding credentials to the redirect target);
//! - anonymous bearer tokens from `WWW-Authenticate`, basic auth, credentials from
//!   `REGISTRY_AUTH_FILE` / `$DOCKER_CONFIG/config.json` / `~/.docker/config.json`;
//! - HTTPS with the system roots; plain HTTP only for `--insecure` and loopback hosts;
//! - retries with exponential backoff on connection errors, resets, 429 (honouring
//!   `Retry-After`), 5xx and truncated bodies; a retried blob restarts from zero (the partial temp
//!   file is discarded), never keeps partial bytes;
//! - bounded downloads: connect timeout, per-read and stall timeouts (less than
//!   [`STALL_PROGRESS_BYTES`] received within `BUILDCHAIN_FETCH_STALL_SECS`, default 60, fails the
//!   attempt), and a blob whose declared size exceeds the free space of the store's file system
//!   or `BUILDCHAIN_MAX_BLOB_BYTES` is refused before any byte is fetched;
//! - a blob already in the store is never fetched; concurrent requests for the same blob in one
//!   process are collapsed into one download.

mod auth;
mod credentials;
mod http;
mod pool;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use rayon::prelude::*;

pub use http::{ClientOptions, Stats, MAX_MANIFEST, STALL_PROGRESS_BYTES};
use http::{Failure, Watch};
pub use pool::{fetch_many, missing_blobs, pool};

pub(crate) use auth::{bearer_from_answer, parse_challenge, pct, token_url};
pub(crate) use credentials::load_creds;
pub(crate) use http::system_roots;

use super::layout::resolve_from_store;
use super::manifest::{Descriptor, Manifest, Platform, ACCEPT_MANIFESTS};
use super::reference::{digest_hex, Reference};
use super::Resolved;
use crate::fsutil::sha256_bytes;
use crate::progress::Progress;
use crate::store::Store;

/// A registry client; cheap to share between threads.
pub struct RegistryClient {
    agent: ureq::Agent,
    opts: ClientOptions,
    creds: std::collections::BTreeMap<String, (String, String)>,
    auth: Mutex<HashMap<(String, String), String>>,
    /// Network counters.
    pub stats: Stats,
}

impl RegistryClient {
    /// Fetches a manifest (by tag or digest); verifies it when `reference` is a digest. Returns
    /// its bytes and `Content-Type`. A manifest over 16 MiB is refused.
    pub fn get_manifest(
        &self,
        r: &Reference,
        reference: &str,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let url = self.url(r, &format!("manifests/{reference}"));
        let (bytes, ct) = self.with_retries(&format!("{what}: manifest {reference}"), || {
            let resp = self.get(r, &url, Some(ACCEPT_MANIFESTS))?;
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut body = Vec::new();
            resp.into_body()
                .into_reader()
                .take(MAX_MANIFEST + 1)
                .read_to_end(&mut body)
                .map_err(|e| Failure::Retry(anyhow!("{url}: body: {e}"), None))?;
            if body.len() as u64 > MAX_MANIFEST {
                return Err(Failure::Fatal(anyhow!(
                    "manifest {reference} is larger than the 16 MiB limit"
                )));
            }
            if let Ok(hex) = digest_hex(reference) {
                let got = sha256_bytes(&body);
                if got != hex {
                    return Err(Failure::Fatal(anyhow!(
                        "manifest content does not match its digest: expected {reference}, got sha256:{got}"
                    )));
                }
            }
            Ok((body, ct))
        })?;
        Ok((bytes, ct))
    }

    /// Resolves `r` into manifests stored in `store` (image manifest for `platform`, or the
    /// whole index when `keep_index`). A digest reference whose manifests are already in the
    /// store needs no network.
    pub fn resolve(
        &self,
        store: &Store,
        r: &Reference,
        platform: &Platform,
        keep_index: bool,
        what: &str,
    ) -> Result<Resolved> {
        if let Some(d) = &r.digest {
            let hex = digest_hex(d)?;
            // Local store, then the blob sources (remote cache); the registry below otherwise.
            let _ = store.fetch_chain(hex, None, what, &mut || Ok(0));
            if store.contains(hex) {
                if let Ok(res) = resolve_from_store(store, hex, platform, keep_index, what) {
                    return Ok(res);
                }
            }
        }
        let (bytes, ct) = self.get_manifest(r, r.manifest_ref(), what)?;
        let m = Manifest::parse(&bytes, ct.as_deref())
            .with_context(|| format!("{what}: manifest of {r}"))?;
        let top_hex = store.put_bytes(&bytes)?;
        if let Manifest::Index { manifests, .. } = &m {
            let wanted: Vec<Descriptor> = if keep_index {
                manifests.iter().map(|(d, _)| d.clone()).collect()
            } else {
                vec![m.select(platform).with_context(|| format!("{what}: {r}"))?]
            };
            for d in wanted {
                store.fetch_chain(d.hex(), Some(d.size), what, &mut || {
                    let (b, _) = self.get_manifest(r, &d.digest, what)?;
                    store.put_bytes(&b)?;
                    Ok(0)
                })?;
            }
        }
        resolve_from_store(store, &top_hex, platform, keep_index, what)
    }

    /// Downloads one blob into the store unless present. Returns bytes downloaded (0 if it was
    /// already there).
    pub fn fetch_blob(
        &self,
        store: &Store,
        r: &Reference,
        d: &Descriptor,
        what: &str,
        progress: Option<&dyn Progress>,
    ) -> Result<u64> {
        let hex = d.hex().to_string();
        if store.contains(&hex) {
            return Ok(0);
        }
        self.check_size(store, d, what)?;
        store.fetch_chain(&hex, Some(d.size), what, &mut || {
            self.fetch_blob_upstream(store, r, d, what, progress)
        })
    }

    /// Downloads one blob from the registry itself (retries, stall timeout) into the store.
    fn fetch_blob_upstream(
        &self,
        store: &Store,
        r: &Reference,
        d: &Descriptor,
        what: &str,
        progress: Option<&dyn Progress>,
    ) -> Result<u64> {
        let hex = d.hex().to_string();
        let url = self.url(r, &format!("blobs/{}", d.digest));
        let stall = self.opts.stall_timeout;
        let n = self.with_retries(&format!("{what}: blob {}", d.digest), || {
            let resp = self.get(r, &url, None)?;
            let io_error = AtomicBool::new(false);
            let stalled = AtomicBool::new(false);
            let mut w = Watch {
                inner: resp.into_body().into_reader(),
                n: 0,
                io_error: &io_error,
                stalled: &stalled,
                stall,
                mark: Instant::now(),
                since_mark: 0,
                progress,
                stats: &self.stats,
            };
            match store.put_verified(&hex, Some(d.size), &mut w, what) {
                Ok(n) => Ok(n),
                Err(_) if stalled.load(Ordering::Relaxed) => Err(Failure::Retry(
                    anyhow!(
                        "{url}: stalled: less than {STALL_PROGRESS_BYTES} bytes received in {} s (BUILDCHAIN_FETCH_STALL_SECS)",
                        stall.as_secs_f64()
                    ),
                    None,
                )),
                Err(e) if io_error.load(Ordering::Relaxed) || w.n < d.size => Err(Failure::Retry(
                    anyhow!(
                        "{url}: incomplete body ({} of {} bytes): {e:#}",
                        w.n,
                        d.size
                    ),
                    None,
                )),
                Err(e) => Err(Failure::Fatal(e)),
            }
        })?;
        self.stats.blobs.fetch_add(1, Ordering::Relaxed);
        Ok(n)
    }

    /// Refuses a blob whose declared size exceeds the configured maximum or the free space of
    /// the store's file system.
    pub fn check_size(&self, store: &Store, d: &Descriptor, what: &str) -> Result<()> {
        store.check_room(
            &format!("{what}: blob {}", d.digest),
            d.size,
            self.opts.max_blob_bytes,
        )
    }

    /// Downloads every blob of `image` missing from the store, in parallel (bounded pool).
    pub fn fetch_image_blobs(
        &self,
        store: &Store,
        r: &Reference,
        image: &Resolved,
        what: &str,
        progress: Option<&dyn Progress>,
    ) -> Result<()> {
        let missing = missing_blobs(store, image);
        for d in &missing {
            self.check_size(store, d, what)?;
        }
        if let Some(p) = progress {
            p.add_total(missing.iter().map(|d| d.size).sum());
        }
        pool().install(|| {
            missing
                .par_iter()
                .try_for_each(|d| self.fetch_blob(store, r, d, what, progress).map(|_| ()))
        })
    }
}
