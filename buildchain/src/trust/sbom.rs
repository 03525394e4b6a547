//! The SBOM: an SPDX 2.3 JSON document (`/sbom.spdx.json`) describing one ISO.
//!
//! The document DESCRIBES one package for the ISO, which CONTAINS one package per image (purl
//! `pkg:oci/…`, manifest digest as checksum) and per RPM (purl `pkg:rpm/…`, the header's
//! license, sha256). Deterministic: packages sorted, `created` from `SOURCE_DATE_EPOCH`, the
//! `documentNamespace` derived from a hash of the content rather than random.

use anyhow::Result;
use serde_json::{json, Value};

use super::contents::ImageEntry;
use super::index::RpmInfo;

/// What the SBOM describes.
#[derive(Clone, Debug)]
pub struct SbomInput<'a> {
    /// Document / ISO package name (`metalk8s-130.0.0`).
    pub name: &'a str,
    /// Product or Solution version.
    pub version: &'a str,
    /// Lower-cased project (purl namespace of the RPMs built here).
    pub namespace: &'a str,
    /// Registry prefix that serves the images (`repository_url` of the image purls), without
    /// a trailing `/`.
    pub registry: &'a str,
    /// Creation time (unix seconds).
    pub created: u64,
    /// Images of the tree.
    pub images: &'a [ImageEntry],
    /// RPMs of the tree.
    pub rpms: &'a [RpmInfo],
}

/// Common SPDX license ids accepted as-is in `licenseDeclared`; anything else becomes a
/// `LicenseRef-` with the header text as extracted licensing info.
const KNOWN_LICENSES: &[&str] = &[
    "0BSD",
    "AFL-2.1",
    "Apache-1.1",
    "Apache-2.0",
    "Artistic-1.0",
    "Artistic-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSL-1.0",
    "CC0-1.0",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "EPL-1.0",
    "EPL-2.0",
    "GPL-1.0-or-later",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "ISC",
    "LGPL-2.0-only",
    "LGPL-2.0-or-later",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "MIT",
    "MPL-1.1",
    "MPL-2.0",
    "OpenSSL",
    "PostgreSQL",
    "Python-2.0",
    "Unlicense",
    "Zlib",
];

/// The SPDX expression for an RPM `License:` value, or `None` when it is not one we can vouch
/// for (then a `LicenseRef-` is used).
fn spdx_expression(license: &str) -> Option<String> {
    let spaced = license.replace('(', " ( ").replace(')', " ) ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    if tokens.is_empty() {
        return None;
    }
    let mut depth = 0i32;
    let mut expect_id = true;
    for t in &tokens {
        match *t {
            "(" if expect_id => depth += 1,
            ")" if !expect_id => depth -= 1,
            "AND" | "OR" | "WITH" if !expect_id => expect_id = true,
            id if expect_id && KNOWN_LICENSES.contains(&id.trim_end_matches('+')) => {
                expect_id = false
            }
            _ => return None,
        }
        if depth < 0 {
            return None;
        }
    }
    (depth == 0 && !expect_id && !tokens.contains(&"WITH"))
        .then(|| tokens.join(" ").replace("( ", "(").replace(" )", ")"))
}

