//! The ISO-9660 writer: [`master`].
//!
//! Layout (in sectors): 0-15 system area (zeros), 16 PVD, 17 Joliet SVD, 18 terminator, path
//! tables (L and M, primary then Joliet), primary directories (breadth-first, each followed by
//! the Rock Ridge continuation areas of its records, where streaming readers such as libarchive
//! expect them), Joliet directories, file data (tree order, each distinct content once), one
//! zero sector used by empty files and symlinks, then 150 sectors of padding (so the 15 sectors
//! `checkisomd5` skips hold no data).
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
//! Performance: the MD5 runs on its own thread (`md-5` with its assembly core); the final SHA-256
//! needs the implanted PVD first, so it is a second sequential pass over the image, served from
//! the page cache (wall time ≈ MD5 + SHA-256 of the image). Set `ISO9660_WRITER_TRACE=1` to get
//! phase timings on stderr.
//!
//! Only metadata is kept in memory (proportional to the number of entries); file contents are
//! streamed. With `implant_md5`, the isomd5sum computation runs on a second thread over the bytes
//! as they are written; the record is written at the end, then the SHA-256 of the final image is
//! computed by re-reading it (it must follow the implant, which is at its start).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::md5sum::{self, Md5Implanter};
use crate::util::{both16, both32, dir_date, put_both16, put_both32, vd_date, vd_date_unset};
use crate::{Error, Result, SECTOR_SIZE};

const SECTOR: usize = SECTOR_SIZE as usize;
/// Largest extent of a multi-extent file section (4 GiB − 2 KiB, sector aligned).
const MAX_EXTENT: u64 = 0xFFFF_F800;
/// Padding sectors at the end of the image.
const PAD_SECTORS: u64 = 150;
/// Max UCS-2 units of a Joliet name (`-joliet-long`).
const JOLIET_MAX: usize = 103;
const IO_BUF: usize = 1 << 20;

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
    /// Bytes of file data written.
    pub data_bytes: u64,
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
/// `out` must be open for reading and writing (the SHA-256 of the implanted image is computed
/// by re-reading it).
pub fn master(src_dir: &Path, out: &mut File, opts: &MasterOptions) -> Result<MasterReport> {
    master_with_extent_limit(src_dir, out, opts, MAX_EXTENT)
}

/// [`master`], calling `on_total` with the image size in bytes once the layout is known, before
/// any byte is written (the total of the [`MasterOptions::progress`] counts).
pub fn master_with_total(
    src_dir: &Path,
    out: &mut File,
    opts: &MasterOptions,
    on_total: &dyn Fn(u64),
) -> Result<MasterReport> {
    let b = Builder::plan(src_dir, opts, MAX_EXTENT, &Trace::new())?;
    on_total(b.layout.total_sectors * SECTOR_SIZE);
    b.write(out, opts, &Trace::new())
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
pub fn master_with_extent_limit(
    src_dir: &Path,
    out: &mut File,
    opts: &MasterOptions,
    max_extent: u64,
) -> Result<MasterReport> {
    if max_extent == 0 || max_extent % SECTOR_SIZE != 0 || max_extent > MAX_EXTENT {
        return Err(Error::Source(format!("invalid extent limit {max_extent}")));
    }
    let t = Trace::new();
    let b = Builder::plan(src_dir, opts, max_extent, &t)?;
    b.write(out, opts, &t)
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
}

#[derive(Default)]
struct Layout {
    ptl_prim: Vec<u8>,
    ptm_prim: Vec<u8>,
    ptl_jol: Vec<u8>,
    ptm_jol: Vec<u8>,
    pt_lba: [u32; 4],
    data_lba: u32,
    empty_lba: u32,
    total_sectors: u64,
}

fn io_ctx(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let ctx = format!("{what} {}", p.display());
    move |e| Error::io(ctx, e)
}

fn sectors(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR_SIZE)
}

