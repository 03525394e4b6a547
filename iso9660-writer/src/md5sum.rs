//! isomd5sum: the MD5 record `implantisomd5` stores in the PVD application-use field, and the
//! check `checkisomd5` performs.
//!
//! Format (isomd5sum 1.2.x): MD5 over `[0, volume_size - 15 * 2048)` read in 32 KiB chunks, with
//! the 512-byte application-use field (PVD byte 883) read as spaces; 20 fragment sums, one per
//! `hashed_len / 21` bytes: when a chunk starting at offset `o` has been hashed and
//! `o / fragment_size` changed, a copy of the running MD5 is finalised and the first `%x` hex
//! character of each of its first 3 bytes is stored at slot `o / fragment_size - 1`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::md5core::{Md5, Md5State};

use crate::{Error, Result, SECTOR_SIZE};

/// Sectors at the end of the image that the MD5 does not cover.
pub const SKIP_SECTORS: u64 = 15;
/// Number of fragment sums.
pub const FRAGMENT_COUNT: u64 = 20;
/// Offset of the PVD application-use field in the image.
pub const APP_USE_OFFSET: u64 = 16 * SECTOR_SIZE + 883;
/// Size of the application-use field.
pub const APP_USE_SIZE: usize = 512;
const CHUNK: u64 = 32 * 1024;
const FRAG_CHARS: usize = 3;

/// Incremental isomd5sum computation over the image bytes, fed in order (any slicing).
///
/// Bytes of the application-use field must be fed as spaces (the writer writes spaces there
/// first; [`implant`] and [`check`] blank them while reading).
#[derive(Clone)]
pub struct Md5Implanter {
    md5: Md5,
    pos: u64,
    hashed_len: u64,
    fragment_size: u64,
    prev_fragment: u64,
    fragments: [u8; (FRAGMENT_COUNT as usize) * FRAG_CHARS],
}

impl Md5Implanter {
    /// Starts a computation for an image of `volume_size` bytes (PVD volume space size × 2048).
    pub fn new(volume_size: u64) -> Self {
        let hashed_len = volume_size.saturating_sub(SKIP_SECTORS * SECTOR_SIZE);
        Md5Implanter {
            md5: Md5::new(),
            pos: 0,
            hashed_len,
            fragment_size: (hashed_len / (FRAGMENT_COUNT + 1)).max(1),
            prev_fragment: 0,
            fragments: [b' '; (FRAGMENT_COUNT as usize) * FRAG_CHARS],
        }
    }

    /// The state after the bytes fed so far (`None` unless their count is a multiple of 64),
    /// so a later run can [`resume`](Self::resume) from the same prefix.
    pub fn export(&self) -> Option<ImplanterState> {
        Some(ImplanterState {
            md5: self.md5.export()?,
            hashed_len: self.hashed_len,
            prev_fragment: self.prev_fragment,
            fragments: self.fragments,
        })
    }

    /// Resumes an exported computation (`None` if the state is inconsistent).
    pub fn resume(s: &ImplanterState) -> Option<Self> {
        if s.md5.len > s.hashed_len {
            return None;
        }
        Some(Md5Implanter {
            md5: Md5::resume(s.md5)?,
            pos: s.md5.len,
            hashed_len: s.hashed_len,
            fragment_size: (s.hashed_len / (FRAGMENT_COUNT + 1)).max(1),
            prev_fragment: s.prev_fragment,
            fragments: s.fragments,
        })
    }

    /// Number of bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Number of bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.hashed_len - self.pos
    }

    /// Feeds image bytes (bytes past the hashed range are ignored).
    pub fn update(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() && self.pos < self.hashed_len {
            let chunk_start = self.pos / CHUNK * CHUNK;
            let chunk_end = (chunk_start + CHUNK).min(self.hashed_len);
            let n = (buf.len() as u64).min(chunk_end - self.pos) as usize;
            self.md5.update(&buf[..n]);
            self.pos += n as u64;
            buf = &buf[n..];
            if self.pos == chunk_end {
                let frag = chunk_start / self.fragment_size;
                if frag != self.prev_fragment {
                    if (1..=FRAGMENT_COUNT).contains(&frag) {
                        let sum = self.md5.clone().finalize();
                        let at = (frag as usize - 1) * FRAG_CHARS;
                        for (c, &b) in self.fragments[at..at + FRAG_CHARS].iter_mut().zip(&sum) {
                            *c = first_hex_char(b);
                        }
                    }
                    self.prev_fragment = frag;
                }
            }
        }
    }

    /// Finishes: the MD5 hex and the 60 fragment characters.
    pub fn finish(self) -> (String, String) {
        let md5 = hex::encode(self.md5.finalize());
        let frags = String::from_utf8_lossy(&self.fragments).into_owned();
        (md5, frags)
    }
}

