//! `buildchain verify ISO|DIR`: one offline pass over a medium (SPEC §12).
//!
//! For an ISO, the file is read **once**, sequentially, in 4 MiB chunks: one thread reads, one
//! runs the isomd5sum MD5 and one the SHA-256 of every file extent (extents are
//! mapped to files beforehand by walking the directory records with the hardened reader). Small
//! files the checks need (the index, its signature, `SHA256SUMS`, image manifests, Salt sources)
//! are captured on the way, and RPMs keep only their headers plus a payload digest, so memory is
//! bounded whatever the medium's size. A directory is read file by file, once each.
//!
//! Findings use the model of `solution validate` ([`Report`]): any error means exit 1.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::completeness::{self, RpmDeps, Served, REGISTRY_INCLUDE};
use super::contents::{ContentIndex, CONTENTS_FILE, CONTENTS_SCHEMA, CONTENTS_SIGNATURE_FILE};
use super::index_reader::{indexed, rpm_key_id, rpm_nevra, summed};
use crate::registry_config::manifest;
use crate::solution::validate::Report;

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
/// The base-OS provides the RPM closure accepts (the build's own list, compiled in: the medium
/// does not carry it).
const BASE_OS_PROVIDES: &str = include_str!("../../../packages/redhat/8/base-os-provides.txt");

/// Options of [`verify_path`].
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Armored OpenPGP public key(s) the index and the RPMs must be signed with.
    pub key: Option<Vec<u8>>,
}

/// Whether the checks need the content of `path` in memory.
fn wants_capture(path: &str) -> bool {
    matches!(
        path,
        CONTENTS_FILE | CONTENTS_SIGNATURE_FILE | "SHA256SUMS" | REGISTRY_INCLUDE
    ) || (path.starts_with("images/") && path.ends_with("manifest.json"))
        || completeness::is_scanned(path)
}

/// What one pass learned about a stored content.
#[derive(Clone, Debug, Default)]
struct Facts {
    sha256: String,
    len: u64,
    captured: Option<Vec<u8>>,
    rpm: Option<RpmRaw>,
    error: Option<String>,
}

/// An RPM as streamed: its lead + signature + header bytes and the SHA-256 of the payload.
#[derive(Clone, Debug, Default)]
struct RpmRaw {
    prefix: Vec<u8>,
    header_end: Option<usize>,
    payload_sha256: String,
    error: Option<String>,
}

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

/// A regular file of the medium.
#[derive(Clone, Debug)]
struct FileRec {
    path: String,
    size: u64,
}

/// The medium after the pass: every regular file and what was learned about it.
struct Medium {
    files: Vec<FileRec>,
    facts: HashMap<String, Facts>,
}

impl Medium {
    fn captured(&self, path: &str) -> Option<&[u8]> {
        self.facts.get(path)?.captured.as_deref()
    }
}

/// Verifies `path`: a directory tree, or else an ISO image.
pub fn verify_path(path: &Path, opts: &VerifyOptions) -> Report {
    let mut rep = Report {
        source: path.display().to_string(),
        ..Report::default()
    };
    let medium = if path.is_dir() {
        read_dir(path, &mut rep)
    } else {
        read_iso(path, &mut rep)
    };
    if let Some(m) = medium {
        check(&m, opts, &mut rep);
    }
    rep.sort();
    rep
}

