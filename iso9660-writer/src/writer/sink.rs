//! The sequential image sink (page-aligned buffers, isomd5sum on its own thread) and the SHA-256
//! re-read of the final image.

use std::fs::File;
use std::io::{Read, SeekFrom};
use std::path::Path;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::{io_ctx, Image, MasterOptions, IO_BUF};
use crate::md5sum::{ImplanterState, Md5Implanter};
use crate::{Error, Result, SECTOR_SIZE};

/// SHA-256 of the first `len` bytes of `f`, reading on a helper thread (double buffering,
/// page-aligned buffers).
pub(super) fn sha256_of<W: Image>(f: &mut W, len: u64) -> Result<String> {
    f.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("seek output", e))?;
    let (tx, rx) = mpsc::sync_channel::<std::io::Result<Buf>>(4);
    let (ret_tx, ret_rx) = mpsc::channel::<Buf>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut pos = 0u64;
            while pos < len {
                let mut buf = ret_rx.try_recv().unwrap_or_else(|_| Buf::new());
                let n = ((len - pos) as usize).min(IO_BUF);
                buf.len = 0;
                let r = f.read_exact(&mut buf.spare()[..n]).map(|_| {
                    buf.len = n;
                    buf
                });
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    return;
                }
                pos += n as u64;
            }
        });
        let mut h = Sha256::new();
        let mut got = 0u64;
        while got < len {
            let buf = rx
                .recv()
                .map_err(|_| Error::Source("reader thread stopped".into()))?
                .map_err(|e| Error::io("re-read image for SHA-256", e))?;
            h.update(buf.data());
            got += buf.len as u64;
            let _ = ret_tx.send(buf);
        }
        Ok(hex::encode(h.finalize()))
    })
}

/// Copies the first `prefix` bytes of `prev` into `out` (same offsets) with `patch` (offset,
/// bytes) applied on the way, and returns the SHA-256 of `out`'s first `total` bytes: the
/// prefix as copied, then the rest re-read from `out`. One pass: a helper thread reads, this one
/// hashes and writes (the SHA-256 is the bottleneck, the copies ride along).
pub(super) fn copy_prefix_and_sha(
    prev: &File,
    out: &File,
    prefix: u64,
    total: u64,
    patch: (u64, &[u8]),
) -> Result<String> {
    use std::os::unix::fs::FileExt;
    let (tx, rx) = mpsc::sync_channel::<std::io::Result<(u64, Buf)>>(4);
    let (ret_tx, ret_rx) = mpsc::channel::<Buf>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut pos = 0u64;
            while pos < total {
                let mut buf = ret_rx.try_recv().unwrap_or_else(|_| Buf::new());
                // Prefix from the previous image, the rest from the new one (already written).
                let (src, end) = if pos < prefix {
                    (prev, prefix)
                } else {
                    (out, total)
                };
                let n = ((end - pos) as usize).min(IO_BUF);
                buf.len = 0;
                let r = src.read_exact_at(&mut buf.spare()[..n], pos).map(|_| {
                    buf.len = n;
                    (pos, buf)
                });
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    return;
                }
                pos += n as u64;
            }
        });
        let mut h = Sha256::new();
        let mut got = 0u64;
        while got < total {
            let (pos, mut buf) = rx
                .recv()
                .map_err(|_| Error::Source("reader thread stopped".into()))?
                .map_err(|e| Error::io("read the previous image's prefix", e))?;
            let end = pos + buf.len as u64;
            let (at, bytes) = patch;
            if pos < prefix && at < end && at + bytes.len() as u64 > pos {
                let from = at.max(pos);
                let to = (at + bytes.len() as u64).min(end);
                let data = &mut buf.raw[buf.off..buf.off + buf.len];
                data[(from - pos) as usize..(to - pos) as usize]
                    .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            }
            h.update(buf.data());
            if pos < prefix {
                out.write_all_at(buf.data(), pos)
                    .map_err(|e| Error::io("write image", e))?;
            }
            got += buf.len as u64;
            let _ = ret_tx.send(buf);
        }
        Ok(hex::encode(h.finalize()))
    })
}

