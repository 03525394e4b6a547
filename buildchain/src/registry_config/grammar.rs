//! Validation of everything that ends up inside the generated nginx configuration.
//!
//! Names and tags follow the OCI distribution grammar; the name prefix and the server root accept
//! a small, safe alphabet plus `$nginx_variable` and `{{ jinja }}` placeholders. Nothing that passes
//! these checks can close an nginx string, start a directive or inject a Jinja statement.

/// Maximum length of a repository name (prefix included), as in the distribution spec.
pub const MAX_NAME_LEN: usize = 255;
/// Maximum length of a tag.
pub const MAX_TAG_LEN: usize = 128;

/// Checks one path component of a repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn is_name_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__` or `-+`, always followed by an alphanumeric (the last
        // byte is alphanumeric, checked above).
        let start = i;
        while i < b.len() && !is_lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|&x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Checks a repository name (`component(/component)*`), length included.
pub fn is_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN && name.split('/').all(is_name_component)
}

/// Checks a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-'))
}

/// Checks a lower-case hex sha256 digest (64 characters).
pub fn is_sha256_hex(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|x| matches!(x, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_lower_alnum(x: u8) -> bool {
    x.is_ascii_lowercase() || x.is_ascii_digit()
}

/// One piece of a prefix or server root.
#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    /// Literal text.
    Text(&'a str),
    /// `{{ ident }}`.
    Jinja(&'a str),
    /// `$ident` or `${ident}`.
    Var(&'a str),
}

/// Splits `s` into literal text, `{{ ident }}` placeholders and (if `vars`) `$ident` variables.
fn tokenize(s: &str, vars: bool) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("{{") {
            let end = after
                .find("}}")
                .ok_or_else(|| "unterminated `{{` placeholder".to_string())?;
            let ident = after[..end].trim_matches(' ');
            if !is_ident(ident) {
                return Err(format!(
                    "placeholder `{{{{{}}}}}` is not `{{{{ identifier }}}}`",
                    &after[..end]
                ));
            }
            out.push(Token::Jinja(ident));
            rest = &after[end + 2..];
        } else if let (true, Some(after)) = (vars, rest.strip_prefix('$')) {
            let (ident, consumed) = if let Some(inner) = after.strip_prefix('{') {
                let end = inner
                    .find('}')
                    .ok_or_else(|| "unterminated `${` variable".to_string())?;
                (&inner[..end], end + 2)
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            };
            if !is_ident(ident) {
                return Err("`$` must start an nginx variable name".to_string());
            }
            out.push(Token::Var(ident));
            rest = &after[consumed..];
        } else {
            let end = rest
                .find(|c: char| c == '{' || (vars && c == '$'))
                .unwrap_or(rest.len());
            if end == 0 {
                return Err("stray `{`".to_string());
            }
            out.push(Token::Text(&rest[..end]));
            rest = &rest[end..];
        }
    }
    Ok(out)
}

fn is_ident(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'_')
}

/// Normalizes and validates a repository name prefix.
///
/// Accepted: empty, or a repository name (whose components may be `{{ ident }}` Jinja
/// placeholders, or contain them) followed by an optional `/`. The returned prefix is empty or
/// ends with `/` (a missing trailing `/` is added, as the classic generator joined with `/`).
pub fn normalize_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() {
        return Ok(String::new());
    }
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    // Substitute each placeholder with a valid component to check the surrounding grammar.
    let mut probe = String::new();
    for t in tokenize(body, false)? {
        match t {
            Token::Text(s) => probe.push_str(s),
            Token::Jinja(_) => probe.push_str("x0"),
            Token::Var(_) => unreachable!("variables are not tokenized in prefixes"),
        }
    }
    if !is_name(&probe) {
        return Err(
            "must be a repository name (lower-case `[a-z0-9._-]` components separated by `/`, \
             `{{ placeholders }}` allowed) optionally followed by `/`"
                .to_string(),
        );
    }
    Ok(format!("{body}/"))
}

