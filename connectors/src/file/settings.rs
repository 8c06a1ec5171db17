//! The options of the file source and the file sink.

use std::path::{Path, PathBuf};
use std::time::Duration;
use weir_engine::dead_letter::{self, DeadLetterFile};

use weir_engine::PipelineError;
use weir_engine::parse::Options;
use weir_engine::parse::options::{OptionSpec, OptionType};

use crate::columns::EpochUnit;

/// Source `path`.
pub const SOURCE_PATH: OptionSpec = OptionSpec::new(
    "path",
    OptionType::Path,
    "a file, or a directory (all its files, in name order)",
)
.required();
/// Source `format`.
pub const SOURCE_FORMAT: OptionSpec = OptionSpec::new(
    "format",
    OptionType::Choice(&["parquet", "csv", "ndjson"]),
    "`parquet`, `csv` (with a header line) or `ndjson`",
)
.derived("from the extension");
/// `pace`.
pub const PACE: OptionSpec = OptionSpec::new(
    "pace",
    OptionType::Choice(&["max", "original"]),
    "`max`: as fast as possible; `original`: at the pace of the event times (needs `event_time`)",
)
.default("max");
/// `speed`.
pub const SPEED: OptionSpec = OptionSpec::new(
    "speed",
    OptionType::Number,
    "with `pace = 'original'`: replay this many times faster",
)
.default("1");
/// Source `batch_rows`.
pub const BATCH_ROWS: OptionSpec =
    OptionSpec::new("batch_rows", OptionType::Integer, "rows per batch").default("8192");

/// `max_bad_rows`.
pub const MAX_BAD_ROWS: OptionSpec = OptionSpec::new(
    "max_bad_rows",
    OptionType::Integer,
    "CSV and NDJSON: the source fails once more records than this did not decode (`0`: at the first); without it bad records are skipped and counted however many",
);
/// `dead_letter`.
pub const DEAD_LETTER: OptionSpec = OptionSpec::new(
    "dead_letter",
    OptionType::Path,
    "NDJSON file that receives every record that did not decode (time, file:line, reason, error, record)",
);

/// `timestamp_unit`.
pub const TIMESTAMP_UNIT: OptionSpec = OptionSpec::new(
    "timestamp_unit",
    OptionType::Choice(&["s", "ms", "us", "ns"]),
    "unit of epoch numbers filling `TIMESTAMP` columns: integer or float columns of Parquet files, numbers in NDJSON and CSV (text times are RFC 3339). Event times before 1990 or after 2100 are warned about: a unit mismatch",
)
.default("ms");

/// Every option of the file source.
pub const SOURCE_OPTIONS: &[OptionSpec] = &[
    SOURCE_PATH,
    SOURCE_FORMAT,
    PACE,
    SPEED,
    TIMESTAMP_UNIT,
    BATCH_ROWS,
    MAX_BAD_ROWS,
    DEAD_LETTER,
    dead_letter::MAX_BYTES,
    dead_letter::PAYLOAD_BYTES,
];

/// Table `path`.
pub const TABLE_PATH: OptionSpec = OptionSpec::new(
    "path",
    OptionType::Path,
    "the file (relative: to the directory of the pipeline file); read through symbolic links, so a Kubernetes ConfigMap swap is seen",
)
.required();
/// Table `format`.
pub const TABLE_FORMAT: OptionSpec = OptionSpec::new(
    "format",
    OptionType::Choice(&["parquet", "csv", "ndjson", "json"]),
    "`parquet`, `csv` (a header line naming the declared columns in order), `ndjson` or `json` (an array of objects)",
)
.derived("from the extension");

/// Every option of the file table.
pub const TABLE_OPTIONS: &[OptionSpec] = &[TABLE_PATH, TABLE_FORMAT, TIMESTAMP_UNIT];

/// Sink `path`.
pub const SINK_PATH: OptionSpec =
    OptionSpec::new("path", OptionType::Path, "directory (created if missing)").required();
/// Sink `format`.
pub const SINK_FORMAT: OptionSpec = OptionSpec::new(
    "format",
    OptionType::Choice(&["parquet", "ndjson"]),
    "`parquet` (zstd) or `ndjson`",
)
.default("parquet");
/// `roll_rows`.
pub const ROLL_ROWS: OptionSpec = OptionSpec::new(
    "roll_rows",
    OptionType::Integer,
    "start a new file after this many rows",
)
.default("1000000");
/// `roll_interval`.
pub const ROLL_INTERVAL: OptionSpec = OptionSpec::new(
    "roll_interval",
    OptionType::Duration,
    "close the current file when it is older than this (checked every second, also without new rows)",
)
.default("5m");

/// Every option of the file sink.
pub const SINK_OPTIONS: &[OptionSpec] = &[SINK_PATH, SINK_FORMAT, ROLL_ROWS, ROLL_INTERVAL];

/// What a file table reads.
#[derive(Debug)]
pub struct TableSettings {
    /// The file, as written.
    pub path: PathBuf,
    /// Its format.
    pub format: super::table::TableFormat,
    /// Unit of epoch numbers in `TIMESTAMP` columns.
    pub unit: EpochUnit,
}