/// A page-aligned I/O buffer of `IO_BUF` bytes (page-aligned user buffers make the kernel's
/// copies into and out of the page cache several times cheaper).
pub(super) struct Buf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl Buf {
    pub(super) fn new() -> Self {
        let raw = vec![0u8; IO_BUF + 4096];
        let off = (4096 - raw.as_ptr() as usize % 4096) % 4096;
        Buf { raw, off, len: 0 }
    }
    pub(super) fn data(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }
    pub(super) fn room(&self) -> usize {
        IO_BUF - self.len
    }
    pub(super) fn spare(&mut self) -> &mut [u8] {
        &mut self.raw[self.off + self.len..self.off + IO_BUF]
    }
}

/// What the MD5 thread receives: image bytes, or a request to export its state there.
pub(super) enum Msg {
    Data(Buf),
    Snapshot,
}

/// What the MD5 thread returns: (MD5 hex, fragment characters) and the exported state.
pub(super) type Md5Done = ((String, String), Option<ImplanterState>);

/// What [`Sink::finish`] returns: the isomd5sum result and the state exported by
/// [`Sink::snapshot`] (with `implant_md5`), or the SHA-256 of the image (without).
pub(super) struct Finished {
    pub(super) md5: Option<(String, String)>,
    pub(super) state: Option<ImplanterState>,
    pub(super) sha: Option<String>,
}

/// Buffers in flight between the writing thread and the MD5 thread.
pub(super) const POOL: usize = 8;

/// Writes the image sequentially, feeding the isomd5sum computation (on its own thread) or the
/// SHA-256 (when no implant is requested).
pub(super) struct Sink<'a, 'o, W: Image> {
    out: &'o mut W,
    pos: u64,
    buf: Buf,
    progress: Option<&'a (dyn Fn(u64) + Sync)>,
    md5_tx: Option<mpsc::SyncSender<Msg>>,
    recycle: Option<mpsc::Receiver<Buf>>,
    md5_thread: Option<std::thread::JoinHandle<Md5Done>>,
    sha: Option<Sha256>,
    allocated: usize,
}

impl<'a, 'o, W: Image> Sink<'a, 'o, W> {
    /// A sink writing from the stream's current position, which is image offset 0, or the
    /// position `resume` reached (the bytes before it are already in `out`).
    pub(super) fn new(
        out: &'o mut W,
        opts: &MasterOptions<'a>,
        total: u64,
        resume: Option<Md5Implanter>,
    ) -> Self {
        let mut s = Sink {
            out,
            pos: resume.as_ref().map_or(0, Md5Implanter::position),
            buf: Buf::new(),
            progress: opts.progress,
            md5_tx: None,
            recycle: None,
            md5_thread: None,
            sha: None,
            allocated: 1,
        };
        if opts.implant_md5 {
            let (tx, rx) = mpsc::sync_channel::<Msg>(POOL);
            let (rtx, rrx) = mpsc::channel::<Buf>();
            s.md5_thread = Some(std::thread::spawn(move || {
                let mut h = resume.unwrap_or_else(|| Md5Implanter::new(total));
                let mut state = None;
                for m in rx {
                    match m {
                        Msg::Data(b) => {
                            h.update(b.data());
                            let _ = rtx.send(b);
                        }
                        Msg::Snapshot => state = h.export(),
                    }
                }
                (h.finish(), state)
            }));
            s.md5_tx = Some(tx);
            s.recycle = Some(rrx);
        } else {
            s.sha = Some(Sha256::new());
        }
        s
    }

    /// Logical position (bytes accepted so far).
    pub(super) fn offset(&self) -> u64 {
        self.pos + self.buf.len as u64
    }

