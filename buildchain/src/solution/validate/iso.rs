//! ISO container checks: the implanted MD5, the volume descriptors, then the tree checks on the
//! ISO's file tree.

use std::io::{Read, Seek};
use std::path::Path;

use super::{check_tree_with_key, Report};
use crate::solution::tree::IsoTree;

/// Validates an ISO image read from `r`; `source` names it in the report.
pub fn validate_iso<R: Read + Seek>(mut r: R, source: &str) -> Report {
    let mut rep = Report {
        source: source.to_string(),
        ..Report::default()
    };
    md5_part(&mut r, &mut rep);
    structure_part(r, None, &mut rep);
    rep.sort();
    rep
}

/// Validates the ISO file at `path`, checking the implanted MD5 on a second handle in a parallel
/// thread while the tree is checked.
pub fn validate_iso_file(path: &Path) -> Report {
    validate_iso_file_with_key(path, None)
}

/// [`validate_iso_file`] with the index signature checked against `key` (see
/// [`validate_path_with_key`]).
pub fn validate_iso_file_with_key(path: &Path, key: Option<&[u8]>) -> Report {
    let mut rep = Report {
        source: path.display().to_string(),
        ..Report::default()
    };
    let open =
        |p: &Path| std::fs::File::open(p).map(|f| std::io::BufReader::with_capacity(1 << 20, f));
    let (f1, f2) = match (open(path), open(path)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            rep.error(
                "ISO_UNREADABLE",
                "",
                format!("cannot open {}: {e}", path.display()),
            );
            return rep;
        }
    };
    let md5 = std::thread::scope(|s| {
        let h = s.spawn(move || {
            let mut m = Report::default();
            let mut f2 = f2;
            md5_part(&mut f2, &mut m);
            m
        });
        structure_part(f1, key, &mut rep);
        h.join()
    });
    match md5 {
        Ok(m) => {
            rep.md5 = m.md5;
            rep.findings.extend(m.findings);
        }
        Err(_) => rep.error("MD5_CHECK_FAILED", "", "the MD5 check failed unexpectedly"),
    }
    rep.sort();
    rep
}

/// isomd5sum verdict (reads the whole image once).
fn md5_part<R: Read + Seek>(r: &mut R, rep: &mut Report) {
    match iso9660_writer::md5sum::check_reader(r) {
        Ok(c) => {
            use iso9660_writer::CheckStatus;
            rep.md5 = Some(
                match c.status {
                    CheckStatus::Pass => "pass",
                    CheckStatus::Fail => {
                        rep.error(
                            "MD5_MISMATCH",
                            "",
                            format!(
                                "implanted MD5 {} does not match the image{}",
                                c.expected_md5.as_deref().unwrap_or("?"),
                                c.failed_fragment
                                    .map(|f| format!(" (fragment {f} differs)"))
                                    .unwrap_or_else(|| c
                                        .computed_md5
                                        .map(|m| format!(" (computed {m})"))
                                        .unwrap_or_default())
                            ),
                        );
                        "fail"
                    }
                    CheckStatus::NotImplanted => "not-implanted",
                }
                .to_string(),
            );
        }
        Err(e) => {
            rep.md5 = Some("error".into());
            rep.error(
                "MD5_CHECK_FAILED",
                "",
                format!("cannot check the implanted MD5: {e}"),
            );
        }
    }
}

/// Container and tree checks.
fn structure_part<R: Read + Seek>(mut r: R, key: Option<&[u8]>, rep: &mut Report) {
    let len = r.seek(std::io::SeekFrom::End(0)).unwrap_or(0);
    if r.seek(std::io::SeekFrom::Start(0)).is_err() {
        rep.error("ISO_UNREADABLE", "", "cannot seek in the image");
        return;
    }
    let mut tree = match IsoTree::from_reader(r) {
        Ok(t) => t,
        Err(e) => {
            rep.error(
                "ISO_UNREADABLE",
                "",
                format!("not a readable ISO-9660 image: {e:#}"),
            );
            return;
        }
    };
    let sectors = tree.reader.volume_sectors() as u64;
    if sectors * 2048 > len {
        rep.error(
            "ISO_TRUNCATED",
            "",
            format!(
                "the volume is {} bytes ({sectors} sectors) but the file holds only {len} bytes",
                sectors * 2048
            ),
        );
    }
    if !tree.reader.has_rock_ridge() {
        rep.error(
            "NO_ROCK_RIDGE",
            "",
            format!(
                "the image has no Rock Ridge extensions (names read from {})",
                if tree.reader.has_joliet() {
                    "Joliet"
                } else {
                    "the plain ISO-9660 tree"
                }
            ),
        );
    }
    let vol = tree.reader.volume_id().to_string();
    rep.volume_id = Some(vol.clone());
    // MetalK8s reads the manifest with `isoinfo -x /MANIFEST.YAML;1` (primary names).
    match tree.plain_paths() {
        Ok(p) => {
            if !p.iter().any(|p| p == "MANIFEST.YAML") && tree.reader.has_rock_ridge() {
                let seen = p
                    .iter()
                    .find(|p| p.starts_with("MANIFEST"))
                    .map(|p| format!(" (found {p:?})"))
                    .unwrap_or_default();
                rep.warn(
                    "MANIFEST_PRIMARY_NAME",
                    "MANIFEST.YAML;1",
                    format!("no MANIFEST.YAML;1 in the primary ISO-9660 tree{seen}: MetalK8s reads the manifest with `isoinfo -x /MANIFEST.YAML;1`; master with full ISO-9660 file names (mkisofs -l / --full-iso9660-filenames)"),
                );
            }
        }
        Err(e) => rep.error(
            "ISO_MALFORMED",
            "",
            format!("cannot walk the primary tree: {e:#}"),
        ),
    }
    check_tree_with_key(&mut tree, Some(&vol), key, rep);
}
