//! The one pass over a medium: an ISO read once in chunks (MD5 and SHA-256 threads), or a
//! directory read file by file, into [`Medium`] facts.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::solution::validate::Report;

use super::{wants_capture, Facts, FileRec, Medium, RpmRaw};

/// Largest file captured in memory for the checks.
const CAPTURE_LIMIT: u64 = 4 << 20;
/// Largest RPM lead + signature + header kept in memory.
const RPM_HEADER_LIMIT: usize = 64 << 20;
/// Chunk size of the sequential read.
const CHUNK: usize = 4 << 20;
/// Chunks queued for each hashing thread.
const IN_FLIGHT: usize = 4;
/// Chunk buffers allocated at most (bounds the memory of the pass).
const MAX_BUFFERS: usize = 2 * IN_FLIGHT + 2;

/// Receives the bytes of one stored content.
struct Sink {
    sha: Sha256,
    len: u64,
    capture: Option<Vec<u8>>,
    rpm: Option<RpmSink>,
}

struct RpmSink {
    prefix: Vec<u8>,
    header_end: Option<usize>,
    payload: Sha256,
    error: Option<String>,
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

impl RpmSink {
    fn new() -> Self {
        RpmSink {
            prefix: Vec::new(),
            header_end: None,
            payload: Sha256::new(),
            error: None,
        }
    }
    /// Where the header ends, once enough of the prefix is known: lead (96) + signature header
    /// (16 + 16·n + data, padded to 8) + header (16 + 16·n + data).
    fn compute_end(&self) -> Option<Result<usize, String>> {
        let p = &self.prefix;
        if p.len() < 96 + 16 {
            return None;
        }
        let sig_len = 16 + 16 * be32(p, 96 + 8) + be32(p, 96 + 12);
        let hdr = 96 + sig_len.div_ceil(8) * 8;
        if p.len() < hdr + 16 {
            return None;
        }
        let end = hdr + 16 + 16 * be32(p, hdr + 8) + be32(p, hdr + 12);
        Some(if end > RPM_HEADER_LIMIT {
            Err(format!(
                "RPM header of {end} bytes (limit {RPM_HEADER_LIMIT})"
            ))
        } else {
            Ok(end)
        })
    }
    fn update(&mut self, mut buf: &[u8]) {
        if self.error.is_some() {
            return;
        }
        while self.header_end.is_none() && !buf.is_empty() {
            let n = buf.len().min(4096);
            self.prefix.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            match self.compute_end() {
                None => {}
                Some(Err(e)) => {
                    self.error = Some(e);
                    return;
                }
                Some(Ok(end)) if self.prefix.len() >= end => {
                    self.payload.update(&self.prefix[end..]);
                    self.prefix.truncate(end);
                    self.header_end = Some(end);
                }
                Some(Ok(_)) => {}
            }
        }
        if self.header_end.is_some() {
            self.payload.update(buf);
        }
    }
}

impl Sink {
    fn new(path: &str, size: u64) -> Self {
        Sink {
            sha: Sha256::new(),
            len: 0,
            capture: (wants_capture(path) && size <= CAPTURE_LIMIT)
                .then(|| Vec::with_capacity(size as usize)),
            rpm: path.ends_with(".rpm").then(RpmSink::new),
        }
    }
    fn update(&mut self, buf: &[u8]) {
        self.sha.update(buf);
        self.len += buf.len() as u64;
        if let Some(c) = &mut self.capture {
            if (c.len() + buf.len()) as u64 <= CAPTURE_LIMIT {
                c.extend_from_slice(buf);
            }
        }
        if let Some(r) = &mut self.rpm {
            r.update(buf);
        }
    }
    fn finish(self) -> Facts {
        Facts {
            sha256: hex::encode(self.sha.finalize()),
            len: self.len,
            captured: self.capture,
            rpm: self.rpm.map(|r| RpmRaw {
                prefix: r.prefix,
                header_end: r.header_end,
                payload_sha256: hex::encode(r.payload.finalize()),
                error: r.error,
            }),
            error: None,
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn read_dir(root: &Path, rep: &mut Report) -> Option<Medium> {
    use rayon::prelude::*;
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
    {
        match e {
            Ok(e) if e.file_type().is_file() => {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                files.push((
                    FileRec {
                        path: crate::tasks::rel_name(e.path(), root),
                        size,
                    },
                    e.into_path(),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                rep.error("TREE_UNREADABLE", "", format!("cannot walk the tree: {e}"));
                return None;
            }
        }
    }
    rep.stats.entries = files.len() as u64;
    let facts: HashMap<String, Facts> = files
        .par_iter()
        .map(|(rec, p)| {
            let mut sink = Sink::new(&rec.path, rec.size);
            let r = File::open(p).and_then(|f| {
                std::io::copy(
                    &mut std::io::BufReader::with_capacity(1 << 20, f),
                    &mut sink,
                )
            });
            let mut facts = sink.finish();
            if let Err(e) = r {
                facts.error = Some(format!("cannot read {}: {e}", p.display()));
            }
            (rec.path.clone(), facts)
        })
        .collect();
    for f in facts.values() {
        rep.stats.blobs_hashed += 1;
        rep.stats.bytes_hashed += f.len;
    }
    Some(Medium {
        files: files.into_iter().map(|(r, _)| r).collect(),
        facts,
    })
}

/// One contiguous byte range of a stored content.
#[derive(Clone, Copy, Debug)]
struct Segment {
    start: u64,
    len: u64,
    sink: usize,
}

pub(super) fn read_iso(path: &Path, rep: &mut Report) -> Option<Medium> {
    use iso9660_writer::{EntryKind, IsoReader, SECTOR_SIZE};
    let open = || File::open(path).map(|f| std::io::BufReader::with_capacity(1 << 16, f));
    let mut reader = match open()
        .map_err(|e| e.to_string())
        .and_then(|f| IsoReader::open(f).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            rep.error(
                "ISO_UNREADABLE",
                "",
                format!("not a readable ISO-9660 image: {e}"),
            );
            return None;
        }
    };
    let entries = match reader.walk() {
        Ok(e) => e,
        Err(e) => {
            rep.error("ISO_MALFORMED", "", format!("cannot walk the image: {e}"));
            return None;
        }
    };
    rep.volume_id = Some(reader.volume_id().to_string());
    let volume_size = reader.volume_sectors() as u64 * SECTOR_SIZE;
    let app_use = reader.application_use().to_vec();
    drop(reader);
    let file_len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => {
            rep.error("ISO_UNREADABLE", "", format!("cannot stat: {e}"));
            return None;
        }
    };
    if volume_size > file_len {
        rep.error(
            "ISO_TRUNCATED",
            "",
            format!(
                "the volume is {volume_size} bytes ({} sectors) but the file holds only {file_len} bytes",
                volume_size / SECTOR_SIZE
            ),
        );
    } else if volume_size < file_len {
        rep.warn(
            "ISO_TRAILING_DATA",
            "",
            format!(
                "the file is {file_len} bytes, {} more than the volume",
                file_len - volume_size
            ),
        );
    }
    // Map extents to sinks: one sink per distinct extent list (hard links share it).
    let mut files = Vec::new();
    let mut sink_of: BTreeMap<Vec<(u32, u32)>, usize> = BTreeMap::new();
    let mut sinks: Vec<Option<Sink>> = Vec::new();
    let mut file_sink: Vec<(String, usize)> = Vec::new();
    let mut segments: Vec<Segment> = Vec::new();
    let mut bad: Vec<(String, String)> = Vec::new();
    for e in &entries {
        if e.kind != EntryKind::File {
            continue;
        }
        files.push(FileRec {
            path: e.path.clone(),
            size: e.size,
        });
        let key: Vec<(u32, u32)> = e.extents.iter().map(|x| (x.lba, x.len)).collect();
        let end = e
            .extents
            .iter()
            .map(|x| x.lba as u64 * SECTOR_SIZE + x.len as u64)
            .max()
            .unwrap_or(0);
        if end > file_len {
            bad.push((
                e.path.clone(),
                format!(
                    "its data ends at byte {end}, beyond the end of the file ({file_len} bytes)"
                ),
            ));
            continue;
        }
        let id = *sink_of.entry(key).or_insert_with(|| {
            sinks.push(Some(Sink::new(&e.path, e.size)));
            for x in &e.extents {
                if x.len > 0 {
                    segments.push(Segment {
                        start: x.lba as u64 * SECTOR_SIZE,
                        len: x.len as u64,
                        sink: sinks.len() - 1,
                    });
                }
            }
            sinks.len() - 1
        });
        file_sink.push((e.path.clone(), id));
    }
    rep.stats.entries = entries.len() as u64;
    segments.sort_by_key(|s| (s.start, s.sink));
    // Segments must not overlap (a hostile image could make them); overlapping ones and
    // out-of-order multi-extent files are read on their own afterwards.
    let mut order_ok = vec![true; sinks.len()];
    {
        let mut last_end = 0u64;
        let mut last_start: HashMap<usize, u64> = HashMap::new();
        for s in &segments {
            if s.start < last_end {
                order_ok[s.sink] = false;
            }
            if let Some(prev) = last_start.insert(s.sink, s.start) {
                if prev > s.start {
                    order_ok[s.sink] = false;
                }
            }
            last_end = last_end.max(s.start + s.len);
        }
    }
    segments.retain(|s| order_ok[s.sink]);
    let read_end = file_len.min(
        segments
            .iter()
            .map(|s| s.start + s.len)
            .max()
            .unwrap_or(0)
            .max(volume_size),
    );

    // The pass: this thread reads and runs the MD5; the hashing thread runs the SHA-256s.
    let implanted = app_use.starts_with(b"ISO MD5SUM = ");
    let pvd_app = 16 * SECTOR_SIZE + 883;
    let mut sinks_vec: Vec<Option<Sink>> = sinks;
    let pass = std::thread::scope(|scope| -> Result<(Option<(String, String)>, u64), String> {
        let (tx, rx) = mpsc::sync_channel::<(u64, Arc<Vec<u8>>)>(IN_FLIGHT);
        let (back_tx, back_rx) = mpsc::channel::<Arc<Vec<u8>>>();
        let back_tx_main = back_tx.clone();
        let segs = &segments;
        let sinks_ref = &mut sinks_vec;
        let hasher = scope.spawn(move || {
            let mut i = 0usize;
            for (off, buf) in rx {
                let end = off + buf.len() as u64;
                while i < segs.len() && segs[i].start + segs[i].len <= off {
                    i += 1;
                }
                let mut j = i;
                while j < segs.len() && segs[j].start < end {
                    let s = segs[j];
                    let a = s.start.max(off);
                    let b = (s.start + s.len).min(end);
                    if a < b {
                        if let Some(sink) = sinks_ref[s.sink].as_mut() {
                            sink.update(&buf[(a - off) as usize..(b - off) as usize]);
                        }
                    }
                    j += 1;
                }
                let _ = back_tx.send(buf);
            }
        });
        // MD5 on its own thread too: this thread only reads.
        let (md5_tx, md5_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(IN_FLIGHT);
        let md5_back = back_tx_main.clone();
        let md5_thread = scope.spawn(move || {
            let mut md5 = implanted.then(|| iso9660_writer::md5sum::Md5Implanter::new(volume_size));
            for buf in md5_rx {
                if let Some(m) = md5.as_mut() {
                    m.update(&buf);
                }
                let _ = md5_back.send(buf);
            }
            md5.map(|m| m.finish())
        });
        drop(back_tx_main);
        let mut f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut allocated = 0usize;
        let mut off = 0u64;
        let mut result = Ok(());
        while off < read_end {
            // A buffer comes back twice (both threads); it is free when the second copy returns.
            let mut buf = if allocated < MAX_BUFFERS {
                allocated += 1;
                vec![0u8; CHUNK]
            } else {
                let mut got = None;
                while got.is_none() {
                    match back_rx.recv() {
                        Ok(a) => got = Arc::try_unwrap(a).ok(),
                        Err(_) => got = Some(vec![0u8; CHUNK]),
                    }
                }
                got.unwrap_or_default()
            };
            let want = ((read_end - off) as usize).min(CHUNK);
            buf.resize(want, 0);
            if let Err(e) = f.read_exact(&mut buf) {
                result = Err(format!("cannot read the image at offset {off}: {e}"));
                break;
            }
            // isomd5sum reads the application-use field as spaces; no file extent covers it.
            if off <= pvd_app + 512 && off + want as u64 > pvd_app {
                let s = pvd_app.saturating_sub(off) as usize;
                let e = ((pvd_app + 512 - off) as usize).min(want);
                buf[s..e].fill(b' ');
            }
            let a = Arc::new(buf);
            if tx.send((off, a.clone())).is_err() || md5_tx.send(a).is_err() {
                result = Err("a hashing thread stopped".to_string());
                break;
            }
            off += want as u64;
        }
        drop(tx);
        drop(md5_tx);
        hasher
            .join()
            .map_err(|_| "the hashing thread failed".to_string())?;
        let md5 = md5_thread
            .join()
            .map_err(|_| "the MD5 thread failed".to_string())?;
        result?;
        Ok((md5, off))
    });
    let (md5, _read) = match pass {
        Ok(p) => p,
        Err(e) => {
            rep.error("ISO_UNREADABLE", "", e);
            return None;
        }
    };
    // isomd5sum verdict.
    rep.md5 = Some(if !implanted {
        "not-implanted".to_string()
    } else {
        let text = String::from_utf8_lossy(&app_use).into_owned();
        let field = |k: &str| {
            text.split(';')
                .filter_map(|f| f.split_once('='))
                .find(|(a, _)| a.trim() == k)
                .map(|(_, v)| v.trim().to_string())
        };
        match (md5, field("ISO MD5SUM")) {
            (Some((got, frags)), Some(want)) => {
                let frag_ok = field("FRAGMENT SUMS").is_none_or(|f| {
                    // checkisomd5 checks slots 1..count-1; the last slot is never filled.
                    let n = f.len().min(frags.len()).saturating_sub(3);
                    f.as_bytes()[..n] == frags.as_bytes()[..n]
                });
                if got == want.to_ascii_lowercase() && frag_ok {
                    "pass".to_string()
                } else {
                    rep.error(
                        "MD5_MISMATCH",
                        "",
                        format!("implanted MD5 {want} does not match the image (computed {got})"),
                    );
                    "fail".to_string()
                }
            }
            _ => {
                rep.error("MD5_CHECK_FAILED", "", "cannot check the implanted MD5");
                "error".to_string()
            }
        }
    });
    let mut done: Vec<Option<Facts>> = sinks_vec.into_iter().map(|s| s.map(Sink::finish)).collect();
    // Files read on their own (overlapping or out-of-order extents): rare, hostile images only.
    let by_path: HashMap<&str, &iso9660_writer::Entry> =
        entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut reread = None;
    for (p, id) in &file_sink {
        if order_ok[*id] {
            continue;
        }
        if reread.is_none() {
            match open()
                .map_err(|e| e.to_string())
                .and_then(|f| IsoReader::open(f).map_err(|e| e.to_string()))
            {
                Ok(r) => reread = Some(r),
                Err(e) => {
                    rep.error(
                        "ISO_UNREADABLE",
                        "",
                        format!("cannot reopen the image: {e}"),
                    );
                    return None;
                }
            }
        }
        let reread = reread.as_mut()?;
        if let Some(e) = by_path.get(p.as_str()) {
            let mut sink = Sink::new(p, e.size);
            let r = reread.read_file(e, &mut sink);
            let mut facts = sink.finish();
            if let Err(x) = r {
                facts.error = Some(x.to_string());
            }
            done[*id] = Some(facts);
            order_ok[*id] = true;
        }
    }
    let mut facts = HashMap::new();
    for f in done.iter().flatten() {
        rep.stats.blobs_hashed += 1;
        rep.stats.bytes_hashed += f.len;
    }
    for (p, id) in file_sink {
        if let Some(f) = done.get(id).cloned().flatten() {
            facts.insert(p, f);
        }
    }
    for (p, msg) in bad {
        facts.insert(
            p,
            Facts {
                error: Some(msg),
                ..Facts::default()
            },
        );
    }
    Some(Medium { files, facts })
}
