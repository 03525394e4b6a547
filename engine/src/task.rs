//! Task definitions: what a task reads, writes, depends on, and does.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::progress::Progress;

/// One input a task's up-to-date signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A single file (content-tracked; a missing file is recorded as missing).
    File(PathBuf),
    /// Every regular file and symlink under a directory, recursively (content-tracked, so adding
    /// or removing a file changes the signature).
    Tree(PathBuf),
    /// A named value: a version, a setting, a template context, a tool version, an inventory
    /// entry serialised as JSON, …
    Value {
        /// Stable name shown in `info` ("version", "inventory entry", …).
        key: String,
        /// The value itself (compared verbatim).
        value: String,
    },
}

/// What a task does when it runs: a small struct holding exactly what the work needs (or a
/// closure, for one-liners). It writes its outputs atomically (see [`crate::fs`]).
pub trait Action: Send + Sync {
    /// Does the work; outputs found on the way are registered on `ctx`.
    fn run(&self, ctx: &mut TaskContext) -> anyhow::Result<()>;
}

impl<F> Action for F
where
    F: Fn(&mut TaskContext) -> anyhow::Result<()> + Send + Sync,
{
    fn run(&self, ctx: &mut TaskContext) -> anyhow::Result<()> {
        self(ctx)
    }
}

/// A node of the build graph.
#[derive(Clone)]
pub struct Task {
    /// `task`, `task:item` or `task:item/step`.
    pub name: String,
    /// One line shown by `list`.
    pub doc: String,
    /// Shown by `list` without `--private`/`--all`.
    pub public: bool,
    /// An internal step (aggregates other tasks' outputs): shown only by `list --private`.
    pub internal: bool,
    /// Tasks that must succeed first.
    pub deps: Vec<String>,
    /// Inputs of the up-to-date signature (evaluated after the dependencies ran).
    pub inputs: Vec<Input>,
    /// Files the task writes (more may be added at run time with [`TaskContext::add_output`]).
    pub outputs: Vec<PathBuf>,
    /// Directories the task owns whole (e.g. an image's `dir:` layout): `clean` removes them with
    /// everything in them, even when no state record lists their files.
    pub owned_dirs: Vec<PathBuf>,
    /// `None` for grouping tasks (they only have dependencies).
    pub action: Option<Arc<dyn Action>>,
    /// Files left out of tree inputs besides the task's outputs (files later tasks write into
    /// the same tree).
    pub input_excludes: Vec<PathBuf>,
    /// Its outputs are a pure function of its inputs: a [`crate::ResultCache`] may store them
    /// and give them back instead of running the action.
    pub cacheable: bool,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .field("public", &self.public)
            .field("deps", &self.deps)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("owned_dirs", &self.owned_dirs)
            .field("action", &self.action.is_some())
            .field("cacheable", &self.cacheable)
            .finish()
    }
}

