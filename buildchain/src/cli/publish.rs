//! `publish` and `pull`: a built ISO as an OCI artifact in a registry (SPEC §14).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::{GraphOptions, UsageError};
use crate::remote::artifact::{self, ArtifactRef};

/// `buildchain publish oci://HOST[:PORT]/REPO:TAG [ISO]`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Target `oci://HOST[:PORT]/REPO:TAG` (`oci+http://` for a loopback registry).
    pub target: String,
    /// ISO to publish (default: the built ISO in dist/).
    pub iso: Option<PathBuf>,
    /// CA bundle that replaces the system roots (default BUILDCHAIN_REMOTE_CACHE_CA).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// `buildchain pull oci://HOST[:PORT]/REPO:TAG -o DIR`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Source `oci://HOST[:PORT]/REPO:TAG` or `…/REPO@sha256:DIGEST`.
    pub source: String,
    /// Directory to write the files into (created when missing).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// CA bundle that replaces the system roots (default BUILDCHAIN_REMOTE_CACHE_CA).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

fn parse(s: &str) -> Result<ArtifactRef> {
    ArtifactRef::parse(s).map_err(|e| UsageError(format!("{e:#}")).into())
}

/// Runs `publish`.
pub fn publish(a: &PublishArgs, opts: &GraphOptions) -> Result<u8> {
    let target = parse(&a.target)?;
    let iso = match &a.iso {
        Some(p) => p.clone(),
        None => {
            let (settings, _) = super::load(opts)?;
            settings.iso_path()
        }
    };
    if !iso.is_file() {
        return Err(UsageError(format!(
            "{}: no such ISO (build it first, or name one)",
            iso.display()
        ))
        .into());
    }
    let p = artifact::publish(&target, &iso, a.ca.as_deref())?;
    for (title, digest, size) in &p.layers {
        println!("pushed {title} {digest} ({size} bytes)");
    }
    println!("published {target} {}", p.digest);
    Ok(0)
}

/// Runs `pull`.
pub fn pull(a: &PullArgs) -> Result<u8> {
    let src = parse(&a.source)?;
    for p in artifact::pull(&src, &a.output, a.ca.as_deref())? {
        println!("wrote {}", p.display());
    }
    Ok(0)
}
