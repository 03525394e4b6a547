//! The small progress interface format modules report to (images, packaging, mastering).
//!
//! They never see the engine's reporting: a task hands them its indicator (the engine's
//! [`crate::engine::Progress`] implements this trait), tests and standalone verbs hand them
//! whatever they like.

/// Work done against an expected total, in bytes. Shared between threads.
pub trait Progress: Send + Sync {
    /// Adds `n` bytes of work done.
    fn inc(&self, n: u64);
    /// Grows the expected total as work is discovered.
    fn add_total(&self, n: u64);
    /// Ends the indicator.
    fn finish(&self);
}

impl Progress for crate::engine::Progress {
    fn inc(&self, n: u64) {
        crate::engine::Progress::inc(self, n);
    }
    fn add_total(&self, n: u64) {
        crate::engine::Progress::add_total(self, n);
    }
    fn finish(&self) {
        crate::engine::Progress::finish(self);
    }
}
