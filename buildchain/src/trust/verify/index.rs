//! The content index and its signature, the files it lists, `SHA256SUMS`.

use std::collections::{BTreeSet, HashMap};

use crate::solution::validate::Report;
use crate::trust::contents::{
    ContentIndex, CONTENTS_FILE, CONTENTS_SCHEMA, CONTENTS_SIGNATURE_FILE,
};
use crate::trust::index_reader::{indexed, summed};

use super::{Medium, VerifyOptions};

/// Loads the index and checks its signature (with a key) or warns that it is unauthenticated.
pub(super) fn check_index(
    m: &Medium,
    opts: &VerifyOptions,
    rep: &mut Report,
) -> Option<ContentIndex> {
    let Some(bytes) = m.captured(CONTENTS_FILE) else {
        if m.files.iter().any(|f| f.path == CONTENTS_FILE) {
            rep.error(
                "INDEX_INVALID",
                CONTENTS_FILE,
                "the index is too large or unreadable",
            );
        } else {
            rep.error(
                "INDEX_MISSING",
                CONTENTS_FILE,
                "no /CONTENTS.json content index",
            );
        }
        return None;
    };
    match &opts.key {
        Some(key) => match m.captured(CONTENTS_SIGNATURE_FILE) {
            None => rep.error(
                "INDEX_SIGNATURE_MISSING",
                CONTENTS_SIGNATURE_FILE,
                "no detached signature of the index",
            ),
            Some(asc) => {
                if let Err(e) = verify_detached(key, bytes, asc) {
                    rep.error("INDEX_SIGNATURE_INVALID", CONTENTS_SIGNATURE_FILE, e);
                }
            }
        },
        None => rep.warn(
            "INDEX_NOT_AUTHENTICATED",
            CONTENTS_FILE,
            "no --key given: the index is checked for consistency only, not for who made it",
        ),
    }
    let index = match ContentIndex::from_json_slice(bytes) {
        Ok(i) => i,
        Err(e) => {
            rep.error(
                "INDEX_INVALID",
                CONTENTS_FILE,
                format!("not a content index: {e}"),
            );
            return None;
        }
    };
    if index.schema != CONTENTS_SCHEMA {
        rep.error(
            "INDEX_INVALID",
            CONTENTS_FILE,
            format!("schema is {:?}, expected {CONTENTS_SCHEMA:?}", index.schema),
        );
    }
    match index.to_json_bytes() {
        Ok(b) if b == bytes => {}
        _ => rep.error(
            "INDEX_INVALID",
            CONTENTS_FILE,
            "the index is not in canonical form (sorted lists, 2-space JSON, final newline)",
        ),
    }
    let mut seen = BTreeSet::new();
    for f in &index.files {
        if !seen.insert(f.path.as_str()) {
            rep.error(
                "INDEX_INVALID",
                CONTENTS_FILE,
                format!("{} is listed twice", f.path),
            );
        }
    }
    if let Some(v) = index
        .product
        .get("VERSION")
        .or(index.product.get("version"))
    {
        rep.version = Some(v.clone());
    }
    if let Some(n) = index.product.get("NAME").or(index.product.get("name")) {
        rep.name = Some(n.clone());
    }
    Some(index)
}

/// Verifies an armored detached signature over `data` with the armored public key(s) `key`.
pub fn verify_detached(key: &[u8], data: &[u8], asc: &[u8]) -> Result<(), String> {
    use pgp::composed::{Deserializable, DetachedSignature};
    use pgp::ser::Serialize;
    use rpm::signature::Verifying;
    let verifier = rpm::signature::pgp::Verifier::from_asc_bytes(key)
        .map_err(|e| format!("cannot load the public key: {e}"))?;
    let text = std::str::from_utf8(asc).map_err(|_| "the signature is not armored text")?;
    let (sig, _) = DetachedSignature::from_string(text)
        .map_err(|e| format!("not an armored OpenPGP signature: {e}"))?;
    let issuer = sig
        .signature
        .issuer_fingerprint()
        .first()
        .map(|f| format!("{f:X}"))
        .or_else(|| {
            sig.signature
                .issuer_key_id()
                .first()
                .map(|k| hex::encode_upper(k.as_ref()))
        })
        .unwrap_or_else(|| "an unknown key".into());
    let raw = sig
        .to_bytes()
        .map_err(|e| format!("cannot encode the signature: {e}"))?;
    verifier
        .verify(data, &raw)
        .map_err(|e| format!("signature by {issuer} does not verify with the given key: {e}"))
}

pub(super) fn check_files(m: &Medium, index: Option<&ContentIndex>, rep: &mut Report) {
    let Some(index) = index else {
        return;
    };
    let listed: HashMap<&str, &crate::trust::contents::FileEntry> =
        index.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let present: BTreeSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    for f in &m.files {
        if !indexed(&f.path) {
            continue;
        }
        let Some(want) = listed.get(f.path.as_str()) else {
            rep.error(
                "FILE_NOT_INDEXED",
                &f.path,
                "present on the medium but not in the index",
            );
            continue;
        };
        let Some(got) = m.facts.get(&f.path).filter(|x| x.error.is_none()) else {
            continue;
        };
        if got.len != want.size {
            rep.error(
                "FILE_SIZE_MISMATCH",
                &f.path,
                format!("{} bytes, the index says {}", got.len, want.size),
            );
        } else if got.sha256 != want.sha256 {
            rep.error(
                "FILE_DIGEST_MISMATCH",
                &f.path,
                format!(
                    "content has sha256 {}, the index says {}",
                    got.sha256, want.sha256
                ),
            );
        }
    }
    for f in &index.files {
        if !present.contains(f.path.as_str()) {
            rep.error("FILE_MISSING", &f.path, "listed in the index but absent");
        }
    }
}

pub(super) fn check_sums(m: &Medium, rep: &mut Report) {
    let p = "SHA256SUMS";
    let Some(bytes) = m.captured(p) else {
        if m.files.iter().any(|f| f.path == p) {
            rep.error("SUMS_INVALID", p, "SHA256SUMS is too large or unreadable");
        } else {
            rep.warn("SUMS_MISSING", p, "no /SHA256SUMS");
        }
        return;
    };
    let text = String::from_utf8_lossy(bytes);
    let mut listed = BTreeSet::new();
    for (i, l) in text.lines().enumerate() {
        let Some((hex, path)) = l.split_once("  ") else {
            rep.error(
                "SUMS_INVALID",
                p,
                format!("line {}: not `<sha256>  <path>`", i + 1),
            );
            continue;
        };
        let path = path.trim_start_matches("./").to_string();
        match m.facts.get(&path) {
            None => rep.error(
                "SUMS_FILE_MISSING",
                &path,
                format!("listed in SHA256SUMS (line {}) but absent", i + 1),
            ),
            Some(f) if f.error.is_none() && f.sha256 != hex => rep.error(
                "SUMS_MISMATCH",
                &path,
                format!(
                    "content has sha256 {}, SHA256SUMS line {} says {hex}",
                    f.sha256,
                    i + 1
                ),
            ),
            _ => {}
        }
        listed.insert(path);
    }
    for f in &m.files {
        if summed(&f.path) && !listed.contains(&f.path) {
            rep.error("SUMS_FILE_NOT_LISTED", &f.path, "not listed in SHA256SUMS");
        }
    }
}
