//! The `VERSION` file (MetalK8s format).

use std::path::Path;

use anyhow::{bail, Context, Result};

/// A product version: `MAJOR.MINOR.PATCH` plus an optional suffix such as `-dev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// `VERSION_MAJOR`.
    pub major: u64,
    /// `VERSION_MINOR`.
    pub minor: u64,
    /// `VERSION_PATCH`.
    pub patch: u64,
    /// `VERSION_SUFFIX`, e.g. `-dev` (may be empty).
    pub suffix: String,
}

impl Version {
    /// `X.Y.Z<suffix>`, e.g. `130.0.0-dev`.
    pub fn full(&self) -> String {
        format!(
            "{}.{}.{}{}",
            self.major, self.minor, self.patch, self.suffix
        )
    }
    /// `X.Y`.
    pub fn short(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
    /// `X.Y.Z`.
    pub fn nonsuffixed(&self) -> String {
        format!("{}.{}.{}", self.major, self.minor, self.patch)
    }
    /// True iff the suffix is `-dev`.
    pub fn is_development(&self) -> bool {
        self.suffix == "-dev"
    }

    /// Reads and parses a `VERSION` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses `KEY=value` lines; `origin` names the file in errors (`file:line: …`).
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut major = None;
        let mut minor = None;
        let mut patch = None;
        let mut suffix = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let lineno = i + 1;
            let Some((key, value)) = line.split_once('=') else {
                bail!("{origin}:{lineno}: expected KEY=value, found {raw:?}");
            };
            let (key, value) = (key.trim(), value.trim());
            let number = |v: &str| -> Result<u64> {
                v.parse::<u64>().with_context(|| {
                    format!("{origin}:{lineno}: {key} must be a non-negative integer, found {v:?}")
                })
            };
            let slot = match key {
                "VERSION_MAJOR" => &mut major,
                "VERSION_MINOR" => &mut minor,
                "VERSION_PATCH" => &mut patch,
                "VERSION_SUFFIX" => {
                    if !value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '+'))
                    {
                        bail!("{origin}:{lineno}: VERSION_SUFFIX may only hold [A-Za-z0-9._+-], found {value:?}");
                    }
                    if !value.is_empty() && !value.starts_with('-') {
                        bail!("{origin}:{lineno}: VERSION_SUFFIX must be empty or start with `-` (for example `-dev`), found {value:?}");
                    }
                    if suffix.replace(value.to_string()).is_some() {
                        bail!("{origin}:{lineno}: VERSION_SUFFIX given twice");
                    }
                    continue;
                }
                other => bail!(
                    "{origin}:{lineno}: unknown key {other:?} (expected VERSION_MAJOR, VERSION_MINOR, VERSION_PATCH, VERSION_SUFFIX)"
                ),
            };
            if slot.replace(number(value)?).is_some() {
                bail!("{origin}:{lineno}: {key} given twice");
            }
        }
        let missing = |k: &str| anyhow::anyhow!("{origin}: {k} is missing");
        Ok(Version {
            major: major.ok_or_else(|| missing("VERSION_MAJOR"))?,
            minor: minor.ok_or_else(|| missing("VERSION_MINOR"))?,
            patch: patch.ok_or_else(|| missing("VERSION_PATCH"))?,
            suffix: suffix.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metalk8s_format() {
        let v = Version::parse(
            "VERSION_MAJOR=130\nVERSION_MINOR=0\nVERSION_PATCH=0\nVERSION_SUFFIX=-dev\n",
            "VERSION",
        )
        .unwrap();
        assert_eq!(v.full(), "130.0.0-dev");
        assert_eq!(v.short(), "130.0");
        assert!(v.is_development());
        let r = Version::parse(
            "VERSION_MAJOR=1\nVERSION_MINOR=2\nVERSION_PATCH=3\nVERSION_SUFFIX=\n",
            "V",
        )
        .unwrap();
        assert_eq!(r.full(), "1.2.3");
        assert!(!r.is_development());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = Version::parse("VERSION_MAJOR=1\nVERSION_MINOR=x\n", "VERSION").unwrap_err();
        assert!(format!("{e:#}").contains("VERSION:2"), "{e:#}");
        let e = Version::parse("VERSION_MAJOR=1\nFOO=2\n", "VERSION").unwrap_err();
        assert!(format!("{e:#}").contains("VERSION:2: unknown key"), "{e:#}");
        let e = Version::parse("VERSION_MAJOR=1\nVERSION_MINOR=2\n", "VERSION").unwrap_err();
        assert!(
            format!("{e:#}").contains("VERSION_PATCH is missing"),
            "{e:#}"
        );
        let e = Version::parse("VERSION_MAJOR=1\nVERSION_SUFFIX=$(rm)\n", "VERSION").unwrap_err();
        assert!(format!("{e:#}").contains("VERSION:2"), "{e:#}");
        let e = Version::parse("VERSION_MAJOR=1\nVERSION_SUFFIX=dev\n", "VERSION").unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "VERSION:2: VERSION_SUFFIX must be empty or start with `-` (for example `-dev`), found \"dev\""
        );
    }
}
