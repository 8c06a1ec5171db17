//! The `stdout` sink's options.

use weir_engine::PipelineError;
use weir_engine::parse::Options;
use weir_engine::parse::options::{OptionSpec, OptionType};

/// `format`.
pub const FORMAT: OptionSpec = OptionSpec::new(
    "format",
    OptionType::Choice(&["table", "ndjson"]),
    "`table` (a header line with the sink name, then a table per batch) or `ndjson`",
)
.default("table");

/// Every option of the sink.
pub const OPTIONS: &[OptionSpec] = &[FORMAT];

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A text table per batch.
    Table,
    /// One JSON object per row.
    Ndjson,
}

/// The sink's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Output format.
    pub format: Format,
}

impl Settings {
    /// Reads the options.
    pub fn from_options(o: &Options) -> Result<Self, PipelineError> {
        let format = match o.value::<String>(&FORMAT)?.as_str() {
            "ndjson" => Format::Ndjson,
            _ => Format::Table,
        };
        Ok(Self { format })
    }
}
