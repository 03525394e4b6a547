//! Incremental re-master: reuse the stable prefix of the previous image.
//!
//! The layout puts everything a small edit can change after a stable prefix (see
//! `layout.rs`): system area, descriptors, path tables, the directories holding bulk files
//! and the bulk data. A full master exports the isomd5sum state at the end of that prefix; the
//! next master, if the prefix it would write is the same (same metadata bytes, same bulk files
//! by device, inode, size and mtime, same volume size) and the previous image is the one the
//! state describes, resumes the MD5 there and writes only the rest, then copies the prefix from
//! the previous image while computing the SHA-256 of the new one (one pass: the SHA-256 must
//! read the whole image anyway, since the isomd5sum record in the PVD changed). The bytes are
//! those of a full master.

use std::fs::{File, Metadata};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::sink::copy_prefix_and_sha;
use super::{Builder, MasterOptions, MasterReport, Piece, Trace, MAX_EXTENT};
use crate::md5core::Md5State;
use crate::md5sum::{self, ImplanterState, Md5Implanter, FRAGMENT_COUNT};
use crate::{Error, Result, SECTOR_SIZE};

/// Format tag of [`ResumeState`] (bump when the layout or the key changes).
const TAG: &str = "iso9660-writer-resume-1";

/// What a later [`master_resuming`] needs to reuse an image's stable prefix: kept by the caller
/// next to the image (a small text file, see [`ResumeState::to_text`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeState {
    /// SHA-256 over the prefix's metadata bytes and its bulk files' identities.
    key: [u8; 32],
    prefix_bytes: u64,
    total_bytes: u64,
    md5: ImplanterState,
    /// The image this state describes: (device, inode, size, mtime s, mtime ns); set by
    /// [`ResumeState::bind`] once the image is in place.
    image: Option<[i64; 5]>,
}

fn identity(m: &Metadata) -> [i64; 5] {
    [
        m.dev() as i64,
        m.ino() as i64,
        m.size() as i64,
        m.mtime(),
        m.mtime_nsec(),
    ]
}

impl ResumeState {
    /// Binds the state to the image file it describes (its final path's metadata, after the
    /// rename): a later run reuses the prefix only from that very file, unmodified.
    pub fn bind(mut self, image: &Metadata) -> Self {
        self.image = Some(identity(image));
        self
    }

    /// Bytes of the stable prefix.
    pub fn prefix_bytes(&self) -> u64 {
        self.prefix_bytes
    }

    /// The state as text (one `key value` line each).
    pub fn to_text(&self) -> String {
        let m = &self.md5;
        let mut s = format!("{TAG}\n");
        s += &format!("key {}\n", hex::encode(self.key));
        s += &format!("prefix {}\ntotal {}\n", self.prefix_bytes, self.total_bytes);
        let w = m.md5.words;
        s += &format!("md5 {} {} {} {} {}\n", w[0], w[1], w[2], w[3], m.md5.len);
        s += &format!("hashed {}\nfragment {}\n", m.hashed_len, m.prev_fragment);
        s += &format!("fragments {}\n", hex::encode(m.fragments));
        if let Some(i) = self.image {
            s += &format!("image {} {} {} {} {}\n", i[0], i[1], i[2], i[3], i[4]);
        }
        s
    }

    /// Parses [`to_text`](Self::to_text) output (`None` if malformed or of another format).
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != TAG {
            return None;
        }
        let mut f = std::collections::HashMap::new();
        for l in lines {
            let (k, v) = l.split_once(' ')?;
            f.insert(k, v);
        }
        let nums = |k: &str| -> Option<Vec<i64>> {
            f.get(k)?.split(' ').map(|x| x.parse().ok()).collect()
        };
        let one = |k: &str| -> Option<u64> { f.get(k)?.parse().ok() };
        let key: [u8; 32] = hex::decode(f.get("key")?).ok()?.try_into().ok()?;
        let md5 = nums("md5")?;
        let frags: [u8; (FRAGMENT_COUNT as usize) * 3] =
            hex::decode(f.get("fragments")?).ok()?.try_into().ok()?;
        let words: Vec<u32> = md5.get(..4)?.iter().map(|&w| w as u32).collect();
        let image = match nums("image") {
            Some(v) => Some(<[i64; 5]>::try_from(v).ok()?),
            None => None,
        };
        Some(ResumeState {
            key,
            prefix_bytes: one("prefix")?,
            total_bytes: one("total")?,
            md5: ImplanterState {
                md5: Md5State {
                    words: words.try_into().ok()?,
                    len: u64::try_from(*md5.get(4)?).ok()?,
                },
                hashed_len: one("hashed")?,
                prev_fragment: one("fragment")?,
                fragments: frags,
            },
            image,
        })
    }
}

