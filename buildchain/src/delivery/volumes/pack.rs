//! Packing of the ISO tree into volumes: the tree's files grouped into items (an image
//! repository, an RPM) with estimated sizes, and the greedy packing of items into bins.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{medium, rel, SEALS};

pub(super) const SECTOR: u64 = 2048;
/// Estimated directory-record, `/SHA256SUMS` and `/CONTENTS.json` bytes per file (corrected by
/// the exact layout).
pub(super) const PER_FILE: u64 = 1536;
/// Estimated registry-include bytes per served image file.
const PER_SERVED: u64 = 900;
/// Estimated repodata bytes per RPM.
const PER_RPM: u64 = 2048;

/// What a unit of packing is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Image,
    Rpm,
}

/// One unit of packing: files (paths relative to the tree) that go together.
#[derive(Clone, Debug)]
pub(super) struct Item {
    pub(super) kind: Kind,
    /// Repository name (images) or path (RPMs).
    pub(super) id: String,
    pub(super) files: Vec<String>,
    /// Estimated bytes on a volume (shared inodes counted once).
    pub(super) cost: u64,
}

/// One file of the tree, by inode (hard links share it).
#[derive(Clone, Copy, Debug)]
pub(super) struct FileInfo {
    pub(super) key: (u64, u64),
    pub(super) size: u64,
}

/// The volume's plan.
#[derive(Clone, Debug, Default)]
pub(super) struct Bin {
    pub(super) used: u64,
    pub(super) items: Vec<usize>,
    pub(super) inodes: BTreeSet<(u64, u64)>,
}

/// Every regular file and symlink under `root`, sorted, with its inode and size.
pub(super) fn walk(root: &Path) -> Result<BTreeMap<String, FileInfo>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let e = e?;
            let p = e.path();
            let m = fs::symlink_metadata(&p)?;
            if m.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    rel(&p, root),
                    FileInfo {
                        key: (m.dev(), m.ino()),
                        size: if m.is_file() { m.len() } else { 0 },
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Two sectors (ISO-9660 and Joliet records) per distinct directory holding `paths`.
pub(super) fn dirs_cost<'a>(paths: impl Iterator<Item = &'a String>) -> u64 {
    let mut dirs = BTreeSet::new();
    for p in paths {
        let mut d = Path::new(p.as_str());
        while let Some(parent) = d.parent().filter(|x| !x.as_os_str().is_empty()) {
            dirs.insert(parent.to_path_buf());
            d = parent;
        }
    }
    dirs.len() as u64 * 2 * SECTOR
}

pub(super) fn sectors(n: u64) -> u64 {
    n.div_ceil(SECTOR) * SECTOR
}

/// Splits the tree's files into items, repository extras and volume-1 files.
pub(super) struct Split {
    pub(super) items: Vec<Item>,
    /// Repository dir → its extra files (keys…), not RPMs nor repodata.
    pub(super) repo_extras: BTreeMap<String, Vec<String>>,
    /// Files only volume 1 holds.
    pub(super) base: Vec<String>,
    /// Repository dir of each RPM item path.
    pub(super) repo_of: BTreeMap<String, String>,
}

