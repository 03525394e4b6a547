//! Rock Ridge (RRIP 1991A) System Use entries and the mode normalization of `mkisofs -r`.

use super::Node;
use crate::util::{both32, dir_date};

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

pub(super) fn sp_entry() -> Vec<u8> {
    vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0]
}

pub(super) fn rr_flags_entry(flags: u8) -> Vec<u8> {
    vec![b'R', b'R', 5, 1, flags]
}

pub(super) fn er_entry() -> Vec<u8> {
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

pub(super) fn px_entry(n: &Node) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 44, 1];
    both32(&mut e, n.mode);
    both32(&mut e, n.nlink);
    both32(&mut e, 0);
    both32(&mut e, 0);
    both32(&mut e, n.serial);
    e
}

pub(super) fn tf_entry(ts: i64) -> Vec<u8> {
    let mut e = vec![b'T', b'F', 26, 1, 0x0E];
    let d = dir_date(ts);
    for _ in 0..3 {
        e.extend_from_slice(&d);
    }
    e
}

pub(super) fn nm_entries(name: &[u8]) -> Vec<Vec<u8>> {
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
pub(super) fn sl_entries(target: &[u8]) -> Vec<Vec<u8>> {
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
    fn symlink_components() {
        let e = sl_entries(b"/usr/../x/./y");
        assert_eq!(e.len(), 1);
        let long = vec![b'a'; 600];
        let e = sl_entries(&long);
        assert!(e.iter().all(|x| x.len() <= 255));
        assert!(e.len() >= 3);
    }
}
