//! `cargo xtask bench solution-validate [--size-mib N] [--runs N]`: `buildchain solution validate`
//! on a ≥ 1 GiB Solution ISO vs `checkisomd5` + `sha256sum` of the same file (the cost of merely
//! reading and checksumming it), warm page cache, medians of `--runs` runs, peak RSS of each.
//!
//! The ISO: 4 images sharing one base layer (hard-linked, stored once, hashed once) plus one own
//! layer each, an operator image, role, CRD, `registry-config.inc.j2`, `manifest.yaml`, mastered
//! with our writer (MD5 implanted). Data lives in a temp dir under `/tmp`, deleted afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use buildchain::solution::build::{manifest_yaml, BuildInfo};
use buildchain::solution::definition::{Definition, ImageDef, OperatorDef};

const MIB: u64 = 1 << 20;

/// Writes `len` pseudo-random bytes to `path`; returns (sha256 hex, len).
pub(super) fn random_blob(path: &Path, seed: u64, len: u64) -> Result<(String, u64)> {
    let mut f = std::io::BufWriter::with_capacity(
        4 << 20,
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
    );
    let mut x = seed | 1;
    let mut buf = vec![0u8; 4 << 20];
    let mut left = len;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    drop(f);
    Ok((buildchain::fsutil::sha256_file(path)?, len))
}

pub(super) fn put_bytes(dir: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let hex = buildchain::fsutil::sha256_bytes(bytes);
    std::fs::write(dir.join(&hex), bytes)?;
    Ok((hex, bytes.len() as u64))
}

