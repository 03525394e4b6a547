//! All buildchain integration tests in one binary (one link instead of one per file), as
//! cargo's own test suite does. Each file is a module; helpers are `images_support`,
//! `solution_common` and `delivery_common`.
//!
//! `crash_trials.rs`, `deploy_e2e.rs` and `delivery_volumes.rs` stay separate binaries: they set the process-wide
//! `umask 077`, which would leak into every other test of a shared process.

mod cli_populate;
mod cli_progress;
mod cli_ux;
mod delivery;
mod delivery_common;
mod delivery_delta;
mod engine;
mod images_faults;
mod images_local;
mod images_messages;
mod images_registry;
mod images_support;
mod iso_cli;
mod iso_ls;
mod packaging_build;
mod packaging_fetch;
mod product_iso;
mod publish;
mod registry_config_e2e;
mod registry_config_generate;
mod remote_cache;
mod remote_task_cache;
mod reproducible;
mod solution_build;
mod solution_common;
mod solution_corpus;
mod solution_definition;
mod solution_fuzz;
mod solution_nginx;
mod store_cli;
mod trust_completeness;
mod trust_sign;
mod trust_verify;