/// Normalizes and validates the server root expression: a sequence of path characters
/// (`[A-Za-z0-9._/+@:,=-]`), nginx variables (`$name`, `${name}`) and Jinja placeholders
/// (`{{ name }}`). A trailing `/` is removed (paths are joined with `/`).
pub fn normalize_server_root(root: &str) -> Result<String, String> {
    if root.is_empty() {
        return Err("must not be empty".to_string());
    }
    for t in tokenize(root, true)? {
        if let Token::Text(s) = t {
            if let Some(bad) = s.chars().find(|&c| {
                !(c.is_ascii_alphanumeric()
                    || matches!(c, '.' | '_' | '/' | '+' | '@' | ':' | ',' | '=' | '-'))
            }) {
                return Err(format!(
                    "character {bad:?} is not allowed (only path characters, `$variables` and \
                     `{{{{ placeholders }}}}`)"
                ));
            }
        }
    }
    let trimmed = root.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        String::new()
    } else {
        trimmed.to_string()
    })
}

/// The nginx variable MetalK8s uses for the image tree of `version`:
/// `$metalk8s_<version with . and - as _>_images`.
pub fn metalk8s_server_root(version: &str) -> String {
    let v: String = version
        .chars()
        .map(|c| if c == '.' || c == '-' { '_' } else { c })
        .collect();
    format!("$metalk8s_{v}_images")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "alpine",
            "a",
            "metalk8s-130.0.0-dev/etcd",
            "a__b",
            "a---b",
            "a.b_c/d0",
            "kube-system/coredns/coredns",
        ] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "..", ".", "a.", "-a", "a_", "a___b", "a._b",
            "a b", "a\"b", "a'b", "a;b", "a{b", "a}b", "a$b", "a\\b", "a\nb", "é",
        ] {
            assert!(!is_name(bad), "{bad:?}");
        }
        assert!(!is_name(&"a".repeat(256)));
    }

    #[test]
    fn tags() {
        for ok in ["1.0", "latest", "_x", "V1.2.3-rc.1_b", &"a".repeat(128)] {
            assert!(is_tag(ok), "{ok}");
        }
        for bad in [
            "",
            ".x",
            "-x",
            "a b",
            "a;",
            "a\"",
            "a'",
            "a{",
            "a}",
            "a/b",
            "a:b",
            "..",
            "a$",
            &"a".repeat(129),
        ] {
            assert!(!is_tag(bad), "{bad:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert_eq!(
            normalize_prefix("metalk8s-130.0.0-dev/").unwrap(),
            "metalk8s-130.0.0-dev/"
        );
        assert_eq!(
            normalize_prefix("metalk8s-130.0.0-dev").unwrap(),
            "metalk8s-130.0.0-dev/"
        );
        assert_eq!(
            normalize_prefix("{{ repository }}").unwrap(),
            "{{ repository }}/"
        );
        assert_eq!(
            normalize_prefix("{{repository}}/").unwrap(),
            "{{repository}}/"
        );
        for bad in [
            "/",
            "a b/",
            "a\"/",
            "{{ repo; }}/",
            "{{ a }",
            "{% if %}/",
            "$x/",
            "a;b/",
            "A/",
            "{{ a }}{",
        ] {
            assert!(normalize_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roots() {
        assert_eq!(
            normalize_server_root("$metalk8s_1_0_images").unwrap(),
            "$metalk8s_1_0_images"
        );
        assert_eq!(
            normalize_server_root("/srv/x/images/").unwrap(),
            "/srv/x/images"
        );
        assert_eq!(
            normalize_server_root("{{ registry_root }}").unwrap(),
            "{{ registry_root }}"
        );
        assert_eq!(normalize_server_root("${a}/b").unwrap(), "${a}/b");
        for bad in [
            "",
            "/a b",
            "/a;",
            "/a\"",
            "'",
            "$",
            "$ a",
            "{x}",
            "{{ a b }}",
            "/a\n",
            "${a",
        ] {
            assert!(normalize_server_root(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            metalk8s_server_root("130.0.0-dev"),
            "$metalk8s_130_0_0_dev_images"
        );
    }

    #[test]
    fn digests() {
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
    }
}