/// Writes one image `images/<name>/<tag>/` with the given layers (already in place or linked).
pub(super) fn image(dir: &Path, layers: &[(String, u64)]) -> Result<()> {
    let diff_ids: Vec<String> = layers.iter().map(|(h, _)| format!("sha256:{h}")).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (ch, cs) = put_bytes(dir, serde_json::to_string(&config)?.as_bytes())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{ch}"), "size": cs},
        "layers": layers.iter().map(|(h, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{h}"), "size": s,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest)?)?;
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n")?;
    Ok(())
}

/// Builds the benchmark Solution ISO in `work`; returns its path.
fn make_iso(work: &Path, size_mib: u64) -> Result<PathBuf> {
    let root = work.join("root");
    let version = "1.0.0";
    let n = 4u64;
    let base_len = size_mib / 4 * MIB;
    let own_len = (size_mib * MIB - base_len) / n;
    let mut defs = Vec::new();
    let mut base: Option<(PathBuf, (String, u64))> = None;
    for i in 0..n {
        let name = format!("app-{i}");
        let dir = root.join("images").join(&name).join(version);
        std::fs::create_dir_all(&dir)?;
        let b = match &base {
            None => {
                let tmp = dir.join("base.tmp");
                let d = random_blob(&tmp, 1, base_len)?;
                let p = dir.join(&d.0);
                std::fs::rename(&tmp, &p)?;
                base = Some((p, d.clone()));
                d
            }
            Some((p, d)) => {
                std::fs::hard_link(p, dir.join(&d.0))?;
                d.clone()
            }
        };
        let tmp = dir.join("own.tmp");
        let own = random_blob(&tmp, 1001 + 2 * i, own_len)?;
        std::fs::rename(&tmp, dir.join(&own.0))?;
        image(&dir, &[b, own])?;
        defs.push(name);
    }
    let op = root.join("images/bench-solution-operator").join(version);
    std::fs::create_dir_all(&op)?;
    let l = put_bytes(&op, b"operator layer")?;
    image(&op, &[l])?;
    defs.push("bench-solution-operator".into());
    let deploy = root.join("operator/deploy");
    std::fs::create_dir_all(deploy.join("crds"))?;
    std::fs::write(
        deploy.join("role.yaml"),
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: bench\nrules: []\n",
    )?;
    std::fs::write(
        deploy.join("crds/bench_crd.yaml"),
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: benches.example.com\n",
    )?;
    let inc = buildchain::registry_config::generate(
        &root.join("images"),
        &buildchain::registry_config::Options::solution(),
    )?;
    std::fs::write(root.join("registry-config.inc.j2"), inc)?;
    let def = Definition {
        name: "bench-solution".into(),
        display_name: "Bench Solution".into(),
        versions: vec![version.into()],
        operator: OperatorDef {
            image: "bench-solution-operator".into(),
            crds: vec![],
            rbac: vec![],
        },
        images: defs
            .iter()
            .map(|n| ImageDef {
                name: n.clone(),
                tag: None,
                local: Some(format!("images/{n}")),
                registry: None,
                oci_layout: None,
                docker_archive: None,
                platform: None,
            })
            .collect(),
        labels: Default::default(),
    };
    let info = BuildInfo {
        epoch: 1_700_000_000,
        host: "bench".into(),
        git_revision: "bench".into(),
        signer: None,
    };
    std::fs::write(
        root.join("manifest.yaml"),
        manifest_yaml(&def, version, &info)?,
    )?;
    let iso = work.join("bench-solution-1.0.0.iso");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&iso)?;
    iso9660_master(&root, &mut f)?;
    std::fs::remove_dir_all(&root)?;
    Ok(iso)
}

fn iso9660_master(root: &Path, f: &mut std::fs::File) -> Result<()> {
    // The writer is reached through the buildchain build module's dependency.
    let opts = iso9660_writer::MasterOptions {
        volume_id: "Bench Solution 1.0.0".into(),
        timestamp: 1_700_000_000,
        implant_md5: true,
        progress: None,
        keep_modes: false,
    };
    iso9660_writer::master(root, f, &opts).map_err(|e| anyhow::anyhow!("master: {e}"))?;
    Ok(())
}

/// The preamble of the ISO-checking benchmarks: `--size-mib N` (default 1088) and `--runs N`
/// (default 3), the classic tools present, a work directory `/tmp/bench-<name>-<pid>` and the
/// benchmark ISO made in it by `make_iso`. Returns (work dir, ISO, runs).
pub(super) fn iso_bench_setup(
    args: &[String],
    name: &str,
    make_iso: fn(&Path, u64) -> Result<PathBuf>,
) -> Result<(TempDir, PathBuf, usize)> {
    let mut size_mib = 1088u64;
    let mut runs = 3usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size-mib" => size_mib = super::option_value(&mut it, a)?,
            "--runs" => runs = super::option_value(&mut it, a)?,
            other => bail!("unknown option {other:?} (--size-mib N, --runs N)"),
        }
    }
    for t in ["checkisomd5", "sha256sum"] {
        testkit::require_tool(t);
    }
    let work = TempDir(PathBuf::from(format!(
        "/tmp/bench-{name}-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(work.path())?;
    let iso = make_iso(work.path(), size_mib)?;
    Ok((work, iso, runs))
}

/// A directory removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);
impl TempDir {
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` under `/usr/bin/time`; returns (wall seconds, peak RSS KiB, stdout).
pub(super) fn timed(cmd: &[&str]) -> Result<(f64, u64, String)> {
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "BENCH_RSS_KIB=%M"])
        .args(cmd)
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{cmd:?} failed: {err}");
    }
    let rss = err
        .lines()
        .filter_map(|l| l.strip_prefix("BENCH_RSS_KIB="))
        .filter_map(|v| v.trim().parse().ok())
        .next_back()
        .unwrap_or(0);
    Ok((secs, rss, String::from_utf8_lossy(&out.stdout).into_owned()))
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the benchmark and prints a report (medians, ratio vs the classic tools, peak RSS).
pub fn run(args: &[String]) -> Result<()> {
    let t = Instant::now();
    let (work, iso, runs) = super::solution::iso_bench_setup(args, "solution", make_iso)?;
    let size = std::fs::metadata(&iso)?.len();
    let iso_s = iso.to_str().context("non-UTF-8 temp path")?;
    println!(
        "ISO: {} ({:.2} GiB) made in {:.1}s",
        iso.display(),
        size as f64 / (1u64 << 30) as f64,
        t.elapsed().as_secs_f64()
    );
    let me = std::env::current_exe()?;
    let me = me.to_str().context("exe path")?;
    // Warm-up (page cache) and sanity.
    let (_, _, out) = timed(&[me, "solution", "validate", "--format", "json", iso_s])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    if v["ok"] != true {
        bail!("the benchmark ISO does not validate: {out}");
    }
    println!(
        "validator: {} images, {} blob refs, {} distinct blobs hashed ({} MiB), md5 {}",
        v["stats"]["images"],
        v["stats"]["blob_refs"],
        v["stats"]["blobs_hashed"],
        v["stats"]["bytes_hashed"].as_u64().unwrap_or(0) / MIB,
        v["md5"]
    );
    timed(&["checkisomd5", iso_s])?;
    timed(&["sha256sum", iso_s])?;
    let (mut ours, mut md5, mut sha, mut rss) = (vec![], vec![], vec![], [0u64; 3]);
    for _ in 0..runs {
        let (s, r, _) = timed(&[me, "solution", "validate", iso_s])?;
        ours.push(s);
        rss[0] = rss[0].max(r);
        let (s, r, _) = timed(&["checkisomd5", iso_s])?;
        md5.push(s);
        rss[1] = rss[1].max(r);
        let (s, r, _) = timed(&["sha256sum", iso_s])?;
        sha.push(s);
        rss[2] = rss[2].max(r);
    }
    let (o, m, s) = (median(ours), median(md5), median(sha));
    let gib = size as f64 / (1u64 << 30) as f64;
    println!("median of {runs} runs, warm page cache, {gib:.2} GiB:");
    println!(
        "  buildchain solution validate : {o:7.2}s  {:7.0} MiB/s  peak RSS {:6} KiB",
        size as f64 / MIB as f64 / o,
        rss[0]
    );
    println!(
        "  checkisomd5                  : {m:7.2}s  {:7.0} MiB/s  peak RSS {:6} KiB",
        size as f64 / MIB as f64 / m,
        rss[1]
    );
    println!(
        "  sha256sum                    : {s:7.2}s  {:7.0} MiB/s  peak RSS {:6} KiB",
        size as f64 / MIB as f64 / s,
        rss[2]
    );
    println!(
        "  checkisomd5 + sha256sum      : {:7.2}s  {:7.0} MiB/s",
        m + s,
        size as f64 / MIB as f64 / (m + s)
    );
    println!(
        "  ratio validate / (checkisomd5 + sha256sum) = {:.2}",
        o / (m + s)
    );
    drop(work);
    Ok(())
}
