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
            let near = suggestions(graph, pat);
            if near.is_empty() {
                bail!("no task matches {pat:?} (see `list --all`)");
            }
            let quoted: Vec<String> = near.iter().map(|n| format!("`{n}`")).collect();
            let list = match quoted.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => quoted.join(""),
            };
            bail!("no task matches {pat:?}; did you mean {list}? (see `list --all`)");
        }
        out.extend(matches);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Edit distance (insertions, deletions, substitutions, adjacent transpositions).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Up to 5 task names close to `pat`, closest first (ties by name): within an edit distance of
/// a third of its length (at least 1), else the names starting with its first segment.
pub fn suggestions(graph: &Graph, pat: &str) -> Vec<String> {
    let limit = (pat.chars().count() / 3).max(1);
    let mut scored: Vec<(usize, &str)> = graph
        .tasks()
        .map(|t| (edit_distance(pat, &t.name), t.name.as_str()))
        .filter(|(d, _)| *d <= limit)
        .collect();
    if scored.is_empty() {
        let head = pat.split([':', '*', '?']).next().unwrap_or(pat);
        scored = graph
            .tasks()
            .filter(|t| !head.is_empty() && t.name.starts_with(head))
            .map(|t| (edit_distance(pat, &t.name), t.name.as_str()))
            .collect();
    }
    scored.sort();
    scored
        .into_iter()
        .take(5)
        .map(|(_, n)| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn distances() {
        use super::edit_distance as d;
        assert_eq!(d("isoo", "iso"), 1);
        assert_eq!(d("imagse", "images"), 1);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("kitten", "sitting"), 3);
    }

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
