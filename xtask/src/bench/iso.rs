//! `cargo xtask bench iso [--blobs N] [--blob-mib M] [--small N] [--runs R] [--keep]`.
//!
//! Builds a tree under `/tmp` (default: 16 × 128 MiB pseudo-random blobs + 2000 × 4 KiB files in
//! nested directories, ~2.06 GiB), then, in the same run and interleaved, 3 times each:
//! - ours: `buildchain iso master --md5` + `dist/SHA256SUM` (one process: master with the MD5
//!   implanted in the writing pass, SHA-256 of the final image), temp + rename without fsync
//!   (like xorriso); and the same with the CLI's durable commit (fsync) for reference;
//! - classic: `xorriso -as mkisofs -R -J -joliet-long` + `implantisomd5` + `sha256sum`;
//! - floor: `md5sum` over the finished ISO (single-core MD5).
//!
//! Every measured command runs as a child under `/usr/bin/time -f '%e %M'` (wall seconds, peak
//! RSS KiB of the largest process), after an untimed `sync` (so nobody pays for the previous
//! command's write-back). Prints medians and ratios. The tree is deleted at the end.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

struct Opts {
    blobs: usize,
    blob_mib: usize,
    small: usize,
    runs: usize,
    keep: bool,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        blobs: 16,
        blob_mib: 128,
        small: 2000,
        runs: 3,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| super::option_value::<usize>(&mut it, name);
        match a.as_str() {
            "--blobs" => o.blobs = num("--blobs")?,
            "--blob-mib" => o.blob_mib = num("--blob-mib")?,
            "--small" => o.small = num("--small")?,
            "--runs" => o.runs = num("--runs")?.max(1),
            "--keep" => o.keep = true,
            other => bail!("unknown option {other:?}"),
        }
    }
    Ok(o)
}