impl Builder {
    fn scan(root: &Path) -> Result<Builder> {
        let meta = fs::metadata(root).map_err(io_ctx("stat", root))?;
        if !meta.is_dir() {
            return Err(Error::Source(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        let mut nodes = vec![Node {
            name: Vec::new(),
            parent: 0,
            kind: Kind::Dir {
                children: Vec::new(),
            },
            mode: meta.mode(),
            nlink: 2,
            serial: 0,
            prim: vec![0],
            jol: vec![0],
        }];
        let mut datas: Vec<Data> = Vec::new();
        let mut inodes: HashMap<(u64, u64), usize> = HashMap::new();
        let mut data_refs: Vec<u32> = Vec::new();
        let mut stack = vec![(0usize, root.to_path_buf())];
        while let Some((idx, dir)) = stack.pop() {
            let mut ents: Vec<(Vec<u8>, PathBuf)> = Vec::new();
            for e in fs::read_dir(&dir).map_err(io_ctx("read directory", &dir))? {
                let e = e.map_err(io_ctx("read directory", &dir))?;
                ents.push((e.file_name().as_bytes().to_vec(), e.path()));
            }
            ents.sort();
            let mut children = Vec::with_capacity(ents.len());
            let mut subdirs = Vec::new();
            for (name, path) in ents {
                let m = fs::symlink_metadata(&path).map_err(io_ctx("stat", &path))?;
                let ft = m.file_type();
                let id = nodes.len();
                let kind = if ft.is_dir() {
                    subdirs.push((id, path.clone()));
                    Kind::Dir {
                        children: Vec::new(),
                    }
                } else if ft.is_symlink() {
                    let t = fs::read_link(&path).map_err(io_ctx("read symlink", &path))?;
                    Kind::Symlink {
                        target: t.as_os_str().as_bytes().to_vec(),
                    }
                } else if ft.is_file() {
                    let key = (m.dev(), m.ino());
                    // Hard links (same inode) share one data record; only multiply-linked
                    // inodes need remembering.
                    let linked = m.nlink() > 1;
                    let d = match inodes.get(&key) {
                        Some(&d) if linked => d,
                        _ => {
                            datas.push(Data {
                                path: path.clone(),
                                size: m.size(),
                                lba: 0,
                            });
                            data_refs.push(0);
                            let d = datas.len() - 1;
                            if linked {
                                inodes.insert(key, d);
                            }
                            d
                        }
                    };
                    data_refs[d] += 1;
                    Kind::File { data: Some(d) }
                } else {
                    let what = if ft.is_fifo() {
                        "FIFO"
                    } else if ft.is_socket() {
                        "socket"
                    } else {
                        "device"
                    };
                    return Err(Error::Source(format!(
                        "{}: unsupported file type ({what})",
                        path.display()
                    )));
                };
                nodes.push(Node {
                    name,
                    parent: idx,
                    kind,
                    mode: m.mode(),
                    nlink: 1,
                    serial: 0,
                    prim: Vec::new(),
                    jol: Vec::new(),
                });
                children.push(id);
            }
            let nsub = subdirs.len() as u32;
            nodes[idx].nlink = 2 + nsub;
            nodes[idx].kind = Kind::Dir { children };
            // Reverse so the stack pops in sorted order (ids stay deterministic either way).
            for s in subdirs.into_iter().rev() {
                stack.push(s);
            }
        }
        // Hard-link counts within the tree, and serial numbers (one per inode) in node order.
        let mut data_serial: HashMap<usize, u32> = HashMap::new();
        let mut next_serial = 1u32;
        for n in nodes.iter_mut() {
            match n.kind {
                Kind::File { data: Some(d) } => {
                    n.nlink = data_refs[d];
                    n.serial = *data_serial.entry(d).or_insert_with(|| {
                        next_serial += 1;
                        next_serial - 1
                    });
                }
                _ => {
                    n.serial = next_serial;
                    next_serial += 1;
                }
            }
        }
        Ok(Builder {
            nodes,
            datas,
            prim_dirs: Vec::new(),
            jol_dirs: Vec::new(),
            prim_recs: HashMap::new(),
            jol_recs: HashMap::new(),
            conts: Vec::new(),
            dir_lba: HashMap::new(),
            jdir_lba: HashMap::new(),
            layout: Layout::default(),
            shared: 0,
            max_extent: MAX_EXTENT,
            cur_dir: 0,
            ce_sectors: HashMap::new(),
        })
    }

    /// Merges data items with identical contents (same size, then same 64 KiB prefix digest,
    /// then same full SHA-256); empty files get no extent.
    fn dedup(&mut self) -> Result<()> {
        let mut by_size: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, d) in self.datas.iter().enumerate() {
            if d.size > 0 {
                by_size.entry(d.size).or_default().push(i);
            }
        }
        let mut remap: Vec<usize> = (0..self.datas.len()).collect();
        for (size, group) in by_size {
            if group.len() < 2 {
                continue;
            }
            let mut by_prefix: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
            for &i in &group {
                let h = digest_file(&self.datas[i].path, Some(64 * 1024))?;
                by_prefix.entry(h).or_default().push(i);
            }
            for (_, g) in by_prefix {
                if g.len() < 2 {
                    continue;
                }
                let mut by_full: HashMap<[u8; 32], usize> = HashMap::new();
                for i in g {
                    let h = if size <= 64 * 1024 {
                        // The prefix digest already covers the whole file.
                        digest_file(&self.datas[i].path, Some(64 * 1024))?
                    } else {
                        digest_file(&self.datas[i].path, None)?
                    };
                    match by_full.get(&h) {
                        Some(&first) => remap[i] = first.min(i),
                        None => {
                            by_full.insert(h, i);
                        }
                    }
                }
            }
        }
        let mut used = vec![false; self.datas.len()];
        for n in self.nodes.iter_mut() {
            if let Kind::File { data } = &mut n.kind {
                let d = data.expect("set by scan");
                let d = remap[d];
                if self.datas[d].size == 0 {
                    *data = None;
                } else {
                    if used[d] {
                        self.shared += 1;
                    }
                    used[d] = true;
                    *data = Some(d);
                }
            }
        }
        Ok(())
    }

    /// Primary (`NAME.EXT;1`) and Joliet names, unique per directory.
    fn names(&mut self) {
        for i in 0..self.nodes.len() {
            let Kind::Dir { children } = &self.nodes[i].kind else {
                continue;
            };
            let children = children.clone();
            let mut seen_p: HashSet<Vec<u8>> = HashSet::new();
            let mut seen_j: HashSet<Vec<u16>> = HashSet::new();
            for c in children {
                let is_dir = matches!(self.nodes[c].kind, Kind::Dir { .. });
                let name = self.nodes[c].name.clone();
                let prim = primary_name(&name, is_dir, &mut seen_p);
                let jol = joliet_name(&name, &mut seen_j);
                self.nodes[c].prim = prim;
                self.nodes[c].jol = jol;
            }
        }
    }

    fn sorted_children(&self, dir: usize, joliet: bool) -> Vec<usize> {
        let Kind::Dir { children } = &self.nodes[dir].kind else {
            return Vec::new();
        };
        let mut c = children.clone();
        if joliet {
            c.sort_by(|a, b| self.nodes[*a].jol.cmp(&self.nodes[*b].jol));
        } else {
            c.sort_by(|a, b| prim_key(&self.nodes[*a].prim).cmp(&prim_key(&self.nodes[*b].prim)));
        }
        c
    }

    fn bfs(&self, joliet: bool) -> Vec<usize> {
        let mut order = vec![0usize];
        let mut i = 0;
        while i < order.len() {
            let d = order[i];
            for c in self.sorted_children(d, joliet) {
                if matches!(self.nodes[c].kind, Kind::Dir { .. }) {
                    order.push(c);
                }
            }
            i += 1;
        }
        order
    }

    fn build(&mut self, opts: &MasterOptions) -> Result<()> {
        self.prim_dirs = self.bfs(false);
        self.jol_dirs = self.bfs(true);
        let ts = opts.timestamp;
        // Primary records with Rock Ridge.
        for di in 0..self.prim_dirs.len() {
            let d = self.prim_dirs[di];
            self.cur_dir = d;
            let mut recs = Vec::new();
            let parent = self.nodes[d].parent;
            let mut dot = vec![rr_flags_entry(0x81)];
            if d == 0 {
                dot.insert(0, sp_entry());
            }
            dot.push(px_entry(&self.nodes[d]));
            dot.push(tf_entry(ts));
            if d == 0 {
                dot.push(er_entry());
            }
            recs.push(self.make_rec(vec![0], 0x02, Target::Dir(d), dot));
            let dotdot = vec![
                rr_flags_entry(0x81),
                px_entry(&self.nodes[parent]),
                tf_entry(ts),
            ];
            recs.push(self.make_rec(vec![1], 0x02, Target::Dir(parent), dotdot));
            for c in self.sorted_children(d, false) {
                let node = &self.nodes[c];
                let mut rr = 0x89u8; // PX, NM, TF
                let mut entries = Vec::new();
                let mut sl = Vec::new();
                if let Kind::Symlink { target } = &node.kind {
                    rr |= 0x04;
                    sl = sl_entries(target);
                }
                entries.push(rr_flags_entry(rr));
                entries.extend(nm_entries(&node.name));
                entries.push(px_entry(node));
                entries.push(tf_entry(ts));
                entries.extend(sl);
                let ident = node.prim.clone();
                for (flags, target) in self.targets(c) {
                    let r = self.make_rec(ident.clone(), flags, target, entries.clone());
                    recs.push(r);
                }
            }
            self.prim_recs.insert(d, recs);
        }
        // Joliet records.
        for di in 0..self.jol_dirs.len() {
            let d = self.jol_dirs[di];
            let parent = self.nodes[d].parent;
            let mut recs = vec![
                self.make_rec(vec![0], 0x02, Target::Dir(d), Vec::new()),
                self.make_rec(vec![1], 0x02, Target::Dir(parent), Vec::new()),
            ];
            for c in self.sorted_children(d, true) {
                let ident = self.nodes[c].jol.clone();
                for (flags, target) in self.targets(c) {
                    recs.push(self.make_rec(ident.clone(), flags, target, Vec::new()));
                }
            }
            self.jol_recs.insert(d, recs);
        }
        // Continuation areas: per directory (they follow its extent, where streaming readers such
        // as libarchive expect them), bump allocation, never across a sector boundary.
        let mut ce_count: HashMap<usize, u32> = HashMap::new();
        let mut cur: Option<(usize, u32, u32)> = None;
        for c in self.conts.iter_mut() {
            let len = (c.bytes.len() + if c.next.is_some() { 28 } else { 0 }) as u32;
            let (mut sector, mut offset) = match cur {
                Some((d, s, o)) if d == c.dir => (s, o),
                _ => (0, 0),
            };
            if offset + len > SECTOR as u32 {
                sector += 1;
                offset = 0;
            }
            c.sector = sector;
            c.offset = offset;
            cur = Some((c.dir, sector, offset + len));
            ce_count.insert(c.dir, sector + 1);
        }
        // Path tables.
        let pt_prim_len = self.path_table_len(&self.prim_dirs, false);
        let pt_jol_len = self.path_table_len(&self.jol_dirs, true);
        let mut lba = 19u64;
        let mut pt_lba = [0u32; 4];
        for (i, len) in [pt_prim_len, pt_prim_len, pt_jol_len, pt_jol_len]
            .into_iter()
            .enumerate()
        {
            pt_lba[i] = lba as u32;
            lba += sectors(len as u64);
        }
        for &d in &self.prim_dirs {
            let size = dir_size(&self.prim_recs[&d]);
            self.dir_lba.insert(d, (lba as u32, size as u32));
            lba += size / SECTOR_SIZE;
            if let Some(&n) = ce_count.get(&d) {
                self.ce_sectors.insert(d, (lba as u32, n));
                lba += n as u64;
            }
        }
        for &d in &self.jol_dirs {
            let size = dir_size(&self.jol_recs[&d]);
            self.jdir_lba.insert(d, (lba as u32, size as u32));
            lba += size / SECTOR_SIZE;
        }
        let data_lba = lba;
        // Data extents, in tree (node) order of first reference.
        let mut placed = vec![false; self.datas.len()];
        for n in &self.nodes {
            if let Kind::File { data: Some(d) } = n.kind {
                if !placed[d] {
                    placed[d] = true;
                    let lba32 = u32::try_from(lba)
                        .map_err(|_| Error::Source("image larger than 8 TiB".into()))?;
                    self.datas[d].lba = lba32;
                    lba += sectors(self.datas[d].size);
                }
            }
        }
        let empty_lba = lba;
        lba += 1 + PAD_SECTORS;
        if lba > u32::MAX as u64 {
            return Err(Error::Source("image larger than 8 TiB".into()));
        }
        self.layout = Layout {
            pt_lba,
            data_lba: data_lba as u32,
            empty_lba: empty_lba as u32,
            total_sectors: lba,
            ..Layout::default()
        };
        // Now that directory LBAs are known, render the path tables.
        let (l, m) = self.path_tables(&self.prim_dirs, false);
        self.layout.ptl_prim = l;
        self.layout.ptm_prim = m;
        let (l, m) = self.path_tables(&self.jol_dirs, true);
        self.layout.ptl_jol = l;
        self.layout.ptm_jol = m;
        Ok(())
    }

    /// (flags, target) of each directory record naming node `c` (several for multi-extent files).
    fn targets(&self, c: usize) -> Vec<(u8, Target)> {
        match &self.nodes[c].kind {
            Kind::Dir { .. } => vec![(0x02, Target::Dir(c))],
            Kind::Symlink { .. } | Kind::File { data: None } => vec![(0, Target::Empty)],
            Kind::File { data: Some(d) } => {
                // LBAs are not known yet: record the data index in `lba` and the section number
                // in `len`; resolved at serialisation time.
                let size = self.datas[*d].size;
                let parts = size.div_ceil(self.max_extent).max(1);
                (0..parts)
                    .map(|p| {
                        let flags = if p + 1 < parts { 0x80 } else { 0 };
                        (
                            flags,
                            Target::Data {
                                lba: *d as u32,
                                len: p as u32,
                            },
                        )
                    })
                    .collect()
            }
        }
    }

    fn make_rec(
        &mut self,
        ident: Vec<u8>,
        flags: u8,
        target: Target,
        entries: Vec<Vec<u8>>,
    ) -> Rec {
        let id = ident.len();
        let base = 33 + id + usize::from(id % 2 == 0);
        let avail = 254 - base;
        let total: usize = entries.iter().map(Vec::len).sum();
        let mut rec = Rec {
            ident,
            flags,
            target,
            inline: Vec::new(),
            ce: None,
        };
        if total <= avail {
            rec.inline = entries.concat();
            return rec;
        }
        let mut it = entries.into_iter().peekable();
        while let Some(e) = it.peek() {
            if rec.inline.len() + e.len() + 28 <= avail {
                rec.inline.extend_from_slice(e);
                it.next();
            } else {
                break;
            }
        }
        let rest: Vec<Vec<u8>> = it.collect();
        // Pack the rest into continuation areas of at most one sector each.
        let mut chunks: Vec<Vec<u8>> = vec![Vec::new()];
        let remaining_total: usize = rest.iter().map(Vec::len).sum();
        let mut left = remaining_total;
        for e in rest {
            let cur = chunks.last_mut().expect("non-empty");
            let fits_all = cur.len() + left <= SECTOR;
            if fits_all || cur.len() + e.len() + 28 <= SECTOR {
                cur.extend_from_slice(&e);
            } else {
                chunks.push(e.clone());
            }
            left -= e.len();
        }
        let first = self.conts.len();
        let n = chunks.len();
        for (i, bytes) in chunks.into_iter().enumerate() {
            self.conts.push(Cont {
                dir: self.cur_dir,
                bytes,
                next: if i + 1 < n { Some(first + i + 1) } else { None },
                sector: 0,
                offset: 0,
            });
        }
        rec.ce = Some(first);
        rec
    }

    fn path_table_len(&self, dirs: &[usize], joliet: bool) -> usize {
        dirs.iter()
            .map(|&d| {
                let id = if d == 0 {
                    1
                } else {
                    self.ident(d, joliet).len()
                };
                8 + id + id % 2
            })
            .sum()
    }

    fn ident(&self, d: usize, joliet: bool) -> &[u8] {
        if joliet {
            &self.nodes[d].jol
        } else {
            &self.nodes[d].prim
        }
    }

    fn path_tables(&self, dirs: &[usize], joliet: bool) -> (Vec<u8>, Vec<u8>) {
        let lbas = if joliet {
            &self.jdir_lba
        } else {
            &self.dir_lba
        };
        let number: HashMap<usize, u16> = dirs
            .iter()
            .enumerate()
            .map(|(i, &d)| (d, (i + 1).min(u16::MAX as usize) as u16))
            .collect();
        let (mut l, mut m) = (Vec::new(), Vec::new());
        for &d in dirs {
            let id: &[u8] = if d == 0 { &[0] } else { self.ident(d, joliet) };
            let lba = lbas[&d].0;
            let parent = number[&self.nodes[d].parent];
            for (v, big) in [(&mut l, false), (&mut m, true)] {
                v.push(id.len() as u8);
                v.push(0);
                if big {
                    v.extend_from_slice(&lba.to_be_bytes());
                    v.extend_from_slice(&parent.to_be_bytes());
                } else {
                    v.extend_from_slice(&lba.to_le_bytes());
                    v.extend_from_slice(&parent.to_le_bytes());
                }
                v.extend_from_slice(id);
                if id.len() % 2 == 1 {
                    v.push(0);
                }
            }
        }
        (l, m)
    }

    fn serialize_rec(&self, r: &Rec, joliet: bool, ts: i64, out: &mut Vec<u8>) {
        let (lba, len) = match r.target {
            Target::Dir(d) => {
                if joliet {
                    self.jdir_lba[&d]
                } else {
                    self.dir_lba[&d]
                }
            }
            Target::Empty => (self.layout.empty_lba, 0),
            Target::Data { lba: d, len: part } => {
                let data = &self.datas[d as usize];
                let off = part as u64 * self.max_extent;
                let len = (data.size - off).min(self.max_extent);
                (data.lba + (off / SECTOR_SIZE) as u32, len as u32)
            }
        };
        let start = out.len();
        let total = r.len();
        out.push(total as u8);
        out.push(0);
        both32(out, lba);
        both32(out, len);
        out.extend_from_slice(&dir_date(ts));
        out.push(r.flags);
        out.push(0);
        out.push(0);
        both16(out, 1);
        out.push(r.ident.len() as u8);
        out.extend_from_slice(&r.ident);
        if r.ident.len() % 2 == 0 {
            out.push(0);
        }
        out.extend_from_slice(&r.inline);
        if let Some(ce) = r.ce {
            out.extend_from_slice(&self.ce_entry(ce));
        }
        out.resize(start + total, 0);
    }

    fn ce_entry(&self, c: usize) -> Vec<u8> {
        let c = &self.conts[c];
        let len = c.bytes.len() + if c.next.is_some() { 28 } else { 0 };
        let mut e = vec![b'C', b'E', 28, 1];
        both32(&mut e, self.ce_sectors[&c.dir].0 + c.sector);
        both32(&mut e, c.offset);
        both32(&mut e, len as u32);
        e
    }

    fn dir_extent(&self, d: usize, joliet: bool, ts: i64) -> Vec<u8> {
        let recs = if joliet {
            &self.jol_recs[&d]
        } else {
            &self.prim_recs[&d]
        };
        let mut out = Vec::with_capacity(SECTOR);
        for r in recs {
            let l = r.len();
            if out.len() % SECTOR + l > SECTOR {
                let pad = SECTOR - out.len() % SECTOR;
                out.resize(out.len() + pad, 0);
            }
            self.serialize_rec(r, joliet, ts, &mut out);
        }
        let size = sectors(out.len() as u64).max(1) as usize * SECTOR;
        out.resize(size, 0);
        out
    }

    fn volume_descriptor(&self, joliet: bool, opts: &MasterOptions) -> Vec<u8> {
        let mut v = vec![0u8; SECTOR];
        v[0] = if joliet { 2 } else { 1 };
        v[1..6].copy_from_slice(b"CD001");
        v[6] = 1;
        let text = |v: &mut [u8], at: usize, len: usize, s: &str| {
            if joliet {
                let mut units: Vec<u8> = Vec::new();
                for c in s.encode_utf16().take(len / 2) {
                    units.extend_from_slice(&c.to_be_bytes());
                }
                while units.len() + 2 <= len {
                    units.extend_from_slice(&[0, b' ']);
                }
                v[at..at + units.len()].copy_from_slice(&units);
            } else {
                let b = s.as_bytes();
                let n = b.len().min(len);
                v[at..at + n].copy_from_slice(&b[..n]);
                v[at + n..at + len].fill(b' ');
            }
        };
        text(&mut v, 8, 32, "");
        text(&mut v, 40, 32, &opts.volume_id);
        put_both32(&mut v, 80, self.layout.total_sectors as u32);
        if joliet {
            v[88..91].copy_from_slice(b"%/E");
        }
        put_both16(&mut v, 120, 1);
        put_both16(&mut v, 124, 1);
        put_both16(&mut v, 128, SECTOR as u16);
        let (pt_len, l_lba, m_lba) = if joliet {
            (
                self.layout.ptl_jol.len(),
                self.layout.pt_lba[2],
                self.layout.pt_lba[3],
            )
        } else {
            (
                self.layout.ptl_prim.len(),
                self.layout.pt_lba[0],
                self.layout.pt_lba[1],
            )
        };
        put_both32(&mut v, 132, pt_len as u32);
        v[140..144].copy_from_slice(&l_lba.to_le_bytes());
        v[148..152].copy_from_slice(&m_lba.to_be_bytes());
        // Root directory record (34 bytes).
        let (root_lba, root_len) = if joliet {
            self.jdir_lba[&0]
        } else {
            self.dir_lba[&0]
        };
        let mut root = Vec::with_capacity(34);
        root.push(34);
        root.push(0);
        both32(&mut root, root_lba);
        both32(&mut root, root_len);
        root.extend_from_slice(&dir_date(opts.timestamp));
        root.push(0x02);
        root.push(0);
        root.push(0);
        both16(&mut root, 1);
        root.push(1);
        root.push(0);
        v[156..190].copy_from_slice(&root);
        text(&mut v, 190, 128, "");
        text(&mut v, 318, 128, "");
        text(&mut v, 446, 128, "");
        text(&mut v, 574, 128, "BUILDCHAIN ISO9660-WRITER");
        text(&mut v, 702, 37, "");
        text(&mut v, 739, 37, "");
        text(&mut v, 776, 37, "");
        let date = vd_date(opts.timestamp);
        v[813..830].copy_from_slice(&date);
        v[830..847].copy_from_slice(&date);
        v[847..864].copy_from_slice(&vd_date_unset());
        v[864..881].copy_from_slice(&date);
        v[881] = 1;
        v[883..883 + md5sum::APP_USE_SIZE].fill(b' ');
        v
    }

    fn write(&self, out: &mut File, opts: &MasterOptions, t: &Trace) -> Result<MasterReport> {
        let ts = opts.timestamp;
        let total = self.layout.total_sectors * SECTOR_SIZE;
        out.set_len(0)
            .map_err(|e| Error::io("truncate output", e))?;
        out.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek output", e))?;
        let mut sink = Sink::new(out, opts, total);
        // System area, descriptors.
        sink.write(&vec![0u8; 16 * SECTOR])?;
        sink.write(&self.volume_descriptor(false, opts))?;
        sink.write(&self.volume_descriptor(true, opts))?;
        let mut term = vec![0u8; SECTOR];
        term[0] = 255;
        term[1..6].copy_from_slice(b"CD001");
        term[6] = 1;
        sink.write(&term)?;
        for t in [
            &self.layout.ptl_prim,
            &self.layout.ptm_prim,
            &self.layout.ptl_jol,
            &self.layout.ptm_jol,
        ] {
            let mut t = t.clone();
            t.resize(sectors(t.len() as u64) as usize * SECTOR, 0);
            sink.write(&t)?;
        }
        for &d in &self.prim_dirs {
            sink.write(&self.dir_extent(d, false, ts))?;
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
                sink.write(&area)?;
            }
        }
        for &d in &self.jol_dirs {
            sink.write(&self.dir_extent(d, true, ts))?;
        }
        debug_assert_eq!(sink.offset(), self.layout.data_lba as u64 * SECTOR_SIZE);
        // File data in LBA order.
        let mut order: Vec<usize> = (0..self.datas.len())
            .filter(|&d| self.datas[d].lba != 0)
            .collect();
        order.sort_by_key(|&d| self.datas[d].lba);
        let mut data_bytes = 0u64;
        for d in &order {
            let data = &self.datas[*d];
            if sink.offset() != data.lba as u64 * SECTOR_SIZE {
                return Err(Error::Source("internal layout error".into()));
            }
            sink.copy_file(&data.path, data.size)?;
            data_bytes += data.size;
        }
        // Empty sector + padding.
        let rest = total - sink.offset();
        sink.zeros(rest)?;
        t.mark("write (data copied)");
        let (md5_hex, sha) = sink.finish()?;
        t.mark("md5 finished");
        let mut report = MasterReport {
            size: total,
            sha256_hex: String::new(),
            md5_hex: None,
            files: 0,
            directories: 0,
            symlinks: 0,
            extents: order.len() as u64,
            shared_extents: self.shared,
            data_bytes,
        };
        for n in &self.nodes {
            match n.kind {
                Kind::Dir { .. } => report.directories += 1,
                Kind::File { .. } => report.files += 1,
                Kind::Symlink { .. } => report.symlinks += 1,
            }
        }
        match md5_hex {
            Some((md5, frags)) => {
                let text = md5sum::record_text(&md5, &frags, false);
                out.seek(SeekFrom::Start(md5sum::APP_USE_OFFSET))
                    .map_err(|e| Error::io("seek output", e))?;
                out.write_all(&text)
                    .map_err(|e| Error::io("write isomd5sum record", e))?;
                report.sha256_hex = sha256_of(out, total)?;
                t.mark("sha256 of the implanted image");
                report.md5_hex = Some(md5);
            }
            None => report.sha256_hex = sha.unwrap_or_default(),
        }
        out.seek(SeekFrom::Start(total))
            .map_err(|e| Error::io("seek output", e))?;
        Ok(report)
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

/// SHA-256 of the first `len` bytes of `f`, reading on a helper thread (double buffering,
/// page-aligned buffers).
fn sha256_of(f: &mut File, len: u64) -> Result<String> {
    use std::os::unix::fs::FileExt;
    let (tx, rx) = mpsc::sync_channel::<std::io::Result<Buf>>(4);
    let (ret_tx, ret_rx) = mpsc::channel::<Buf>();
    let file = &*f;
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut pos = 0u64;
            while pos < len {
                let mut buf = ret_rx.try_recv().unwrap_or_else(|_| Buf::new());
                let n = ((len - pos) as usize).min(IO_BUF);
                buf.len = 0;
                let r = file.read_exact_at(&mut buf.spare()[..n], pos).map(|_| {
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

/// A page-aligned I/O buffer of `IO_BUF` bytes (page-aligned user buffers make the kernel's
/// copies into and out of the page cache several times cheaper).
struct Buf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl Buf {
    fn new() -> Self {
        let raw = vec![0u8; IO_BUF + 4096];
        let off = (4096 - raw.as_ptr() as usize % 4096) % 4096;
        Buf { raw, off, len: 0 }
    }
    fn data(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }
    fn room(&self) -> usize {
        IO_BUF - self.len
    }
    fn spare(&mut self) -> &mut [u8] {
        &mut self.raw[self.off + self.len..self.off + IO_BUF]
    }
}

/// Buffers in flight between the writing thread and the MD5 thread.
const POOL: usize = 8;

/// Writes the image sequentially, feeding the isomd5sum computation (on its own thread) or the
/// SHA-256 (when no implant is requested).
struct Sink<'a, 'o> {
    out: &'o mut File,
    pos: u64,
    buf: Buf,
    progress: Option<&'a (dyn Fn(u64) + Sync)>,
    md5_tx: Option<mpsc::SyncSender<Buf>>,
    recycle: Option<mpsc::Receiver<Buf>>,
    md5_thread: Option<std::thread::JoinHandle<(String, String)>>,
    sha: Option<Sha256>,
    allocated: usize,
}

impl<'a, 'o> Sink<'a, 'o> {
    fn new(out: &'o mut File, opts: &MasterOptions<'a>, total: u64) -> Self {
        let mut s = Sink {
            out,
            pos: 0,
            buf: Buf::new(),
            progress: opts.progress,
            md5_tx: None,
            recycle: None,
            md5_thread: None,
            sha: None,
            allocated: 1,
        };
        if opts.implant_md5 {
            let (tx, rx) = mpsc::sync_channel::<Buf>(POOL);
            let (rtx, rrx) = mpsc::channel::<Buf>();
            s.md5_thread = Some(std::thread::spawn(move || {
                let mut h = Md5Implanter::new(total);
                for b in rx {
                    h.update(b.data());
                    let _ = rtx.send(b);
                }
                h.finish()
            }));
            s.md5_tx = Some(tx);
            s.recycle = Some(rrx);
        } else {
            s.sha = Some(Sha256::new());
        }
        s
    }

    /// Logical position (bytes accepted so far).
    fn offset(&self) -> u64 {
        self.pos + self.buf.len as u64
    }

    /// A buffer from the pool (buffers come back from the MD5 thread once hashed); at most
    /// `POOL` buffers exist, so memory stays bounded whatever the image size.
    fn fresh_buf(&mut self) -> Buf {
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

    fn flush_buf(&mut self) -> Result<()> {
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
                tx.send(full)
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

    fn write(&mut self, mut data: &[u8]) -> Result<()> {
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

    fn zeros(&mut self, mut n: u64) -> Result<()> {
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
    fn copy_file(&mut self, path: &Path, size: u64) -> Result<()> {
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

    #[allow(clippy::type_complexity)]
    fn finish(mut self) -> Result<(Option<(String, String)>, Option<String>)> {
        self.flush_buf()?;
        self.md5_tx = None;
        let md5 = match self.md5_thread.take() {
            Some(t) => Some(
                t.join()
                    .map_err(|_| Error::Md5("MD5 thread panicked".into()))?,
            ),
            None => None,
        };
        let sha = self.sha.take().map(|s| hex::encode(s.finalize()));
        Ok((md5, sha))
    }
}

fn digest_file(path: &Path, limit: Option<u64>) -> Result<[u8; 32]> {
    let f = File::open(path).map_err(io_ctx("open", path))?;
    let mut r: Box<dyn Read> = match limit {
        Some(l) => Box::new(f.take(l)),
        None => Box::new(f),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf).map_err(io_ctx("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

fn dir_size(recs: &[Rec]) -> u64 {
    let mut pos = 0usize;
    for r in recs {
        let l = r.len();
        if pos % SECTOR + l > SECTOR {
            pos += SECTOR - pos % SECTOR;
        }
        pos += l;
    }
    sectors(pos as u64).max(1) * SECTOR_SIZE
}

/// Sort key of a primary identifier: (name, extension, version) per ECMA-119 9.3.
fn prim_key(id: &[u8]) -> (&[u8], &[u8]) {
    let id = match id.iter().position(|&c| c == b';') {
        Some(p) => &id[..p],
        None => id,
    };
    match id.iter().position(|&c| c == b'.') {
        Some(p) => (&id[..p], &id[p + 1..]),
        None => (id, &[][..]),
    }
}

fn d_char(c: u8) -> u8 {
    match c {
        b'a'..=b'z' => c - 32,
        b'A'..=b'Z' | b'0'..=b'9' | b'_' => c,
        _ => b'_',
    }
}

/// Upper-case `NAME.EXT;1` (files; name + ext ≤ 30) or `NAME` (directories; ≤ 31), unique in
/// `seen` (a numeric suffix replaces the end of the name on collision).
fn primary_name(name: &[u8], is_dir: bool, seen: &mut HashSet<Vec<u8>>) -> Vec<u8> {
    let (stem, ext): (Vec<u8>, Vec<u8>) = if is_dir {
        (name.iter().map(|&c| d_char(c)).collect(), Vec::new())
    } else {
        match name.iter().rposition(|&c| c == b'.') {
            Some(p) => (
                name[..p].iter().map(|&c| d_char(c)).collect(),
                name[p + 1..].iter().map(|&c| d_char(c)).collect(),
            ),
            None => (name.iter().map(|&c| d_char(c)).collect(), Vec::new()),
        }
    };
    let ext: Vec<u8> = ext.into_iter().take(8).collect();
    let max_stem = if is_dir { 31 } else { 30 - ext.len() };
    let mut stem: Vec<u8> = stem.into_iter().take(max_stem).collect();
    if stem.is_empty() && (is_dir || ext.is_empty()) {
        stem.push(b'_');
    }
    let compose = |stem: &[u8]| -> Vec<u8> {
        let mut v = stem.to_vec();
        if !is_dir {
            v.push(b'.');
            v.extend_from_slice(&ext);
        }
        v
    };
    let mut cand = compose(&stem);
    let mut n = 1u64;
    while seen.contains(&cand) {
        let suffix = n.to_string().into_bytes();
        let keep = max_stem.saturating_sub(suffix.len()).min(stem.len());
        let mut s = stem[..keep].to_vec();
        s.extend_from_slice(&suffix);
        cand = compose(&s);
        n += 1;
    }
    seen.insert(cand.clone());
    if !is_dir {
        cand.extend_from_slice(b";1");
    }
    cand
}

/// Joliet name (UCS-2 BE, ≤ 103 units, no version suffix), unique in `seen`.
fn joliet_name(name: &[u8], seen: &mut HashSet<Vec<u16>>) -> Vec<u8> {
    let s = String::from_utf8_lossy(name);
    let units: Vec<u16> = s
        .chars()
        .map(|c| {
            let u = c as u32;
            if !(0x20..=0xFFFF).contains(&u) || "*/:;?\\".contains(c) {
                b'_' as u16
            } else {
                u as u16
            }
        })
        .collect();
    let base: Vec<u16> = units.iter().copied().take(JOLIET_MAX).collect();
    let mut cand = base.clone();
    let mut n = 1u64;
    while seen.contains(&cand) {
        let suffix: Vec<u16> = n.to_string().encode_utf16().collect();
        let keep = JOLIET_MAX.saturating_sub(suffix.len()).min(base.len());
        cand = base[..keep].to_vec();
        cand.extend(suffix);
        n += 1;
    }
    seen.insert(cand.clone());
    cand.iter().flat_map(|u| u.to_be_bytes()).collect()
}

/// The mode `mkisofs -r` semantics give an entry of source mode `mode` (file-type bits kept):
/// directories 0755, files 0644, files with any execute bit 0755, symlinks 0777; no group/other
/// write, no set-id or sticky bits.
pub fn normalized_mode(mode: u32) -> u32 {
    const S_IFMT: u32 = 0o170000;
    let perm = match mode & S_IFMT {
        0o040000 => 0o755,
        0o120000 => 0o777,
        _ if mode & 0o111 != 0 => 0o755,
        _ => 0o644,
    };
    (mode & S_IFMT) | perm
}

fn sp_entry() -> Vec<u8> {
    vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0]
}

fn rr_flags_entry(flags: u8) -> Vec<u8> {
    vec![b'R', b'R', 5, 1, flags]
}

fn er_entry() -> Vec<u8> {
    let id = b"RRIP_1991A";
    let des =
        b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
    let src = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";
    let mut e = vec![
        b'E',
        b'R',
        (8 + id.len() + des.len() + src.len()) as u8,
        1,
        id.len() as u8,
        des.len() as u8,
        src.len() as u8,
        1,
    ];
    e.extend_from_slice(id);
    e.extend_from_slice(des);
    e.extend_from_slice(src);
    e
}

fn px_entry(n: &Node) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 44, 1];
    both32(&mut e, n.mode);
    both32(&mut e, n.nlink);
    both32(&mut e, 0);
    both32(&mut e, 0);
    both32(&mut e, n.serial);
    e
}

fn tf_entry(ts: i64) -> Vec<u8> {
    let mut e = vec![b'T', b'F', 26, 1, 0x0E];
    let d = dir_date(ts);
    for _ in 0..3 {
        e.extend_from_slice(&d);
    }
    e
}

fn nm_entries(name: &[u8]) -> Vec<Vec<u8>> {
    let pieces: Vec<&[u8]> = name.chunks(250).collect();
    let n = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut e = vec![b'N', b'M', (5 + p.len()) as u8, 1, u8::from(i + 1 < n)];
            e.extend_from_slice(p);
            e
        })
        .collect()
}

/// SL entries for a symlink target (components split to fit 255-byte entries).
fn sl_entries(target: &[u8]) -> Vec<Vec<u8>> {
    // Component records: (flags, content).
    let mut comps: Vec<(u8, Vec<u8>)> = Vec::new();
    if target.first() == Some(&b'/') {
        comps.push((0x08, Vec::new()));
    }
    for part in target.split(|&c| c == b'/').filter(|p| !p.is_empty()) {
        match part {
            b"." => comps.push((0x02, Vec::new())),
            b".." => comps.push((0x04, Vec::new())),
            _ => {
                let pieces: Vec<&[u8]> = part.chunks(248).collect();
                let n = pieces.len();
                for (i, p) in pieces.into_iter().enumerate() {
                    comps.push((u8::from(i + 1 < n), p.to_vec()));
                }
            }
        }
    }
    if comps.is_empty() {
        comps.push((0x02, Vec::new()));
    }
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for (flags, content) in comps {
        if 5 + cur.len() + 2 + content.len() > 255 {
            entries.push(std::mem::take(&mut cur));
        }
        cur.push(flags);
        cur.push(content.len() as u8);
        cur.extend_from_slice(&content);
    }
    entries.push(cur);
    let n = entries.len();
    entries
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let mut e = vec![b'S', b'L', (5 + body.len()) as u8, 1, u8::from(i + 1 < n)];
            e.extend_from_slice(&body);
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_names() {
        let mut seen = HashSet::new();
        assert_eq!(
            primary_name(b"product.txt", false, &mut seen),
            b"PRODUCT.TXT;1"
        );
        assert_eq!(
            primary_name(b"manifest.yaml", false, &mut seen),
            b"MANIFEST.YAML;1"
        );
        assert_eq!(
            primary_name(b"Product.txt", false, &mut seen),
            b"PRODUCT1.TXT;1"
        );
        assert_eq!(primary_name(b"images", true, &mut seen), b"IMAGES");
        let long = primary_name(&[b'a'; 64], false, &mut seen);
        assert_eq!(long.len(), 30 + 3);
        let long2 = primary_name(&[b'a'; 65], false, &mut seen);
        assert_ne!(long, long2);
    }

    #[test]
    fn symlink_components() {
        let e = sl_entries(b"/usr/../x/./y");
        assert_eq!(e.len(), 1);
        let long = vec![b'a'; 600];
        let e = sl_entries(&long);
        assert!(e.iter().all(|x| x.len() <= 255));
        assert!(e.len() >= 3);
    }
}
