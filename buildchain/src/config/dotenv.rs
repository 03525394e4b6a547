//! A minimal `.env` reader: `KEY=value` lines, `#` comments, optional `export `, optional single
//! or double quotes. No interpolation.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Parses a `.env` file; errors name `file:line`.
pub fn parse_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Parses `.env` text; `origin` names the file in errors.
pub fn parse(text: &str, origin: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            bail!("{origin}:{}: expected KEY=value, found {raw:?}", i + 1);
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("{origin}:{}: invalid variable name {k:?}", i + 1);
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_and_reports_lines() {
        let m = super::parse("# c\nexport PROJECT_NAME=\"Foo\"\nBUILD_ROOT=/x\n", ".env").unwrap();
        assert_eq!(m["PROJECT_NAME"], "Foo");
        assert_eq!(m["BUILD_ROOT"], "/x");
        let e = super::parse("A=1\nnot a line\n", ".env").unwrap_err();
        assert!(e.to_string().starts_with(".env:2:"), "{e}");
    }
}
