//! The content index `/CONTENTS.json` (and its signature) against the files of the tree.

use std::collections::BTreeMap;

use super::{Ctx, Report};
use crate::solution::tree::{Kind, TreeEntry};

/// The content index: signature (with a key), then every file against it. Contents already
/// hashed for the image checks are not read again.
pub(super) fn check_content_index(cx: &mut Ctx, key: Option<&[u8]>, rep: &mut Report) {
    use crate::trust::contents::{ContentIndex, CONTENTS_FILE, CONTENTS_SIGNATURE_FILE};
    let Some(e) = cx.index.file(CONTENTS_FILE).cloned() else {
        // Solutions made by other tools have no index: only a key makes it mandatory.
        if key.is_some() {
            rep.error(
                "INDEX_MISSING",
                CONTENTS_FILE,
                "no /CONTENTS.json content index",
            );
        }
        return;
    };
    let bytes = match cx.read_small(&e) {
        Ok(b) => b,
        Err(x) => {
            rep.error("INDEX_INVALID", CONTENTS_FILE, x);
            return;
        }
    };
    // Without a key the index is checked for consistency only (`buildchain verify` warns
    // about it; `solution validate` stays quiet so that a clean Solution has no finding).
    if let Some(k) = key {
        match cx.index.file(CONTENTS_SIGNATURE_FILE).cloned() {
            None => rep.error(
                "INDEX_SIGNATURE_MISSING",
                CONTENTS_SIGNATURE_FILE,
                "no detached signature of the index",
            ),
            Some(se) => match cx.read_small(&se) {
                Ok(asc) => {
                    if let Err(x) = crate::trust::verify::verify_detached(k, &bytes, &asc) {
                        rep.error("INDEX_SIGNATURE_INVALID", CONTENTS_SIGNATURE_FILE, x);
                    }
                }
                Err(x) => rep.error("INDEX_SIGNATURE_INVALID", CONTENTS_SIGNATURE_FILE, x),
            },
        }
    }
    let index = match ContentIndex::from_json_slice(&bytes) {
        Ok(i) => i,
        Err(x) => {
            rep.error(
                "INDEX_INVALID",
                CONTENTS_FILE,
                format!("not a content index: {x}"),
            );
            return;
        }
    };
    let listed: BTreeMap<&str, &crate::trust::contents::FileEntry> =
        index.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut work: Vec<TreeEntry> = Vec::new();
    for (p, e) in &cx.index.by_path {
        if e.kind != Kind::File || !crate::trust::index_reader::indexed(p) {
            continue;
        }
        if listed.contains_key(p.as_str()) {
            work.push(e.clone());
        } else {
            rep.error(
                "FILE_NOT_INDEXED",
                p,
                "present on the medium but not in the index",
            );
        }
    }
    for f in &index.files {
        if cx.index.file(&f.path).is_none() {
            rep.error("FILE_MISSING", &f.path, "listed in the index but absent");
        }
    }
    work.sort_by(|a, b| (a.identity, &a.path).cmp(&(b.identity, &b.path)));
    for e in work {
        let want = listed[e.path.as_str()];
        match cx.hash(&e, &mut rep.stats) {
            Ok((h, n)) => {
                if n != want.size {
                    rep.error(
                        "FILE_SIZE_MISMATCH",
                        &e.path,
                        format!("{n} bytes, the index says {}", want.size),
                    );
                } else if h != want.sha256 {
                    rep.error(
                        "FILE_DIGEST_MISMATCH",
                        &e.path,
                        format!("content has sha256 {h}, the index says {}", want.sha256),
                    );
                }
            }
            Err(x) => rep.error("FILE_UNREADABLE", &e.path, x),
        }
    }
}
