//! ECMA-119 (ISO-9660) writer and reader with Rock Ridge and Joliet, plus isomd5sum.
//!
//! - [`master`] writes a directory tree as an ISO-9660 image (interchange level 3, Rock Ridge,
//!   Joliet with long names, path tables), deterministically and in one streaming pass, optionally
//!   implanting the isomd5sum record (the `implantisomd5` format, checked by `checkisomd5`) while
//!   writing, and returns the SHA-256 of the final image.
//! - [`md5sum`] implants ([`md5sum::implant`]) and checks ([`md5sum::check`]) isomd5sum records
//!   on any image.
//! - [`reader::IsoReader`] walks an image (Rock Ridge names, Joliet or plain fallback), and streams
//!   file contents; it is hardened against hostile images (errors, never panics).

pub mod date;
pub mod md5core;
pub mod md5sum;
pub mod reader;
mod util;
pub mod writer;

pub use md5sum::{check, implant, CheckReport, CheckStatus};
pub use reader::{structure_problems, Entry, EntryKind, IsoReader, Namespace};
pub use writer::{
    master, master_resuming, master_with_total, normalized_mode, predict_size, Image,
    MasterOptions, MasterReport, Previous, ResumeState,
};

/// Size of an ISO-9660 logical sector.
pub const SECTOR_SIZE: u64 = 2048;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, with the path or operation it concerns.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (names the file).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The source tree cannot be mastered (unsupported file type, file changed while reading…).
    #[error("{0}")]
    Source(String),
    /// The image is malformed (reader/checker).
    #[error("malformed ISO image: {0}")]
    Malformed(String),
    /// An isomd5sum operation was refused (e.g. application-use area already in use).
    #[error("{0}")]
    Md5(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        Error::Malformed(msg.into())
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
