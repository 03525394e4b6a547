//! `buildchain image …` verbs.

use anyhow::Context;

use crate::images::manifest::Platform;
use crate::images::reference::Reference;
use crate::images::registry::{fetch_many, ClientOptions, RegistryClient};
use crate::store::Store;

/// `buildchain image fetch REF DEST`.
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// Image reference, pinned by digest (`registry/name@sha256:…`) or by tag.
    pub reference: String,
    /// Destination directory (`dir:` layout).
    pub dest: std::path::PathBuf,
    /// Allow plain HTTP to this registry.
    #[arg(long)]
    pub insecure: bool,
}

/// Runs `image fetch`: writes the skopeo `dir:` layout of REF into DEST (like
/// `skopeo copy docker://REF dir:DEST`), through the shared blob store (`BUILDCHAIN_STORE`).
pub fn fetch(args: &FetchArgs) -> anyhow::Result<()> {
    let r = Reference::parse(&args.reference)?;
    let store = Store::shared(Store::default_root())?;
    let client = RegistryClient::new(ClientOptions {
        insecure: args.insecure,
        ..Default::default()
    })?;
    let platform = Platform::default_linux_amd64();
    let hub = crate::engine::ProgressHub::new(false);
    let progress = hub.start("image fetch", None, &r.to_string());
    let res = fetch_many(
        &client,
        &store,
        &[(r.clone(), format!("image {r}"), args.dest.clone())],
        &platform,
        Some(&progress),
    )
    .with_context(|| format!("cannot fetch {r}"));
    progress.finish();
    let res = res?;
    println!("{} {}", res[0].digest(), args.dest.display());
    Ok(())
}
