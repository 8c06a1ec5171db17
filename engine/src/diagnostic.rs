//! Errors tied to a place in a pipeline file, printed as `file:line:column: message`.

use std::fmt;

/// A 1-based line and column in a pipeline file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Location {
    /// 1-based line number.
    pub line: u64,
    /// 1-based column number.
    pub column: u64,
}

impl Location {
    /// A location from sqlparser's span start (0/0 when the parser has none).
    pub fn from_sql(loc: datafusion::sql::sqlparser::tokenizer::Location) -> Self {
        Self {
            line: loc.line,
            column: loc.column,
        }
    }

    /// True when the parser supplied no position.
    pub fn is_unknown(&self) -> bool {
        self.line == 0
    }
}

/// An error found in a pipeline file, with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineError {
    /// The file the error is in, as given on the command line.
    pub file: String,
    /// Where in the file.
    pub location: Location,
    /// What is wrong, and where possible what to write instead.
    pub message: String,
}

impl PipelineError {
    /// A new error at `location` in `file`.
    pub fn new(file: &str, location: Location, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            location,
            message: message.into(),
        }
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.location.line, self.location.column, self.message
        )
    }
}

impl std::error::Error for PipelineError {}

/// Every error found while loading a set of pipeline files.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<PipelineError>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<PipelineError> for Diagnostics {
    fn from(e: PipelineError) -> Self {
        Diagnostics(vec![e])
    }
}