impl TableSettings {
    /// Reads the options of a file table.
    pub fn from_options(o: &Options) -> Result<Self, PipelineError> {
        use super::table::TableFormat;
        let path: PathBuf = o.value(&TABLE_PATH)?;
        let format = match o.optional::<String>(&TABLE_FORMAT)? {
            Some(f) => TableFormat::named(&f.to_ascii_lowercase()).expect("a declared choice"),
            None => TableFormat::from_extension(&path).ok_or_else(|| {
                o.error(format!(
                    "cannot tell the format of '{}' from its extension: add format = 'csv' (or parquet, ndjson, json)",
                    path.display()
                ))
            })?,
        };
        let unit =
            EpochUnit::parse(&o.value::<String>(&TIMESTAMP_UNIT)?).expect("a declared choice");
        Ok(Self { path, format, unit })
    }
}

/// File formats the file source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

impl InputFormat {
    fn named(name: &str) -> Option<InputFormat> {
        match name {
            "parquet" => Some(InputFormat::Parquet),
            "csv" => Some(InputFormat::Csv),
            "ndjson" | "jsonl" | "json" => Some(InputFormat::Ndjson),
            _ => None,
        }
    }

    fn from_extension(p: &Path) -> Option<InputFormat> {
        Self::named(&p.extension()?.to_str()?.to_ascii_lowercase())
    }
}

/// Replay speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as possible.
    Max,
    /// Original pace sped up by this factor.
    Original(f64),
}

/// The file source's settings.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The files, in replay order.
    pub files: Vec<PathBuf>,
    /// Their format.
    pub format: InputFormat,
    /// Replay speed.
    pub pace: Pace,
    /// Rows per batch.
    pub batch_rows: usize,
    /// Bad records tolerated (None: any number).
    pub max_bad_rows: Option<u64>,
    /// Where bad records go.
    pub dead_letter: Option<DeadLetterFile>,
    /// Unit of epoch numbers in time columns.
    pub unit: EpochUnit,
}

/// The files `path` names: itself, or the visible files of a directory in name order.
fn list_files(o: &Options) -> Result<Vec<PathBuf>, PipelineError> {
    let entry = o.require(&SOURCE_PATH)?;
    let path = PathBuf::from(&entry.value);
    if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| o.value_error(entry, &format!("cannot read directory: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        v.sort();
        Ok(v)
    } else if path.is_file() {
        Ok(vec![path])
    } else {
        Err(o.value_error(entry, "no such file or directory"))
    }
}

impl SourceSettings {
    /// Reads the options; `has_event_time` tells whether the source declares one.
    pub fn from_options(o: &Options, has_event_time: bool) -> Result<Self, PipelineError> {
        let files = list_files(o)?;
        let format = match o.optional::<String>(&SOURCE_FORMAT)? {
            Some(f) => InputFormat::named(&f),
            None => files.first().and_then(|f| InputFormat::from_extension(f)),
        }
        .ok_or_else(|| {
            o.error("cannot tell the file format from the name: add format = 'parquet', 'csv' or 'ndjson'")
        })?;
        let pace = match o.value::<String>(&PACE)?.as_str() {
            "original" => Pace::Original(o.value::<f64>(&SPEED)?.max(1e-6)),
            _ => Pace::Max,
        };
        if matches!(pace, Pace::Original(_)) && !has_event_time {
            return Err(o.error(
                "pace = 'original' needs an event-time column: add event_time = '<column>'",
            ));
        }
        let batch_rows = o.value::<u64>(&BATCH_ROWS)?.clamp(1, 1 << 20) as usize;
        Ok(Self {
            files,
            format,
            pace,
            batch_rows,
            max_bad_rows: o.optional(&MAX_BAD_ROWS)?,
            dead_letter: DeadLetterFile::from_options(o, &DEAD_LETTER)?,
            unit: EpochUnit::parse(&o.value::<String>(&TIMESTAMP_UNIT)?)
                .expect("a declared choice"),
        })
    }
}

/// File formats the file sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Apache Parquet (zstd).
    Parquet,
    /// One JSON object per line.
    Ndjson,
}

impl OutputFormat {
    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Ndjson => "ndjson",
        }
    }
}

/// The file sink's settings.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Directory written to.
    pub dir: PathBuf,
    /// File format.
    pub format: OutputFormat,
    /// Rows per file at most.
    pub roll_rows: u64,
    /// Age of a file at which it is closed.
    pub roll_interval: Duration,
}

impl SinkSettings {
    /// Reads the options.
    pub fn from_options(o: &Options) -> Result<Self, PipelineError> {
        let dir = PathBuf::from(&o.require(&SINK_PATH)?.value);
        let format = match o.value::<String>(&SINK_FORMAT)?.as_str() {
            "ndjson" => OutputFormat::Ndjson,
            _ => OutputFormat::Parquet,
        };
        Ok(Self {
            dir,
            format,
            roll_rows: o.value::<u64>(&ROLL_ROWS)?.max(1),
            roll_interval: o.value(&ROLL_INTERVAL)?,
        })
    }
}
