//! `cargo xtask bench repodata [--count N] [--runs R] [--keep]`: our repodata writer vs
//! `createrepo_c --no-database` on the same N generated RPMs (default 1000). Both run as child
//! processes under `/usr/bin/time -v` (wall time and peak RSS measured the same way); repodata is
//! deleted before every run. Prints medians, the ratio, and peak RSS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use buildchain::packaging::{build, repodata, spec};

/// Runs the benchmark and prints a report (medians, ratio vs the classic tools, peak RSS).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some("--inner-ours") {
        let dir = PathBuf::from(args.get(1).context("--inner-ours DIR")?);
        let out = repodata::write_repodata(&dir, &repodata::RepodataOptions::default())?;
        if out.packages == 0 {
            bail!("no package indexed");
        }
        return Ok(());
    }
    let mut count = 1000usize;
    let mut runs = 5usize;
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => count = super::option_value(&mut it, a)?,
            "--runs" => runs = super::option_value(&mut it, a)?,
            "--keep" => keep = true,
            other => bail!("unknown option {other:?} (use --count N --runs R --keep)"),
        }
    }
    if which("createrepo_c").is_none() {
        bail!("createrepo_c is not installed (apt-get install createrepo-c)");
    }
    let work = WorkDir::create()?;
    let repo = work.path().join("repo");
    let t0 = Instant::now();
    let bytes = generate(work.path(), &repo, count)?;
    println!(
        "generated {count} RPMs ({:.1} MiB) in {:.1}s under {}",
        bytes as f64 / 1048576.0,
        t0.elapsed().as_secs_f64(),
        repo.display()
    );
    let exe = std::env::current_exe()?;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..runs {
        // Alternate the order so neither always runs with a warmer cache.
        let order: [bool; 2] = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_ours in order {
            let _ = std::fs::remove_dir_all(repo.join("repodata"));
            let mut cmd = Command::new("/usr/bin/time");
            cmd.arg("-v");
            if is_ours {
                cmd.arg(&exe)
                    .args(["bench", "repodata", "--inner-ours"])
                    .arg(&repo);
            } else {
                cmd.args(["createrepo_c", "--no-database", "-q"]).arg(&repo);
            }
            let m = measure(&mut cmd)?;
            if is_ours {
                ours.push(m);
            } else {
                theirs.push(m);
            }
        }
    }
    // Both produced repodata the other tool's parser reads: quick sanity check on the last one.
    let _ = std::fs::remove_dir_all(repo.join("repodata"));
    let out = repodata::write_repodata(&repo, &repodata::RepodataOptions::default())?;
    if out.packages != count {
        bail!("indexed {} packages, expected {count}", out.packages);
    }
    let med = |v: &[(f64, u64)]| {
        let mut t: Vec<f64> = v.iter().map(|x| x.0).collect();
        t.sort_by(f64::total_cmp);
        let mut r: Vec<u64> = v.iter().map(|x| x.1).collect();
        r.sort();
        (t[t.len() / 2], r[r.len() / 2])
    };
    let (to, ro) = med(&ours);
    let (tt, rt) = med(&theirs);
    println!("runs: {runs}, packages: {count}");
    println!(
        "ours (buildchain repodata): median {:.3}s  peak RSS {} KiB  all: {:?}",
        to,
        ro,
        ours.iter()
            .map(|x| format!("{:.3}", x.0))
            .collect::<Vec<_>>()
    );
    println!(
        "createrepo_c --no-database: median {:.3}s  peak RSS {} KiB  all: {:?}",
        tt,
        rt,
        theirs
            .iter()
            .map(|x| format!("{:.3}", x.0))
            .collect::<Vec<_>>()
    );
    println!(
        "ratio createrepo_c/ours: {:.2}x ({})",
        tt / to,
        if to < tt {
            "ours faster"
        } else {
            "ours slower"
        }
    );
    if keep {
        println!("kept {}", work.path().display());
        std::mem::forget(work);
    }
    Ok(())
}

/// A scratch directory under /tmp, deleted on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<Self> {
        let p = PathBuf::from(format!("/tmp/bc-bench-repodata-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(WorkDir(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs a `/usr/bin/time -v` command; returns (wall seconds, max RSS KiB).
fn measure(cmd: &mut Command) -> Result<(f64, u64)> {
    let t = Instant::now();
    let out = cmd.output().context("cannot run /usr/bin/time")?;
    let wall = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{cmd:?} failed: {err}");
    }
    let rss = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok((wall, rss))
}

/// Generates `count` small RPMs (a few files, requires, a changelog) with the rpm crate, through
/// our own package definitions. Returns the total size.
fn generate(work: &Path, repo: &Path, count: usize) -> Result<u64> {
    let defs = work.join("defs");
    std::fs::create_dir_all(&defs)?;
    std::fs::create_dir_all(repo.join("Packages"))?;
    let vars = spec::Vars::new("1.0.0", "bench", 8);
    let mut total = 0;
    for i in 0..count {
        let name = format!("bench-pkg-{i:05}");
        let y = format!(
            "name: {name}\nversion: \"1.{}.{}\"\nrelease: \"1{{{{ dist }}}}\"\narch: {}\n\
             summary: Benchmark package {i}\nlicense: MIT\ndescription: |\n  Package {i} generated for the repodata benchmark.\n\
             requires: [\"bash >= 4.0\", \"bench-pkg-{:05}\", \"/bin/sh\"]\nprovides: [\"bench-cap-{i} = 1.0\"]\n\
             files:\n  - dest: /usr/bin/{name}\n    mode: \"0755\"\n    content: \"#!/bin/sh\\necho {i}\\n\"\n\
             \x20 - dest: /etc/{name}/config.conf\n    config: noreplace\n    content: \"value={i}\\n\"\n\
             \x20 - dest: /usr/share/doc/{name}/README\n    doc: true\n    content: \"{}\"\n\
             directories:\n  - path: /etc/{name}\n\
             changelog:\n  - date: \"2024-01-0{}\"\n    author: \"Bench <bench@example.invalid> - 1.0-1\"\n    text: \"- release {i}\"\n",
            i % 7,
            i % 13,
            if i % 3 == 0 { "noarch" } else { "x86_64" },
            (i + 1) % count,
            "lorem ipsum ".repeat(20 + i % 50),
            1 + i % 9,
        );
        let f = defs.join(format!("{name}.yaml"));
        std::fs::write(&f, y)?;
        let d = spec::load_definition(&f)?;
        let n = build::nevra(&d, &vars)?;
        let dest = repo.join("Packages").join(n.file_name());
        build::build_to(&d, &vars, build::DEFAULT_SOURCE_DATE, &dest)?;
        total += std::fs::metadata(&dest)?.len();
    }
    Ok(total)
}
