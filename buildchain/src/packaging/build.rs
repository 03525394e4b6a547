//! Builds an RPM from a [`LoadedDef`] with the `rpm` crate: no rpmbuild, no container, and
//! reproducible (every timestamp is the `source_date`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use rpm::{BuildConfig, CompressionWithLevel, Dependency, FileOptions, PackageBuilder};

use super::spec::{parse_date, parse_mode, ConfigKind, LoadedDef, Vars};

/// Build date used when `SOURCE_DATE_EPOCH` is not set (2024-01-01T00:00:00Z), so that builds
/// stay byte-identical.
pub const DEFAULT_SOURCE_DATE: u32 = 1_704_067_200;

/// Name, version, release and arch of a package after placeholders are rendered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Nevra {
    /// Name.
    pub name: String,
    /// Epoch (0 when none).
    pub epoch: u32,
    /// Version.
    pub version: String,
    /// Release.
    pub release: String,
    /// Architecture.
    pub arch: String,
}

impl Nevra {
    /// `name-version-release.arch.rpm`.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}-{}.{}.rpm",
            self.name, self.version, self.release, self.arch
        )
    }
}

/// Renders name/version/release/arch of a definition.
pub fn nevra(l: &LoadedDef, vars: &Vars) -> Result<Nevra> {
    let what = l.path.display().to_string();
    let version = vars.render(&l.def.version, &format!("{what}: version"))?;
    let release = vars.render(&l.def.release, &format!("{what}: release"))?;
    for (k, v) in [("version", &version), ("release", &release)] {
        if v.is_empty() || v.contains(['-', ' ', '/']) {
            bail!("{what}: {k} {v:?} must be non-empty without `-`, spaces or `/`");
        }
    }
    Ok(Nevra {
        name: l.def.name.clone(),
        epoch: l.def.epoch.unwrap_or(0),
        version,
        release,
        arch: l.def.arch.clone(),
    })
}

/// Parses `name`, `name >= 1.0`, `name = 1:2-3` into a dependency.
pub fn parse_dependency(s: &str, what: &str) -> Result<Dependency> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    match parts.as_slice() {
        [name] => Ok(Dependency::any(*name)),
        [name, op, ver] => Ok(match *op {
            "=" | "==" => Dependency::eq(*name, *ver),
            "<" => Dependency::less(*name, *ver),
            "<=" => Dependency::less_eq(*name, *ver),
            ">" => Dependency::greater(*name, *ver),
            ">=" => Dependency::greater_eq(*name, *ver),
            _ => bail!("{what}: unknown operator {op:?} in dependency {s:?}"),
        }),
        _ => bail!("{what}: dependency {s:?} is not `name` or `name OP version`"),
    }
}

