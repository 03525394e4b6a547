//! `buildchain packaging …` verbs (to be wired into the CLI by the lead):
//! - `packaging lock [--request packages/redhat/8/release.yaml] [--output …/lock.yaml]`
//! - `packaging repodata DIR [--revision N]`

use std::path::PathBuf;

use anyhow::Result;

/// `buildchain packaging lock`.
#[derive(clap::Args, Debug)]
pub struct LockArgs {
    /// Request file (sources + requested names).
    #[arg(long, default_value = "packages/redhat/8/release.yaml")]
    pub request: PathBuf,
    /// Lock file to write.
    #[arg(long, default_value = "packages/redhat/8/lock.yaml")]
    pub output: PathBuf,
}

/// Runs `packaging lock`: resolves over HTTP and writes the lock; prints the pins and the
/// requirements left to the base OS.
pub fn lock(args: &LockArgs) -> Result<()> {
    let res = crate::packaging::lock::lock(&args.request, &args.output)?;
    for p in &res.lock.packages {
        println!(
            "{} {} {}",
            p.nevra(),
            p.source,
            p.sha256.as_deref().unwrap_or("-")
        );
    }
    for (req, by) in &res.unresolved {
        println!("unresolved (expected from the base OS): {req} (required by {by})");
    }
    println!("wrote {}", args.output.display());
    Ok(())
}

/// `buildchain packaging repodata`.
#[derive(clap::Args, Debug)]
pub struct RepodataArgs {
    /// Repository directory (RPMs anywhere below it).
    pub dir: PathBuf,
    /// Revision and timestamps (default: SOURCE_DATE_EPOCH, else a fixed date).
    #[arg(long)]
    pub revision: Option<u64>,
}

/// Runs `packaging repodata`: writes `DIR/repodata/` like `createrepo_c --no-database`.
pub fn repodata(args: &RepodataArgs) -> Result<()> {
    let revision = match args.revision {
        Some(r) => r,
        None => crate::config::source_date_epoch_from_env()?
            .unwrap_or(u64::from(crate::packaging::build::DEFAULT_SOURCE_DATE)),
    };
    let out = crate::packaging::repodata::write_repodata(
        &args.dir,
        &crate::packaging::repodata::RepodataOptions {
            revision,
            ..Default::default()
        },
    )?;
    println!(
        "{} packages indexed in {}",
        out.packages,
        args.dir.join("repodata").display()
    );
    Ok(())
}
