//! Crash points for fault tests ([`buildchain_engine::testhook`], re-exported here).

pub use buildchain_engine::testhook::*;
