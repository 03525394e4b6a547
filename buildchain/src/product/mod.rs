//! Product metadata: `product.txt`, `versions.json`, and `@@KEY` template rendering.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Settings;

/// Platform versions pinned in `salt/versions.yaml`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformVersions {
    /// Kubernetes version (e.g. `1.31.4`).
    pub kubernetes: String,
    /// Salt version.
    pub salt: String,
}

impl PlatformVersions {
    /// Reads `<repo>/salt/versions.yaml`.
    pub fn load(repo_root: &Path) -> Result<Self> {
        crate::yamlerr::load_yaml(&repo_root.join("salt").join("versions.yaml"))
    }
}

/// Values substituted into `@@KEY` placeholders of `*.in` templates.
pub fn template_context(
    settings: &Settings,
    platform: &PlatformVersions,
) -> BTreeMap<String, String> {
    let v = &settings.version;
    let mut m = BTreeMap::new();
    m.insert("VERSION".into(), v.full());
    m.insert("SHORT_VERSION".into(), v.short());
    m.insert("NONSUFFIXED_VERSION".into(), v.nonsuffixed());
    m.insert("PROJECT_NAME".into(), settings.project_name.clone());
    m.insert("PROJECT_NAME_LOWER".into(), settings.project_lower());
    m.insert("KUBERNETES_VERSION".into(), platform.kubernetes.clone());
    m.insert("SALT_VERSION".into(), platform.salt.clone());
    m.insert(
        "REGISTRY_SERVER_ROOT_VAR".into(),
        registry_root_var(settings),
    );
    m
}

/// `metalk8s_130_0_0_dev_images`: the nginx variable naming the served image tree.
pub fn registry_root_var(settings: &Settings) -> String {
    format!(
        "{}_{}_images",
        settings.project_lower(),
        settings.version.full().replace(['.', '-'], "_")
    )
}

