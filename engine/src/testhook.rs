//! Crash points for fault tests, compiled always and inert unless set.
//!
//! - `BUILDCHAIN_TEST_KILL_AT=<point>:<n>`: the process sends itself `SIGKILL` the `n`-th time
//!   (from 1) execution passes [`kill_point`]`(<point>)`, in the middle of a task.
//! - `BUILDCHAIN_TEST_POINTS_LOG=<file>`: every pass appends `<point>\n` to the file, so a test
//!   can count the points of a clean run and spread its kills over them.
//!
//! Points: `fetch` (every 64 KiB of a registry blob received), `store` (every 256 KiB written
//! to a store temp file), `image-layer` (a local image layer stored), `image-dir` (an image
//! directory built beside its destination, before the rename), `rpm` (an RPM built, before it
//! is written), `repodata` (a repodata file written, before `repomd.xml`), `salt` (a Salt file
//! rendered or copied), `master` (an ISO being mastered, at each progress report), `write` (any
//! atomic file before its rename).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

struct Hook {
    kill: Option<(String, u64)>,
    log: Option<Mutex<std::fs::File>>,
    count: AtomicU64,
}

fn hook() -> &'static Option<Hook> {
    static HOOK: OnceLock<Option<Hook>> = OnceLock::new();
    HOOK.get_or_init(|| {
        let kill = std::env::var("BUILDCHAIN_TEST_KILL_AT").ok().and_then(|v| {
            let (p, n) = v.rsplit_once(':')?;
            Some((p.to_string(), n.parse().ok()?))
        });
        let log = std::env::var_os("BUILDCHAIN_TEST_POINTS_LOG").and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
                .map(Mutex::new)
        });
        if kill.is_none() && log.is_none() {
            return None;
        }
        Some(Hook {
            kill,
            log,
            count: AtomicU64::new(0),
        })
    })
}

/// Marks a named point inside a task (see the module documentation). Does nothing unless a
/// test set `BUILDCHAIN_TEST_KILL_AT` or `BUILDCHAIN_TEST_POINTS_LOG`.
pub fn kill_point(point: &str) {
    let Some(h) = hook() else {
        return;
    };
    if let Some(log) = &h.log {
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{point}");
        }
    }
    if let Some((p, n)) = &h.kill {
        if p == point && h.count.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            // SAFETY: kill(2) on our own process id.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}