fn spdx_id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:oci/<name>@sha256%3A<hex>?repository_url=<registry>/<full name>&tag=<tag>`.
pub fn image_purl(registry: &str, image: &ImageEntry) -> String {
    let last = image.name.rsplit('/').next().unwrap_or(&image.name);
    format!(
        "pkg:oci/{}@{}?repository_url={}&tag={}",
        pct(&last.to_ascii_lowercase()),
        pct(&image.digest),
        pct(&format!("{registry}/{}", image.name)),
        pct(&image.tag)
    )
}

/// `pkg:rpm/<namespace>/<name>@<version>-<release>?arch=<arch>[&epoch=<e>]`.
pub fn rpm_purl(namespace: &str, r: &RpmInfo) -> String {
    let mut s = format!(
        "pkg:rpm/{}/{}@{}?arch={}",
        pct(namespace),
        pct(&r.name),
        pct(&r.version_release),
        pct(&r.arch)
    );
    if r.epoch > 0 {
        s.push_str(&format!("&epoch={}", r.epoch));
    }
    s
}

/// The SPDX 2.3 document, serialized deterministically (2-space indent, final newline).
pub fn sbom_json(input: &SbomInput<'_>) -> Result<Vec<u8>> {
    let mut packages = Vec::new();
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-ISO",
    })];
    let mut extracted: Vec<Value> = Vec::new();
    packages.push(json!({
        "SPDXID": "SPDXRef-ISO",
        "name": input.name,
        "versionInfo": input.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "ARCHIVE",
    }));
    let mut images = input.images.to_vec();
    images.sort_by(|a, b| (&a.name, &a.tag).cmp(&(&b.name, &b.tag)));
    for (i, img) in images.iter().enumerate() {
        let id = format!(
            "SPDXRef-Image-{}-{}-{}",
            i + 1,
            spdx_id_part(&img.name),
            spdx_id_part(&img.tag)
        );
        let hex = img.digest.strip_prefix("sha256:").unwrap_or(&img.digest);
        packages.push(json!({
            "SPDXID": id,
            "name": img.name,
            "versionInfo": img.tag,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": hex}],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "CONTAINER",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": image_purl(input.registry, img),
            }],
        }));
        rels.push(json!({
            "spdxElementId": "SPDXRef-ISO",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let mut rpms = input.rpms.to_vec();
    rpms.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
    for (i, r) in rpms.iter().enumerate() {
        let id = format!("SPDXRef-RPM-{}-{}", i + 1, spdx_id_part(&r.entry.nevra));
        let license = match spdx_expression(&r.license) {
            Some(e) => e,
            None if r.license.trim().is_empty() => "NOASSERTION".to_string(),
            None => {
                let lref = format!("LicenseRef-RPM-{}", i + 1);
                extracted.push(json!({
                    "licenseId": lref,
                    "extractedText": r.license,
                    "name": r.license,
                }));
                lref
            }
        };
        packages.push(json!({
            "SPDXID": id,
            "name": r.name,
            "versionInfo": if r.epoch > 0 { format!("{}:{}", r.epoch, r.version_release) } else { r.version_release.clone() },
            "packageFileName": r.entry.path,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": r.entry.sha256}],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license,
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "INSTALL",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": rpm_purl(input.namespace, r),
            }],
        }));
        rels.push(json!({
            "spdxElementId": "SPDXRef-ISO",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    // The namespace is a hash of everything the document says, so it is unique per content
    // and stable across builds.
    let body = serde_json::to_vec(&json!([
        input.name,
        input.version,
        packages,
        rels,
        extracted
    ]))?;
    let namespace = format!(
        "https://spdx.buildchain.invalid/{}/{}",
        spdx_id_part(input.name),
        crate::fsutil::sha256_bytes(&body)
    );
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": input.name,
        "documentNamespace": namespace,
        "creationInfo": {
            "created": crate::product::rfc3339_utc(input.created),
            "creators": [format!("Tool: buildchain-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": rels,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = Value::Array(extracted);
    }
    let mut bytes = serde_json::to_vec_pretty(&doc)?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn license_expressions() {
        assert_eq!(spdx_expression("Apache-2.0").as_deref(), Some("Apache-2.0"));
        assert_eq!(
            spdx_expression("(MIT OR Apache-2.0) AND BSD-3-Clause").as_deref(),
            Some("(MIT OR Apache-2.0) AND BSD-3-Clause")
        );
        assert_eq!(spdx_expression("ASL 2.0"), None);
        assert_eq!(spdx_expression("MIT AND"), None);
        assert_eq!(spdx_expression("(MIT"), None);
    }
}