/// Replaces every `@@KEY` (KEY = `[A-Z0-9_]+`) with its value; an unknown key is an error naming
/// `origin:line`.
pub fn render_template(text: &str, ctx: &BTreeMap<String, String>, origin: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(pos) = rest.find("@@") {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 2..];
            let key_len = after
                .bytes()
                .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
                .count();
            if key_len == 0 {
                out.push_str("@@");
                rest = after;
                continue;
            }
            let key = &after[..key_len];
            match ctx.get(key) {
                Some(v) => out.push_str(v),
                None => bail!(
                    "{origin}:{}: unknown template variable @@{key} (known: {})",
                    i + 1,
                    ctx.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
            rest = &after[key_len..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// `git describe --always --long --tags --dirty` in `repo`, or empty when not a checkout.
pub fn git_describe(repo: &Path) -> String {
    Command::new("git")
        .args(["describe", "--always", "--long", "--tags", "--dirty"])
        .current_dir(repo)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The files whose change means `git describe` may say something else: `HEAD`, the branch it
/// points to (loose or packed) and, for a linked worktree, the common directory's. Read without
/// running git, so the graph can name them as inputs while building (git runs in the action).
pub fn git_state_files(repo: &Path) -> Vec<std::path::PathBuf> {
    let dot = repo.join(".git");
    let gitdir = match std::fs::read_to_string(&dot) {
        Ok(text) => match text.trim().strip_prefix("gitdir:") {
            Some(p) => repo.join(p.trim()),
            None => return Vec::new(),
        },
        Err(_) if dot.is_dir() => dot,
        Err(_) => return Vec::new(),
    };
    let common = std::fs::read_to_string(gitdir.join("commondir"))
        .map(|c| gitdir.join(c.trim()))
        .unwrap_or_else(|_| gitdir.clone());
    let mut files = vec![gitdir.join("HEAD"), common.join("packed-refs")];
    if let Ok(head) = std::fs::read_to_string(gitdir.join("HEAD")) {
        if let Some(r) = head.trim().strip_prefix("ref:") {
            files.push(common.join(r.trim()));
        }
    }
    files
}

/// Build host recorded when `SOURCE_DATE_EPOCH` is set and `BUILD_HOST` is not: a reproducible
/// build records no fact of the machine that ran it.
pub const REPRODUCIBLE_BUILD_HOST: &str = "buildchain";

/// `BUILD_HOST` when set; else [`REPRODUCIBLE_BUILD_HOST`] when `reproducible`
/// (`SOURCE_DATE_EPOCH` is set); else the host name (or `unknown`).
pub fn build_host(reproducible: bool) -> String {
    std::env::var("BUILD_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| reproducible.then(|| REPRODUCIBLE_BUILD_HOST.to_string()))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Formats a unix time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_utc(secs: u64) -> String {
    iso9660_writer::date::rfc3339_utc(secs)
}

/// Quotes a value for a shell-sourced `KEY=value` line (single quotes when needed).
pub fn shell_quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/' | '+' | ',')
        })
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

/// The inputs of `product.txt` that are not the timestamp.
#[derive(Clone, Debug, Serialize)]
pub struct ProductInfo {
    /// `PROJECT_NAME`.
    pub name: String,
    /// Full version.
    pub version: String,
    /// `MAJOR.MINOR`.
    pub short_version: String,
    /// `git describe` output or empty.
    pub git: String,
    /// Suffix is `-dev`.
    pub development_release: bool,
    /// Host name.
    pub build_host: String,
}

impl ProductInfo {
    /// Collects the product facts for `settings`, `git` left empty (see [`Self::with_git`]):
    /// nothing slow runs while the graph is built.
    pub fn collect(settings: &Settings) -> Self {
        ProductInfo {
            name: settings.project_name.clone(),
            version: settings.version.full(),
            short_version: settings.version.short(),
            git: String::new(),
            development_release: settings.version.is_development(),
            build_host: build_host(settings.source_date_epoch.is_some()),
        }
    }

    /// Fills `git` with `git describe` of `repo` (runs git: call it from a task action).
    pub fn with_git(mut self, repo: &Path) -> Self {
        self.git = git_describe(repo);
        self
    }

    /// Renders `product.txt` (SPEC §4.1) for a build time.
    pub fn render(&self, build_timestamp: u64) -> String {
        let lines = [
            ("NAME", self.name.clone()),
            ("VERSION", self.version.clone()),
            ("SHORT_VERSION", self.short_version.clone()),
            ("GIT", self.git.clone()),
            (
                "DEVELOPMENT_RELEASE",
                if self.development_release { "1" } else { "0" }.to_string(),
            ),
            ("BUILD_TIMESTAMP", rfc3339_utc(build_timestamp)),
            ("BUILD_HOST", self.build_host.clone()),
        ];
        let mut s = String::new();
        for (k, v) in lines {
            s.push_str(&format!("{k}={}\n", shell_quote(&v)));
        }
        s
    }
}

/// `salt/metalk8s/versions.json`: sorted keys, 2-space indent, trailing newline.
pub fn versions_json(
    settings: &Settings,
    platform: &PlatformVersions,
    images: &BTreeMap<String, String>,
    packages: &BTreeMap<String, String>,
) -> Result<String> {
    let mut imgs = serde_json::Map::new();
    for (name, tag) in images {
        imgs.insert(name.clone(), serde_json::json!({ "version": tag }));
    }
    let mut pkgs = serde_json::Map::new();
    for (name, version) in packages {
        pkgs.insert(name.clone(), serde_json::json!({ "version": version }));
    }
    // BTreeMap-backed values serialise with sorted keys.
    let value: BTreeMap<&str, serde_json::Value> = BTreeMap::from([
        ("images", serde_json::Value::Object(sort_map(imgs))),
        (
            "kubernetes",
            serde_json::json!({ "version": platform.kubernetes }),
        ),
        (
            "metalk8s",
            serde_json::json!({ "version": settings.version.full() }),
        ),
        ("packages", serde_json::Value::Object(sort_map(pkgs))),
    ]);
    let mut s = serde_json::to_string_pretty(&value).context("cannot serialise versions.json")?;
    s.push('\n');
    Ok(s)
}

fn sort_map(
    m: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let sorted: BTreeMap<String, serde_json::Value> = m.into_iter().collect();
    sorted.into_iter().collect()
}

/// Reads `KEY=value` lines of `product.txt` (values as [`shell_quote`] writes them).
pub fn read_product_txt(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            anyhow::bail!("{}:{}: expected KEY=value", path.display(), i + 1);
        };
        let v = match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            Some(inner) => inner.replace("'\\''", "'"),
            None => v.to_string(),
        };
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_templates_and_reports_unknown_keys() {
        let ctx = BTreeMap::from([("VERSION".to_string(), "1.2.3".to_string())]);
        assert_eq!(
            render_template("v=@@VERSION;@@ x\n", &ctx, "t").unwrap(),
            "v=1.2.3;@@ x\n"
        );
        let e = render_template("a\nb @@NOPE\n", &ctx, "f.in").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f.in:2: unknown template variable @@NOPE"),
            "{e}"
        );
    }

    #[test]
    fn dates_and_quoting() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(shell_quote("130.0.0-dev"), "130.0.0-dev");
        assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
        assert_eq!(shell_quote(""), "''");
    }
}
