//! Answering `WWW-Authenticate` challenges: basic auth from the credentials, or a bearer token
//! from the realm's token server (anonymous, or with basic credentials).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use anyhow::anyhow;
use base64::Engine as _;
use serde_json::Value;

use super::http::{retry_after, Attempt, Failure};
use super::RegistryClient;
use crate::images::reference::Reference;

/// Parses `Bearer realm="…",service="…",scope="…"` (or `Basic realm="…"`).
pub(crate) fn parse_challenge(h: &str) -> (String, BTreeMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, remaining) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(k, v.to_string());
        s = remaining.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    (scheme.to_ascii_lowercase(), params)
}

pub(crate) fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The token-server URL answering a bearer challenge: `realm?service=…&scope=…`.
pub(crate) fn token_url(realm: &str, service: Option<&String>, scope: &str) -> String {
    let mut url = format!("{realm}?");
    if let Some(s) = service {
        url.push_str(&format!("service={}&", pct(s)));
    }
    url.push_str(&format!("scope={}", pct(scope)));
    url
}

/// The `Authorization` value in a token server's JSON answer (`token` or `access_token`).
pub(crate) fn bearer_from_answer(realm: &str, body: &str) -> anyhow::Result<String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| anyhow!("token server {realm}: bad JSON: {e}"))?;
    let tok = v
        .get("token")
        .or_else(|| v.get("access_token"))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("token server {realm}: no token in the answer"))?;
    Ok(format!("Bearer {tok}"))
}

impl RegistryClient {
    /// Obtains an `Authorization` value answering a 401 challenge.
    pub(super) fn authenticate(&self, r: &Reference, challenge: &str) -> Attempt<String> {
        let (scheme, params) = parse_challenge(challenge);
        let creds = self
            .creds
            .get(&r.registry)
            .or_else(|| self.creds.get(r.api_host()));
        let basic = creds.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        match scheme.as_str() {
            "basic" => basic.ok_or_else(|| {
                Failure::Fatal(anyhow!(
                    "registry {} requires credentials: add them to ~/.docker/config.json or REGISTRY_AUTH_FILE",
                    r.registry
                ))
            }),
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| Failure::Fatal(anyhow!("registry {}: bearer challenge without realm", r.registry)))?;
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", r.repository));
                let url = token_url(realm, params.get("service"), &scope);
                let mut req = self.agent.get(&url);
                if let Some(b) = &basic {
                    req = req.header("Authorization", b);
                }
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                let resp = req.call().map_err(|e| self.transport_failure(r, e))?;
                let status = resp.status().as_u16();
                if status == 429 || status >= 500 {
                    return Err(Failure::Retry(anyhow!("token server {realm}: HTTP {status}"), retry_after(&resp)));
                }
                if status != 200 {
                    return Err(Failure::Fatal(anyhow!(
                        "token server {realm} refused access to {} (HTTP {status}); check credentials",
                        r.repository
                    )));
                }
                let body = resp
                    .into_body()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_string()
                    .map_err(|e| Failure::Retry(anyhow!("token server {realm}: {e}"), None))?;
                bearer_from_answer(realm, &body).map_err(Failure::Fatal)
            }
            other => Err(Failure::Fatal(anyhow!("registry {}: unsupported auth scheme {other:?}", r.registry))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/nginx:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "Registry Realm");
        assert_eq!(pct("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
