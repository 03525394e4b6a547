//! Build settings: flags > environment > `.env` at the repo root > defaults.

pub mod dotenv;
pub mod version;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use version::Version;

/// Which inventory to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Profile {
    /// Offline: in-repo sources only.
    Default,
    /// Adds the pinned upstream inventory (needs the network).
    Release,
}

impl Profile {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Release => "release",
        }
    }
}

/// Everything a task generator needs to know about the build.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Repository root (holds `VERSION`).
    pub repo_root: PathBuf,
    /// `BUILD_ROOT` (absolute), default `<repo>/_build`.
    pub build_root: PathBuf,
    /// `<build_root>/root`: the populated ISO tree.
    pub iso_root: PathBuf,
    /// `<repo>/dist`.
    pub dist_dir: PathBuf,
    /// `PROJECT_NAME`, default `MetalK8s`.
    pub project_name: String,
    /// Parsed `VERSION`.
    pub version: Version,
    /// `SOURCE_DATE_EPOCH`, if set.
    pub source_date_epoch: Option<u64>,
    /// `BUILDCHAIN_PROFILE` (`default` | `release`).
    pub profile: Profile,
    /// Content-addressed store root (`BUILDCHAIN_STORE`).
    pub store_root: PathBuf,
    /// Every raw setting that was resolved (for `info` and value inputs).
    pub raw: BTreeMap<String, String>,
    /// `BUILDCHAIN_SIGNING_KEY`: armored OpenPGP secret key (absolute), `None` = unsigned build.
    pub signing_key: Option<PathBuf>,
    /// `BUILDCHAIN_SIGNING_PASSPHRASE_FILE`: its passphrase (first line), when it has one.
    pub signing_passphrase_file: Option<PathBuf>,
    /// The loaded signing key, `None` for an unsigned build (the default).
    pub signer: Option<std::sync::Arc<crate::trust::signing::SigningKey>>,
}

/// Names of the settings read from flags/env/`.env`.
pub const SETTING_NAMES: &[&str] = &[
    "PROJECT_NAME",
    "BUILD_ROOT",
    "SOURCE_DATE_EPOCH",
    "BUILDCHAIN_PROFILE",
    "BUILDCHAIN_STORE",
    "BUILDCHAIN_SIGNING_KEY",
    "BUILDCHAIN_SIGNING_PASSPHRASE_FILE",
    "DELTA_BASE",
    "BUILDCHAIN_MEDIA",
];

/// Parses a `SOURCE_DATE_EPOCH` value: empty (or blank) means unset; anything else must be a
/// number of seconds.
pub fn parse_source_date_epoch(value: &str) -> Result<Option<u64>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<u64>()
        .map(Some)
        .with_context(|| format!("SOURCE_DATE_EPOCH must be a number of seconds, found {value:?}"))
}

/// `SOURCE_DATE_EPOCH` from the process environment (for the standalone verbs, which have no
/// repository settings).
pub fn source_date_epoch_from_env() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => parse_source_date_epoch(&v),
        Err(_) => Ok(None),
    }
}

impl Settings {
    /// Lower-cased project name (`metalk8s`).
    pub fn project_lower(&self) -> String {
        self.project_name.to_lowercase()
    }
    /// `dist/<name>-<version>.iso`.
    pub fn iso_path(&self) -> PathBuf {
        self.dist_dir.join(format!(
            "{}-{}.iso",
            self.project_lower(),
            self.version.full()
        ))
    }
    /// `"<PROJECT_NAME> <version>"`.
    pub fn volume_id(&self) -> String {
        format!("{} {}", self.project_name, self.version.full())
    }
    /// Time used for every timestamp written (SOURCE_DATE_EPOCH, else a fixed epoch so outputs
    /// stay byte-stable; `BUILD_TIMESTAMP` falls back to the wall clock only in `product.txt`).
    pub fn timestamp(&self) -> u64 {
        self.source_date_epoch.unwrap_or(0)
    }

    /// Resolves settings for the repo at `repo_root`: `overrides` (flags) win over the process
    /// environment, which wins over `<repo_root>/.env`, which wins over defaults.
    pub fn load(repo_root: &Path, overrides: &BTreeMap<String, String>) -> Result<Self> {
        let repo_root = repo_root
            .canonicalize()
            .with_context(|| format!("repository root {} not found", repo_root.display()))?;
        let dotenv_path = repo_root.join(".env");
        let dotenv = if dotenv_path.exists() {
            dotenv::parse_file(&dotenv_path)?
        } else {
            BTreeMap::new()
        };
        let mut raw = BTreeMap::new();
        for name in SETTING_NAMES {
            let v = overrides
                .get(*name)
                .cloned()
                .or_else(|| std::env::var(name).ok())
                .or_else(|| dotenv.get(*name).cloned());
            if let Some(v) = v {
                raw.insert(name.to_string(), v);
            }
        }
        let project_name = raw
            .get("PROJECT_NAME")
            .cloned()
            .unwrap_or_else(|| "MetalK8s".to_string());
        if project_name.is_empty()
            || !project_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bail!("PROJECT_NAME must be non-empty and hold only [A-Za-z0-9._-], found {project_name:?}");
        }
        let build_root = raw
            .get("BUILD_ROOT")
            .map(|b| {
                let p = PathBuf::from(b);
                if p.is_absolute() {
                    p
                } else {
                    repo_root.join(p)
                }
            })
            .unwrap_or_else(|| repo_root.join("_build"));
        let source_date_epoch = match raw.get("SOURCE_DATE_EPOCH") {
            Some(s) => parse_source_date_epoch(s)?,
            None => None,
        };
        let profile = match raw.get("BUILDCHAIN_PROFILE").map(String::as_str) {
            None | Some("") | Some("default") => Profile::Default,
            Some("release") => Profile::Release,
            Some(other) => {
                bail!("BUILDCHAIN_PROFILE must be `default` or `release`, found {other:?}")
            }
        };
        let store_root = raw
            .get("BUILDCHAIN_STORE")
            .map(PathBuf::from)
            .unwrap_or_else(crate::store::Store::default_root);
        let version = Version::from_file(&repo_root.join("VERSION"))?;
        // Relative key paths are relative to the repository root (the flag is made absolute
        // against the working directory by the CLI).
        let path_setting = |name: &str| {
            raw.get(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| repo_root.join(v))
        };
        let signing_key = path_setting("BUILDCHAIN_SIGNING_KEY");
        let signing_passphrase_file = path_setting("BUILDCHAIN_SIGNING_PASSPHRASE_FILE");
        let signer = match &signing_key {
            None => None,
            Some(k) => Some(std::sync::Arc::new(
                crate::trust::signing::SigningKey::load(k, signing_passphrase_file.as_deref())
                    .context("BUILDCHAIN_SIGNING_KEY")?,
            )),
        };
        Ok(Settings {
            iso_root: build_root.join("root"),
            dist_dir: repo_root.join("dist"),
            repo_root,
            build_root,
            project_name,
            version,
            source_date_epoch,
            profile,
            store_root,
            raw,
            signing_key,
            signing_passphrase_file,
            signer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_source_date_epoch as p;

    #[test]
    fn source_date_epoch_values() {
        assert_eq!(p("1700000000").unwrap(), Some(1_700_000_000));
        assert_eq!(p(" 42 ").unwrap(), Some(42));
        assert_eq!(p("").unwrap(), None);
        assert_eq!(p("  ").unwrap(), None);
        let e = p("yesterday").unwrap_err();
        assert!(
            e.to_string()
                .contains("SOURCE_DATE_EPOCH must be a number of seconds"),
            "{e}"
        );
    }
}
