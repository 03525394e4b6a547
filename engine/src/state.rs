//! The persistent state DB under the build root.
//!
//! `<build_root>/.buildchain/state.json` is a snapshot; `state.journal` holds one JSON line per
//! task completed since that snapshot. A task's record lands in the journal only after all its
//! outputs were renamed into place, so a crash (even `kill -9`) at any point leaves every
//! recorded task truthful; unrecorded tasks simply run again. The snapshot is rewritten
//! atomically (temp + fsync + rename) at the end of a run and the journal truncated.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What we know about a file's content, keyed by its stat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Device number (0 in records written before it was kept: never matched by inode).
    #[serde(default)]
    pub dev: u64,
    /// sha256 hex of the content (`symlink:<target>` for symlinks).
    pub sha256: String,
    /// When the hash was taken (ns); a file modified in the same instant is re-hashed.
    pub hashed_at_ns: i128,
}

/// The last successful run of a task.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Input key (`file:…`, `value:…`, `tree:…`) → signature.
    pub inputs: BTreeMap<String, String>,
    /// Output path → sha256 (or `symlink:`/`missing`).
    pub outputs: BTreeMap<PathBuf, String>,
    /// Duration of that run, seconds.
    pub duration_s: f64,
    /// The outputs came from a [`crate::ResultCache`] instead of running the action.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_cache: bool,
}

/// The whole DB.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Per-task records.
    pub tasks: BTreeMap<String, TaskRecord>,
    /// Content cache: path → record.
    pub files: BTreeMap<PathBuf, FileRecord>,
}

#[derive(Serialize, Deserialize)]
struct JournalEntry {
    task: String,
    record: Option<TaskRecord>,
    files: BTreeMap<PathBuf, FileRecord>,
}

/// Handle on the on-disk DB.
pub struct StateDb {
    dir: PathBuf,
    journal: Option<File>,
}

impl StateDb {
    /// Opens the DB directory (`<build_root>/.buildchain`).
    pub fn new(build_root: &Path) -> Self {
        StateDb {
            dir: build_root.join(".buildchain"),
            journal: None,
        }
    }

    /// Directory of the DB.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the snapshot would change: a journal (of this run or a crashed one) or no
    /// snapshot yet. A no-op build skips rewriting the snapshot.
    pub fn has_pending(&self) -> bool {
        self.journal.is_some()
            || self.dir.join("state.journal").exists()
            || !self.dir.join("state.json").exists()
    }

    /// Loads the snapshot and replays the journal. A damaged snapshot or a torn last journal
    /// line (crash mid-write) is tolerated: what cannot be read is simply not known, so the
    /// affected tasks run again.
    pub fn load(&self) -> State {
        let mut state: State = fs::read(self.dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Ok(f) = File::open(self.dir.join("state.journal")) {
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                let Ok(entry) = serde_json::from_str::<JournalEntry>(&line) else {
                    break;
                };
                match entry.record {
                    Some(r) => {
                        state.tasks.insert(entry.task, r);
                    }
                    None => {
                        state.tasks.remove(&entry.task);
                    }
                }
                state.files.extend(entry.files);
            }
        }
        state
    }

    /// Appends a task's new record (or its removal with `None`) to the journal.
    pub fn append(
        &mut self,
        task: &str,
        record: Option<&TaskRecord>,
        files: BTreeMap<PathBuf, FileRecord>,
    ) -> Result<()> {
        if self.journal.is_none() {
            crate::fs::create_dir_all(&self.dir)?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("state.journal"))
                .context("cannot open the state journal")?;
            self.journal = Some(f);
        }
        let entry = JournalEntry {
            task: task.to_string(),
            record: record.cloned(),
            files,
        };
        let mut line = serde_json::to_vec(&entry)?;
        line.push(b'\n');
        if let Some(j) = self.journal.as_mut() {
            j.write_all(&line)
                .context("cannot write the state journal")?;
        }
        Ok(())
    }

    /// Writes a full snapshot atomically and empties the journal.
    pub fn save(&mut self, state: &State) -> Result<()> {
        crate::fs::create_dir_all(&self.dir)?;
        let mut s = state.clone();
        s.version = 1;
        let bytes = serde_json::to_vec(&s)?;
        let snapshot = self.dir.join("state.json");
        let journal = self.dir.join("state.journal");
        // A no-op run leaves the DB as it found it (same bytes, same inode, same mtime).
        if self.journal.is_none()
            && fs::symlink_metadata(&journal).is_err()
            && fs::read(&snapshot).is_ok_and(|old| old == bytes)
        {
            return Ok(());
        }
        crate::fs::write_atomic(&snapshot, &bytes)?;
        self.journal = None;
        let _ = fs::remove_file(self.dir.join("state.journal"));
        Ok(())
    }
}
