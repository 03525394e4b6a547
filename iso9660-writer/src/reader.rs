//! A defensive ISO-9660 reader: [`IsoReader`].
//!
//! It walks the tree with Rock Ridge names when the image has them (SUSP `SP` in the root `.`
//! record), else Joliet, else plain ISO-9660 names (version `;1` and trailing `.` removed), and
//! streams file contents (multi-extent files included).
//!
//! Hostile images produce [`Error::Malformed`], never a panic: every offset is bounds-checked
//! against the image length, directories are read at most once (loops are errors), depth, entry
//! count, directory size and `CE` chains are bounded.
//!
//! ```no_run
//! # fn main() -> Result<(), iso9660_writer::Error> {
//! use iso9660_writer::{IsoReader, EntryKind};
//! let mut iso = IsoReader::open(std::fs::File::open("x.iso").unwrap())?;
//! for e in iso.walk()? {
//!     if e.kind == EntryKind::File {
//!         let mut content = Vec::new();
//!         iso.read_file(&e, &mut content)?;
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};

use crate::util::{be32, le32, parse_dir_date};
use crate::{Error, Result, SECTOR_SIZE};

/// Deepest directory nesting accepted.
pub const MAX_DEPTH: usize = 256;
/// Most entries accepted in one walk.
pub const MAX_ENTRIES: usize = 10_000_000;
/// Largest directory extent accepted (bytes).
pub const MAX_DIR_BYTES: u64 = 64 << 20;
/// Most `CE` continuation hops followed for one record.
pub const MAX_CE_HOPS: usize = 64;

/// Which directory hierarchy names come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// Primary hierarchy with Rock Ridge (POSIX names, modes, symlinks).
    RockRidge,
    /// Joliet supplementary hierarchy (UCS-2 names).
    Joliet,
    /// Primary hierarchy, plain ISO-9660 names.
    Plain,
}

/// Type of an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (Rock Ridge `SL`), with its target.
    Symlink(String),
    /// Anything else Rock Ridge describes (device, FIFO, socket).
    Other,
}

/// One data extent of a file: `len` bytes at sector `lba`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First logical sector.
    pub lba: u32,
    /// Length in bytes.
    pub len: u32,
}

/// A directory entry found by [`IsoReader::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the root, `/`-separated, no leading slash (lossy UTF-8).
    pub path: String,
    /// Raw name bytes (Rock Ridge `NM` bytes, UTF-8 of the Joliet name, or the plain name).
    pub name: Vec<u8>,
    /// Kind.
    pub kind: EntryKind,
    /// Size in bytes (sum of extents; 0 for directories and symlinks).
    pub size: u64,
    /// POSIX mode (`st_mode`, type bits included) from Rock Ridge `PX`.
    pub mode: Option<u32>,
    /// Link count from Rock Ridge `PX`.
    pub nlink: Option<u32>,
    /// Rock Ridge file serial number (`PX`, RRIP 1.12), if present.
    pub serial: Option<u32>,
    /// Modification time (unix seconds) of the directory record.
    pub mtime: Option<i64>,
    /// Data extents (files; directories get their own extent).
    pub extents: Vec<Extent>,
    /// Nesting depth (1 for entries of the root directory).
    pub depth: usize,
}

/// Reader over any `Read + Seek` holding an ISO-9660 image.
pub struct IsoReader<R> {
    inner: R,
    image_len: u64,
    volume_id: String,
    volume_sectors: u32,
    app_use: Vec<u8>,
    root: Extent,
    joliet_root: Option<Extent>,
    rr_skip: Option<usize>,
}

struct Raw {
    ident: Vec<u8>,
    flags: u8,
    extent: Extent,
    mtime: Option<i64>,
    su: Vec<u8>,
}

#[derive(Default)]
struct Rr {
    name: Option<Vec<u8>>,
    mode: Option<u32>,
    nlink: Option<u32>,
    serial: Option<u32>,
    symlink: Option<Vec<u8>>,
    relocated: bool,
    child_link: Option<u32>,
}

