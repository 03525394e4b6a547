//! YAML loading with errors that name `file:line:column`.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// Reads and deserialises a YAML file; the error names the file (serde-saphyr reports line and
/// column in its message).
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_yaml(&text, &shown(path))
}

/// `path` as shown in messages: relative to the current directory when under it (as typed
/// from the repository root), else as given.
pub fn shown(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| path.display().to_string())
}

/// Deserialises YAML text; `origin` names the file in errors.
pub fn parse_yaml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{}", render(&e, origin)))
}

/// `origin:line:col: message` then the source snippet headed `--> origin:line:col` (the
/// library's own `error: line L column C:` head and `<input>` name replaced).
pub fn render(e: &serde_saphyr::Error, origin: &str) -> String {
    let opts = serde_saphyr::render_options! { source_name: Some(origin) };
    let rendered = e.render_with_options(opts);
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or("");
    let msg = first.strip_prefix("error: ").unwrap_or(first);
    // Drop a leading `line L column C: ` (said once, as `file:L:C`).
    let msg = match msg.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((pos, rest)) if pos.contains(" column ") => rest,
        _ => msg,
    };
    let head = match e.location() {
        Some(l) if l.line() > 0 => format!("{origin}:{}:{}: {msg}", l.line(), l.column()),
        _ => format!("{origin}: {msg}"),
    };
    let rest: Vec<&str> = lines.collect();
    if rest.is_empty() {
        head
    } else {
        format!("{head}\n{}", rest.join("\n").trim_end())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_names_the_file_once() {
        let e =
            super::parse_yaml::<std::collections::BTreeMap<String, u32>>("a: 1\nb: x\n", "f.yaml")
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("f.yaml:2:4: "), "{e}");
        assert!(e.lines().any(|l| l.trim() == "--> f.yaml:2:4"), "{e}");
        assert!(!e.contains("error"), "{e}");
        assert!(!e.contains("<input>"), "{e}");
    }
}