/// Runs the benchmark and prints a report (medians, ratio vs the classic tools, peak RSS).
pub fn run(args: &[String]) -> Result<()> {
    // Child mode: one measured "ours" run.
    if args.first().map(String::as_str) == Some("--child-master") {
        return child_master(&args[1..]);
    }
    let o = parse(args)?;
    for t in [
        "xorriso",
        "implantisomd5",
        "sha256sum",
        "md5sum",
        "checkisomd5",
    ] {
        testkit::require_tool(t);
    }
    if !Path::new("/usr/bin/time").is_file() {
        bail!("/usr/bin/time (package `time`) is required to measure peak RSS");
    }
    let base = PathBuf::from(format!("/tmp/buildchain-bench-iso-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let src = base.join("root");
    let t0 = std::time::Instant::now();
    let bytes = make_tree(&src, &o)?;
    println!(
        "tree: {} blobs × {} MiB + {} small files = {:.2} GiB (generated in {:.1}s) under {}",
        o.blobs,
        o.blob_mib,
        o.small,
        bytes as f64 / (1u64 << 30) as f64,
        t0.elapsed().as_secs_f64(),
        src.display()
    );
    let result = measure(&base, &src, &o);
    if !o.keep {
        let _ = fs::remove_dir_all(&base);
    }
    result
}

fn measure(base: &Path, src: &Path, o: &Opts) -> Result<()> {
    let exe = std::env::current_exe()?;
    let ours_dist = base.join("ours");
    let classic_dist = base.join("classic");
    fs::create_dir_all(&ours_dist)?;
    fs::create_dir_all(&classic_dist)?;
    let ours_iso = ours_dist.join("metalk8s-130.0.0-dev.iso");
    let classic_iso = classic_dist.join("metalk8s-130.0.0-dev.iso");
    let mut ours = Vec::new();
    let mut ours_durable = Vec::new();
    let mut classic = Vec::new();
    let mut floor = Vec::new();
    // Warm the page cache once (both tools read the same tree).
    timed(
        Command::new("sh")
            .arg("-c")
            .arg(format!("cat $(find {} -type f) > /dev/null", src.display())),
    )?;
    for i in 0..o.runs {
        let _ = fs::remove_file(&ours_iso);
        let m = timed(
            Command::new(&exe)
                .args(["bench", "iso", "--child-master"])
                .arg(src)
                .arg(&ours_iso),
        )?;
        println!(
            "run {i}: ours            {:7.2}s  {:6} MiB",
            m.0,
            m.1 / 1024
        );
        ours.push(m);
        let _ = fs::remove_file(&ours_iso);
        let m = timed(
            Command::new(&exe)
                .args(["bench", "iso", "--child-master"])
                .arg(src)
                .arg(&ours_iso)
                .arg("--durable"),
        )?;
        println!(
            "run {i}: ours (fsync)    {:7.2}s  {:6} MiB",
            m.0,
            m.1 / 1024
        );
        ours_durable.push(m);

        let _ = fs::remove_file(&classic_iso);
        let script = format!(
            "set -e; cd {dist}; xorriso -as mkisofs -quiet -o {iso} -R -J -joliet-long -V 'MetalK8s 130.0.0-dev' {src}; \
             implantisomd5 {iso} > /dev/null; sha256sum {name} > SHA256SUM",
            dist = classic_dist.display(),
            iso = classic_iso.display(),
            name = classic_iso.file_name().unwrap().to_string_lossy(),
            src = src.display()
        );
        let m = timed(Command::new("sh").arg("-c").arg(&script))?;
        println!(
            "run {i}: classic         {:7.2}s  {:6} MiB",
            m.0,
            m.1 / 1024
        );
        classic.push(m);

        let m = timed(Command::new("md5sum").arg(&ours_iso))?;
        println!(
            "run {i}: md5sum (floor)  {:7.2}s  {:6} MiB",
            m.0,
            m.1 / 1024
        );
        floor.push(m);
    }
    // Sanity: both images pass checkisomd5, our SHA256SUM verifies.
    testkit::run_ok(Command::new("checkisomd5").arg(&ours_iso));
    testkit::run_ok(Command::new("checkisomd5").arg(&classic_iso));
    testkit::run_ok(
        Command::new("sha256sum")
            .args(["-c", "SHA256SUM"])
            .current_dir(&ours_dist),
    );
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let med = |v: &[(f64, u64)]| {
        let mut t: Vec<f64> = v.iter().map(|x| x.0).collect();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let peak = |v: &[(f64, u64)]| v.iter().map(|x| x.1).max().unwrap_or(0);
    let (mo, md, mc, mf) = (med(&ours), med(&ours_durable), med(&classic), med(&floor));
    println!();
    println!(
        "ISO sizes: ours {} bytes, xorriso {} bytes",
        size(&ours_iso),
        size(&classic_iso)
    );
    println!("median of {} runs (wall) / peak RSS:", o.runs);
    println!(
        "  ours master --md5 + SHA256SUM        {mo:7.2}s  {:6} MiB",
        peak(&ours) / 1024
    );
    println!(
        "  ours, durable commit (fsync)         {md:7.2}s  {:6} MiB",
        peak(&ours_durable) / 1024
    );
    println!(
        "  xorriso + implantisomd5 + sha256sum  {mc:7.2}s  {:6} MiB",
        peak(&classic) / 1024
    );
    println!(
        "  md5sum over the ISO (floor)          {mf:7.2}s  {:6} MiB",
        peak(&floor) / 1024
    );
    println!(
        "speed-up vs classic: {:.2}× (durable: {:.2}×)",
        mc / mo,
        mc / md
    );
    println!(
        "ours / md5sum floor: {:.2}× (durable: {:.2}×)",
        mo / mf,
        md / mf
    );
    Ok(())
}

/// Runs a command under `/usr/bin/time`, returning (wall seconds, peak RSS KiB). A `sync`
/// (not timed) runs first, so no command pays for the write-back of the previous one's output.
fn timed(cmd: &mut Command) -> Result<(f64, u64)> {
    let _ = Command::new("sync").status();
    let tmp = std::env::temp_dir().join(format!("bc-bench-time-{}", std::process::id()));
    let mut t = Command::new("/usr/bin/time");
    t.arg("-f").arg("%e %M").arg("-o").arg(&tmp);
    t.arg(cmd.get_program());
    t.args(cmd.get_args());
    if let Some(d) = cmd.get_current_dir() {
        t.current_dir(d);
    }
    let out = t.output().context("cannot run /usr/bin/time")?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}{}",
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = fs::read_to_string(&tmp)?;
    let _ = fs::remove_file(&tmp);
    let last = text.lines().last().unwrap_or_default();
    let mut it = last.split_whitespace();
    let secs: f64 = it.next().unwrap_or("0").parse()?;
    let rss: u64 = it.next().unwrap_or("0").parse()?;
    Ok((secs, rss))
}

fn child_master(args: &[String]) -> Result<()> {
    let (Some(src), Some(out)) = (args.first(), args.get(1)) else {
        bail!("--child-master SRC OUT [--durable]");
    };
    let durable = args.get(2).map(String::as_str) == Some("--durable");
    let out = Path::new(out);
    let r = buildchain::cli::iso::master_to(
        Path::new(src),
        out,
        "MetalK8s 130.0.0-dev",
        true,
        1_700_000_000,
        None,
        durable,
    )?;
    let name = out.file_name().unwrap().to_string_lossy();
    let sums = out.parent().unwrap().join("SHA256SUM");
    buildchain::fsutil::write_atomic(&sums, format!("{}  {name}\n", r.sha256_hex).as_bytes())?;
    Ok(())
}

fn make_tree(root: &Path, o: &Opts) -> Result<u64> {
    let mut total = 0u64;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut fill = |buf: &mut [u8]| {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            c.copy_from_slice(&b[..c.len()]);
        }
    };
    let blobs = root.join("images/blobs");
    fs::create_dir_all(&blobs)?;
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..o.blobs {
        let mut f = fs::File::create(blobs.join(format!("{i:064x}")))?;
        for _ in 0..o.blob_mib {
            fill(&mut buf);
            f.write_all(&buf)?;
        }
        total += (o.blob_mib as u64) << 20;
    }
    let mut small = vec![0u8; 4096];
    for i in 0..o.small {
        let d = root.join(format!("packages/d{:02}/s{:02}", i % 20, (i / 20) % 10));
        fs::create_dir_all(&d)?;
        fill(&mut small);
        fs::write(d.join(format!("pkg-{i:05}.rpm")), &small)?;
        total += 4096;
    }
    Ok(total)
}