pub(super) fn split(root: &Path, files: &BTreeMap<String, FileInfo>) -> Split {
    let repos: BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.strip_suffix("/repodata/repomd.xml").map(str::to_string))
        .collect();
    let repo_for = |p: &str| {
        repos
            .iter()
            .rev()
            .find(|r| p.starts_with(&format!("{r}/")))
            .cloned()
    };
    let image_names: BTreeSet<String> = files
        .keys()
        .filter_map(|p| {
            let mut c = p.split('/');
            match (c.next(), c.next(), c.next()) {
                (Some("images"), Some(n), Some(_)) => Some(n.to_string()),
                _ => None,
            }
        })
        .collect();
    let mut images: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut split = Split {
        items: Vec::new(),
        repo_extras: BTreeMap::new(),
        base: Vec::new(),
        repo_of: BTreeMap::new(),
    };
    for p in files.keys() {
        let parts: Vec<&str> = p.split('/').collect();
        if parts[0] == "images" && parts.len() >= 3 {
            images
                .entry(parts[1].to_string())
                .or_default()
                .push(p.clone());
            continue;
        }
        if parts[0] == "images" && parts.len() == 2 {
            // `images/<name>-<tag>.tar`: with the repository `<name>` having tag `<tag>`.
            if let Some(stem) = parts[1].strip_suffix(".tar") {
                let owner = image_names.iter().rev().find(|n| {
                    stem.strip_prefix(n.as_str())
                        .and_then(|t| t.strip_prefix('-'))
                        .is_some_and(|t| root.join("images").join(n).join(t).is_dir())
                });
                if let Some(n) = owner {
                    images.entry(n.clone()).or_default().push(p.clone());
                    continue;
                }
            }
        }
        if let Some(r) = repo_for(p) {
            let inner = &p[r.len() + 1..];
            if inner.starts_with("repodata/") {
                continue;
            }
            if inner.ends_with(".rpm") {
                split.repo_of.insert(p.clone(), r);
                split.items.push(Item {
                    kind: Kind::Rpm,
                    id: p.clone(),
                    files: vec![p.clone()],
                    cost: 0,
                });
            } else {
                split.repo_extras.entry(r).or_default().push(p.clone());
            }
            continue;
        }
        if SEALS.contains(&p.as_str()) {
            // Each volume gets its own (see `Layout::seal`).
            continue;
        }
        split.base.push(p.clone());
    }
    for (name, fs_) in images {
        split.items.push(Item {
            kind: Kind::Image,
            id: name,
            files: fs_,
            cost: 0,
        });
    }
    for it in &mut split.items {
        if it.kind == Kind::Image {
            // Its own directories (`images/` itself is counted as shared below).
            it.cost += dirs_cost(it.files.iter()) - 2 * SECTOR;
        }
        let mut seen = BTreeSet::new();
        for f in &it.files {
            let i = files[f];
            if seen.insert(i.key) {
                it.cost += sectors(i.size) + PER_FILE;
            }
            it.cost += match it.kind {
                Kind::Image => PER_SERVED,
                Kind::Rpm => PER_RPM,
            };
        }
    }
    split
}

/// Bytes `it` adds to `bin` (files whose inode the bin already holds are free).
fn marginal(bin: &Bin, it: &Item, files: &BTreeMap<String, FileInfo>) -> u64 {
    let mut seen = BTreeSet::new();
    let mut c = match it.kind {
        Kind::Image => dirs_cost(it.files.iter()) - 2 * SECTOR,
        Kind::Rpm => 0,
    };
    for f in &it.files {
        let i = files[f];
        if !bin.inodes.contains(&i.key) && seen.insert(i.key) {
            c += sectors(i.size) + PER_FILE;
        }
        c += match it.kind {
            Kind::Image => PER_SERVED,
            Kind::Rpm => PER_RPM,
        };
    }
    c
}