fn read_dir(root: &Path, rep: &mut Report) -> Option<Medium> {
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

fn read_iso(path: &Path, rep: &mut Report) -> Option<Medium> {
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

/// Every check on the facts of one pass.
fn check(m: &Medium, opts: &VerifyOptions, rep: &mut Report) {
    for f in &m.files {
        if let Some(e) = m.facts.get(&f.path).and_then(|x| x.error.clone()) {
            rep.error("FILE_UNREADABLE", &f.path, e);
        }
    }
    let index = check_index(m, opts, rep);
    check_files(m, index.as_ref(), rep);
    check_sums(m, rep);
    check_images(m, index.as_ref(), rep);
    let rpms = check_rpms(m, index.as_ref(), opts, rep);
    check_completeness(m, &rpms, rep);
}

/// Loads the index and checks its signature (with a key) or warns that it is unauthenticated.
fn check_index(m: &Medium, opts: &VerifyOptions, rep: &mut Report) -> Option<ContentIndex> {
    let Some(bytes) = m.captured(CONTENTS_FILE) else {
        if m.files.iter().any(|f| f.path == CONTENTS_FILE) {
            rep.error(
                "INDEX_INVALID",
                CONTENTS_FILE,
                "the index is too large or unreadable",
            );
        } else {
            rep.error(
                "INDEX_MISSING",
                CONTENTS_FILE,
                "no /CONTENTS.json content index",
            );
        }
        return None;
    };
    match &opts.key {
        Some(key) => match m.captured(CONTENTS_SIGNATURE_FILE) {
            None => rep.error(
                "INDEX_SIGNATURE_MISSING",
                CONTENTS_SIGNATURE_FILE,
                "no detached signature of the index",
            ),
            Some(asc) => {
                if let Err(e) = verify_detached(key, bytes, asc) {
                    rep.error("INDEX_SIGNATURE_INVALID", CONTENTS_SIGNATURE_FILE, e);
                }
            }
        },
        None => rep.warn(
            "INDEX_NOT_AUTHENTICATED",
            CONTENTS_FILE,
            "no --key given: the index is checked for consistency only, not for who made it",
        ),
    }
    let index = match ContentIndex::from_json_slice(bytes) {
        Ok(i) => i,
        Err(e) => {
            rep.error(
                "INDEX_INVALID",
                CONTENTS_FILE,
                format!("not a content index: {e}"),
            );
            return None;
        }
    };
    if index.schema != CONTENTS_SCHEMA {
        rep.error(
            "INDEX_INVALID",
            CONTENTS_FILE,
            format!("schema is {:?}, expected {CONTENTS_SCHEMA:?}", index.schema),
        );
    }
    match index.to_json_bytes() {
        Ok(b) if b == bytes => {}
        _ => rep.error(
            "INDEX_INVALID",
            CONTENTS_FILE,
            "the index is not in canonical form (sorted lists, 2-space JSON, final newline)",
        ),
    }
    let mut seen = BTreeSet::new();
    for f in &index.files {
        if !seen.insert(f.path.as_str()) {
            rep.error(
                "INDEX_INVALID",
                CONTENTS_FILE,
                format!("{} is listed twice", f.path),
            );
        }
    }
    if let Some(v) = index
        .product
        .get("VERSION")
        .or(index.product.get("version"))
    {
        rep.version = Some(v.clone());
    }
    if let Some(n) = index.product.get("NAME").or(index.product.get("name")) {
        rep.name = Some(n.clone());
    }
    Some(index)
}

/// Verifies an armored detached signature over `data` with the armored public key(s) `key`.
pub fn verify_detached(key: &[u8], data: &[u8], asc: &[u8]) -> Result<(), String> {
    use pgp::composed::{Deserializable, DetachedSignature};
    use pgp::ser::Serialize;
    use rpm::signature::Verifying;
    let verifier = rpm::signature::pgp::Verifier::from_asc_bytes(key)
        .map_err(|e| format!("cannot load the public key: {e}"))?;
    let text = std::str::from_utf8(asc).map_err(|_| "the signature is not armored text")?;
    let (sig, _) = DetachedSignature::from_string(text)
        .map_err(|e| format!("not an armored OpenPGP signature: {e}"))?;
    let issuer = sig
        .signature
        .issuer_fingerprint()
        .first()
        .map(|f| format!("{f:X}"))
        .or_else(|| {
            sig.signature
                .issuer_key_id()
                .first()
                .map(|k| hex::encode_upper(k.as_ref()))
        })
        .unwrap_or_else(|| "an unknown key".into());
    let raw = sig
        .to_bytes()
        .map_err(|e| format!("cannot encode the signature: {e}"))?;
    verifier
        .verify(data, &raw)
        .map_err(|e| format!("signature by {issuer} does not verify with the given key: {e}"))
}

fn check_files(m: &Medium, index: Option<&ContentIndex>, rep: &mut Report) {
    let Some(index) = index else {
        return;
    };
    let listed: HashMap<&str, &super::contents::FileEntry> =
        index.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let present: BTreeSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    for f in &m.files {
        if !indexed(&f.path) {
            continue;
        }
        let Some(want) = listed.get(f.path.as_str()) else {
            rep.error(
                "FILE_NOT_INDEXED",
                &f.path,
                "present on the medium but not in the index",
            );
            continue;
        };
        let Some(got) = m.facts.get(&f.path).filter(|x| x.error.is_none()) else {
            continue;
        };
        if got.len != want.size {
            rep.error(
                "FILE_SIZE_MISMATCH",
                &f.path,
                format!("{} bytes, the index says {}", got.len, want.size),
            );
        } else if got.sha256 != want.sha256 {
            rep.error(
                "FILE_DIGEST_MISMATCH",
                &f.path,
                format!(
                    "content has sha256 {}, the index says {}",
                    got.sha256, want.sha256
                ),
            );
        }
    }
    for f in &index.files {
        if !present.contains(f.path.as_str()) {
            rep.error("FILE_MISSING", &f.path, "listed in the index but absent");
        }
    }
}

fn check_sums(m: &Medium, rep: &mut Report) {
    let p = "SHA256SUMS";
    let Some(bytes) = m.captured(p) else {
        if m.files.iter().any(|f| f.path == p) {
            rep.error("SUMS_INVALID", p, "SHA256SUMS is too large or unreadable");
        } else {
            rep.warn("SUMS_MISSING", p, "no /SHA256SUMS");
        }
        return;
    };
    let text = String::from_utf8_lossy(bytes);
    let mut listed = BTreeSet::new();
    for (i, l) in text.lines().enumerate() {
        let Some((hex, path)) = l.split_once("  ") else {
            rep.error(
                "SUMS_INVALID",
                p,
                format!("line {}: not `<sha256>  <path>`", i + 1),
            );
            continue;
        };
        let path = path.trim_start_matches("./").to_string();
        match m.facts.get(&path) {
            None => rep.error(
                "SUMS_FILE_MISSING",
                &path,
                format!("listed in SHA256SUMS (line {}) but absent", i + 1),
            ),
            Some(f) if f.error.is_none() && f.sha256 != hex => rep.error(
                "SUMS_MISMATCH",
                &path,
                format!(
                    "content has sha256 {}, SHA256SUMS line {} says {hex}",
                    f.sha256,
                    i + 1
                ),
            ),
            _ => {}
        }
        listed.insert(path);
    }
    for f in &m.files {
        if summed(&f.path) && !listed.contains(&f.path) {
            rep.error("SUMS_FILE_NOT_LISTED", &f.path, "not listed in SHA256SUMS");
        }
    }
}

fn check_images(m: &Medium, index: Option<&ContentIndex>, rep: &mut Report) {
    let mut found: BTreeMap<(String, String), super::contents::ImageEntry> = BTreeMap::new();
    for f in &m.files {
        let Some(d) = f
            .path
            .strip_prefix("images/")
            .and_then(|d| d.strip_suffix("/manifest.json"))
        else {
            continue;
        };
        let Some((name, tag)) = d.rsplit_once('/') else {
            continue;
        };
        let dir = format!("images/{d}");
        let Some(bytes) = m.captured(&f.path) else {
            rep.error("IMAGE_MANIFEST_INVALID", &f.path, "too large or unreadable");
            continue;
        };
        let mut refs: Vec<(String, manifest::Descriptor)> = Vec::new();
        let entry = super::index_reader::image_entry(name, tag, bytes, |file| {
            // Child manifests are captured; config blobs are only needed for platforms.
            // An absent child manifest fails the entry (reported as a missing child below).
            match m.captured(&format!("{dir}/{file}")) {
                Some(b) => Ok(Some(b.to_vec())),
                None if file.ends_with(".manifest.json") => {
                    Err(anyhow::anyhow!("{dir}/{file} is absent"))
                }
                None => Ok(None),
            }
        });
        let parsed = match manifest::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                rep.error("IMAGE_MANIFEST_INVALID", &f.path, format!("{e:#}"));
                continue;
            }
        };
        rep.stats.images += 1;
        let mut list = vec![parsed];
        if list[0].is_index() {
            for c in list[0].children.clone() {
                let cp = format!("{dir}/{}.manifest.json", c.hex);
                match m.facts.get(&cp) {
                    None => rep.error(
                        "CHILD_MANIFEST_MISSING",
                        &cp,
                        format!("child manifest sha256:{} of the index is absent", c.hex),
                    ),
                    Some(cf) if cf.sha256 != c.hex || cf.len != c.size => rep.error(
                        "CHILD_MANIFEST_DIGEST_MISMATCH",
                        &cp,
                        format!(
                            "content is sha256:{} ({} bytes), the index says sha256:{} ({} bytes)",
                            cf.sha256, cf.len, c.hex, c.size
                        ),
                    ),
                    Some(cf) => match cf.captured.as_deref().map(manifest::parse) {
                        Some(Ok(cm)) => list.push(cm),
                        _ => rep.error("IMAGE_MANIFEST_INVALID", &cp, "unreadable child manifest"),
                    },
                }
            }
        }
        for mm in &list {
            for b in &mm.blobs {
                refs.push((format!("{dir}/{}", b.hex), b.clone()));
            }
        }
        for (bp, d) in refs {
            rep.stats.blob_refs += 1;
            match m.facts.get(&bp) {
                None if d.foreign => rep.warn(
                    "FOREIGN_BLOB_ABSENT",
                    &bp,
                    format!("foreign layer sha256:{} is not on the medium", d.hex),
                ),
                None => rep.error(
                    "BLOB_MISSING",
                    &bp,
                    format!("blob sha256:{} is absent", d.hex),
                ),
                Some(b) if b.error.is_some() => {}
                Some(b) if b.len != d.size => rep.error(
                    "BLOB_SIZE_MISMATCH",
                    &bp,
                    format!("blob is {} bytes, its manifest says {}", b.len, d.size),
                ),
                Some(b) if b.sha256 != d.hex => rep.error(
                    "BLOB_DIGEST_MISMATCH",
                    &bp,
                    format!("content has sha256:{}, expected sha256:{}", b.sha256, d.hex),
                ),
                Some(_) => {}
            }
        }
        if let Ok(e) = entry {
            found.insert((name.to_string(), tag.to_string()), e);
        }
    }
    let Some(index) = index else {
        return;
    };
    let indexed: BTreeMap<(String, String), &super::contents::ImageEntry> = index
        .images
        .iter()
        .map(|i| ((i.name.clone(), i.tag.clone()), i))
        .collect();
    for ((n, t), e) in &found {
        let p = format!("images/{n}/{t}");
        match indexed.get(&(n.clone(), t.clone())) {
            None => rep.error(
                "IMAGE_NOT_INDEXED",
                &p,
                format!("{n}:{t} is not in the index"),
            ),
            Some(i) if i.digest != e.digest => rep.error(
                "IMAGE_DIGEST_MISMATCH",
                &p,
                format!("manifest is {}, the index says {}", e.digest, i.digest),
            ),
            Some(i) if i.blobs != e.blobs || i.media_type != e.media_type => rep.error(
                "IMAGE_INDEX_MISMATCH",
                &p,
                format!("{n}:{t}: the index lists other blobs or media type than the manifest"),
            ),
            Some(_) => {}
        }
    }
    for (n, t) in indexed.keys() {
        if !found.contains_key(&(n.clone(), t.clone())) {
            rep.error(
                "IMAGE_MISSING",
                &format!("images/{n}/{t}"),
                format!("{n}:{t} is in the index but not on the medium"),
            );
        }
    }
}

