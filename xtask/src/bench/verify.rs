//! `cargo xtask bench verify [--size-mib N] [--runs N]`: `buildchain verify` on a ≥ 1 GiB ISO vs
//! `checkisomd5` and `sha256sum` of the same file, in the same run (warm page cache, medians of
//! `--runs` runs, peak RSS of each). Goal: `verify` (one read; MD5 and SHA-256 on two cores) is
//! no slower than `checkisomd5` alone.
//!
//! The ISO: 4 images of one own layer each plus a shared base layer (hard-linked, one extent),
//! `SHA256SUMS` and `/CONTENTS.json`, mastered with our writer (MD5 implanted).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::solution::{image, median, random_blob, timed};

/// Runs `cmd` under `/usr/bin/time`; returns (wall seconds, peak RSS KiB, CPU seconds user+sys).
fn timed_cpu(cmd: &[&str]) -> Result<(f64, u64, f64)> {
    let t = Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "BENCH=%M %U %S"])
        .args(cmd)
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{cmd:?} failed: {err}");
    }
    let line = err
        .lines()
        .filter_map(|l| l.strip_prefix("BENCH="))
        .next_back()
        .unwrap_or("0 0 0");
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0.0);
    Ok((secs, get(0) as u64, get(1) + get(2)))
}

const MIB: u64 = 1 << 20;

fn make_iso(work: &Path, size_mib: u64) -> Result<PathBuf> {
    let root = work.join("root");
    let n = 4u64;
    let base_len = size_mib / 4 * MIB;
    let own_len = (size_mib * MIB - base_len) / n;
    let mut base: Option<(PathBuf, (String, u64))> = None;
    for i in 0..n {
        let dir = root.join("images").join(format!("app-{i}")).join("1.0");
        std::fs::create_dir_all(&dir)?;
        let b = match &base {
            None => {
                let tmp = dir.join("base.tmp");
                let d = random_blob(&tmp, 7, base_len)?;
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
        let own = random_blob(&tmp, 2001 + 2 * i, own_len)?;
        std::fs::rename(&tmp, dir.join(&own.0))?;
        image(&dir, &[b, own])?;
    }
    std::fs::write(root.join("product.txt"), "NAME=Bench\nVERSION=1.0.0\n")?;
    let mut sums = String::new();
    for e in walkdir_sorted(&root)? {
        let rel = buildchain::tasks::rel_name(&e, &root);
        sums.push_str(&format!(
            "{}  ./{rel}\n",
            buildchain::fsutil::sha256_file(&e)?
        ));
    }
    std::fs::write(root.join("SHA256SUMS"), sums)?;
    let index = buildchain::trust::index_reader::index_tree(&root, Some(1_700_000_000))?;
    std::fs::write(root.join("CONTENTS.json"), index.to_json_bytes()?)?;
    let iso = work.join("bench-verify.iso");
    buildchain::isofile::master_to(&root, &iso, "BENCH 1.0.0", true, 1_700_000_000, None, false)?;
    std::fs::remove_dir_all(&root)?;
    Ok(iso)
}

fn walkdir_sorted(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs the benchmark and prints a report.
pub fn run(args: &[String]) -> Result<()> {
    let t = Instant::now();
    let (work, iso, runs) = super::solution::iso_bench_setup(args, "verify", make_iso)?;
    let size = std::fs::metadata(&iso)?.len();
    let iso_s = iso.to_str().context("non-UTF-8 temp path")?;
    let gib = size as f64 / (1u64 << 30) as f64;
    println!(
        "ISO: {} ({gib:.2} GiB) made in {:.1}s",
        iso.display(),
        t.elapsed().as_secs_f64()
    );
    let me = std::env::current_exe()?;
    let me = me.to_str().context("exe path")?;
    // Warm-up (page cache) and sanity: no error (the index is unsigned: one warning).
    let (_, _, out) = timed(&[me, "verify", "--format", "json", iso_s])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    if v["ok"] != true {
        bail!("the benchmark ISO does not verify: {out}");
    }
    println!(
        "verify: {} files hashed ({} MiB), {} images, {} blob refs, md5 {}",
        v["stats"]["blobs_hashed"],
        v["stats"]["bytes_hashed"].as_u64().unwrap_or(0) / MIB,
        v["stats"]["images"],
        v["stats"]["blob_refs"],
        v["md5"]
    );
    timed(&["checkisomd5", iso_s])?;
    timed(&["sha256sum", iso_s])?;
    println!(
        "load average before the runs: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let (mut ours, mut md5, mut sha, mut rss) = (vec![], vec![], vec![], [0u64; 3]);
    let mut cpu = [vec![], vec![], vec![]];
    for _ in 0..runs {
        for (i, cmd) in [
            vec![me, "verify", iso_s],
            vec!["checkisomd5", iso_s],
            vec!["sha256sum", iso_s],
        ]
        .iter()
        .enumerate()
        {
            let (s, r, c) = timed_cpu(cmd)?;
            [&mut ours, &mut md5, &mut sha][i].push(s);
            rss[i] = rss[i].max(r);
            cpu[i].push(c);
        }
    }
    let (o, m, s) = (median(ours), median(md5), median(sha));
    let rate = |t: f64| size as f64 / MIB as f64 / t;
    let [c0, c1, c2] = cpu.map(median);
    println!("median of {runs} runs, warm page cache, {gib:.2} GiB:");
    println!(
        "  buildchain verify       : {o:7.2}s  {:7.0} MiB/s  peak RSS {:6} KiB  CPU {c0:.2}s",
        rate(o),
        rss[0]
    );
    println!(
        "  checkisomd5             : {m:7.2}s  {:7.0} MiB/s  peak RSS {:6} KiB  CPU {c1:.2}s",
        rate(m),
        rss[1]
    );
    println!(
        "  sha256sum               : {s:7.2}s  {:7.0} MiB/s  peak RSS {:6} KiB  CPU {c2:.2}s",
        rate(s),
        rss[2]
    );
    println!(
        "  checkisomd5 + sha256sum : {:7.2}s  {:7.0} MiB/s",
        m + s,
        rate(m + s)
    );
    println!(
        "  ratio verify / checkisomd5 = {:.2} (goal <= 1); verify / (checkisomd5 + sha256sum) = {:.2}",
        o / m,
        o / (m + s)
    );
    drop(work);
    Ok(())
}
