//! Offline trust (SPEC §12): the content index, signatures, the SBOM, `verify` and the
//! completeness gate.

pub mod contents;
pub mod index;
pub mod sbom;
pub mod signing;
