//! `buildchain image …` verbs.

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

/// Runs `image fetch`.
pub fn fetch(args: &FetchArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`image fetch` is not implemented yet")
}
