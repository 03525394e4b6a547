//! Output formats of the report verbs (`--format`), as clap value enums.

/// `--format text|json` of `plan`, `solution validate` and `verify`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReportFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// `--format text|json|html` of `diff`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiffFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON document.
    Json,
    /// A self-contained HTML page.
    Html,
}