/// Checks every RPM (digests, signatures, index entry); returns their dependencies.
fn check_rpms(
    m: &Medium,
    index: Option<&ContentIndex>,
    opts: &VerifyOptions,
    rep: &mut Report,
) -> Vec<RpmDeps> {
    let verifier =
        opts.key
            .as_ref()
            .and_then(|k| match rpm::signature::pgp::Verifier::from_asc_bytes(k) {
                Ok(v) => Some(v),
                Err(e) => {
                    rep.error(
                        "KEY_INVALID",
                        "",
                        format!("cannot load the public key: {e}"),
                    );
                    None
                }
            });
    let indexed: HashMap<&str, &super::contents::RpmEntry> = index
        .map(|i| i.rpms.iter().map(|r| (r.path.as_str(), r)).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &m.files {
        let Some(facts) = m.facts.get(&f.path) else {
            continue;
        };
        let Some(raw) = &facts.rpm else {
            continue;
        };
        if facts.error.is_some() {
            continue;
        }
        seen.insert(f.path.as_str());
        let p = f.path.as_str();
        if let Some(e) = &raw.error {
            rep.error("RPM_INVALID", p, e.clone());
            continue;
        }
        let md = match raw
            .header_end
            .ok_or_else(|| "truncated before the end of its header".to_string())
            .and_then(|_| {
                rpm::PackageMetadata::parse(&mut std::io::Cursor::new(&raw.prefix))
                    .map_err(|e| e.to_string())
            }) {
            Ok(md) => md,
            Err(e) => {
                rep.error("RPM_INVALID", p, format!("not a readable RPM: {e}"));
                continue;
            }
        };
        match md.check_digests() {
            Ok(d) if d.has_header_digest() => {
                if let Err(e) = d.result() {
                    rep.error("RPM_DIGEST_MISMATCH", p, format!("header digest: {e}"));
                }
            }
            Ok(_) => rep.error("RPM_DIGEST_MISMATCH", p, "the RPM carries no header digest"),
            Err(e) => rep.error("RPM_DIGEST_MISMATCH", p, format!("header digest: {e}")),
        }
        if let Ok(want) = md
            .header
            .get_entry_data_as_string_array(rpm::IndexTag::RPMTAG_PAYLOADSHA256)
        {
            let algo = md
                .header
                .get_entry_data_as_u32(rpm::IndexTag::RPMTAG_PAYLOADSHA256ALGO)
                .unwrap_or(8);
            if algo == 8 && want.first().is_some_and(|w| *w != raw.payload_sha256) {
                rep.error(
                    "RPM_DIGEST_MISMATCH",
                    p,
                    format!(
                        "payload has sha256 {}, the header says {}",
                        raw.payload_sha256,
                        want.first().copied().unwrap_or_default()
                    ),
                );
            }
        }
        let key_id = rpm_key_id(&md);
        if let Some(v) = &verifier {
            if key_id.is_none() {
                rep.error("RPM_UNSIGNED", p, "the RPM carries no signature");
            } else if let Err(e) = md.verify_signature(v) {
                rep.error(
                    "RPM_SIGNATURE_INVALID",
                    p,
                    format!(
                        "signature by {} does not verify with the given key: {e}",
                        key_id.as_deref().unwrap_or("?")
                    ),
                );
            }
        }
        if index.is_some() {
            let nevra = rpm_nevra(&md).unwrap_or_default();
            match indexed.get(p) {
                None => rep.error(
                    "RPM_NOT_INDEXED",
                    p,
                    "present on the medium but not in the index",
                ),
                Some(e) => {
                    if e.nevra != nevra || e.sha256 != facts.sha256 || e.key_id != key_id {
                        rep.error(
                            "RPM_INDEX_MISMATCH",
                            p,
                            format!(
                                "medium has {nevra} sha256 {} key {:?}, the index says {} sha256 {} key {:?}",
                                facts.sha256, key_id, e.nevra, e.sha256, e.key_id
                            ),
                        );
                    }
                }
            }
        }
        match RpmDeps::from_metadata(p, &md) {
            Ok(d) => out.push(d),
            Err(e) => rep.error("RPM_INVALID", p, format!("{e:#}")),
        }
    }
    for p in indexed.keys() {
        if !seen.contains(p) {
            rep.error("RPM_MISSING", p, "listed in the index but absent");
        }
    }
    out
}

fn check_completeness(m: &Medium, rpms: &[RpmDeps], rep: &mut Report) {
    let texts: Vec<(&str, String)> = m
        .files
        .iter()
        .filter(|f| completeness::is_scanned(&f.path))
        .filter_map(|f| {
            m.captured(&f.path)
                .map(|b| (f.path.as_str(), String::from_utf8_lossy(b).into_owned()))
        })
        .collect();
    let mut served = Served::from_paths(m.files.iter().map(|f| f.path.as_str()));
    let what = match m.captured(REGISTRY_INCLUDE) {
        Some(inc) => {
            served = served.restrict_to_include(&String::from_utf8_lossy(inc), "");
            format!("the medium's registry ({REGISTRY_INCLUDE})")
        }
        None => "the medium's images/".to_string(),
    };
    let mut dangling =
        completeness::check_images(texts.iter().map(|(p, t)| (*p, t.as_str())), &served, &what);
    let base = completeness::parse_base_provides(BASE_OS_PROVIDES);
    dangling.extend(completeness::check_rpm_closure(rpms, &base));
    for d in dangling {
        rep.error(d.code, &d.path, d.to_string());
    }
}

/// `buildchain verify` arguments.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The ISO file or the tree directory.
    pub path: std::path::PathBuf,
    /// Armored OpenPGP public key the index and the RPMs must be signed with.
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
    /// Output format: text or json.
    #[arg(long, default_value = "text")]
    pub format: String,
}

/// Runs `buildchain verify`; returns the exit code (1 when there is an error finding).
pub fn run(args: &VerifyArgs) -> anyhow::Result<u8> {
    use anyhow::Context;
    if !matches!(args.format.as_str(), "text" | "json") {
        anyhow::bail!("unknown --format {:?} (text or json)", args.format);
    }
    let key = match &args.key {
        Some(k) => Some(std::fs::read(k).with_context(|| format!("cannot read {}", k.display()))?),
        None => None,
    };
    let report = verify_path(&args.path, &VerifyOptions { key });
    match args.format.as_str() {
        "json" => print!("{}", report.to_json()),
        _ => print!("{}", report.to_text()),
    }
    Ok(u8::from(report.errors() > 0))
}
