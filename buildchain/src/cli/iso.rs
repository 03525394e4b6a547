//! `buildchain iso master|check|ls|extract`.

/// `buildchain iso …` sub-commands.
#[derive(clap::Subcommand, Debug)]
pub enum IsoCommand {
    /// Master a directory into an ISO-9660 image (Rock Ridge + Joliet, level 3).
    Master {
        /// Source directory.
        dir: std::path::PathBuf,
        /// Output ISO path.
        #[arg(short, long)]
        output: std::path::PathBuf,
        /// Volume identifier, e.g. "MetalK8s 130.0.0-dev".
        #[arg(long)]
        volid: String,
        /// Implant the isomd5sum record.
        #[arg(long)]
        md5: bool,
    },
    /// Verify the implanted MD5 (like `checkisomd5`).
    Check {
        /// ISO file.
        iso: std::path::PathBuf,
    },
    /// List the files of an ISO.
    Ls {
        /// ISO file.
        iso: std::path::PathBuf,
    },
    /// Extract an ISO into a directory.
    Extract {
        /// ISO file.
        iso: std::path::PathBuf,
        /// Destination directory.
        dest: std::path::PathBuf,
    },
}

/// Runs an `iso` sub-command; returns the process exit code.
pub fn run(cmd: &IsoCommand) -> anyhow::Result<u8> {
    let _ = cmd;
    anyhow::bail!("`iso` verbs are not implemented yet")
}
