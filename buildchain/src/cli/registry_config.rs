//! `buildchain registry-config …`.

/// `buildchain registry-config IMAGES_DIR --name-prefix P --server-root R`.
#[derive(clap::Args, Debug)]
pub struct RegistryConfigArgs {
    /// The `images/` tree (`<name>/<tag>/manifest.json`…).
    pub images_dir: std::path::PathBuf,
    /// Repository name prefix (e.g. `metalk8s-130.0.0-dev/`).
    #[arg(long, default_value = "")]
    pub name_prefix: String,
    /// nginx expression for the directory holding the tree.
    #[arg(long)]
    pub server_root: String,
    /// Do not emit the constant locations (`/v2/`…).
    #[arg(long, conflicts_with = "only_constants")]
    pub omit_constants: bool,
    /// Emit only the constant locations.
    #[arg(long)]
    pub only_constants: bool,
    /// Write to this file (atomically) instead of stdout.
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
}

/// Runs `registry-config`.
pub fn run(args: &RegistryConfigArgs) -> anyhow::Result<()> {
    let constants = if args.omit_constants {
        crate::registry_config::Constants::Omit
    } else if args.only_constants {
        crate::registry_config::Constants::Only
    } else {
        crate::registry_config::Constants::Include
    };
    let text = crate::registry_config::generate(
        &args.images_dir,
        &crate::registry_config::Options {
            name_prefix: args.name_prefix.clone(),
            server_root: args.server_root.clone(),
            constants,
        },
    )?;
    match &args.output {
        Some(p) => crate::fsutil::write_atomic(p, text.as_bytes()),
        None => {
            use std::io::Write;
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
    }
}