    /// A buffer from the pool (buffers come back from the MD5 thread once hashed); at most
    /// `POOL` buffers exist, so memory stays bounded whatever the image size.
    pub(super) fn fresh_buf(&mut self) -> Buf {
        let Some(r) = self.recycle.as_ref() else {
            return Buf::new();
        };
        let mut b = match r.try_recv() {
            Ok(b) => b,
            Err(_) if self.allocated < POOL => {
                self.allocated += 1;
                Buf::new()
            }
            Err(_) => r.recv().unwrap_or_else(|_| Buf::new()),
        };
        b.len = 0;
        b
    }

    pub(super) fn flush_buf(&mut self) -> Result<()> {
        if self.buf.len == 0 {
            return Ok(());
        }
        self.out
            .write_all(self.buf.data())
            .map_err(|e| Error::io("write image", e))?;
        self.pos += self.buf.len as u64;
        if let Some(sha) = &mut self.sha {
            sha.update(self.buf.data());
        }
        if self.md5_tx.is_some() {
            let next = self.fresh_buf();
            let full = std::mem::replace(&mut self.buf, next);
            if let Some(tx) = &self.md5_tx {
                tx.send(Msg::Data(full))
                    .map_err(|_| Error::Md5("MD5 thread stopped".into()))?;
            }
        } else {
            self.buf.len = 0;
        }
        if let Some(p) = self.progress {
            p(self.pos);
        }
        Ok(())
    }

    pub(super) fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = self.buf.room().min(data.len());
            self.buf.spare()[..n].copy_from_slice(&data[..n]);
            self.buf.len += n;
            data = &data[n..];
            if self.buf.room() == 0 {
                self.flush_buf()?;
            }
        }
        Ok(())
    }

    pub(super) fn zeros(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let k = (self.buf.room() as u64).min(n) as usize;
            self.buf.spare()[..k].fill(0);
            self.buf.len += k;
            n -= k as u64;
            if self.buf.room() == 0 {
                self.flush_buf()?;
            }
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of `path`, then zero-pads to a sector boundary.
    pub(super) fn copy_file(&mut self, path: &Path, size: u64) -> Result<()> {
        let mut f = File::open(path).map_err(io_ctx("open", path))?;
        let mut left = size;
        while left > 0 {
            if self.buf.room() == 0 {
                self.flush_buf()?;
            }
            let want = (self.buf.room() as u64).min(left) as usize;
            let n = f
                .read(&mut self.buf.spare()[..want])
                .map_err(io_ctx("read", path))?;
            if n == 0 {
                return Err(Error::Source(format!(
                    "{}: file shrank while mastering (expected {size} bytes)",
                    path.display()
                )));
            }
            self.buf.len += n;
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        if f.read(&mut probe).map_err(io_ctx("read", path))? != 0 {
            return Err(Error::Source(format!(
                "{}: file grew while mastering (expected {size} bytes)",
                path.display()
            )));
        }
        let pad = (SECTOR_SIZE - size % SECTOR_SIZE) % SECTOR_SIZE;
        self.zeros(pad)
    }

    /// Asks the MD5 thread to export its state at the current offset (returned by
    /// [`finish`](Self::finish)); no-op without `implant_md5`.
    pub(super) fn snapshot(&mut self) -> Result<()> {
        self.flush_buf()?;
        if let Some(tx) = &self.md5_tx {
            tx.send(Msg::Snapshot)
                .map_err(|_| Error::Md5("MD5 thread stopped".into()))?;
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<Finished> {
        self.flush_buf()?;
        self.md5_tx = None;
        let (md5, state) = match self.md5_thread.take() {
            Some(t) => {
                let (m, s) = t
                    .join()
                    .map_err(|_| Error::Md5("MD5 thread panicked".into()))?;
                (Some(m), s)
            }
            None => (None, None),
        };
        let sha = self.sha.take().map(|s| hex::encode(s.finalize()));
        Ok(Finished { md5, state, sha })
    }
}
