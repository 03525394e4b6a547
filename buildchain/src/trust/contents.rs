//! The content index `/CONTENTS.json` (SPEC §12): the root of trust of a medium.
//!
//! One JSON document, signed detached (`/CONTENTS.json.asc`), that lists product metadata, every
//! regular file, every image and every RPM of an ISO tree. Everything is sorted, so the same tree
//! gives the same bytes.
//!
//! Coverage rule: `files` lists every regular file of the tree except `CONTENTS.json` and
//! `CONTENTS.json.asc` themselves (so it covers `SHA256SUMS` and `sbom.spdx.json`), while
//! `SHA256SUMS` lists every regular file except itself, `CONTENTS.json` and `CONTENTS.json.asc`.
//! The build order is therefore: tree → `sbom.spdx.json` → `SHA256SUMS` → `CONTENTS.json` →
//! `CONTENTS.json.asc`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The index file name at the tree root.
pub const CONTENTS_FILE: &str = "CONTENTS.json";
/// Its detached, armored OpenPGP signature.
pub const CONTENTS_SIGNATURE_FILE: &str = "CONTENTS.json.asc";
/// The value of [`ContentIndex::schema`].
pub const CONTENTS_SCHEMA: &str = "buildchain.contents/v1";

/// `/CONTENTS.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentIndex {
    /// Always [`CONTENTS_SCHEMA`].
    pub schema: String,
    /// Product (or Solution) metadata: `product.txt` keys for the product ISO
    /// (`NAME`, `VERSION`, …), `name`/`version`/`display_name` for a Solution. Sorted by key.
    pub product: BTreeMap<String, String>,
    /// The tool that built the tree.
    pub builder: Builder,
    /// `SOURCE_DATE_EPOCH` of the build, when set.
    pub source_date_epoch: Option<u64>,
    /// Every regular file (see the module doc for the coverage rule), sorted by path.
    pub files: Vec<FileEntry>,
    /// Every image served by the tree, sorted by (name, tag).
    pub images: Vec<ImageEntry>,
    /// Every RPM of the tree's repositories, sorted by path.
    pub rpms: Vec<RpmEntry>,
}

/// The builder of a tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Builder {
    /// `buildchain`.
    pub name: String,
    /// The crate version.
    pub version: String,
}

/// A regular file of the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the tree root, `/`-separated, no leading `./` or `/`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
}

/// An image in `images/<name>/<tag>/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// Repository name without the registry prefix (`metalk8s-utils`).
    pub name: String,
    /// Tag (`1.0`).
    pub tag: String,
    /// `sha256:<hex>` of `manifest.json` as served.
    pub digest: String,
    /// Media type of `manifest.json` (manifest or index).
    pub media_type: String,
    /// `os/arch[/variant]` of each platform it serves, sorted.
    pub platforms: Vec<String>,
    /// Every blob the image needs (configs, layers, child manifests of an index), sorted by
    /// digest, each once.
    pub blobs: Vec<BlobEntry>,
}

/// A blob of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobEntry {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes, as the manifest declares it.
    pub size: u64,
}

/// An RPM of one of the tree's repositories.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpmEntry {
    /// Relative path of the `.rpm` file.
    pub path: String,
    /// `name-[epoch:]version-release.arch`.
    pub nevra: String,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    /// OpenPGP key id (16 upper-case hex) of its header signature, `None` when unsigned.
    pub key_id: Option<String>,
}

impl ContentIndex {
    /// Serializes deterministically: 2-space indent, a final newline, lists sorted as documented.
    pub fn to_json_bytes(&self) -> serde_json::Result<Vec<u8>> {
        let mut sorted = self.clone();
        sorted.files.sort_by(|a, b| a.path.cmp(&b.path));
        sorted
            .images
            .sort_by(|a, b| (&a.name, &a.tag).cmp(&(&b.name, &b.tag)));
        sorted.rpms.sort_by(|a, b| a.path.cmp(&b.path));
        for image in &mut sorted.images {
            image.platforms.sort();
            image.platforms.dedup();
            image.blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
            image.blobs.dedup();
        }
        let mut bytes = serde_json::to_vec_pretty(&sorted)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Parses an index; unknown fields are refused.
    pub fn from_json_slice(bytes: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ContentIndex {
        ContentIndex {
            schema: CONTENTS_SCHEMA.into(),
            product: BTreeMap::from([("NAME".into(), "MetalK8s".into())]),
            builder: Builder {
                name: "buildchain".into(),
                version: "0.1.0".into(),
            },
            source_date_epoch: Some(1_700_000_000),
            files: vec![
                FileEntry {
                    path: "z".into(),
                    size: 1,
                    sha256: "00".into(),
                },
                FileEntry {
                    path: "a".into(),
                    size: 2,
                    sha256: "11".into(),
                },
            ],
            images: vec![],
            rpms: vec![],
        }
    }

    #[test]
    fn serialization_sorts_and_round_trips() {
        let bytes = sample().to_json_bytes().unwrap();
        let back = ContentIndex::from_json_slice(&bytes).unwrap();
        assert_eq!(back.files[0].path, "a");
        assert_eq!(back.to_json_bytes().unwrap(), bytes);
        assert!(bytes.ends_with(b"}\n"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = ContentIndex::from_json_slice(br#"{"schema":"x","extra":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }
}
