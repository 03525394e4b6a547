//! Registry credentials: `REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`,
//! `~/.docker/config.json` (docker's `auths` map, `auth` base64 or `username`/`password`).

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use serde_json::Value;

/// Host → (user, password) from the credentials file `path`, else the default lookup.
pub(crate) fn load_creds(
    path: Option<&std::path::Path>,
) -> Result<BTreeMap<String, (String, String)>> {
    let file = match path {
        Some(p) => Some(p.to_path_buf()),
        None => std::env::var_os("REGISTRY_AUTH_FILE")
            .map(Into::into)
            .or_else(|| {
                std::env::var_os("DOCKER_CONFIG")
                    .map(|d| std::path::PathBuf::from(d).join("config.json"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| {
                    std::path::PathBuf::from(h)
                        .join(".docker")
                        .join("config.json")
                })
            }),
    };
    let mut out = BTreeMap::new();
    let Some(file) = file.filter(|f| f.is_file()) else {
        return Ok(out);
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", file.display()))?;
    if let Some(auths) = v.get("auths").and_then(Value::as_object) {
        for (k, a) in auths {
            let host = k
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            let pair = if let Some(enc) = a
                .get("auth")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                let dec = base64::engine::general_purpose::STANDARD
                    .decode(enc)
                    .with_context(|| format!("{}: bad base64 `auth` for {k}", file.display()))?;
                let s = String::from_utf8_lossy(&dec).to_string();
                let (u, p) = s.split_once(':').ok_or_else(|| {
                    anyhow!("{}: `auth` for {k} is not user:password", file.display())
                })?;
                (u.to_string(), p.to_string())
            } else if let (Some(u), Some(p)) = (
                a.get("username").and_then(Value::as_str),
                a.get("password").and_then(Value::as_str),
            ) {
                (u.to_string(), p.to_string())
            } else {
                continue;
            };
            let host = if host == "index.docker.io" || host == "registry-1.docker.io" {
                "docker.io".to_string()
            } else {
                host
            };
            out.insert(host, pair);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(
            &f,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"quay.io":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let c = load_creds(Some(&f)).unwrap();
        assert_eq!(c["docker.io"], ("user".to_string(), "pass".to_string()));
        assert_eq!(c["quay.io"], ("u".to_string(), "p".to_string()));
    }
}
