//! `cargo xtask bench repodata`.

/// Runs the benchmark and prints a report (medians, ratio vs the classic tools, peak RSS).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("benchmark `repodata` is not implemented yet")
}
