//! The ISO-9660 writer: [`master`].
//!
//! Layout (in sectors): 0-15 system area (zeros), 16 PVD, 17 Joliet SVD, 18 terminator, path
//! tables (L and M, primary then Joliet), one zero sector used by empty files and symlinks; then
//! the *stable* part: the directories holding bulk files (≥ 1 MiB, e.g. image layers) and their
//! ancestors (primary ones breadth-first, each followed by the Rock Ridge continuation areas of
//! its records, where streaming readers such as libarchive expect them; then the Joliet ones),
//! and the bulk data (tree order, each distinct content once); then the *volatile* part: the
//! other directories, the small files; then at least 150 sectors of padding (so the 15 sectors
//! `checkisomd5` skips hold no data), the volume size rounded up to a power of two of at most
//! 1/1024 of the stable part (≤ 0.1 % waste). Every directory still precedes what it lists (a
//! streaming reader never seeks back), and a small edit outside the bulk directories leaves
//! the image prefix up to the volatile part unchanged, PVD included: [`master_resuming`] reuses
//! it (see `resume.rs`). The layout is a pure function of the tree.
//!
//! Names: primary identifiers are upper-case d-characters, `NAME.EXT;1` for files (name + ext
//! ≤ 30, ext ≤ 8) and `NAME` for directories (≤ 31), a decimal suffix resolving collisions;
//! Rock Ridge `NM` carries the real name. Joliet names are UCS-2 (characters outside the BMP and
//! `* / : ; ? \` become `_`), ≤ 103 units, no `;1` version suffix (as genisoimage `-J`). Rock
//! Ridge: `SP` + `ER` (`RRIP_1991A`) on the root, `RR`, `PX` (44 bytes: mode, link count within
//! the tree, uid/gid 0, serial number per inode), `TF` (modify/access/attributes = the
//! timestamp), `NM`, `SL`, `CE`.
//!
//! Modes (`PX`) are normalized as `mkisofs -r` does unless [`MasterOptions::keep_modes`]: the
//! image is mounted read-only and read by unprivileged users, so every entry is world-readable
//! whatever the source modes or umask (see [`normalized_mode`]).
//!
//! Performance: the MD5 runs on its own thread ([`crate::md5core`]); the final SHA-256
//! needs the implanted PVD first, so it is a second sequential pass over the image, served from
//! the page cache (wall time ≈ MD5 + SHA-256 of the image). Set `ISO9660_WRITER_TRACE=1` to get
//! phase timings on stderr.
//!
//! Only metadata is kept in memory (proportional to the number of entries); file contents are
//! streamed. With `implant_md5`, the isomd5sum computation runs on a second thread over the bytes
//! as they are written; the record is written at the end, then the SHA-256 of the final image is
//! computed by re-reading it (it must follow the implant, which is at its start).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::md5sum::{self, ImplanterState, Md5Implanter};
use crate::{Error, Result, SECTOR_SIZE};

mod descriptors;
mod layout;
mod names;
mod resume;
mod rockridge;
mod scan;
mod sink;

pub use resume::{master_resuming, Previous, ResumeState};
pub use rockridge::normalized_mode;
use sink::{sha256_of, Sink};

const SECTOR: usize = SECTOR_SIZE as usize;
/// Largest extent of a multi-extent file section (4 GiB − 2 KiB, sector aligned).
const MAX_EXTENT: u64 = 0xFFFF_F800;
/// Padding sectors at the end of the image.
const PAD_SECTORS: u64 = 150;
/// Files of at least this size are "bulk" (image layers): laid out before the directories
/// that do not hold any, and before the small files (see the module docs).
const BULK_BYTES: u64 = 1 << 20;
/// Max UCS-2 units of a Joliet name (`-joliet-long`).
const JOLIET_MAX: usize = 103;
const IO_BUF: usize = 1 << 20;

/// The output of [`master`]: a seekable stream it writes and re-reads (a `File`, a
/// `Cursor<Vec<u8>>`…).
pub trait Image: Read + Write + Seek + Send {}
impl<T: Read + Write + Seek + Send> Image for T {}

/// Options of [`master`].
pub struct MasterOptions<'a> {
    /// Volume identifier (PVD, up to 32 bytes; Joliet SVD gets its first 16 characters).
    pub volume_id: String,
    /// Unix time used for every date in the image (`SOURCE_DATE_EPOCH`).
    pub timestamp: i64,
    /// Implant the isomd5sum record while writing.
    pub implant_md5: bool,
    /// Called with the number of image bytes written so far.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
    /// Record the source permission bits verbatim instead of [`normalized_mode`].
    pub keep_modes: bool,
}