impl<R: Read + Seek> IsoReader<R> {
    /// Opens an image: reads the volume descriptors (from sector 16) and detects Rock Ridge.
    pub fn open(mut inner: R) -> Result<Self> {
        let image_len = inner
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("seek image end", e))?;
        let mut pvd: Option<Vec<u8>> = None;
        let mut joliet_root = None;
        for i in 16..16 + 64u64 {
            if (i + 1) * SECTOR_SIZE > image_len {
                break;
            }
            let s = read_at(&mut inner, image_len, i * SECTOR_SIZE, SECTOR_SIZE)?;
            if &s[1..6] != b"CD001" {
                break;
            }
            match s[0] {
                1 if pvd.is_none() => pvd = Some(s),
                2 if joliet_root.is_none()
                    && s[88] == b'%'
                    && s[89] == b'/'
                    && matches!(s[90], b'@' | b'C' | b'E') =>
                {
                    joliet_root = Some(root_extent(&s)?);
                }
                255 => break,
                _ => {}
            }
        }
        let pvd = pvd.ok_or_else(|| Error::bad("no primary volume descriptor"))?;
        let root = root_extent(&pvd)?;
        let volume_id = String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string();
        let volume_sectors = le32(&pvd, 80);
        let mut r = IsoReader {
            inner,
            image_len,
            volume_id,
            volume_sectors,
            app_use: pvd[883..883 + 512].to_vec(),
            root,
            joliet_root,
            rr_skip: None,
        };
        r.detect_rr()?;
        Ok(r)
    }

    /// Volume identifier of the PVD (trailing spaces removed).
    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    /// Volume space size in sectors (PVD).
    pub fn volume_sectors(&self) -> u32 {
        self.volume_sectors
    }

    /// The 512-byte PVD application-use field (isomd5sum record).
    pub fn application_use(&self) -> &[u8] {
        &self.app_use
    }

    /// Whether the primary hierarchy has Rock Ridge (SUSP `SP` in the root `.` record).
    pub fn has_rock_ridge(&self) -> bool {
        self.rr_skip.is_some()
    }

    /// Whether a Joliet supplementary descriptor exists.
    pub fn has_joliet(&self) -> bool {
        self.joliet_root.is_some()
    }

    /// The namespace [`IsoReader::walk`] uses: Rock Ridge, else Joliet, else plain.
    pub fn default_namespace(&self) -> Namespace {
        if self.has_rock_ridge() {
            Namespace::RockRidge
        } else if self.has_joliet() {
            Namespace::Joliet
        } else {
            Namespace::Plain
        }
    }

    fn detect_rr(&mut self) -> Result<()> {
        let data = self.read_dir_data(self.root)?;
        if let Some(Ok(rec)) = records(&data).next() {
            let su = &rec.su;
            if su.len() >= 7 && &su[0..2] == b"SP" && su[4] == 0xBE && su[5] == 0xEF {
                self.rr_skip = Some(su[6] as usize);
            }
        }
        Ok(())
    }

    fn read_dir_data(&mut self, e: Extent) -> Result<Vec<u8>> {
        if e.len as u64 > MAX_DIR_BYTES {
            return Err(Error::bad(format!(
                "directory at sector {} is {} bytes (limit {MAX_DIR_BYTES})",
                e.lba, e.len
            )));
        }
        read_at(
            &mut self.inner,
            self.image_len,
            e.lba as u64 * SECTOR_SIZE,
            e.len as u64,
        )
    }

    /// Every entry, depth-first in directory order, using [`IsoReader::default_namespace`].
    pub fn walk(&mut self) -> Result<Vec<Entry>> {
        self.walk_namespace(self.default_namespace())
    }

    /// Every entry of the given namespace (Rock Ridge requires [`IsoReader::has_rock_ridge`],
    /// Joliet requires [`IsoReader::has_joliet`]).
    pub fn walk_namespace(&mut self, ns: Namespace) -> Result<Vec<Entry>> {
        let root = match ns {
            Namespace::Joliet => self
                .joliet_root
                .ok_or_else(|| Error::bad("image has no Joliet descriptor"))?,
            Namespace::RockRidge if self.rr_skip.is_none() => {
                return Err(Error::bad("image has no Rock Ridge"));
            }
            _ => self.root,
        };
        let mut out = Vec::new();
        // Overlapping directory extents could make a small image expand quadratically: the
        // directory bytes read in one walk are bounded by twice the image size.
        let mut budget = self.image_len.saturating_mul(2).max(1 << 20);
        let mut visited: HashSet<u32> = HashSet::new();
        visited.insert(root.lba);
        // (directory extent, path prefix, depth)
        let mut stack: Vec<(Extent, String, usize)> = vec![(root, String::new(), 1)];
        while let Some((dir, prefix, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(Error::bad(format!(
                    "directory nesting deeper than {MAX_DEPTH}"
                )));
            }
            budget = budget.checked_sub(dir.len as u64).ok_or_else(|| {
                Error::bad("directories overlap: more directory data than the image holds")
            })?;
            let entries = self.read_dir(dir, &prefix, depth, ns)?;
            let mut subdirs = Vec::new();
            for e in entries {
                if e.kind == EntryKind::Dir {
                    let ext = e.extents[0];
                    if !visited.insert(ext.lba) {
                        return Err(Error::bad(format!(
                            "directory loop: {} points to sector {} already visited",
                            e.path, ext.lba
                        )));
                    }
                    subdirs.push((ext, e.path.clone(), depth + 1));
                }
                out.push(e);
                if out.len() > MAX_ENTRIES {
                    return Err(Error::bad(format!("more than {MAX_ENTRIES} entries")));
                }
            }
            for s in subdirs.into_iter().rev() {
                stack.push(s);
            }
        }
        Ok(out)
    }

    fn read_dir(
        &mut self,
        dir: Extent,
        prefix: &str,
        depth: usize,
        ns: Namespace,
    ) -> Result<Vec<Entry>> {
        let data = self.read_dir_data(dir)?;
        let mut out: Vec<Entry> = Vec::new();
        let mut continuing = false;
        for (i, rec) in records(&data).enumerate() {
            let rec =
                rec.map_err(|m| Error::bad(format!("directory at sector {}: {m}", dir.lba)))?;
            if i < 2 || rec.ident == [0] || rec.ident == [1] {
                continue;
            }
            let rr = if ns == Namespace::RockRidge {
                self.parse_su(&rec.su)?
            } else {
                Rr::default()
            };
            if rr.relocated {
                continue;
            }
            let name: Vec<u8> = match ns {
                Namespace::RockRidge => rr.name.clone().unwrap_or_else(|| plain_name(&rec.ident)),
                Namespace::Joliet => joliet_name(&rec.ident).into_bytes(),
                Namespace::Plain => plain_name(&rec.ident),
            };
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name.contains(&b'/')
                || name.contains(&0)
            {
                return Err(Error::bad(format!(
                    "directory at sector {}: invalid name {:?}",
                    dir.lba,
                    String::from_utf8_lossy(&name)
                )));
            }
            // Continuation of a multi-extent file.
            if continuing {
                if let Some(last) = out.last_mut() {
                    if last.name == name && rec.flags & 0x02 == 0 {
                        last.extents.push(rec.extent);
                        last.size += rec.extent.len as u64;
                        continuing = rec.flags & 0x80 != 0;
                        continue;
                    }
                }
            }
            continuing = rec.flags & 0x80 != 0;
            let is_dir = rec.flags & 0x02 != 0 || rr.child_link.is_some();
            let mut extent = rec.extent;
            if let Some(cl) = rr.child_link {
                extent = Extent { lba: cl, len: 0 };
                // Length comes from the child's "." record.
                let d = read_at(
                    &mut self.inner,
                    self.image_len,
                    cl as u64 * SECTOR_SIZE,
                    SECTOR_SIZE,
                )?;
                let first = records(&d).next();
                match first {
                    Some(Ok(r)) => extent.len = r.extent.len,
                    _ => return Err(Error::bad(format!("bad CL target sector {cl}"))),
                }
            }
            let kind = if is_dir {
                EntryKind::Dir
            } else if let Some(t) = &rr.symlink {
                EntryKind::Symlink(String::from_utf8_lossy(t).into_owned())
            } else {
                match rr.mode.map(|m| m & 0o170000) {
                    None | Some(0o100000) | Some(0) => EntryKind::File,
                    Some(0o120000) => EntryKind::Symlink(String::new()),
                    Some(0o040000) => EntryKind::Dir,
                    Some(_) => EntryKind::Other,
                }
            };
            let name_str = String::from_utf8_lossy(&name);
            let path = if prefix.is_empty() {
                name_str.into_owned()
            } else {
                format!("{prefix}/{name_str}")
            };
            let size = if kind == EntryKind::File {
                extent.len as u64
            } else {
                0
            };
            out.push(Entry {
                path,
                name,
                kind,
                size,
                mode: rr.mode,
                nlink: rr.nlink,
                serial: rr.serial,
                mtime: rec.mtime,
                extents: vec![extent],
                depth,
            });
        }
        Ok(out)
    }

    /// Parses the System Use area of a primary record (following `CE` continuations).
    fn parse_su(&mut self, su: &[u8]) -> Result<Rr> {
        let mut rr = Rr::default();
        let skip = self.rr_skip.unwrap_or(0);
        let mut area: Vec<u8> = su.get(skip..).unwrap_or(&[]).to_vec();
        let mut hops = 0;
        let mut name: Vec<u8> = Vec::new();
        let mut have_name = false;
        let mut link: Vec<u8> = Vec::new();
        let mut have_link = false;
        let mut link_continued = false;
        loop {
            let mut next: Option<(u64, u64)> = None;
            let mut off = 0usize;
            while off + 4 <= area.len() {
                let sig = [area[off], area[off + 1]];
                let len = area[off + 2] as usize;
                if len < 4 || off + len > area.len() {
                    break;
                }
                let body = &area[off + 4..off + len];
                match &sig {
                    b"NM" if !body.is_empty() => {
                        let flags = body[0];
                        if flags & 0x06 == 0 {
                            name.extend_from_slice(&body[1..]);
                            have_name = true;
                        }
                    }
                    b"PX" if body.len() >= 32 => {
                        rr.mode = Some(le32(body, 0));
                        rr.nlink = Some(le32(body, 8));
                        if body.len() >= 40 {
                            rr.serial = Some(le32(body, 32));
                        }
                    }
                    b"SL" if !body.is_empty() => {
                        have_link = true;
                        let mut p = 1usize;
                        while p + 2 <= body.len() {
                            let cf = body[p];
                            let cl = body[p + 1] as usize;
                            let Some(content) = body.get(p + 2..p + 2 + cl) else {
                                break;
                            };
                            if !link_continued && !link.is_empty() && link != b"/" {
                                link.push(b'/');
                            }
                            if cf & 0x08 != 0 {
                                link.clear();
                                link.push(b'/');
                            } else if cf & 0x02 != 0 {
                                link.push(b'.');
                            } else if cf & 0x04 != 0 {
                                link.extend_from_slice(b"..");
                            } else {
                                link.extend_from_slice(content);
                            }
                            link_continued = cf & 0x01 != 0;
                            p += 2 + cl;
                        }
                    }
                    b"RE" => rr.relocated = true,
                    b"CL" if body.len() >= 8 => rr.child_link = Some(le32(body, 0)),
                    b"CE" if body.len() >= 24 => {
                        next = Some((
                            le32(body, 0) as u64 * SECTOR_SIZE + le32(body, 8) as u64,
                            le32(body, 16) as u64,
                        ));
                    }
                    b"ST" => break,
                    _ => {}
                }
                off += len;
            }
            match next {
                Some((pos, len)) if hops < MAX_CE_HOPS && len <= SECTOR_SIZE => {
                    hops += 1;
                    area = read_at(&mut self.inner, self.image_len, pos, len)?;
                }
                Some(_) => {
                    return Err(Error::bad(
                        "Rock Ridge continuation chain too long or too big",
                    ))
                }
                None => break,
            }
        }
        if have_name {
            rr.name = Some(name);
        }
        if have_link {
            rr.symlink = Some(link);
        }
        Ok(rr)
    }

    /// Streams the content of a file entry into `out`; returns the bytes written.
    pub fn read_file(&mut self, entry: &Entry, out: &mut dyn Write) -> Result<u64> {
        if entry.kind != EntryKind::File {
            return Err(Error::bad(format!("{} is not a regular file", entry.path)));
        }
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for ext in &entry.extents {
            let start = ext.lba as u64 * SECTOR_SIZE;
            let end = start + ext.len as u64;
            if end > self.image_len {
                return Err(Error::bad(format!(
                    "{}: extent at sector {} ({} bytes) is beyond the end of the image ({} bytes)",
                    entry.path, ext.lba, ext.len, self.image_len
                )));
            }
            self.inner
                .seek(SeekFrom::Start(start))
                .map_err(|e| Error::io(format!("seek to {}", entry.path), e))?;
            let mut left = ext.len as u64;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                self.inner
                    .read_exact(&mut buf[..n])
                    .map_err(|e| Error::io(format!("read {}", entry.path), e))?;
                out.write_all(&buf[..n])
                    .map_err(|e| Error::io(format!("write content of {}", entry.path), e))?;
                left -= n as u64;
                total += n as u64;
            }
        }
        Ok(total)
    }

    /// Reads a whole file into memory, refusing files larger than `limit` bytes.
    pub fn read_to_vec(&mut self, entry: &Entry, limit: u64) -> Result<Vec<u8>> {
        if entry.size > limit {
            return Err(Error::bad(format!(
                "{} is {} bytes (limit {limit})",
                entry.path, entry.size
            )));
        }
        let mut v = Vec::with_capacity(entry.size as usize);
        self.read_file(entry, &mut v)?;
        Ok(v)
    }

    /// Looks up an entry by path (`a/b/c`, leading `/` optional) in the default namespace.
    pub fn find(&mut self, path: &str) -> Result<Option<Entry>> {
        let want = path.trim_start_matches('/');
        Ok(self.walk()?.into_iter().find(|e| e.path == want))
    }
}

