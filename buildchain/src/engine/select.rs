//! Task selection: exact names and shell-style wildcards (`images:*`, `packaging:*/rpm`).

use anyhow::{bail, Result};

use super::Graph;

/// `*` matches any run of characters (including `:` and `/`), `?` one character.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let (mut star, mut mark) = (None, 0usize);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Expands patterns to task names (sorted, deduplicated). A pattern matching nothing is an error
/// naming close candidates.
pub fn expand(graph: &Graph, patterns: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for pat in patterns {
        if graph.get(pat).is_some() {
            out.push(pat.clone());
            continue;
        }
        let matches: Vec<String> = graph
            .tasks()
            .filter(|t| wildcard_match(pat, &t.name))
            .map(|t| t.name.clone())
            .collect();
        if matches.is_empty() {
            let head = pat.split([':', '*', '?']).next().unwrap_or(pat);
            let near: Vec<&str> = graph
                .tasks()
                .map(|t| t.name.as_str())
                .filter(|n| !head.is_empty() && n.starts_with(head))
                .take(5)
                .collect();
            if near.is_empty() {
                bail!("no task matches {pat:?} (see `list --all`)");
            }
            bail!(
                "no task matches {pat:?}; did you mean one of: {}",
                near.join(", ")
            );
        }
        out.extend(matches);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::wildcard_match as m;

    #[test]
    fn wildcards() {
        assert!(m("images:*", "images:etcd"));
        assert!(!m("images:*", "images"));
        assert!(m("packaging:*/rpm", "packaging:metalk8s-release/rpm"));
        assert!(!m("packaging:*/rpm", "packaging:scality/repodata"));
        assert!(m("*", "anything"));
        assert!(m("im?ges", "images"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
    }
}