impl Default for MasterOptions<'_> {
    fn default() -> Self {
        MasterOptions {
            volume_id: "CDROM".into(),
            timestamp: 0,
            implant_md5: true,
            progress: None,
            keep_modes: false,
        }
    }
}

/// What [`master`] wrote.
#[derive(Debug, Clone)]
pub struct MasterReport {
    /// Image size in bytes.
    pub size: u64,
    /// SHA-256 of the final image (after the implant), hex.
    pub sha256_hex: String,
    /// Implanted MD5 (hex), when `implant_md5`.
    pub md5_hex: Option<String>,
    /// Regular files in the tree (directory entries naming a file).
    pub files: u64,
    /// Directories (root included).
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Data extents written (distinct non-empty contents).
    pub extents: u64,
    /// Non-empty file entries that reuse an extent written for another entry (same inode or
    /// same content).
    pub shared_extents: u64,
    /// Bytes of file data in the image.
    pub data_bytes: u64,
    /// Bytes of the image copied from the previous one instead of written (see
    /// [`master_resuming`]).
    pub reused_bytes: u64,
}

enum Kind {
    Dir { children: Vec<usize> },
    File { data: Option<usize> },
    Symlink { target: Vec<u8> },
}

struct Node {
    name: Vec<u8>,
    parent: usize,
    kind: Kind,
    mode: u32,
    nlink: u32,
    serial: u32,
    prim: Vec<u8>,
    jol: Vec<u8>,
}

struct Data {
    path: PathBuf,
    size: u64,
    lba: u32,
}

#[derive(Clone, Copy)]
enum Target {
    Dir(usize),
    Data { lba: u32, len: u32 },
    Empty,
}

struct Rec {
    ident: Vec<u8>,
    flags: u8,
    target: Target,
    inline: Vec<u8>,
    ce: Option<usize>,
}

struct Cont {
    /// Primary directory whose extent this continuation area follows.
    dir: usize,
    bytes: Vec<u8>,
    next: Option<usize>,
    sector: u32,
    offset: u32,
}

impl Rec {
    fn su_len(&self) -> usize {
        self.inline.len() + if self.ce.is_some() { 28 } else { 0 }
    }
    fn len(&self) -> usize {
        let id = self.ident.len();
        let base = 33 + id + usize::from(id % 2 == 0);
        let l = base + self.su_len();
        l + l % 2
    }
}

/// Masters `src_dir` into `out` (written from offset 0; the caller handles temp + rename).
///
/// Deterministic: entries sorted, every date is `opts.timestamp`, uid/gid 0. Files sharing an
/// inode, or with identical contents, are written once. Fails (without panicking) on unreadable
/// sources, unsupported file types (devices, sockets, FIFOs) or files that change size while
/// mastering.
///
/// `out` is any seekable stream, like tar-rs's `Builder<W>`; it is written from offset 0 and
/// must start empty (nothing is truncated). It must also be readable: the SHA-256 of the
/// implanted image is computed by re-reading it (the record sits at its start).
pub fn master<W: Image>(src_dir: &Path, out: &mut W, opts: &MasterOptions) -> Result<MasterReport> {
    master_with_extent_limit(src_dir, out, opts, MAX_EXTENT)
}

/// [`master`], calling `on_total` with the image size in bytes once the layout is known, before
/// any byte is written (the total of the [`MasterOptions::progress`] counts).
pub fn master_with_total<W: Image>(
    src_dir: &Path,
    out: &mut W,
    opts: &MasterOptions,
    on_total: &dyn Fn(u64),
) -> Result<MasterReport> {
    let b = Builder::plan(src_dir, opts, MAX_EXTENT, &Trace::new())?;
    on_total(b.layout.total_sectors * SECTOR_SIZE);
    b.write(out, opts, &Trace::new(), None).map(|r| r.0)
}

/// The exact size in bytes of the image [`master`] would write for `src_dir` with `opts`,
/// computed from the layout alone (no data is written; only files of equal size and equal
/// 64 KiB prefix are read, to find shared contents). Used by `buildchain plan` with sized
/// placeholder files standing in for blobs not fetched yet.
pub fn predict_size(src_dir: &Path, opts: &MasterOptions) -> Result<u64> {
    let b = Builder::plan(src_dir, opts, MAX_EXTENT, &Trace::new())?;
    Ok(b.layout.total_sectors * SECTOR_SIZE)
}

/// [`master`] with a smaller multi-extent section size (a multiple of 2048), so tests can
/// exercise multi-extent files without 4 GiB sources.
#[doc(hidden)]
pub fn master_with_extent_limit<W: Image>(
    src_dir: &Path,
    out: &mut W,
    opts: &MasterOptions,
    max_extent: u64,
) -> Result<MasterReport> {
    if max_extent == 0 || max_extent % SECTOR_SIZE != 0 || max_extent > MAX_EXTENT {
        return Err(Error::Source(format!("invalid extent limit {max_extent}")));
    }
    let t = Trace::new();
    let b = Builder::plan(src_dir, opts, max_extent, &t)?;
    b.write(out, opts, &t, None).map(|r| r.0)
}