fn root_extent(vd: &[u8]) -> Result<Extent> {
    let rec = &vd[156..190];
    if rec[0] < 34 {
        return Err(Error::bad("root directory record too short"));
    }
    Ok(Extent {
        lba: le32(rec, 2),
        len: le32(rec, 10),
    })
}

fn read_at<R: Read + Seek>(r: &mut R, image_len: u64, pos: u64, len: u64) -> Result<Vec<u8>> {
    let end = pos
        .checked_add(len)
        .ok_or_else(|| Error::bad("offset overflow"))?;
    if end > image_len {
        return Err(Error::bad(format!(
            "read of {len} bytes at offset {pos} is beyond the end of the image ({image_len} bytes)"
        )));
    }
    r.seek(SeekFrom::Start(pos))
        .map_err(|e| Error::io(format!("seek to offset {pos}"), e))?;
    let mut v = vec![0u8; len as usize];
    r.read_exact(&mut v)
        .map_err(|e| Error::io(format!("read {len} bytes at offset {pos}"), e))?;
    Ok(v)
}

/// Iterates the directory records of a directory extent.
fn records(data: &[u8]) -> impl Iterator<Item = std::result::Result<Raw, String>> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || loop {
        if off >= data.len() {
            return None;
        }
        let len = data[off] as usize;
        if len == 0 {
            off = (off / SECTOR_SIZE as usize + 1) * SECTOR_SIZE as usize;
            continue;
        }
        let sector_end = ((off / SECTOR_SIZE as usize + 1) * SECTOR_SIZE as usize).min(data.len());
        if len < 34 || off + len > sector_end {
            let at = off;
            off = data.len();
            return Some(Err(format!(
                "bad directory record length {len} at offset {at}"
            )));
        }
        let r = &data[off..off + len];
        off += len;
        let id_len = r[32] as usize;
        if 33 + id_len > len {
            off = data.len();
            return Some(Err("identifier longer than its record".into()));
        }
        let ident = r[33..33 + id_len].to_vec();
        let su_start = 33 + id_len + usize::from(id_len % 2 == 0);
        let su = r.get(su_start..).unwrap_or(&[]).to_vec();
        return Some(Ok(Raw {
            ident,
            flags: r[25],
            extent: Extent {
                lba: le32(r, 2),
                len: le32(r, 10),
            },
            mtime: parse_dir_date(&r[18..25]),
            su,
        }));
    })
}

