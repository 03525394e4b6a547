//! Delivering releases (issue 12): [`plan`] (what a build fetches and the predicted ISO size),
//! [`diff`] (two ISOs or trees compared), [`delta`] (delta ISOs that name their base),
//! [`volumes`] (self-contained multi-volume media).

pub mod delta;
pub mod diff;
pub mod plan;
pub mod volumes;

use anyhow::Result;

use crate::config::Settings;
use crate::engine::Task;

/// `dist/<name>-<version>.delta.iso`.
pub fn delta_path(settings: &Settings) -> std::path::PathBuf {
    settings.dist_dir.join(format!(
        "{}-{}.delta.iso",
        settings.project_lower(),
        settings.version.full()
    ))
}

/// The `delta_iso` task, present when the `DELTA_BASE` setting names a base ISO: after `iso`,
/// writes the delta ISO of the new full ISO against that base next to it; the `iso_volumes`
/// task, present when `BUILDCHAIN_MEDIA` names a medium (`buildchain iso --media M`).
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let mut out = volumes_task(settings)?;
    out.extend(delta_task(settings)?);
    Ok(out)
}

/// `iso_volumes`: the ISO tree split into `dist/<name>-<version>-<i>of<N>.iso`.
fn volumes_task(settings: &Settings) -> Result<Vec<Task>> {
    let Some(m) = settings
        .raw
        .get("BUILDCHAIN_MEDIA")
        .filter(|m| !m.trim().is_empty())
    else {
        return Ok(Vec::new());
    };
    let (media, capacity) =
        plan::parse_media(m.trim()).map_err(|e| anyhow::anyhow!("BUILDCHAIN_MEDIA: {e}"))?;
    let s = settings.clone();
    let sums = volumes::sums_path(settings);
    Ok(vec![Task::new("iso_volumes")
        .public()
        .doc("Split the ISO into dist/<name>-<version>-<i>of<N>.iso (BUILDCHAIN_MEDIA / iso --media)")
        .dep("populate_iso")
        .input_tree(&settings.iso_root)
        .value("media", format!("{media} {capacity}"))
        .value("volume id", settings.volume_id())
        .value("timestamp", settings.timestamp().to_string())
        .output(&sums)
        .action(move |ctx| {
            let r = volumes::build(&s, &media, capacity)?;
            let n = r.volumes.len();
            for (p, size, sha) in &r.volumes {
                ctx.add_output(p);
                ctx.record_digest(p, sha);
                ctx.note(&format!("wrote {} ({size} bytes)", p.display()));
            }
            ctx.note(&format!(
                "{n} volume(s) of {media} ({capacity} bytes); lower bound {} for the {}-byte single ISO; {} packing(s)",
                r.lower_bound, r.single_iso_bytes, r.packings
            ));
            Ok(())
        })])
}

fn delta_task(settings: &Settings) -> Result<Vec<Task>> {
    let Some(base) = settings
        .raw
        .get("DELTA_BASE")
        .filter(|b| !b.trim().is_empty())
    else {
        return Ok(Vec::new());
    };
    let base = settings.repo_root.join(base);
    let iso = settings.iso_path();
    let out = delta_path(settings);
    let (b, i, o) = (base.clone(), iso.clone(), out.clone());
    Ok(vec![Task::new("delta_iso")
        .public()
        .doc("Build dist/<name>-<version>.delta.iso against DELTA_BASE (after iso)")
        .dep("iso")
        .input_file(&base)
        .input_file(&iso)
        .output(&out)
        .action(move |_| delta::build(&b, &i, &o).map(|_| ()))])
}