/// The exported state of an [`Md5Implanter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImplanterState {
    /// MD5 state (its `len` is the image offset reached).
    pub md5: Md5State,
    /// Bytes the MD5 covers.
    pub hashed_len: u64,
    /// Fragment index of the last chunk boundary seen.
    pub prev_fragment: u64,
    /// Fragment characters computed so far (spaces for the rest).
    pub fragments: [u8; (FRAGMENT_COUNT as usize) * FRAG_CHARS],
}

fn first_hex_char(b: u8) -> u8 {
    // `%x` of the byte, first character.
    let s = format!("{b:x}");
    s.as_bytes()[0]
}

/// The 512-byte application-use text for an MD5 and fragment string.
pub fn record_text(md5_hex: &str, fragments: &str, supported: bool) -> [u8; APP_USE_SIZE] {
    let text = format!(
        "ISO MD5SUM = {md5_hex};SKIPSECTORS = {SKIP_SECTORS};RHLISOSTATUS={};FRAGMENT SUMS = {fragments};FRAGMENT COUNT = {FRAGMENT_COUNT};THIS IS NOT THE SAME AS RUNNING MD5SUM ON THIS ISO!!",
        u8::from(supported)
    );
    let mut out = [b' '; APP_USE_SIZE];
    let n = text.len().min(APP_USE_SIZE);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

/// Verdict of [`check`], like `checkisomd5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// The computed MD5 (and every fragment sum) matches the implanted record.
    Pass,
    /// A fragment or the final MD5 differs.
    Fail,
    /// No isomd5sum record in the image.
    NotImplanted,
}

/// Result of [`check`].
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// PASS / FAIL / NA.
    pub status: CheckStatus,
    /// MD5 recorded in the image (hex), if any.
    pub expected_md5: Option<String>,
    /// MD5 computed over the image (hex); `None` when not implanted or aborted at a bad fragment.
    pub computed_md5: Option<String>,
    /// Fragment sums recorded in the image.
    pub fragment_sums: Option<String>,
    /// Fragment count recorded.
    pub fragment_count: Option<u64>,
    /// `RHLISOSTATUS` flag ("Supported ISO").
    pub supported: bool,
    /// Skip sectors recorded.
    pub skip_sectors: Option<u64>,
    /// 1-based index of the first fragment that did not match.
    pub failed_fragment: Option<u64>,
}

/// Parsed isomd5sum record.
#[derive(Debug, Clone, Default)]
struct Record {
    md5: Option<String>,
    fragsums: Option<String>,
    fragcount: Option<u64>,
    skip: Option<u64>,
    supported: bool,
}

fn parse_record(app: &[u8]) -> Record {
    let text = String::from_utf8_lossy(app);
    let mut r = Record::default();
    for field in text.split(';') {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "ISO MD5SUM" => r.md5 = Some(v.to_ascii_lowercase()),
            "SKIPSECTORS" => r.skip = v.parse().ok(),
            "RHLISOSTATUS" => r.supported = v == "1",
            "FRAGMENT SUMS" => r.fragsums = Some(v.to_string()),
            "FRAGMENT COUNT" => r.fragcount = v.parse().ok(),
            _ => {}
        }
    }
    r
}

/// Reads the PVD (first type-1 descriptor from sector 16): returns its offset and volume size.
fn find_pvd<R: Read + Seek>(f: &mut R) -> Result<(u64, u64)> {
    let mut sector = [0u8; SECTOR_SIZE as usize];
    for i in 16..16 + 64u64 {
        f.seek(SeekFrom::Start(i * SECTOR_SIZE))
            .map_err(|e| Error::io("seek to volume descriptors", e))?;
        f.read_exact(&mut sector)
            .map_err(|e| Error::io(format!("read volume descriptor {i}"), e))?;
        if &sector[1..6] != b"CD001" {
            return Err(Error::bad(format!("sector {i}: no CD001 signature")));
        }
        match sector[0] {
            1 => {
                let size = crate::util::be32(&sector, 84) as u64 * SECTOR_SIZE;
                return Ok((i * SECTOR_SIZE, size));
            }
            255 => break,
            _ => {}
        }
    }
    Err(Error::bad("no primary volume descriptor"))
}

