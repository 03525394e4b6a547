//! Blob sources chained behind the local store: local store → remote cache → upstream.
//!
//! A [`BlobSource`] is asked on a store miss ([`super::Store::fetch_chain`]) before the caller's
//! own upstream (a registry, an RPM mirror), and is offered every blob that enters the store from
//! elsewhere. The sources of a process are configured once ([`set_configured_sources`]) and
//! attached to the store when it is opened with [`super::Store::shared`], so call sites never
//! change when a source is added.

use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Result;

use super::Store;

/// A place blobs can come from and (optionally) go to.
pub trait BlobSource: Send + Sync {
    /// Short name for warnings (e.g. `remote cache oci://host/repo`).
    fn name(&self) -> String;

    /// Tries to put blob `hex` (of `size` bytes when known) into `store`, verified (use
    /// [`Store::put_verified_quiet`]); `Ok(false)` when the source does not have it. An error
    /// is reported as a warning and the next source is asked.
    fn fetch(&self, store: &Store, hex: &str, size: Option<u64>, what: &str) -> Result<bool>;

    /// Offered every blob that entered `store` from another source or a local build; a writable
    /// cache pushes it. Never fails the caller (report problems as warnings).
    fn offer(&self, _store: &Store, _hex: &str, _size: u64) {}
}

type Factory = Box<dyn Fn() -> Result<Vec<Arc<dyn BlobSource>>> + Send + Sync>;

fn slot() -> &'static Mutex<Option<Factory>> {
    static SLOT: OnceLock<Mutex<Option<Factory>>> = OnceLock::new();
    SLOT.get_or_init(Default::default)
}

/// Sets how the sources of this process are made (the CLI does it once from its options);
/// every store opened with [`Store::shared`] afterwards gets them.
pub fn set_configured_sources(
    f: impl Fn() -> Result<Vec<Arc<dyn BlobSource>>> + Send + Sync + 'static,
) {
    *slot().lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
}

/// The configured sources (none unless [`set_configured_sources`] was called).
pub fn configured_sources() -> Result<Vec<Arc<dyn BlobSource>>> {
    match &*slot().lock().unwrap_or_else(|e| e.into_inner()) {
        Some(f) => f(),
        None => Ok(Vec::new()),
    }
}