/// Packs `items` into bins of `budget` bytes; bin 0 starts at `first_used`, every other bin at
/// `empty`. Bins are filled one at a time: among the items that still fit, the one whose
/// marginal cost is the smallest fraction of its own cost (the most layers already on the
/// volume), then the largest, then by kind and name. On an empty volume that is
/// first-fit-decreasing; afterwards images sharing layers gather, so a shared layer is repeated
/// only on the volumes that need it. Deterministic.
pub(super) fn pack(
    items: &[Item],
    files: &BTreeMap<String, FileInfo>,
    budget: u64,
    empty: u64,
    first_used: u64,
    media: &str,
) -> Result<Vec<Bin>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&items[a], &items[b]);
        y.cost
            .cmp(&x.cost)
            .then(x.kind.cmp(&y.kind))
            .then(x.id.cmp(&y.id))
    });
    for &i in &order {
        let it = &items[i];
        if empty + it.cost > budget {
            let what = match it.kind {
                Kind::Image => format!("image {}", it.id),
                Kind::Rpm => format!("RPM {}", it.id),
            };
            bail!(
                "{what} is {} bytes: it does not fit one {} volume ({} bytes usable)",
                it.files.iter().map(|f| files[f].size).sum::<u64>(),
                medium(media, budget),
                budget.saturating_sub(empty)
            );
        }
    }
    let mut bins = Vec::new();
    let mut bin = Bin {
        used: first_used,
        ..Default::default()
    };
    while !order.is_empty() {
        // (position in `order`, marginal); `order` is by decreasing cost, so on equal ratios
        // the first candidate is the largest.
        let mut best: Option<(usize, u64)> = None;
        for (pos, &i) in order.iter().enumerate() {
            let it = &items[i];
            let m = marginal(&bin, it, files);
            if bin.used + m > budget {
                continue;
            }
            let better = match best {
                None => true,
                Some((bp, bm)) => {
                    let bc = items[order[bp]].cost.max(1) as u128;
                    (m as u128) * bc < (bm as u128) * (it.cost.max(1) as u128)
                }
            };
            if better {
                best = Some((pos, m));
            }
        }
        match best {
            Some((pos, m)) => {
                let i = order.remove(pos);
                bin.used += m;
                bin.items.push(i);
                for f in &items[i].files {
                    bin.inodes.insert(files[f].key);
                }
            }
            None => {
                bins.push(std::mem::take(&mut bin));
                bin.used = empty;
            }
        }
    }
    bins.push(bin);
    Ok(bins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fi(ino: u64, size: u64) -> FileInfo {
        FileInfo {
            key: (1, ino),
            size,
        }
    }

    fn kind_is_image(it: &Item) -> bool {
        it.kind == Kind::Image
    }

    fn item(kind: Kind, id: &str, files: &[&str], all: &BTreeMap<String, FileInfo>) -> Item {
        let mut it = Item {
            kind,
            id: id.to_string(),
            files: files.iter().map(|f| f.to_string()).collect(),
            cost: 0,
        };
        if kind_is_image(&it) {
            it.cost += dirs_cost(it.files.iter()) - 2 * SECTOR;
        }
        let mut seen = BTreeSet::new();
        for f in files {
            if seen.insert(all[*f].key) {
                it.cost += sectors(all[*f].size) + PER_FILE;
            }
            it.cost += PER_SERVED;
        }
        it
    }

    /// Images a (60 KiB, shares layer L), b (40 KiB + L), c (30 KiB): FFD in decreasing
    /// order; L is counted once where a and b meet and repeated where they do not.
    #[test]
    fn ffd_is_deterministic_and_counts_shared_layers_once_per_volume() {
        let mut all = BTreeMap::new();
        all.insert("images/a/1/x".to_string(), fi(1, 60 << 10));
        all.insert("images/a/1/l".to_string(), fi(9, 8 << 10));
        all.insert("images/b/1/y".to_string(), fi(2, 40 << 10));
        all.insert("images/b/1/l".to_string(), fi(9, 8 << 10));
        all.insert("images/c/1/z".to_string(), fi(3, 30 << 10));
        let items = vec![
            item(Kind::Image, "c", &["images/c/1/z"], &all),
            item(Kind::Image, "a", &["images/a/1/x", "images/a/1/l"], &all),
            item(Kind::Image, "b", &["images/b/1/y", "images/b/1/l"], &all),
        ];
        // Room for a + b sharing L, not for a + b + c.
        let budget = items[1].cost + items[2].cost - (sectors(8 << 10) + PER_FILE) + 1000;
        let bins = pack(&items, &all, budget, 0, 0, "test").unwrap();
        let ids: Vec<Vec<&str>> = bins
            .iter()
            .map(|b| b.items.iter().map(|&i| items[i].id.as_str()).collect())
            .collect();
        assert_eq!(ids, [vec!["a", "b"], vec!["c"]]);
        // Without the sharing discount, b would not fit next to a.
        let tight = budget - 2000;
        let bins = pack(&items, &all, tight, 0, 0, "test").unwrap();
        let ids: Vec<Vec<&str>> = bins
            .iter()
            .map(|b| b.items.iter().map(|&i| items[i].id.as_str()).collect())
            .collect();
        assert_eq!(ids, [vec!["a", "c"], vec!["b"]]);
    }

    #[test]
    fn an_item_larger_than_a_volume_is_named() {
        let mut all = BTreeMap::new();
        all.insert("images/huge/1/x".to_string(), fi(1, 100_000));
        let items = vec![item(Kind::Image, "huge", &["images/huge/1/x"], &all)];
        let e = pack(&items, &all, 90_000, 20_000, 30_000, "90000 bytes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "image huge is 100000 bytes: it does not fit one 90000-byte volume (70000 bytes usable)"
        );
    }
}
