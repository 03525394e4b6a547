//! The validation report: findings with a severity, a stable code and a path, plus counters.

use serde::Serialize;
use serde_json::Value;

/// Severity of a [`Finding`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The Solution must not be imported.
    Error,
    /// Suspicious but accepted by MetalK8s.
    Warning,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// error | warning.
    pub severity: Severity,
    /// Stable code (`MANIFEST_MISSING`, `BLOB_DIGEST_MISMATCH`…).
    pub code: &'static str,
    /// Path in the tree (`/` for the whole image).
    pub path: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Counters of a validation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Entries in the tree.
    pub entries: u64,
    /// Images (`images/<name>/<tag>/`) found.
    pub images: u64,
    /// Blob references checked (config + layers of every manifest).
    pub blob_refs: u64,
    /// Distinct stored contents hashed.
    pub blobs_hashed: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
}

/// Result of a validation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// What was validated.
    pub source: String,
    /// ISO volume identifier, if an ISO.
    pub volume_id: Option<String>,
    /// `metadata.name` of the manifest, when readable.
    pub name: Option<String>,
    /// `spec.version` of the manifest, when readable.
    pub version: Option<String>,
    /// isomd5sum verdict: `pass`, `fail`, `not-implanted`, `error` (ISOs only).
    pub md5: Option<String>,
    /// Counters.
    pub stats: Stats,
    /// Every finding, errors first then by path.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.findings.len() - self.errors()
    }
    /// Whether there is at least one finding with `code`.
    pub fn has(&self, code: &str) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
    fn push(&mut self, severity: Severity, code: &'static str, path: &str, message: String) {
        self.findings.push(Finding {
            severity,
            code,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            message,
        });
    }
    pub(crate) fn error(&mut self, code: &'static str, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, code, path, message.into());
    }
    pub(crate) fn warn(&mut self, code: &'static str, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, code, path, message.into());
    }

    /// Text rendering: one line per finding, then a summary line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for f in &self.findings {
            let sev = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            s.push_str(&format!("{sev}: {} {}: {}\n", f.code, f.path, f.message));
        }
        s.push_str(&format!(
            "{}: {} {} — {} error(s), {} warning(s); {} image(s), {} blob reference(s), {} distinct blob(s) hashed ({} bytes){}\n",
            self.source,
            self.name.as_deref().unwrap_or("?"),
            self.version.as_deref().unwrap_or("?"),
            self.errors(),
            self.warnings(),
            self.stats.images,
            self.stats.blob_refs,
            self.stats.blobs_hashed,
            self.stats.bytes_hashed,
            self.md5.as_deref().map(|m| format!("; md5: {m}")).unwrap_or_default(),
        ));
        s
    }

    /// JSON rendering (`ok`, counts, findings, stats).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("ok".into(), Value::Bool(self.errors() == 0));
            o.insert("errors".into(), self.errors().into());
            o.insert("warnings".into(), self.warnings().into());
        }
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    }

    pub(crate) fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            (a.severity, &a.path, a.code, &a.message)
                .cmp(&(b.severity, &b.path, b.code, &b.message))
        });
        self.findings.dedup();
    }
}