impl Task {
    /// A private task with no inputs, outputs, deps or action.
    pub fn new(name: impl Into<String>) -> Self {
        Task {
            name: name.into(),
            doc: String::new(),
            public: false,
            internal: false,
            deps: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            owned_dirs: Vec::new(),
            action: None,
            input_excludes: Vec::new(),
            cacheable: false,
        }
    }
    /// Lets a [`crate::ResultCache`] store and restore this task's outputs (they must be a pure
    /// function of its inputs).
    pub fn cacheable(mut self) -> Self {
        self.cacheable = true;
        self
    }
    /// Leaves `path` out of this task's tree inputs.
    pub fn exclude_input(mut self, path: impl AsRef<Path>) -> Self {
        self.input_excludes.push(path.as_ref().to_path_buf());
        self
    }
    /// Sets the one-line description.
    pub fn doc(mut self, doc: impl Into<String>) -> Self {
        self.doc = doc.into();
        self
    }
    /// Marks the task public (listed by default).
    pub fn public(mut self) -> Self {
        self.public = true;
        self
    }
    /// Marks the task internal (listed by `list --private` only).
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }
    /// Adds a dependency.
    pub fn dep(mut self, name: impl Into<String>) -> Self {
        self.deps.push(name.into());
        self
    }
    /// Adds several dependencies.
    pub fn deps<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.deps.extend(names.into_iter().map(Into::into));
        self
    }
    /// Adds a file input.
    pub fn input_file(mut self, path: impl AsRef<Path>) -> Self {
        self.inputs.push(Input::File(path.as_ref().to_path_buf()));
        self
    }
    /// Adds a directory-tree input.
    pub fn input_tree(mut self, path: impl AsRef<Path>) -> Self {
        self.inputs.push(Input::Tree(path.as_ref().to_path_buf()));
        self
    }
    /// Adds a value input.
    pub fn value(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.inputs.push(Input::Value {
            key: key.into(),
            value: value.into(),
        });
        self
    }
    /// Declares an output file.
    pub fn output(mut self, path: impl AsRef<Path>) -> Self {
        self.outputs.push(path.as_ref().to_path_buf());
        self
    }
    /// Declares a directory the task owns whole (see [`Task::owned_dirs`]).
    pub fn owns_dir(mut self, path: impl AsRef<Path>) -> Self {
        self.owned_dirs.push(path.as_ref().to_path_buf());
        self
    }
    /// Sets the action to a closure (for one-liners; see [`Task::runs`]).
    pub fn action<F>(mut self, f: F) -> Self
    where
        F: Fn(&mut TaskContext) -> anyhow::Result<()> + Send + Sync + 'static,
    {
        self.action = Some(Arc::new(f));
        self
    }
    /// Sets the action to an [`Action`] struct.
    pub fn runs(mut self, action: impl Action + 'static) -> Self {
        self.action = Some(Arc::new(action));
        self
    }
}

/// Handed to a running action.
pub struct TaskContext {
    pub(crate) name: String,
    pub(crate) extra_outputs: Vec<PathBuf>,
    pub(crate) known_digests: Vec<(PathBuf, String)>,
    pub(crate) report: Arc<dyn super::report::Report>,
    pub(crate) cache: Arc<super::signature::HashCache>,
}

impl TaskContext {
    /// A context for running an action outside the engine (tests, library callers): quiet
    /// progress, a fresh content cache.
    pub fn standalone(name: &str) -> Self {
        TaskContext {
            name: name.to_string(),
            extra_outputs: Vec::new(),
            known_digests: Vec::new(),
            report: Arc::new(super::report::SilentReport),
            cache: Arc::new(super::signature::HashCache::default()),
        }
    }
    /// Outputs registered with [`TaskContext::add_output`] so far.
    pub fn added_outputs(&self) -> &[PathBuf] {
        &self.extra_outputs
    }
    /// Name of the running task.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Records a file written by this run that was not declared up front (e.g. the blobs of a
    /// fetched image). It is pruned when a later run no longer produces it.
    pub fn add_output(&mut self, path: impl AsRef<Path>) {
        self.extra_outputs.push(path.as_ref().to_path_buf());
    }
    /// Tells the engine the sha256 (hex) of an output it just wrote, sparing a re-read.
    pub fn record_digest(&mut self, path: impl AsRef<Path>, sha256_hex: impl Into<String>) {
        self.known_digests
            .push((path.as_ref().to_path_buf(), sha256_hex.into()));
    }
    /// sha256 hex of a file through the engine's content cache (no re-read when its stat is
    /// unchanged since it was last hashed).
    pub fn sha256(&self, path: &Path) -> anyhow::Result<String> {
        self.cache.signature(path)
    }
    /// The regular files and symlinks under `dir`, sorted: during a run, the engine's listing,
    /// shared by every task and action that reads the same tree until a task changes it.
    pub fn walk(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        self.cache.walk(dir)
    }
    /// A progress indicator for long work (a bar on a terminal, plain lines otherwise).
    pub fn progress(&self, total_bytes: Option<u64>, message: &str) -> Progress {
        self.report.progress(&self.name, total_bytes, message)
    }
    /// A human-readable note printed with the task name.
    pub fn note(&self, message: &str) {
        self.report.note(&self.name, message);
    }
}
