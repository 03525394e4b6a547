//! Declarative package definitions (`packages/redhat/<major>/<name>.yaml`).
//!
//! A definition names the package (name, version, release, arch, summary, license, …), its
//! dependencies, the files it installs (taken from the repository, with modes and owners, optionally
//! rendered as templates), its directories, scriptlets and changelog. String fields may use the
//! placeholders of [`Vars`]: `{{ version }}` (the product version, RPM-safe), `{{ dist }}`
//! (`.el<major>`), `{{ product_version }}`, `{{ project }}`, `{{ major }}`, and (set by the
//! product) `{{ gpgcheck }}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// One package definition, as written in YAML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageDef {
    /// Package name (`metalk8s-release`).
    pub name: String,
    /// Version; `{{ version }}` is the product version.
    pub version: String,
    /// Release, normally `1{{ dist }}` (`1.el8`).
    pub release: String,
    /// Epoch (omitted = none).
    #[serde(default)]
    pub epoch: Option<u32>,
    /// Architecture (`noarch`, `x86_64`).
    pub arch: String,
    /// One-line summary.
    pub summary: String,
    /// License expression.
    pub license: String,
    /// Long description.
    #[serde(default)]
    pub description: String,
    /// Upstream URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Vendor.
    #[serde(default)]
    pub vendor: Option<String>,
    /// Packager.
    #[serde(default)]
    pub packager: Option<String>,
    /// RPM group (default `Unspecified`).
    #[serde(default)]
    pub group: Option<String>,
    /// Which product repository the package goes to (default `scality`).
    #[serde(default)]
    pub repository: Option<String>,
    /// `Requires:` entries (`name`, `name >= 1.0`, …).
    #[serde(default)]
    pub requires: Vec<String>,
    /// `Provides:` entries.
    #[serde(default)]
    pub provides: Vec<String>,
    /// `Conflicts:` entries.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// `Obsoletes:` entries.
    #[serde(default)]
    pub obsoletes: Vec<String>,
    /// Regular files.
    #[serde(default)]
    pub files: Vec<FileDef>,
    /// Directories owned by the package.
    #[serde(default)]
    pub directories: Vec<DirDef>,
    /// Symbolic links.
    #[serde(default)]
    pub symlinks: Vec<SymlinkDef>,
    /// Scriptlets.
    #[serde(default)]
    pub scripts: Scripts,
    /// Changelog, newest first.
    #[serde(default)]
    pub changelog: Vec<ChangelogDef>,
}

/// A regular file of the package.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDef {
    /// Source, relative to the definition file's directory (exclusive with `content`).
    #[serde(default)]
    pub src: Option<Spanned<String>>,
    /// Inline content (exclusive with `src`).
    #[serde(default)]
    pub content: Option<String>,
    /// Installed path (absolute).
    pub dest: String,
    /// Octal mode as a string (`"0644"`, default `0644`).
    #[serde(default)]
    pub mode: Option<String>,
    /// Owner (default root).
    #[serde(default)]
    pub user: Option<String>,
    /// Group (default root).
    #[serde(default)]
    pub group: Option<String>,
    /// `%config` (`true`) or `%config(noreplace)` (`noreplace`).
    #[serde(default)]
    pub config: Option<ConfigKind>,
    /// `%doc`.
    #[serde(default)]
    pub doc: bool,
    /// Render the content with the placeholders of [`Vars`].
    #[serde(default)]
    pub template: bool,
}

/// How a configuration file is treated on upgrade.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConfigKind {
    /// `%config`: replaced, the old one saved as `.rpmsave`.
    #[serde(alias = "true")]
    Replace,
    /// `%config(noreplace)`: kept, the new one written as `.rpmnew`.
    Noreplace,
}

/// A directory owned by the package.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirDef {
    /// Absolute path.
    pub path: String,
    /// Octal mode (default `0755`).
    #[serde(default)]
    pub mode: Option<String>,
    /// Owner (default root).
    #[serde(default)]
    pub user: Option<String>,
    /// Group (default root).
    #[serde(default)]
    pub group: Option<String>,
}

/// A symbolic link.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkDef {
    /// Absolute path of the link.
    pub path: String,
    /// Target it points to.
    pub target: String,
}