/// Builds the package in memory. `source_date` stamps every time field. `product_key` is
/// `(file name, public key)`: a file whose `src` has that file name gets the key as content (the
/// signing key of a signed build replaces the in-repo key).
pub fn build_package(
    l: &LoadedDef,
    vars: &Vars,
    source_date: u32,
    product_key: Option<(&str, &[u8])>,
) -> Result<rpm::Package> {
    let d = &l.def;
    let file = l.path.display().to_string();
    let n = nevra(l, vars)?;
    let render = |s: &str, what: &str| vars.render(s, &format!("{file}: {what}"));
    let mut b = PackageBuilder::new(
        &d.name,
        &n.version,
        &render(&d.license, "license")?,
        &d.arch,
        &render(&d.summary, "summary")?,
    );
    b.using_config(
        BuildConfig::v4()
            .compression(CompressionWithLevel::Gzip(9))
            .source_date(source_date),
    );
    b.release(n.release.clone());
    if let Some(e) = d.epoch {
        b.epoch(e);
    }
    b.description(
        render(&d.description, "description")?
            .trim_end()
            .to_string(),
    );
    if let Some(u) = &d.url {
        b.url(render(u, "url")?);
    }
    if let Some(v) = &d.vendor {
        b.vendor(render(v, "vendor")?);
    }
    if let Some(p) = &d.packager {
        b.packager(render(p, "packager")?);
    }
    b.group(d.group.clone().unwrap_or_else(|| "Unspecified".into()));
    b.build_host("buildchain");
    for (list, kind) in [
        (&d.requires, "requires"),
        (&d.provides, "provides"),
        (&d.conflicts, "conflicts"),
        (&d.obsoletes, "obsoletes"),
    ] {
        for (i, r) in list.iter().enumerate() {
            let what = format!("{file}: {kind}[{i}]");
            let dep = parse_dependency(&vars.render(r, &what)?, &what)?;
            match kind {
                "requires" => b.requires(dep),
                "provides" => b.provides(dep),
                "conflicts" => b.conflicts(dep),
                _ => b.obsoletes(dep),
            };
        }
    }
    for (i, f) in d.files.iter().enumerate() {
        let what = format!("{file}: files[{i}] ({})", f.dest);
        let mut bytes = match (&f.src, &f.content) {
            (Some(s), _)
                if product_key.is_some_and(|(name, _)| {
                    Path::new(&s.value).file_name() == Some(std::ffi::OsStr::new(name))
                }) =>
            {
                product_key.map(|(_, k)| k.to_vec()).unwrap_or_default()
            }
            (Some(s), _) => {
                let p = l.base_dir().join(&s.value);
                std::fs::read(&p).with_context(|| {
                    format!(
                        "{file}:{}:{}: cannot read {}",
                        s.referenced.line(),
                        s.referenced.column(),
                        p.display()
                    )
                })?
            }
            (None, Some(c)) => c.clone().into_bytes(),
            (None, None) => bail!("{what}: no `src` nor `content`"),
        };
        if f.template {
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{what}: a template must be UTF-8 text"))?;
            bytes = vars.render(&text, &what)?.into_bytes();
        }
        let mode = match &f.mode {
            Some(m) => parse_mode(m, &what)?,
            None => 0o644,
        };
        let mut o = FileOptions::new(f.dest.clone())
            .permissions(mode)
            .user(f.user.clone().unwrap_or_else(|| "root".into()))
            .group(f.group.clone().unwrap_or_else(|| "root".into()));
        match f.config {
            Some(ConfigKind::Replace) => o = o.config(),
            Some(ConfigKind::Noreplace) => o = o.config().noreplace(),
            None => {}
        }
        if f.doc {
            o = o.doc();
        }
        b.with_file_contents(bytes, o)
            .with_context(|| format!("{what}: cannot add the file"))?;
    }
    for (i, dd) in d.directories.iter().enumerate() {
        let what = format!("{file}: directories[{i}] ({})", dd.path);
        let mode = match &dd.mode {
            Some(m) => parse_mode(m, &what)?,
            None => 0o755,
        };
        let o = FileOptions::dir(dd.path.clone())
            .permissions(mode)
            .user(dd.user.clone().unwrap_or_else(|| "root".into()))
            .group(dd.group.clone().unwrap_or_else(|| "root".into()));
        b.with_dir_entry(o)
            .with_context(|| format!("{what}: cannot add the directory"))?;
    }
    for (i, s) in d.symlinks.iter().enumerate() {
        b.with_symlink(FileOptions::symlink(s.path.clone(), s.target.clone()))
            .with_context(|| format!("{file}: symlinks[{i}] ({}): cannot add", s.path))?;
    }
    // Scriptlets run by /bin/sh, which they require at that step (as rpmbuild records it).
    let sh = || rpm::Scriptlet::new("").prog(vec!["/bin/sh"]);
    if let Some(s) = &d.scripts.pre {
        b.pre_install_script(rpm::Scriptlet {
            script: render(s, "scripts.pre")?,
            ..sh()
        });
        b.requires(Dependency::script_pre("/bin/sh"));
    }
    if let Some(s) = &d.scripts.post {
        b.post_install_script(rpm::Scriptlet {
            script: render(s, "scripts.post")?,
            ..sh()
        });
        b.requires(Dependency::script_post("/bin/sh"));
    }
    if let Some(s) = &d.scripts.preun {
        b.pre_uninstall_script(rpm::Scriptlet {
            script: render(s, "scripts.preun")?,
            ..sh()
        });
        b.requires(Dependency::script_preun("/bin/sh"));
    }
    if let Some(s) = &d.scripts.postun {
        b.post_uninstall_script(rpm::Scriptlet {
            script: render(s, "scripts.postun")?,
            ..sh()
        });
        b.requires(Dependency::script_postun("/bin/sh"));
    }
    for (i, c) in d.changelog.iter().enumerate() {
        let what = format!("changelog[{i}]");
        let t = parse_date(&c.date).with_context(|| format!("{file}: {what}"))?;
        b.add_changelog_entry(
            render(&c.author, &what)?,
            render(c.text.trim_end(), &what)?,
            t,
        );
    }
    b.build()
        .with_context(|| format!("{file}: cannot build package {}", d.name))
}

/// Builds the package, unsigned, and writes it atomically to `dest`; returns the sha256 (hex) of
/// the RPM.
pub fn build_to(l: &LoadedDef, vars: &Vars, source_date: u32, dest: &Path) -> Result<String> {
    build_to_signed(l, vars, source_date, dest, None, None)
}

/// [`build_to`], signed with `signer` (at `source_date`, or the key's creation time when later)
/// when given; `product_key` as for [`build_package`].
pub fn build_to_signed(
    l: &LoadedDef,
    vars: &Vars,
    source_date: u32,
    dest: &Path,
    signer: Option<&crate::trust::signing::SigningKey>,
    product_key: Option<(&str, &[u8])>,
) -> Result<String> {
    let mut pkg = build_package(l, vars, source_date, product_key)?;
    if let Some(k) = signer {
        let t = u32::try_from(k.signature_time(u64::from(source_date)))
            .context("signature time beyond 2106")?;
        pkg.sign_with_timestamp(k.rpm_signer()?, t)
            .map_err(|e| anyhow::anyhow!("cannot sign {}: {e}", dest.display()))?;
    }
    let mut bytes = Vec::new();
    pkg.write(&mut bytes)
        .with_context(|| format!("cannot serialise {}", dest.display()))?;
    crate::testhook::kill_point("rpm");
    crate::fsutil::write_if_changed(dest, &bytes, Some(0o644))?;
    Ok(crate::fsutil::sha256_bytes(&bytes))
}
