//! Layout: directory records, continuation areas, path tables and the LBA of every extent.

use std::collections::HashMap;

use super::rockridge::{
    er_entry, nm_entries, px_entry, rr_flags_entry, sl_entries, sp_entry, tf_entry,
};
use super::{
    sectors, Builder, Cont, Kind, Layout, MasterOptions, Rec, Target, BULK_BYTES, PAD_SECTORS,
    SECTOR,
};
use crate::{Error, Result, SECTOR_SIZE};

impl Builder {
    pub(super) fn build(&mut self, opts: &MasterOptions) -> Result<()> {
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
        self.ce_count = ce_count;
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
        // The zero sector empty files and symlinks point to, before anything that can move.
        let empty_lba = lba;
        lba += 1;
        // Stable part first: directories holding bulk files (and their ancestors), then the bulk
        // data; volatile part last: the other directories, then the small files. A small edit
        // (a Salt file) changes only the volatile part, so the image prefix up to it (and the
        // MD5 state there) can be reused (see `resume`).
        let bulk_of: Vec<bool> = self.datas.iter().map(|d| d.size >= BULK_BYTES).collect();
        let bulk = |d: usize| bulk_of[d];
        let mut early = vec![false; self.nodes.len()];
        early[0] = true;
        for n in &self.nodes {
            if let Kind::File { data: Some(d) } = n.kind {
                let mut p = n.parent;
                while bulk(d) && !early[p] {
                    early[p] = true;
                    p = self.nodes[p].parent;
                }
            }
        }
        lba = self.place_dirs(lba, &early, true);
        lba = self.place_data(lba, &|d| bulk(d))?;
        let prefix_sectors = lba;
        lba = self.place_dirs(lba, &early, false);
        lba = self.place_data(lba, &|d| !bulk(d))?;
        lba += PAD_SECTORS;
        // Volume size rounded up to a power of two ≤ 1/1024 of the stable part (≤ 0.1 % waste),
        // so it survives small edits (it is in the PVD, which the MD5 covers).
        let grain = 1u64 << (prefix_sectors / 1024).max(1).ilog2();
        lba = lba.div_ceil(grain) * grain;
        if lba > u32::MAX as u64 {
            return Err(Error::Source("image larger than 8 TiB".into()));
        }
        self.layout = Layout {
            pt_lba,
            empty_lba: empty_lba as u32,
            prefix_sectors,
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

    /// Places the primary directories (each followed by its continuation areas), then the Joliet
    /// ones, whose `early` flag is `stable`; returns the next free LBA.
    fn place_dirs(&mut self, mut lba: u64, early: &[bool], stable: bool) -> u64 {
        for &d in self.prim_dirs.iter().filter(|&&d| early[d] == stable) {
            let size = dir_size(&self.prim_recs[&d]);
            self.dir_lba.insert(d, (lba as u32, size as u32));
            lba += size / SECTOR_SIZE;
            if let Some(&n) = self.ce_count.get(&d) {
                self.ce_sectors.insert(d, (lba as u32, n));
                lba += n as u64;
            }
        }
        for &d in self.jol_dirs.iter().filter(|&&d| early[d] == stable) {
            let size = dir_size(&self.jol_recs[&d]);
            self.jdir_lba.insert(d, (lba as u32, size as u32));
            lba += size / SECTOR_SIZE;
        }
        lba
    }

    /// Places the data extents selected by `pick`, in tree (node) order of first reference;
    /// returns the next free LBA.
    fn place_data(&mut self, mut lba: u64, pick: &dyn Fn(usize) -> bool) -> Result<u64> {
        let mut placed = vec![false; self.datas.len()];
        for n in &self.nodes {
            if let Kind::File { data: Some(d) } = n.kind {
                if !placed[d] && pick(d) {
                    placed[d] = true;
                    let lba32 = u32::try_from(lba)
                        .map_err(|_| Error::Source("image larger than 8 TiB".into()))?;
                    self.datas[d].lba = lba32;
                    lba += sectors(self.datas[d].size);
                }
            }
        }
        Ok(lba)
    }

    /// (flags, target) of each directory record naming node `c` (several for multi-extent files).
    pub(super) fn targets(&self, c: usize) -> Vec<(u8, Target)> {
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

    pub(super) fn make_rec(
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

    pub(super) fn path_table_len(&self, dirs: &[usize], joliet: bool) -> usize {
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

    pub(super) fn ident(&self, d: usize, joliet: bool) -> &[u8] {
        if joliet {
            &self.nodes[d].jol
        } else {
            &self.nodes[d].prim
        }
    }

    pub(super) fn path_tables(&self, dirs: &[usize], joliet: bool) -> (Vec<u8>, Vec<u8>) {
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
}

pub(super) fn dir_size(recs: &[Rec]) -> u64 {
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
