//! Why a task runs (or would run): [`DirtyReason`], shown by `info`, dry runs, the JSON report and
//! `build.log` (as its text, e.g. `changed file salt/top.sls`).

use std::fmt;

use serde::{Serialize, Serializer};

/// One input of a task's signature, parsed from its key in the state DB (`file:<path>`,
/// `tree:<path>`, `value:<name>`; paths relative to the repository root).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum InputKey {
    /// A file (given, or found under a tree input).
    File(String),
    /// A directory tree (its presence; its files are `File` keys).
    Tree(String),
    /// A named value.
    Value(String),
    /// A key of another form (none today; kept verbatim).
    Other(String),
}

impl InputKey {
    /// Parses a signature key.
    pub fn parse(key: &str) -> Self {
        if let Some(f) = key.strip_prefix("file:") {
            InputKey::File(f.to_string())
        } else if let Some(t) = key.strip_prefix("tree:") {
            InputKey::Tree(t.to_string())
        } else if let Some(v) = key.strip_prefix("value:") {
            InputKey::Value(v.to_string())
        } else {
            InputKey::Other(key.to_string())
        }
    }
}

impl fmt::Display for InputKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputKey::File(p) => write!(f, "file {p}"),
            InputKey::Tree(p) => write!(f, "tree {p}"),
            InputKey::Value(v) => write!(f, "value `{v}`"),
            InputKey::Other(k) => f.write_str(k),
        }
    }
}

/// Why a task is not up to date (like cargo's `DirtyReason`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DirtyReason {
    /// No successful run is recorded.
    NeverRan,
    /// An input the last run did not have.
    NewInput(InputKey),
    /// An input whose content or value differs.
    Changed(InputKey),
    /// An input the last run had and this one has not.
    RemovedInput(InputKey),
    /// More input differences than shown.
    MoreInputs(usize),
    /// A recorded output is gone (path relative to the repository root).
    OutputMissing(String),
    /// A recorded output's content differs.
    OutputModified(String),
    /// A declared output the last run did not record.
    NewOutput(String),
    /// More output differences than shown.
    MoreOutputs(usize),
    /// Dry run: a dependency would run (and rewrite what this task reads).
    DependencyWouldRun(String),
    /// Not run: a dependency failed.
    DependencyFailed(String),
}

impl fmt::Display for DirtyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirtyReason::NeverRan => f.write_str("never ran successfully"),
            DirtyReason::NewInput(k) => write!(f, "new input {k}"),
            DirtyReason::Changed(k) => write!(f, "changed {k}"),
            DirtyReason::RemovedInput(k) => write!(f, "removed input {k}"),
            DirtyReason::MoreInputs(n) => write!(f, "… and {n} more"),
            DirtyReason::OutputMissing(p) => write!(f, "output missing: {p}"),
            DirtyReason::OutputModified(p) => write!(f, "output modified: {p}"),
            DirtyReason::NewOutput(p) => write!(f, "new output {p}"),
            DirtyReason::MoreOutputs(n) => write!(f, "… and {n} more outputs"),
            DirtyReason::DependencyWouldRun(d) => write!(f, "dependency {d} would run"),
            DirtyReason::DependencyFailed(d) => write!(f, "dependency {d} failed"),
        }
    }
}

/// Serialised as its text (the JSON report and `build.log` keep their format).
impl Serialize for DirtyReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl PartialEq<&str> for DirtyReason {
    fn eq(&self, other: &&str) -> bool {
        let text = self.to_string();
        text.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::{DirtyReason as R, InputKey as K};

    #[test]
    fn texts_are_those_info_always_printed() {
        let cases = [
            (R::NeverRan, "never ran successfully"),
            (
                R::Changed(K::parse("file:salt/top.sls")),
                "changed file salt/top.sls",
            ),
            (
                R::NewInput(K::parse("value:version")),
                "new input value `version`",
            ),
            (
                R::RemovedInput(K::parse("tree:salt/states")),
                "removed input tree salt/states",
            ),
            (R::MoreInputs(3), "… and 3 more"),
            (
                R::OutputMissing("_build/root/product.txt".into()),
                "output missing: _build/root/product.txt",
            ),
            (
                R::OutputModified("dist/x.iso".into()),
                "output modified: dist/x.iso",
            ),
            (R::NewOutput("dist/x.iso".into()), "new output dist/x.iso"),
            (R::MoreOutputs(2), "… and 2 more outputs"),
            (
                R::DependencyWouldRun("images".into()),
                "dependency images would run",
            ),
            (
                R::DependencyFailed("images".into()),
                "dependency images failed",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(serde_json::to_string(&reason).unwrap(), format!("{text:?}"));
        }
    }
}
