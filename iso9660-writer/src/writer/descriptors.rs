//! Serialisation: directory records and extents, volume descriptors.

use super::{sectors, Builder, MasterOptions, Rec, Target, SECTOR};
use crate::md5sum;
use crate::util::{both16, both32, dir_date, put_both16, put_both32, vd_date, vd_date_unset};
use crate::SECTOR_SIZE;

impl Builder {
    pub(super) fn serialize_rec(&self, r: &Rec, joliet: bool, ts: i64, out: &mut Vec<u8>) {
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

    pub(super) fn ce_entry(&self, c: usize) -> Vec<u8> {
        let c = &self.conts[c];
        let len = c.bytes.len() + if c.next.is_some() { 28 } else { 0 };
        let mut e = vec![b'C', b'E', 28, 1];
        both32(&mut e, self.ce_sectors[&c.dir].0 + c.sector);
        both32(&mut e, c.offset);
        both32(&mut e, len as u32);
        e
    }

    pub(super) fn dir_extent(&self, d: usize, joliet: bool, ts: i64) -> Vec<u8> {
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

    pub(super) fn volume_descriptor(&self, joliet: bool, opts: &MasterOptions) -> Vec<u8> {
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
}