impl Builder {
    /// Scan, dedup, names and layout: everything before the first byte is written.
    fn plan(src_dir: &Path, opts: &MasterOptions, max_extent: u64, t: &Trace) -> Result<Self> {
        let mut b = Builder::scan(src_dir)?;
        if !opts.keep_modes {
            for n in &mut b.nodes {
                n.mode = normalized_mode(n.mode);
            }
        }
        t.mark("scan");
        b.max_extent = max_extent;
        b.dedup()?;
        t.mark("dedup");
        b.names();
        b.build(opts)?;
        t.mark("layout");
        Ok(b)
    }
}

struct Builder {
    nodes: Vec<Node>,
    datas: Vec<Data>,
    /// Data index of each file node (before dedup by content: after, remapped).
    prim_dirs: Vec<usize>,
    jol_dirs: Vec<usize>,
    prim_recs: HashMap<usize, Vec<Rec>>,
    jol_recs: HashMap<usize, Vec<Rec>>,
    conts: Vec<Cont>,
    dir_lba: HashMap<usize, (u32, u32)>,
    jdir_lba: HashMap<usize, (u32, u32)>,
    layout: Layout,
    shared: u64,
    max_extent: u64,
    cur_dir: usize,
    /// Continuation-area sectors following each primary directory extent, and their first LBA.
    ce_sectors: HashMap<usize, (u32, u32)>,
    /// Continuation-area sectors of each primary directory.
    ce_count: HashMap<usize, u32>,
}

#[derive(Default)]
struct Layout {
    ptl_prim: Vec<u8>,
    ptm_prim: Vec<u8>,
    ptl_jol: Vec<u8>,
    ptm_jol: Vec<u8>,
    pt_lba: [u32; 4],
    empty_lba: u32,
    /// First sector of the volatile part (everything before it is the stable prefix).
    prefix_sectors: u64,
    total_sectors: u64,
}

fn io_ctx(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let ctx = format!("{what} {}", p.display());
    move |e| Error::io(ctx, e)
}

fn sectors(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR_SIZE)
}

/// A piece of the image, at its LBA.
enum Piece {
    /// System area, volume descriptors and terminator (sectors 0-18).
    Head,
    /// Path table `i` (L, M primary; L, M Joliet).
    Table(usize),
    /// A directory extent (primary ones followed by their continuation areas).
    Dir(usize, bool),
    /// A data extent.
    Data(usize),
}

impl Builder {
    /// Every piece, in LBA order (the gaps between them are zeros).
    fn pieces(&self) -> Vec<(u64, Piece)> {
        let mut v = vec![(0, Piece::Head)];
        v.extend((0..4).map(|i| (self.layout.pt_lba[i] as u64, Piece::Table(i))));
        v.extend(
            self.dir_lba
                .iter()
                .map(|(&d, l)| (l.0 as u64, Piece::Dir(d, false))),
        );
        v.extend(
            self.jdir_lba
                .iter()
                .map(|(&d, l)| (l.0 as u64, Piece::Dir(d, true))),
        );
        v.extend(
            (0..self.datas.len())
                .filter(|&d| self.datas[d].lba != 0)
                .map(|d| (self.datas[d].lba as u64, Piece::Data(d))),
        );
        v.sort_by_key(|p| p.0);
        v
    }

    /// The bytes of a metadata piece (not [`Piece::Data`]).
    fn render(&self, p: &Piece, opts: &MasterOptions) -> Vec<u8> {
        match *p {
            Piece::Head => {
                let mut v = vec![0u8; 16 * SECTOR];
                v.extend(self.volume_descriptor(false, opts));
                v.extend(self.volume_descriptor(true, opts));
                let mut term = vec![0u8; SECTOR];
                term[0] = 255;
                term[1..6].copy_from_slice(b"CD001");
                term[6] = 1;
                v.extend(term);
                v
            }
            Piece::Table(i) => {
                let l = &self.layout;
                let mut t = [&l.ptl_prim, &l.ptm_prim, &l.ptl_jol, &l.ptm_jol][i].clone();
                t.resize(sectors(t.len() as u64) as usize * SECTOR, 0);
                t
            }
            Piece::Dir(d, true) => self.dir_extent(d, true, opts.timestamp),
            Piece::Dir(d, false) => {
                let mut v = self.dir_extent(d, false, opts.timestamp);
                if let Some(&(_, n)) = self.ce_sectors.get(&d) {
                    let mut area = vec![0u8; n as usize * SECTOR];
                    for c in self.conts.iter().filter(|c| c.dir == d) {
                        let at = c.sector as usize * SECTOR + c.offset as usize;
                        area[at..at + c.bytes.len()].copy_from_slice(&c.bytes);
                        if let Some(next) = c.next {
                            let e = self.ce_entry(next);
                            let at = at + c.bytes.len();
                            area[at..at + 28].copy_from_slice(&e);
                        }
                    }
                    v.extend(area);
                }
                v
            }
            Piece::Data(_) => Vec::new(),
        }
    }