fn plain_name(ident: &[u8]) -> Vec<u8> {
    let mut n = ident.to_vec();
    if let Some(p) = n.iter().position(|&c| c == b';') {
        n.truncate(p);
    }
    if n.last() == Some(&b'.') {
        n.pop();
    }
    n
}

fn joliet_name(ident: &[u8]) -> String {
    let units: Vec<u16> = ident
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let mut s = String::from_utf16_lossy(&units);
    if let Some(p) = s.find(';') {
        s.truncate(p);
    }
    s
}

/// Largest path table examined by [`structure_problems`].
pub const MAX_PATH_TABLE_BYTES: u64 = 64 << 20;

/// Structural checks `checkisomd5` cannot make (its MD5 skips the last 15 sectors by design):
/// the file holds the whole volume (a truncated image is reported with the bytes missing), the
/// volume space size is not 0, both path tables lie inside the volume, start with the root and
/// agree, and the root directories (primary and Joliet) lie inside the volume. Returns one line
/// per problem (empty: sound); `Err` only when the image cannot be read or has no PVD.
pub fn structure_problems<R: Read + Seek>(r: &mut R) -> Result<Vec<String>> {
    let file_len = r
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::io("seek image end", e))?;
    let mut pvd = None;
    let mut joliet = Vec::new();
    for i in 16..16 + 64u64 {
        if (i + 1) * SECTOR_SIZE > file_len {
            break;
        }
        let s = read_at(r, file_len, i * SECTOR_SIZE, SECTOR_SIZE)?;
        if &s[1..6] != b"CD001" {
            break;
        }
        match s[0] {
            1 if pvd.is_none() => pvd = Some(s),
            2 if s[88] == b'%' && s[89] == b'/' && matches!(s[90], b'@' | b'C' | b'E') => {
                joliet.push(s)
            }
            255 => break,
            _ => {}
        }
    }
    let pvd = pvd.ok_or_else(|| Error::bad("no primary volume descriptor"))?;
    let mut problems = Vec::new();
    let vol = le32(&pvd, 80) as u64;
    let vol_bytes = vol * SECTOR_SIZE;
    if vol == 0 {
        problems.push("the volume space size is 0 sectors".to_string());
    } else if file_len < vol_bytes {
        problems.push(format!(
            "truncated: the volume space size is {vol} sectors ({vol_bytes} bytes) but the file has {file_len} bytes ({} missing)",
            vol_bytes - file_len
        ));
    }
    // Ranges are checked against the volume and the file, whichever is shorter.
    let sectors = vol.min(file_len / SECTOR_SIZE);
    let root = root_extent(&pvd)?;
    let outside = |e: Extent| e.lba as u64 + (e.len as u64).div_ceil(SECTOR_SIZE) > sectors;
    if outside(root) {
        problems.push(format!(
            "the root directory (sector {}, {} bytes) is outside the volume ({sectors} sectors)",
            root.lba, root.len
        ));
    }
    for svd in &joliet {
        let j = root_extent(svd)?;
        if outside(j) {
            problems.push(format!(
                "the Joliet root directory (sector {}, {} bytes) is outside the volume ({sectors} sectors)",
                j.lba, j.len
            ));
        }
    }
    let size = le32(&pvd, 132) as u64;
    if size == 0 {
        problems.push("the path table size is 0".to_string());
        return Ok(problems);
    }
    if size > MAX_PATH_TABLE_BYTES {
        problems.push(format!(
            "the path table size {size} is larger than {MAX_PATH_TABLE_BYTES} bytes"
        ));
        return Ok(problems);
    }
    let mut tables = Vec::new();
    for (name, lba, big) in [("L", le32(&pvd, 140), false), ("M", be32(&pvd, 148), true)] {
        let start = lba as u64 * SECTOR_SIZE;
        if lba == 0 || start + size > sectors * SECTOR_SIZE {
            problems.push(format!(
                "the {name} path table (sector {lba}, {size} bytes) is outside the volume ({sectors} sectors)"
            ));
            continue;
        }
        let t = read_at(r, file_len, start, size)?;
        match parse_path_table(&t, big, sectors, root.lba) {
            Ok(recs) => tables.push(recs),
            Err(p) => problems.push(format!("the {name} path table: {p}")),
        }
    }
    if let [l, m] = &tables[..] {
        if l != m {
            problems.push("the L and M path tables differ".to_string());
        }
    }
    Ok(problems)
}

