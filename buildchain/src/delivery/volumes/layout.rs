//! Writing one volume's tree: its share of the files, repodata, registry includes,
//! `/volume.txt`, `/VOLUMES.json` (volume 1) and its own seals.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::pack::{Bin, Kind, Split};
use super::{
    registry_root_var, rel, volume_file, volume_id, Table, VolumeEntry, REGISTRY_COMMON,
    REGISTRY_IMAGES, SEALS, TABLE, VOLUME_TXT,
};
use crate::config::Settings;

pub(super) struct Layout<'a> {
    pub(super) settings: &'a Settings,
    pub(super) root: &'a Path,
    pub(super) split: &'a Split,
    pub(super) media: &'a str,
    pub(super) capacity: u64,
    /// sha256 by (device, inode, size, mtime) of files linked from the ISO tree: repeated
    /// layers and retries hash once.
    pub(super) hashes: std::sync::Mutex<BTreeMap<(u64, u64, u64, u64), String>>,
}

impl Layout<'_> {
    /// Writes volume `i` (1-based) of `n` into `dir`.
    pub(super) fn tree(
        &self,
        bins: &[Bin],
        i: usize,
        dir: &Path,
        table: Option<&Table>,
    ) -> Result<()> {
        let n = bins.len();
        let bin = &bins[i - 1];
        let s = self.split;
        let mut paths: Vec<&String> = Vec::new();
        let mut repos: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for &k in &bin.items {
            let it = &s.items[k];
            paths.extend(&it.files);
            if it.kind == Kind::Rpm {
                let r = &s.repo_of[&it.id];
                repos
                    .entry(r.clone())
                    .or_default()
                    .push(it.id[r.len() + 1..].to_string());
            }
        }
        if i == 1 {
            paths.extend(&s.base);
            for x in s.repo_extras.values() {
                paths.extend(x);
            }
        } else {
            // Every volume says which product it belongs to.
            paths.extend(s.base.iter().filter(|p| *p == "product.txt"));
            for r in repos.keys() {
                paths.extend(s.repo_extras.get(r).into_iter().flatten());
            }
        }
        fs::create_dir_all(dir)?;
        for p in paths {
            crate::fsutil::link_or_copy(&self.root.join(p), &dir.join(p))?;
        }
        let opts = crate::packaging::repodata::RepodataOptions {
            revision: self.settings.timestamp(),
            ..Default::default()
        };
        for (r, mut hrefs) in repos {
            hrefs.sort();
            crate::packaging::repodata::write_repodata_for(&dir.join(&r), &hrefs, &opts)?;
            let repomd = dir.join(&r).join("repodata/repomd.xml");
            let bytes = fs::read(&repomd)?;
            crate::trust::signing::write_detached(
                self.settings.signer.as_deref(),
                &repomd,
                &bytes,
                self.settings.timestamp(),
            )?;
        }
        if dir.join("images").is_dir() {
            use crate::registry_config::{generate, Constants, Options};
            let o = Options {
                name_prefix: format!(
                    "{}-{}/",
                    self.settings.project_lower(),
                    self.settings.version.full()
                ),
                server_root: registry_root_var(self.settings, i),
                constants: Constants::Omit,
            };
            let text = generate(&dir.join("images"), &o)?;
            let common = generate(
                &dir.join("images"),
                &Options {
                    constants: Constants::Only,
                    ..o
                },
            )?;
            fs::create_dir_all(dir.join("registry"))?;
            fs::write(dir.join(REGISTRY_IMAGES), text)?;
            fs::write(dir.join(REGISTRY_COMMON), common)?;
        }
        let set = format!(
            "{}-{}",
            self.settings.project_lower(),
            self.settings.version.full()
        );
        fs::write(
            dir.join(VOLUME_TXT),
            format!(
                "set={set}\nvolume={i}\nvolumes={n}\nvolume_id={}\nmedia={}\ncapacity={}\nregistry_root_var={}\n",
                volume_id(self.settings, i, n),
                self.media,
                self.capacity,
                &registry_root_var(self.settings, i)[1..]
            ),
        )?;
        if let Some(t) = table {
            let mut json = serde_json::to_vec_pretty(t)?;
            json.push(b'\n');
            fs::write(dir.join(TABLE), json)?;
        }
        // Every directory 0755 (the tree's own are, the created ones follow the umask).
        fix_dir_modes(dir)?;
        self.seal(dir)
    }

    /// Writes the volume's own `/SHA256SUMS`, `/CONTENTS.json` and (signed builds) its
    /// signature, as `populate_iso` does for the whole tree: `buildchain verify` checks each
    /// volume on its own.
    pub(super) fn seal(&self, dir: &Path) -> Result<()> {
        use crate::trust::contents::CONTENTS_FILE;
        for f in SEALS {
            match fs::remove_file(dir.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        let hash = |p: &Path| -> Result<String> {
            // Only files linked from the ISO tree (never rewritten here) are cached.
            let m = fs::metadata(p).with_context(|| format!("cannot stat {}", p.display()))?;
            if m.nlink() < 2 {
                return crate::fsutil::sha256_file(p);
            }
            let key = (
                m.dev(),
                m.ino(),
                m.len(),
                m.mtime_nsec() as u64 ^ m.mtime() as u64,
            );
            if let Some(h) = self.hashes.lock().ok().and_then(|c| c.get(&key).cloned()) {
                return Ok(h);
            }
            let h = crate::fsutil::sha256_file(p)?;
            if let Ok(mut c) = self.hashes.lock() {
                c.insert(key, h.clone());
            }
            Ok(h)
        };
        let mut text = String::new();
        for f in crate::engine::signature::walk_tree(dir)? {
            if !fs::symlink_metadata(&f)?.is_file() {
                continue;
            }
            text.push_str(&format!("{}  ./{}\n", hash(&f)?, rel(&f, dir)));
        }
        fs::write(dir.join("SHA256SUMS"), text)?;
        let product = crate::product::read_product_txt(&dir.join("product.txt"))?;
        let index =
            crate::trust::index::build_index(dir, product, self.settings.source_date_epoch, &hash)?;
        let bytes = index
            .to_json_bytes()
            .context("cannot serialise CONTENTS.json")?;
        let c = dir.join(CONTENTS_FILE);
        fs::write(&c, &bytes)?;
        crate::trust::signing::write_detached(
            self.settings.signer.as_deref(),
            &c,
            &bytes,
            self.settings.timestamp(),
        )?;
        Ok(())
    }

    pub(super) fn table(&self, bins: &[Bin], done: &BTreeMap<usize, (u64, String)>) -> Table {
        let n = bins.len();
        let s = self.split;
        Table {
            format: 1,
            set: format!(
                "{}-{}",
                self.settings.project_lower(),
                self.settings.version.full()
            ),
            media: self.media.to_string(),
            capacity: self.capacity,
            volumes: bins
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    let i = k + 1;
                    let mut images = BTreeSet::new();
                    let mut rpms = BTreeSet::new();
                    for &x in &b.items {
                        let it = &s.items[x];
                        match it.kind {
                            Kind::Image => {
                                for f in &it.files {
                                    let p: Vec<&str> = f.split('/').collect();
                                    if p.len() >= 4 {
                                        images.insert(format!("{}:{}", p[1], p[2]));
                                    }
                                }
                            }
                            Kind::Rpm => {
                                rpms.insert(it.id.clone());
                            }
                        }
                    }
                    VolumeEntry {
                        volume: i,
                        file: volume_file(self.settings, i, n),
                        volume_id: volume_id(self.settings, i, n),
                        images: images.into_iter().collect(),
                        rpms: rpms.into_iter().collect(),
                        size: done.get(&i).map(|d| d.0),
                        sha256: done.get(&i).map(|d| d.1.clone()),
                    }
                })
                .collect(),
        }
    }
}

fn fix_dir_modes(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            fix_dir_modes(&e.path())?;
        }
    }
    Ok(())
}

pub(super) fn master_options(
    volume_id: String,
    timestamp: i64,
) -> iso9660_writer::MasterOptions<'static> {
    iso9660_writer::MasterOptions {
        volume_id,
        timestamp,
        implant_md5: true,
        progress: None,
        keep_modes: false,
    }
}
