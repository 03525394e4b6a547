//! The remote cache as a [`BlobSource`]: asked on a store miss, offered every new blob.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Result;

use super::client::Client;
use super::{Config, Mode};
use crate::store::{warn, BlobSource, Store};

/// Counters of what the cache did (for tests and benchmarks).
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Blobs taken from the cache (verified).
    pub hits: AtomicU64,
    /// Their bytes.
    pub hit_bytes: AtomicU64,
    /// Blobs the cache did not have.
    pub misses: AtomicU64,
    /// Blobs the cache had with wrong bytes or size (ignored).
    pub rejected: AtomicU64,
    /// Blobs pushed (bytes sent or mounted).
    pub pushed: AtomicU64,
    /// Bytes sent by pushes.
    pub pushed_bytes: AtomicU64,
    /// Task results restored from the cache.
    pub task_hits: AtomicU64,
    /// Task records the cache did not have.
    pub task_misses: AtomicU64,
    /// Task records ignored (bad record, missing or bad blob).
    pub task_rejected: AtomicU64,
    /// Task records pushed.
    pub task_records: AtomicU64,
}

/// A remote blob cache on an OCI registry repository.
pub struct RemoteCache {
    cfg: Config,
    pub(super) client: Client,
    /// Set at the first transport failure: the cache is bypassed for the rest of the process.
    down: AtomicBool,
    /// What it did.
    pub stats: CacheStats,
}

/// A reader that remembers whether the transport failed (as opposed to wrong bytes).
struct Watch<'a, R> {
    inner: R,
    failed: &'a AtomicBool,
}

impl<R: Read> Read for Watch<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| {
            self.failed.store(true, Ordering::Relaxed);
        })
    }
}

impl RemoteCache {
    /// A cache client for `cfg` (no request is sent yet).
    pub fn new(cfg: Config) -> Result<Self> {
        Ok(RemoteCache {
            client: Client::new(&cfg)?,
            cfg,
            down: AtomicBool::new(false),
            stats: CacheStats::default(),
        })
    }

    /// Requests sent to the cache.
    pub fn requests(&self) -> u64 {
        self.client.requests.load(Ordering::Relaxed)
    }

    /// Whether the cache was bypassed after a failure.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Read or read-write.
    pub fn mode(&self) -> Mode {
        self.cfg.mode
    }

    /// `remote cache oci://…`, for messages.
    pub(super) fn name_text(&self) -> String {
        format!("remote cache {}", self.cfg.url)
    }

    /// Marks the cache down after a transport failure; warns once.
    pub(super) fn fail(&self, e: &anyhow::Error) {
        if !self.down.swap(true, Ordering::Relaxed) {
            warn(&format!(
                "{}: unreachable or failing, bypassed for the rest of this run: {e:#}",
                self.name()
            ));
        }
    }
}

impl BlobSource for RemoteCache {
    fn name(&self) -> String {
        format!("remote cache {}", self.cfg.url)
    }

    fn fetch(&self, store: &Store, hex: &str, size: Option<u64>, _what: &str) -> Result<bool> {
        if self.is_down() {
            return Ok(false);
        }
        let len = match self.client.head(hex) {
            Ok(Some(len)) => len,
            Ok(None) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
            Err(e) => {
                self.fail(&e);
                return Ok(false);
            }
        };
        if let Some(s) = size.filter(|s| *s != len) {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            anyhow::bail!("has {len} bytes, expected {s}; ignored");
        }
        let body = match self.client.get(hex) {
            Ok(b) => b,
            Err(e) => {
                self.fail(&e);
                return Ok(false);
            }
        };
        let failed = AtomicBool::new(false);
        let mut r = Watch {
            inner: body.into_reader(),
            failed: &failed,
        };
        match store.put_verified_quiet(hex, Some(len), &mut r, "wrong bytes in the cache, ignored")
        {
            Ok(n) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                self.stats.hit_bytes.fetch_add(n, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) if failed.load(Ordering::Relaxed) => {
                self.fail(&e);
                Ok(false)
            }
            Err(e) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn offer(&self, store: &Store, hex: &str, size: u64) {
        if self.cfg.mode == Mode::Read || self.is_down() {
            return;
        }
        let r = (|| -> Result<()> {
            if self.client.head(hex)? == Some(size) {
                return Ok(());
            }
            let open = |off: u64, len: u64| -> Result<Box<dyn Read>> {
                let mut f = store.open_blob(hex)?;
                f.seek(SeekFrom::Start(off))?;
                Ok(Box::new(f.take(len)))
            };
            let sent = self.client.push(hex, size, None, &open)?;
            self.stats.pushed.fetch_add(1, Ordering::Relaxed);
            if sent {
                self.stats.pushed_bytes.fetch_add(size, Ordering::Relaxed);
            }
            Ok(())
        })();
        if let Err(e) = r {
            self.fail(&e.context(format!("cannot push sha256:{hex}")));
        }
    }
}
