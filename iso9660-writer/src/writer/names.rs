//! Names: primary (`NAME.EXT;1`, d-characters) and Joliet (UCS-2) identifiers, unique per
//! directory, and the orders they sort in.

use std::collections::HashSet;

use super::{Builder, Kind, JOLIET_MAX};

impl Builder {
    /// Primary (`NAME.EXT;1`) and Joliet names, unique per directory.
    pub(super) fn names(&mut self) {
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

    pub(super) fn sorted_children(&self, dir: usize, joliet: bool) -> Vec<usize> {
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

    pub(super) fn bfs(&self, joliet: bool) -> Vec<usize> {
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
}

/// Sort key of a primary identifier: (name, extension, version) per ECMA-119 9.3.
pub(super) fn prim_key(id: &[u8]) -> (&[u8], &[u8]) {
    let id = match id.iter().position(|&c| c == b';') {
        Some(p) => &id[..p],
        None => id,
    };
    match id.iter().position(|&c| c == b'.') {
        Some(p) => (&id[..p], &id[p + 1..]),
        None => (id, &[][..]),
    }
}

pub(super) fn d_char(c: u8) -> u8 {
    match c {
        b'a'..=b'z' => c - 32,
        b'A'..=b'Z' | b'0'..=b'9' | b'_' => c,
        _ => b'_',
    }
}

/// Upper-case `NAME.EXT;1` (files; name + ext ≤ 30) or `NAME` (directories; ≤ 31), unique in
/// `seen` (a numeric suffix replaces the end of the name on collision).
pub(super) fn primary_name(name: &[u8], is_dir: bool, seen: &mut HashSet<Vec<u8>>) -> Vec<u8> {
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
pub(super) fn joliet_name(name: &[u8], seen: &mut HashSet<Vec<u16>>) -> Vec<u8> {
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
}
