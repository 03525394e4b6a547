//! A complete nginx.conf around generated includes, for local use: the `buildchain serve`-style
//! dev helper and the tests.
//!
//! ```text
//! let conf = serve::prepare(Path::new("_build/root/images"), Path::new("/tmp/srv"),
//!                           "127.0.0.1:5000", "metalk8s-130.0.0-dev/")?;
//! // then: nginx -c <conf> -p /tmp/srv   (foreground: `daemon off`)
//! ```

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{generate, Constants, Options};

/// What goes into the generated nginx.conf.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// `listen` argument, e.g. `127.0.0.1:5000`.
    pub listen: String,
    /// Directory for the pid file, logs and temp dirs (created).
    pub work_dir: PathBuf,
    /// `set $name "value";` lines at server level (e.g. the MetalK8s server-root variable).
    pub variables: Vec<(String, String)>,
    /// Files included inside the `server {}` block, in this order.
    pub includes: Vec<PathBuf>,
}

fn check_value(what: &str, v: &str) -> Result<()> {
    if v.is_empty()
        || v.chars()
            .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\' | ';' | '{' | '}' | '$'))
    {
        bail!("{what} {v:?} is empty or contains characters unsafe in nginx.conf");
    }
    Ok(())
}

/// The text of a foreground (`daemon off; master_process off`) nginx.conf serving `cfg`.
pub fn nginx_conf_text(cfg: &ServeConfig) -> Result<String> {
    check_value("listen address", &cfg.listen)?;
    let wd = cfg.work_dir.to_str().context("work dir is not UTF-8")?;
    check_value("work dir", wd)?;
    let mut s = String::new();
    let _ = write!(
        s,
        "daemon off;\nmaster_process off;\npid \"{wd}/nginx.pid\";\n\
         error_log \"{wd}/logs/error.log\" warn;\nevents {{ worker_connections 256; }}\nhttp {{\n\
         \x20 access_log \"{wd}/logs/access.log\";\n\
         \x20 client_body_temp_path \"{wd}/tmp\";\n  proxy_temp_path \"{wd}/tmp\";\n\
         \x20 fastcgi_temp_path \"{wd}/tmp\";\n  uwsgi_temp_path \"{wd}/tmp\";\n\
         \x20 scgi_temp_path \"{wd}/tmp\";\n  server {{\n    listen {};\n",
        cfg.listen
    );
    for (k, v) in &cfg.variables {
        if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || k.is_empty() {
            bail!("invalid nginx variable name {k:?}");
        }
        check_value("variable value", v)?;
        let _ = writeln!(s, "    set ${k} \"{v}\";");
    }
    for inc in &cfg.includes {
        let p = inc.to_str().context("include path is not UTF-8")?;
        check_value("include path", p)?;
        let _ = writeln!(s, "    include \"{p}\";");
    }
    s.push_str("  }\n}\n");
    Ok(s)
}

/// Writes the nginx.conf of [`nginx_conf_text`] to `conf_path` (atomically) and creates the
/// `logs/` and `tmp/` directories under `cfg.work_dir`.
pub fn write_nginx_conf(conf_path: &Path, cfg: &ServeConfig) -> Result<()> {
    let text = nginx_conf_text(cfg)?;
    for d in ["logs", "tmp"] {
        let p = cfg.work_dir.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    crate::fsutil::write_atomic(conf_path, text.as_bytes())
}

/// Everything to serve `images_dir` locally: writes `registry-common.inc` (constants),
/// `registry.inc` (images, prefix `name_prefix`, root an absolute path) and `nginx.conf` into
/// `work_dir`, and returns the path of `nginx.conf` (run `nginx -c <it> -p <work_dir>`).
pub fn prepare(
    images_dir: &Path,
    work_dir: &Path,
    listen: &str,
    name_prefix: &str,
) -> Result<PathBuf> {
    let images_dir = images_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", images_dir.display()))?;
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    let work_dir = work_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", work_dir.display()))?;
    let root = images_dir.to_str().context("images dir is not UTF-8")?;
    check_value("images dir", root)?;
    let common = work_dir.join("registry-common.inc");
    let images = work_dir.join("registry.inc");
    let mut opts = Options {
        name_prefix: name_prefix.to_string(),
        server_root: "$buildchain_images".to_string(),
        constants: Constants::Only,
    };
    crate::fsutil::write_atomic(&common, generate(&images_dir, &opts)?.as_bytes())?;
    opts.constants = Constants::Omit;
    crate::fsutil::write_atomic(&images, generate(&images_dir, &opts)?.as_bytes())?;
    let conf = work_dir.join("nginx.conf");
    write_nginx_conf(
        &conf,
        &ServeConfig {
            listen: listen.to_string(),
            work_dir: work_dir.clone(),
            variables: vec![("buildchain_images".to_string(), root.to_string())],
            includes: vec![images, common],
        },
    )?;
    Ok(conf)
}