/// `(extent, parent, identifier)` of every path table record, checked.
fn parse_path_table(
    t: &[u8],
    big: bool,
    sectors: u64,
    root_lba: u32,
) -> std::result::Result<Vec<(u32, u16, Vec<u8>)>, String> {
    let mut out: Vec<(u32, u16, Vec<u8>)> = Vec::new();
    let mut i = 0usize;
    while i < t.len() {
        let n = out.len() + 1;
        let id_len = t[i] as usize;
        if id_len == 0 {
            return Err(format!("record {n} at byte {i} has an empty identifier"));
        }
        if i + 8 + id_len > t.len() {
            return Err(format!(
                "record {n} at byte {i} runs past the end of the table"
            ));
        }
        let r = &t[i..i + 8 + id_len];
        let (extent, parent) = if big {
            (
                u32::from_be_bytes([r[2], r[3], r[4], r[5]]),
                u16::from_be_bytes([r[6], r[7]]),
            )
        } else {
            (le32(r, 2), u16::from_le_bytes([r[6], r[7]]))
        };
        let ident = r[8..].to_vec();
        if n == 1 {
            if ident != [0] || parent != 1 {
                return Err("record 1 is not the root".to_string());
            }
            if extent != root_lba {
                return Err(format!(
                    "record 1 (root) points to sector {extent}, but the root directory is at sector {root_lba}"
                ));
            }
        } else if parent == 0 || parent as usize >= n {
            return Err(format!(
                "record {n} has parent {parent}, not an earlier record"
            ));
        }
        if extent as u64 >= sectors {
            return Err(format!(
                "record {n} points to sector {extent}, outside the volume ({sectors} sectors)"
            ));
        }
        out.push((extent, parent, ident));
        i += 8 + id_len + (id_len & 1);
    }
    Ok(out)
}
