//! RPM signatures, payload digests, the repository metadata and the dependency closure.

use std::collections::{BTreeSet, HashMap};

use crate::solution::validate::Report;
use crate::trust::completeness::{self, RpmDeps, Served, REGISTRY_INCLUDE};
use crate::trust::contents::ContentIndex;
use crate::trust::index_reader::{rpm_key_id, rpm_nevra};

use super::{Medium, VerifyOptions};

/// The base-OS provides the RPM closure accepts (the build's own list, compiled in: the medium
/// does not carry it).
const BASE_OS_PROVIDES: &str = include_str!("../../../../packages/redhat/8/base-os-provides.txt");

/// Checks every RPM (digests, signatures, index entry); returns their dependencies.
pub(super) fn check_rpms(
    m: &Medium,
    index: Option<&ContentIndex>,
    opts: &VerifyOptions,
    rep: &mut Report,
) -> Vec<RpmDeps> {
    let verifier =
        opts.key
            .as_ref()
            .and_then(|k| match rpm::signature::pgp::Verifier::from_asc_bytes(k) {
                Ok(v) => Some(v),
                Err(e) => {
                    rep.error(
                        "KEY_INVALID",
                        "",
                        format!("cannot load the public key: {e}"),
                    );
                    None
                }
            });
    let indexed: HashMap<&str, &crate::trust::contents::RpmEntry> = index
        .map(|i| i.rpms.iter().map(|r| (r.path.as_str(), r)).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &m.files {
        let Some(facts) = m.facts.get(&f.path) else {
            continue;
        };
        let Some(raw) = &facts.rpm else {
            continue;
        };
        if facts.error.is_some() {
            continue;
        }
        seen.insert(f.path.as_str());
        let p = f.path.as_str();
        if let Some(e) = &raw.error {
            rep.error("RPM_INVALID", p, e.clone());
            continue;
        }
        let md = match raw
            .header_end
            .ok_or_else(|| "truncated before the end of its header".to_string())
            .and_then(|_| {
                rpm::PackageMetadata::parse(&mut std::io::Cursor::new(&raw.prefix))
                    .map_err(|e| e.to_string())
            }) {
            Ok(md) => md,
            Err(e) => {
                rep.error("RPM_INVALID", p, format!("not a readable RPM: {e}"));
                continue;
            }
        };
        match md.check_digests() {
            Ok(d) if d.has_header_digest() => {
                if let Err(e) = d.result() {
                    rep.error("RPM_DIGEST_MISMATCH", p, format!("header digest: {e}"));
                }
            }
            Ok(_) => rep.error("RPM_DIGEST_MISMATCH", p, "the RPM carries no header digest"),
            Err(e) => rep.error("RPM_DIGEST_MISMATCH", p, format!("header digest: {e}")),
        }
        if let Ok(want) = md
            .header
            .get_entry_data_as_string_array(rpm::IndexTag::RPMTAG_PAYLOADSHA256)
        {
            let algo = md
                .header
                .get_entry_data_as_u32(rpm::IndexTag::RPMTAG_PAYLOADSHA256ALGO)
                .unwrap_or(8);
            if algo == 8 && want.first().is_some_and(|w| *w != raw.payload_sha256) {
                rep.error(
                    "RPM_DIGEST_MISMATCH",
                    p,
                    format!(
                        "payload has sha256 {}, the header says {}",
                        raw.payload_sha256,
                        want.first().copied().unwrap_or_default()
                    ),
                );
            }
        }
        let key_id = rpm_key_id(&md);
        if let Some(v) = &verifier {
            if key_id.is_none() {
                rep.error("RPM_UNSIGNED", p, "the RPM carries no signature");
            } else if let Err(e) = md.verify_signature(v) {
                rep.error(
                    "RPM_SIGNATURE_INVALID",
                    p,
                    format!(
                        "signature by {} does not verify with the given key: {e}",
                        key_id.as_deref().unwrap_or("?")
                    ),
                );
            }
        }
        if index.is_some() {
            let nevra = rpm_nevra(&md).unwrap_or_default();
            match indexed.get(p) {
                None => rep.error(
                    "RPM_NOT_INDEXED",
                    p,
                    "present on the medium but not in the index",
                ),
                Some(e) => {
                    if e.nevra != nevra || e.sha256 != facts.sha256 || e.key_id != key_id {
                        rep.error(
                            "RPM_INDEX_MISMATCH",
                            p,
                            format!(
                                "medium has {nevra} sha256 {} key {:?}, the index says {} sha256 {} key {:?}",
                                facts.sha256, key_id, e.nevra, e.sha256, e.key_id
                            ),
                        );
                    }
                }
            }
        }
        match RpmDeps::from_metadata(p, &md) {
            Ok(d) => out.push(d),
            Err(e) => rep.error("RPM_INVALID", p, format!("{e:#}")),
        }
    }
    for p in indexed.keys() {
        if !seen.contains(p) {
            rep.error("RPM_MISSING", p, "listed in the index but absent");
        }
    }
    out
}

pub(super) fn check_completeness(m: &Medium, rpms: &[RpmDeps], rep: &mut Report) {
    let texts: Vec<(&str, String)> = m
        .files
        .iter()
        .filter(|f| completeness::is_scanned(&f.path))
        .filter_map(|f| {
            m.captured(&f.path)
                .map(|b| (f.path.as_str(), String::from_utf8_lossy(b).into_owned()))
        })
        .collect();
    let mut served = Served::from_paths(m.files.iter().map(|f| f.path.as_str()));
    let what = match m.captured(REGISTRY_INCLUDE) {
        Some(inc) => {
            served = served.restrict_to_include(&String::from_utf8_lossy(inc), "");
            format!("the medium's registry ({REGISTRY_INCLUDE})")
        }
        None => "the medium's images/".to_string(),
    };
    let mut dangling =
        completeness::check_images(texts.iter().map(|(p, t)| (*p, t.as_str())), &served, &what);
    let base = completeness::parse_base_provides(BASE_OS_PROVIDES);
    dangling.extend(completeness::check_rpm_closure(rpms, &base));
    for d in dangling {
        rep.error(d.code, &d.path, d.to_string());
    }
}