    /// Writes the image into `out`. With `resume` (an MD5 state at the end of the stable
    /// prefix), `out` is positioned after the prefix: only the rest and the isomd5sum record are
    /// written, and the SHA-256 is left to the caller (which copies the prefix). Returns the report and the MD5 state at the end of the prefix (`implant_md5`).
    fn write<W: Image>(
        &self,
        out: &mut W,
        opts: &MasterOptions,
        t: &Trace,
        resume: Option<Md5Implanter>,
    ) -> Result<(MasterReport, Option<ImplanterState>)> {
        let total = self.layout.total_sectors * SECTOR_SIZE;
        let prefix = self.layout.prefix_sectors * SECTOR_SIZE;
        let start = match &resume {
            Some(r) if r.position() != prefix => {
                return Err(Error::Source(
                    "resumed MD5 state is not at the prefix end".into(),
                ))
            }
            Some(_) => prefix,
            None => {
                out.seek(SeekFrom::Start(0))
                    .map_err(|e| Error::io("seek output", e))?;
                0
            }
        };
        let mut sink = Sink::new(out, opts, total, resume);
        let layout_error = || Error::Source("internal layout error".into());
        let mut snapped = start > 0;
        let mut extents = 0u64;
        let mut data_bytes = 0u64;
        for (lba, piece) in self.pieces() {
            let at = lba * SECTOR_SIZE;
            if let Piece::Data(d) = piece {
                extents += 1;
                data_bytes += self.datas[d].size;
            }
            if at < start {
                continue;
            }
            if !snapped && at >= prefix {
                sink.zeros(prefix.checked_sub(sink.offset()).ok_or_else(layout_error)?)?;
                sink.snapshot()?;
                snapped = true;
            }
            sink.zeros(at.checked_sub(sink.offset()).ok_or_else(layout_error)?)?;
            match piece {
                Piece::Data(d) => sink.copy_file(&self.datas[d].path, self.datas[d].size)?,
                p => sink.write(&self.render(&p, opts))?,
            }
        }
        if !snapped {
            sink.zeros(prefix.checked_sub(sink.offset()).ok_or_else(layout_error)?)?;
            sink.snapshot()?;
        }
        // Padding.
        sink.zeros(total.checked_sub(sink.offset()).ok_or_else(layout_error)?)?;
        t.mark("write (data copied)");
        let done = sink.finish()?;
        t.mark("md5 finished");
        let mut report = MasterReport {
            size: total,
            sha256_hex: String::new(),
            md5_hex: None,
            files: 0,
            directories: 0,
            symlinks: 0,
            extents,
            shared_extents: self.shared,
            data_bytes,
            reused_bytes: start,
        };
        for n in &self.nodes {
            match n.kind {
                Kind::Dir { .. } => report.directories += 1,
                Kind::File { .. } => report.files += 1,
                Kind::Symlink { .. } => report.symlinks += 1,
            }
        }
        match done.md5 {
            Some((md5, frags)) => {
                let text = md5sum::record_text(&md5, &frags, false);
                out.seek(SeekFrom::Start(md5sum::APP_USE_OFFSET))
                    .map_err(|e| Error::io("seek output", e))?;
                out.write_all(&text)
                    .map_err(|e| Error::io("write isomd5sum record", e))?;
                // Resumed: the caller copies the prefix and hashes the image in one pass.
                if start == 0 {
                    report.sha256_hex = sha256_of(out, total)?;
                    t.mark("sha256 of the implanted image");
                }
                report.md5_hex = Some(md5);
            }
            None => report.sha256_hex = done.sha.unwrap_or_default(),
        }
        out.seek(SeekFrom::Start(total))
            .map_err(|e| Error::io("seek output", e))?;
        Ok((report, done.state))
    }
}

/// Phase timings on stderr when `ISO9660_WRITER_TRACE` is set.
struct Trace(Option<std::time::Instant>);

impl Trace {
    fn new() -> Self {
        Trace(std::env::var_os("ISO9660_WRITER_TRACE").map(|_| std::time::Instant::now()))
    }
    fn mark(&self, what: &str) {
        if let Some(t) = self.0 {
            eprintln!("[iso9660-writer] {:8.3}s {what}", t.elapsed().as_secs_f64());
        }
    }
}