/// Hashes `[0, volume_size - 15 sectors)` of `f` (app-use blanked), returning the implanter
/// state; `on_fragment` can abort early (used by [`check`]).
fn hash_image<R: Read + Seek>(
    f: &mut R,
    pvd_off: u64,
    volume_size: u64,
    mut on_chunk: impl FnMut(&Md5Implanter) -> bool,
) -> Result<Option<Md5Implanter>> {
    let app_start = pvd_off + 883;
    let app_end = app_start + APP_USE_SIZE as u64;
    let mut h = Md5Implanter::new(volume_size);
    f.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("seek to image start", e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while h.remaining() > 0 {
        let want = (buf.len() as u64).min(h.remaining()) as usize;
        let b = &mut buf[..want];
        f.read_exact(b).map_err(|e| {
            Error::io(
                format!("read image at offset {pos} (image shorter than its volume size?)"),
                e,
            )
        })?;
        let end = pos + want as u64;
        if pos < app_end && end > app_start {
            let s = app_start.max(pos) - pos;
            let e = app_end.min(end) - pos;
            b[s as usize..e as usize].fill(b' ');
        }
        // Feed chunk by chunk so the caller can stop at a bad fragment.
        for piece in b.chunks(CHUNK as usize) {
            h.update(piece);
            if !on_chunk(&h) {
                return Ok(None);
            }
        }
        pos = end;
    }
    Ok(Some(h))
}

/// Checks the isomd5sum record of the image at `path`, like `checkisomd5`.
pub fn check(path: &Path) -> Result<CheckReport> {
    let mut f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    check_reader(&mut f)
}

/// Like [`check`], on any `Read + Seek`.
pub fn check_reader<R: Read + Seek>(f: &mut R) -> Result<CheckReport> {
    let (pvd_off, volume_size) = find_pvd(f)?;
    let mut app = [0u8; APP_USE_SIZE];
    f.seek(SeekFrom::Start(pvd_off + 883))
        .map_err(|e| Error::io("seek to application-use field", e))?;
    f.read_exact(&mut app)
        .map_err(|e| Error::io("read application-use field", e))?;
    let rec = parse_record(&app);
    let mut report = CheckReport {
        status: CheckStatus::NotImplanted,
        expected_md5: rec.md5.clone(),
        computed_md5: None,
        fragment_sums: rec.fragsums.clone(),
        fragment_count: rec.fragcount,
        supported: rec.supported,
        skip_sectors: rec.skip,
        failed_fragment: None,
    };
    let Some(expected) = rec.md5.clone() else {
        return Ok(report);
    };
    if rec.skip.is_some_and(|s| s != SKIP_SECTORS) {
        return Err(Error::Md5(format!(
            "unsupported SKIPSECTORS = {} (only {SKIP_SECTORS} is supported)",
            rec.skip.unwrap_or_default()
        )));
    }
    let expected_frags = rec.fragsums.clone().unwrap_or_default().into_bytes();
    let check_frags = rec.fragcount == Some(FRAGMENT_COUNT)
        && expected_frags.len() == FRAGMENT_COUNT as usize * FRAG_CHARS;
    let mut checked = 0u64;
    let mut failed = None;
    let done = hash_image(f, pvd_off, volume_size, |h| {
        if !check_frags {
            return true;
        }
        // Check each fragment slot once it has been filled (slots 1..count-1, like checkisomd5).
        let filled = h.prev_fragment.min(FRAGMENT_COUNT - 1);
        while checked < filled {
            checked += 1;
            let at = (checked as usize - 1) * FRAG_CHARS;
            if h.fragments[at..at + FRAG_CHARS] != expected_frags[at..at + FRAG_CHARS] {
                failed = Some(checked);
                return false;
            }
        }
        true
    })?;
    match done {
        None => {
            report.status = CheckStatus::Fail;
            report.failed_fragment = failed;
        }
        Some(h) => {
            let (md5, _) = h.finish();
            report.status = if md5 == expected {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            };
            report.computed_md5 = Some(md5);
        }
    }
    Ok(report)
}

/// Result of [`implant`].
#[derive(Debug, Clone)]
pub struct ImplantReport {
    /// MD5 implanted (hex).
    pub md5_hex: String,
    /// The 60 fragment characters.
    pub fragment_sums: String,
}

/// Implants the isomd5sum record into an existing image (like `implantisomd5`; `force` overwrites
/// a non-blank application-use field, as `implantisomd5 --force`).
pub fn implant(file: &mut File, force: bool) -> Result<ImplantReport> {
    let (pvd_off, volume_size) = find_pvd(file)?;
    let mut app = [0u8; APP_USE_SIZE];
    file.seek(SeekFrom::Start(pvd_off + 883))
        .map_err(|e| Error::io("seek to application-use field", e))?;
    file.read_exact(&mut app)
        .map_err(|e| Error::io("read application-use field", e))?;
    if !force && app.iter().any(|&b| b != b' ') {
        return Err(Error::Md5(
            "application data has been used - not implanting md5sum (use force)".into(),
        ));
    }
    let h = hash_image(file, pvd_off, volume_size, |_| true)?
        .ok_or_else(|| Error::Md5("hashing aborted".into()))?;
    let (md5_hex, fragment_sums) = h.finish();
    let text = record_text(&md5_hex, &fragment_sums, false);
    file.seek(SeekFrom::Start(pvd_off + 883))
        .map_err(|e| Error::io("seek to application-use field", e))?;
    file.write_all(&text)
        .map_err(|e| Error::io("write application-use field", e))?;
    file.flush().map_err(|e| Error::io("flush image", e))?;
    Ok(ImplantReport {
        md5_hex,
        fragment_sums,
    })
}
