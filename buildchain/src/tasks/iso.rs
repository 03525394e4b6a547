//! `iso`: masters `_build/root` into `dist/<name>-<version>.iso` with the isomd5sum record
//! implanted in the same pass, then writes `dist/SHA256SUM` and `dist/product.txt`.
//!
//! The ISO's inputs are the content of the tree (hashes, through the engine's stat cache) and the
//! volume id / timestamp: with nothing changed, nothing is re-mastered (the classic pipeline
//! re-ran mkisofs, implantisomd5 and sha256sum over the whole image on every build).

use std::path::PathBuf;

use anyhow::Result;

use crate::config::Settings;
use crate::engine::{Action, Task, TaskContext};

/// The `iso` task.
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let iso = settings.iso_path();
    let sum = settings.dist_dir.join("SHA256SUM");
    let product = settings.dist_dir.join("product.txt");
    let root = settings.iso_root.clone();
    let volid = settings.volume_id();
    let timestamp = settings.timestamp() as i64;
    let v = volid.clone();
    let shown = iso
        .strip_prefix(&settings.repo_root)
        .unwrap_or(&iso)
        .display()
        .to_string();
    Ok(vec![Task::new("iso")
        .public()
        .doc("Build the ISO: dist/<name>-<version>.iso, dist/SHA256SUM, dist/product.txt")
        .dep("populate_iso")
        .input_tree(&settings.iso_root)
        .value("volume id", volid)
        .value("timestamp", timestamp.to_string())
        .output(&iso)
        .output(&sum)
        .output(&product)
        .runs(MasterIso {
            root,
            iso,
            sum,
            product,
            volid: v,
            timestamp,
            shown,
        })])
}

/// The action of `iso`: master the tree, then `SHA256SUM` and `product.txt` beside the image.
struct MasterIso {
    root: PathBuf,
    iso: PathBuf,
    sum: PathBuf,
    product: PathBuf,
    volid: String,
    timestamp: i64,
    /// The ISO's path as shown to the user.
    shown: String,
}

impl Action for MasterIso {
    fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let bar = ctx.progress(None, "mastering");
        let report = crate::isofile::master_atomic_progress(
            &self.root,
            &self.iso,
            &self.volid,
            true,
            self.timestamp,
            &bar,
        )?;
        bar.finish();
        ctx.record_digest(&self.iso, &report.sha256_hex);
        let name = self
            .iso
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let line = format!("{}  {name}\n", report.sha256_hex);
        crate::fsutil::write_if_changed(&self.sum, line.as_bytes(), Some(0o644))?;
        crate::tasks::copy_file_if_changed(&self.root.join("product.txt"), &self.product)?;
        ctx.note(&format!(
            "{} bytes, {} files, {} shared extents, md5 {}",
            report.size,
            report.files,
            report.shared_extents,
            report.md5_hex.unwrap_or_default()
        ));
        ctx.note(&format!("wrote {}", self.shown));
        Ok(())
    }
}
