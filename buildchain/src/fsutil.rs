//! File-system helpers every task uses: atomic writes, content-preserving updates, hashing,
//! hard-link-or-copy. They live in the engine crate ([`buildchain_engine::fs`]), which needs them
//! for its state DB and pruning; re-exported here so format modules keep `crate::fsutil`.

pub use buildchain_engine::fs::*;
