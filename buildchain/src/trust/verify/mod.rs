//! `buildchain verify ISO|DIR`: one offline pass over a medium (SPEC §12).
//!
//! For an ISO, the file is read **once**, sequentially, in 4 MiB chunks: one thread reads, one
//! runs the isomd5sum MD5 and one the SHA-256 of every file extent (extents are
//! mapped to files beforehand by walking the directory records with the hardened reader). Small
//! files the checks need (the index, its signature, `SHA256SUMS`, image manifests, Salt sources)
//! are captured on the way, and RPMs keep only their headers plus a payload digest, so memory is
//! bounded whatever the medium's size. A directory is read file by file, once each.
//!
//! Findings use the model of `solution validate` ([`Report`]): any error means exit 1.

mod images;
mod index;
mod pass;
mod rpms;

use std::collections::HashMap;
use std::path::Path;

use super::completeness::{self, REGISTRY_INCLUDE};
use super::contents::{CONTENTS_FILE, CONTENTS_SIGNATURE_FILE};
use crate::solution::validate::Report;

pub use index::verify_detached;

use images::check_images;
use index::{check_files, check_index, check_sums};
use pass::{read_dir, read_iso};
use rpms::{check_completeness, check_rpms};

/// Options of [`verify_path`].
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Armored OpenPGP public key(s) the index and the RPMs must be signed with.
    pub key: Option<Vec<u8>>,
}

/// Whether the checks need the content of `path` in memory.
fn wants_capture(path: &str) -> bool {
    matches!(
        path,
        CONTENTS_FILE | CONTENTS_SIGNATURE_FILE | "SHA256SUMS" | REGISTRY_INCLUDE
    ) || (path.starts_with("images/") && path.ends_with("manifest.json"))
        || completeness::is_scanned(path)
}

/// What one pass learned about a stored content.
#[derive(Clone, Debug, Default)]
struct Facts {
    sha256: String,
    len: u64,
    captured: Option<Vec<u8>>,
    rpm: Option<RpmRaw>,
    error: Option<String>,
}

/// An RPM as streamed: its lead + signature + header bytes and the SHA-256 of the payload.
#[derive(Clone, Debug, Default)]
struct RpmRaw {
    prefix: Vec<u8>,
    header_end: Option<usize>,
    payload_sha256: String,
    error: Option<String>,
}

/// A regular file of the medium.
#[derive(Clone, Debug)]
struct FileRec {
    path: String,
    size: u64,
}

/// The medium after the pass: every regular file and what was learned about it.
struct Medium {
    files: Vec<FileRec>,
    facts: HashMap<String, Facts>,
}

impl Medium {
    fn captured(&self, path: &str) -> Option<&[u8]> {
        self.facts.get(path)?.captured.as_deref()
    }
}

/// Verifies `path`: a directory tree, or else an ISO image.
pub fn verify_path(path: &Path, opts: &VerifyOptions) -> Report {
    let mut rep = Report {
        source: path.display().to_string(),
        ..Report::default()
    };
    let medium = if path.is_dir() {
        read_dir(path, &mut rep)
    } else {
        read_iso(path, &mut rep)
    };
    if let Some(m) = medium {
        check(&m, opts, &mut rep);
    }
    rep.sort();
    rep
}

/// Every check on the facts of one pass.
fn check(m: &Medium, opts: &VerifyOptions, rep: &mut Report) {
    for f in &m.files {
        if let Some(e) = m.facts.get(&f.path).and_then(|x| x.error.clone()) {
            rep.error("FILE_UNREADABLE", &f.path, e);
        }
    }
    let index = check_index(m, opts, rep);
    check_files(m, index.as_ref(), rep);
    check_sums(m, rep);
    check_images(m, index.as_ref(), rep);
    let rpms = check_rpms(m, index.as_ref(), opts, rep);
    check_completeness(m, &rpms, rep);
}