/// Scriptlets (shell, run by `/bin/sh`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scripts {
    /// `%pre`.
    #[serde(default)]
    pub pre: Option<String>,
    /// `%post`.
    #[serde(default)]
    pub post: Option<String>,
    /// `%preun`.
    #[serde(default)]
    pub preun: Option<String>,
    /// `%postun`.
    #[serde(default)]
    pub postun: Option<String>,
}

/// A changelog entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangelogDef {
    /// `YYYY-MM-DD` (UTC midnight).
    pub date: String,
    /// `Name <mail> - version-release`.
    pub author: String,
    /// Text (`- did this`).
    pub text: String,
}

/// Values substituted for `{{ name }}` placeholders.
#[derive(Clone, Debug)]
pub struct Vars {
    map: BTreeMap<String, String>,
}

impl Vars {
    /// Placeholders for a product version (`130.0.0-dev`), project (`metalk8s`) and RHEL major.
    pub fn new(product_version: &str, project: &str, major: u32) -> Self {
        let mut map = BTreeMap::new();
        map.insert("version".into(), rpm_safe_version(product_version));
        map.insert("product_version".into(), product_version.to_string());
        map.insert("project".into(), project.to_string());
        map.insert("major".into(), major.to_string());
        map.insert("dist".into(), format!(".el{major}"));
        Vars { map }
    }

    /// Adds or replaces a placeholder.
    pub fn set(&mut self, key: &str, value: &str) {
        self.map.insert(key.to_string(), value.to_string());
    }

