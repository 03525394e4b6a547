//! Build settings: flags > environment > `.env` at the repo root > defaults.

pub mod dotenv;
pub mod version;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use version::Version;

/// Which inventory to build (`--profile`, `BUILDCHAIN_PROFILE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
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

/// Settings given explicitly (command-line flags, library callers, tests): each one set here
/// wins over the environment and `.env`. Typed, so nothing is parsed twice.
#[derive(Clone, Debug, Default)]
pub struct SettingOverrides {
    /// `PROJECT_NAME`.
    pub project_name: Option<String>,
    /// `BUILD_ROOT` (relative to the repository root unless absolute).
    pub build_root: Option<PathBuf>,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<u64>,
    /// `BUILDCHAIN_PROFILE`.
    pub profile: Option<Profile>,
    /// `BUILDCHAIN_STORE`.
    pub store_root: Option<PathBuf>,
    /// `BUILDCHAIN_SIGNING_KEY` (relative to the repository root unless absolute).
    pub signing_key: Option<PathBuf>,
    /// `BUILDCHAIN_SIGNING_PASSPHRASE_FILE`.
    pub signing_passphrase_file: Option<PathBuf>,
    /// `DELTA_BASE`.
    pub delta_base: Option<PathBuf>,
    /// `BUILDCHAIN_MEDIA` (`iso --media`).
    pub media: Option<String>,
}

impl SettingOverrides {
    /// The overrides as `(setting name, value)` text, as they appear in [`Settings::raw`].
    fn raw(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        [
            ("PROJECT_NAME", self.project_name.clone()),
            ("BUILD_ROOT", path(&self.build_root)),
            (
                "SOURCE_DATE_EPOCH",
                self.source_date_epoch.map(|s| s.to_string()),
            ),
            (
                "BUILDCHAIN_PROFILE",
                self.profile.map(|p| p.as_str().to_string()),
            ),
            ("BUILDCHAIN_STORE", path(&self.store_root)),
            ("BUILDCHAIN_SIGNING_KEY", path(&self.signing_key)),
            (
                "BUILDCHAIN_SIGNING_PASSPHRASE_FILE",
                path(&self.signing_passphrase_file),
            ),
            ("DELTA_BASE", path(&self.delta_base)),
            ("BUILDCHAIN_MEDIA", self.media.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
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
    pub fn load(repo_root: &Path, overrides: &SettingOverrides) -> Result<Self> {
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
            let v = std::env::var(name)
                .ok()
                .or_else(|| dotenv.get(*name).cloned());
            if let Some(v) = v {
                raw.insert(name.to_string(), v);
            }
        }
        for (name, v) in overrides.raw() {
            raw.insert(name.to_string(), v);
        }
        let project_name = match &overrides.project_name {
            Some(p) => p.clone(),
            None => raw
                .get("PROJECT_NAME")
                .cloned()
                .unwrap_or_else(|| "MetalK8s".to_string()),
        };
        if project_name.is_empty()
            || !project_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bail!("PROJECT_NAME must be non-empty and hold only [A-Za-z0-9._-], found {project_name:?}");
        }
        let build_root = overrides
            .build_root
            .clone()
            .or_else(|| raw.get("BUILD_ROOT").map(PathBuf::from))
            .map(|p| {
                if p.is_absolute() {
                    p
                } else {
                    repo_root.join(p)
                }
            })
            .unwrap_or_else(|| repo_root.join("_build"));
        let source_date_epoch = match (overrides.source_date_epoch, raw.get("SOURCE_DATE_EPOCH")) {
            (Some(s), _) => Some(s),
            (None, Some(s)) => parse_source_date_epoch(s)?,
            (None, None) => None,
        };
        let profile = match (
            overrides.profile,
            raw.get("BUILDCHAIN_PROFILE").map(String::as_str),
        ) {
            (Some(p), _) => p,
            (None, None | Some("") | Some("default")) => Profile::Default,
            (None, Some("release")) => Profile::Release,
            (None, Some(other)) => {
                bail!("BUILDCHAIN_PROFILE must be `default` or `release`, found {other:?}")
            }
        };
        let store_root = overrides
            .store_root
            .clone()
            .or_else(|| raw.get("BUILDCHAIN_STORE").map(PathBuf::from))
            .unwrap_or_else(crate::store::Store::default_root);
        let version = Version::from_file(&repo_root.join("VERSION"))?;
        // Relative key paths are relative to the repository root (the flag is made absolute
        // against the working directory by the CLI).
        let path_setting = |name: &str| {
            raw.get(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| repo_root.join(v))
        };
        let signing_key = match &overrides.signing_key {
            Some(k) => Some(repo_root.join(k)),
            None => path_setting("BUILDCHAIN_SIGNING_KEY"),
        };
        let signing_passphrase_file = match &overrides.signing_passphrase_file {
            Some(f) => Some(repo_root.join(f)),
            None => path_setting("BUILDCHAIN_SIGNING_PASSPHRASE_FILE"),
        };
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

#[cfg(test)]
mod override_tests {
    use super::{Profile, SettingOverrides, Settings};

    #[test]
    fn typed_overrides_win_over_dotenv_and_show_in_raw() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::copy(src.join("VERSION"), d.path().join("VERSION")).unwrap();
        std::fs::write(
            d.path().join(".env"),
            "PROJECT_NAME=FromDotenv\nBUILDCHAIN_PROFILE=release\nBUILD_ROOT=dotenv-build\n",
        )
        .unwrap();
        let root = d.path().canonicalize().unwrap();
        let o = SettingOverrides {
            project_name: Some("Flag".into()),
            profile: Some(Profile::Default),
            build_root: Some("flag-build".into()),
            source_date_epoch: Some(42),
            ..Default::default()
        };
        let s = Settings::load(d.path(), &o).unwrap();
        assert_eq!(s.project_name, "Flag");
        assert_eq!(s.profile, Profile::Default);
        assert_eq!(s.build_root, root.join("flag-build"));
        assert_eq!(s.source_date_epoch, Some(42));
        assert_eq!(s.raw["PROJECT_NAME"], "Flag");
        assert_eq!(s.raw["BUILDCHAIN_PROFILE"], "default");
        assert_eq!(s.raw["SOURCE_DATE_EPOCH"], "42");
    }
}