/// The previous image and its [`ResumeState`].
pub struct Previous<'p> {
    /// The previous image, open for reading (left untouched).
    pub image: &'p File,
    /// Its state, as returned (and bound) by the master that wrote it.
    pub state: &'p ResumeState,
}

/// [`master`](super::master) into a file, reusing the stable prefix of `previous` when it is
/// the same (else a full master). Returns the report ([`MasterReport::reused_bytes`] says how
/// much was copied) and the state for the next run (with `implant_md5`), to
/// [`bind`](ResumeState::bind) once the image is in place.
pub fn master_resuming(
    src_dir: &Path,
    out: &mut File,
    opts: &MasterOptions,
    previous: Option<Previous>,
    on_total: &dyn Fn(u64),
) -> Result<(MasterReport, Option<ResumeState>)> {
    let t = Trace::new();
    let b = Builder::plan(src_dir, opts, MAX_EXTENT, &t)?;
    let total = b.layout.total_sectors * SECTOR_SIZE;
    on_total(total);
    let prefix = b.layout.prefix_sectors * SECTOR_SIZE;
    let key = b.prefix_key(opts)?;
    t.mark("prefix key");
    let make = |md5: ImplanterState| ResumeState {
        key,
        prefix_bytes: prefix,
        total_bytes: total,
        md5,
        image: None,
    };
    out.set_len(0)
        .map_err(|e| Error::io("truncate output", e))?;
    if let Some(p) = previous.filter(|p| opts.implant_md5 && reusable(p, key, prefix, total)) {
        if let Some(md5) = Md5Implanter::resume(&p.state.md5) {
            out.seek(SeekFrom::Start(prefix))
                .map_err(|e| Error::io("seek output", e))?;
            let (mut report, _) = b.write(out, opts, &t, Some(md5))?;
            let mut record = [0u8; md5sum::APP_USE_SIZE];
            out.read_exact_at(&mut record, md5sum::APP_USE_OFFSET)
                .map_err(|e| Error::io("re-read the isomd5sum record", e))?;
            report.sha256_hex = copy_prefix_and_sha(
                p.image,
                out,
                prefix,
                total,
                (md5sum::APP_USE_OFFSET, &record),
            )?;
            t.mark("prefix copied, sha256 of the image");
            return Ok((report, Some(make(p.state.md5.clone()))));
        }
    }
    let (report, state) = b.write(out, opts, &t, None)?;
    Ok((report, state.map(make)))
}

fn reusable(p: &Previous, key: [u8; 32], prefix: u64, total: u64) -> bool {
    let s = p.state;
    let same_image = match (p.image.metadata(), s.image) {
        (Ok(m), Some(id)) => identity(&m) == id,
        _ => false,
    };
    same_image
        && s.key == key
        && s.prefix_bytes == prefix
        && s.total_bytes == total
        && s.md5.md5.len == prefix
        && prefix > 0
}

impl Builder {
    /// SHA-256 over what the stable prefix holds: its metadata bytes, and the identity (device,
    /// inode, size, mtime) and place of each bulk file in it.
    fn prefix_key(&self, opts: &MasterOptions) -> Result<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(TAG.as_bytes());
        let prefix = self.layout.prefix_sectors;
        h.update(prefix.to_le_bytes());
        h.update(self.layout.total_sectors.to_le_bytes());
        for (lba, piece) in self.pieces() {
            if lba >= prefix {
                break;
            }
            h.update(lba.to_le_bytes());
            match piece {
                Piece::Data(d) => {
                    let data = &self.datas[d];
                    let m = std::fs::metadata(&data.path)
                        .map_err(|e| Error::io(format!("stat {}", data.path.display()), e))?;
                    h.update(data.size.to_le_bytes());
                    for v in identity(&m) {
                        h.update(v.to_le_bytes());
                    }
                }
                p => h.update(self.render(&p, opts)),
            }
        }
        Ok(h.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_text_round_trip() {
        let s = ResumeState {
            key: [7; 32],
            prefix_bytes: 4096 * 9,
            total_bytes: 1 << 30,
            md5: ImplanterState {
                md5: Md5State {
                    words: [1, 2, 3, u32::MAX],
                    len: 4096 * 9,
                },
                hashed_len: (1 << 30) - 15 * 2048,
                prev_fragment: 3,
                fragments: [b'a'; 60],
            },
            image: None,
        };
        assert_eq!(ResumeState::parse(&s.to_text()), Some(s.clone()));
        let bound = ResumeState {
            image: Some([1, 2, 3, -4, 5]),
            ..s
        };
        assert_eq!(ResumeState::parse(&bound.to_text()), Some(bound.clone()));
        assert_eq!(ResumeState::parse("other-format\n"), None);
        assert_eq!(
            ResumeState::parse(&bound.to_text().replace("key ", "kex ")),
            None
        );
    }
}