    /// Replaces every `{{ name }}` (spaces optional); an unknown name is an error naming `what`.
    pub fn render(&self, text: &str, what: &str) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                bail!("{what}: unterminated `{{{{` placeholder");
            };
            let key = after[..end].trim();
            match self.map.get(key) {
                Some(v) => out.push_str(v),
                None => bail!(
                    "{what}: unknown placeholder `{{{{ {key} }}}}` (known: {})",
                    self.map.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Turns a product version into an RPM version: `-` is not allowed there, and `~` sorts a
/// pre-release before the final version (`130.0.0-dev` → `130.0.0~dev`).
pub fn rpm_safe_version(v: &str) -> String {
    v.replace('-', "~")
}

/// A definition loaded from disk, with the directory its `src` paths are relative to.
#[derive(Clone, Debug)]
pub struct LoadedDef {
    /// The definition.
    pub def: PackageDef,
    /// The YAML file.
    pub path: PathBuf,
}

impl LoadedDef {
    /// Directory `src` paths are relative to.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
    /// Source files the package reads (for task inputs).
    pub fn source_files(&self) -> Vec<PathBuf> {
        self.def
            .files
            .iter()
            .filter_map(|f| f.src.as_ref())
            .map(|s| self.base_dir().join(&s.value))
            .collect()
    }
}

/// Loads and checks one definition; errors name `file:line:col`.
pub fn load_definition(path: &Path) -> Result<LoadedDef> {
    let def: PackageDef = crate::yamlerr::load_yaml(path)?;
    let loaded = LoadedDef {
        def,
        path: path.to_path_buf(),
    };
    check_definition(&loaded)?;
    Ok(loaded)
}

/// Parses an octal mode string (`"0644"`, `"755"`, `"0o644"`).
pub fn parse_mode(s: &str, what: &str) -> Result<u16> {
    let t = s.trim();
    let t = t.strip_prefix("0o").unwrap_or(t);
    let m = u16::from_str_radix(t, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .with_context(|| format!("{what}: mode {s:?} is not an octal mode like \"0644\""))?;
    Ok(m)
}

fn check_definition(l: &LoadedDef) -> Result<()> {
    let d = &l.def;
    let file = crate::yamlerr::shown(&l.path);
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
    };
    if !name_ok(&d.name) {
        bail!("{file}: invalid package name {:?}", d.name);
    }
    if !name_ok(&d.arch) {
        bail!("{file}: invalid arch {:?}", d.arch);
    }
    if d.summary.contains('\n') {
        bail!("{file}: summary must be one line");
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, f) in d.files.iter().enumerate() {
        let what = format!("{file}: files[{i}] ({})", f.dest);
        if !f.dest.starts_with('/') {
            bail!("{what}: dest must be an absolute path");
        }
        match (&f.src, &f.content) {
            (Some(s), None) => {
                let p = l.base_dir().join(&s.value);
                if !p.is_file() {
                    bail!(
                        "{file}:{}:{}: files[{i}].src {} not found (looked at {})",
                        s.referenced.line(),
                        s.referenced.column(),
                        s.value,
                        p.display()
                    );
                }
            }
            (None, Some(_)) => {}
            _ => bail!("{what}: give exactly one of `src` or `content`"),
        }
        if let Some(m) = &f.mode {
            parse_mode(m, &what)?;
        }
        if !seen.insert(f.dest.clone()) {
            bail!("{what}: path listed twice");
        }
    }
    for (i, dd) in d.directories.iter().enumerate() {
        let what = format!("{file}: directories[{i}] ({})", dd.path);
        if !dd.path.starts_with('/') {
            bail!("{what}: path must be absolute");
        }
        if let Some(m) = &dd.mode {
            parse_mode(m, &what)?;
        }
        if !seen.insert(dd.path.clone()) {
            bail!("{what}: path listed twice");
        }
    }
    for (i, s) in d.symlinks.iter().enumerate() {
        if !s.path.starts_with('/') || !seen.insert(s.path.clone()) {
            bail!(
                "{file}: symlinks[{i}] ({}): path must be absolute and unique",
                s.path
            );
        }
    }
    for (i, c) in d.changelog.iter().enumerate() {
        parse_date(&c.date).with_context(|| format!("{file}: changelog[{i}]"))?;
    }
    Ok(())
}

/// `YYYY-MM-DD` → seconds since the epoch (UTC midnight).
pub fn parse_date(s: &str) -> Result<u32> {
    let parts: Vec<&str> = s.trim().split('-').collect();
    let bad = || anyhow::anyhow!("date {s:?} is not YYYY-MM-DD");
    if parts.len() != 3 {
        return Err(bad());
    }
    let y: i64 = parts[0].parse().map_err(|_| bad())?;
    let m: i64 = parts[1].parse().map_err(|_| bad())?;
    let d: i64 = parts[2].parse().map_err(|_| bad())?;
    if !(1970..=2100).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let days = iso9660_writer::date::days_from_civil(y, m as u32, d as u32);
    Ok((days * 86400) as u32)
}

/// Every `*.yaml` package definition directly under `dir` (sorted), skipping
/// [`NON_DEFINITION_FILES`] (third-party pins and requests, repository list).
pub fn definition_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let p = e?.path();
        let is_def = p.extension().is_some_and(|x| x == "yaml")
            && p.is_file()
            && !p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| NON_DEFINITION_FILES.contains(&n));
        if is_def {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// YAML files of a `packages/redhat/<major>/` directory that are not package definitions.
pub const NON_DEFINITION_FILES: &[&str] = &["lock.yaml", "release.yaml", "repositories.yaml"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01").unwrap(), 0);
        assert_eq!(parse_date("2023-11-14").unwrap(), 1_699_920_000);
        assert!(parse_date("2023-13-01").is_err());
    }

    #[test]
    fn render() {
        let v = Vars::new("130.0.0-dev", "metalk8s", 8);
        assert_eq!(
            v.render("x-{{ version }}{{dist}}-{{ product_version }}", "t")
                .unwrap(),
            "x-130.0.0~dev.el8-130.0.0-dev"
        );
        assert!(v.render("{{ nope }}", "t").is_err());
    }

    #[test]
    fn yaml_mode_and_unknown_fields() {
        let y = "name: a\nversion: '1'\nrelease: '1'\narch: noarch\nsummary: s\nlicense: MIT\nfiles:\n  - content: x\n    dest: /etc/x\n    mode: 0600\n";
        let d: PackageDef = crate::yamlerr::parse_yaml(y, "t.yaml").unwrap();
        assert_eq!(d.files[0].mode.as_deref(), Some("0600"));
        let bad = "name: a\nversion: '1'\nrelease: '1'\narch: noarch\nsummary: s\nlicense: MIT\nbogus: 1\n";
        let e = crate::yamlerr::parse_yaml::<PackageDef>(bad, "t.yaml")
            .unwrap_err()
            .to_string();
        // `bogus:` is line 7, column 1.
        assert!(e.starts_with("t.yaml:7:1: unknown field `bogus`"), "{e}");
    }
}
