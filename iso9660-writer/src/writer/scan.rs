//! Scan of the source tree (one node per entry, one data item per inode) and dedup of
//! identical contents.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{io_ctx, Builder, Data, Kind, Layout, Node, MAX_EXTENT};
use crate::{Error, Result};

impl Builder {
    pub(super) fn scan(root: &Path) -> Result<Builder> {
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
            ce_count: HashMap::new(),
        })
    }

    /// Merges data items with identical contents (same size, then same 64 KiB prefix digest,
    /// then same full SHA-256); empty files get no extent.
    pub(super) fn dedup(&mut self) -> Result<()> {
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
}

pub(super) fn digest_file(path: &Path, limit: Option<u64>) -> Result<[u8; 32]> {
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
