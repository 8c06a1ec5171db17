//! The object-store sink's options: where files go (see [`super::store`]), how they are
//! written and rolled, and the spill buffer.

use std::path::PathBuf;
use std::time::Duration;

use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use weir_engine::PipelineError;
use weir_engine::parse::Options;
use weir_engine::parse::options::{OptionSpec, OptionType};

use super::keys::{self, KeyLayout};
use super::store::{self, Target};
use super::uploader::Policy;

/// `url`.
pub const URL: OptionSpec = OptionSpec::new(
    "url",
    OptionType::Url,
    "`s3://bucket/prefix` (any S3-compatible store), `gs://bucket/prefix`, `az://container/prefix`, or `file:///absolute/directory`",
)
.required();
/// `endpoint`.
pub const ENDPOINT: OptionSpec = OptionSpec::new(
    "endpoint",
    OptionType::Url,
    "S3: the endpoint URL (`http://` allowed for a store on the local network)",
)
.derived("AWS");
/// `region`.
pub const REGION: OptionSpec =
    OptionSpec::new("region", OptionType::Text, "S3 region").derived("from the environment");
/// `path_style`.
pub const PATH_STYLE: OptionSpec = OptionSpec::new(
    "path_style",
    OptionType::Bool,
    "S3: path-style requests (`endpoint/bucket/key`), as MinIO and most S3-compatible stores want; `false` for virtual-hosted style",
)
.default("true");
/// `access_key_id`.
pub const ACCESS_KEY_ID: OptionSpec = OptionSpec::new(
    "access_key_id",
    OptionType::Secret,
    "S3 access key (write it as `'${ENV_VAR}'`); without it `AWS_ACCESS_KEY_ID`, `AWS_SESSION_TOKEN`, ... are used. `gs://` and `az://` take their credentials from their standard variables (`GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...)",
)
.derived("the standard environment variables");
/// `secret_access_key`.
pub const SECRET_ACCESS_KEY: OptionSpec = OptionSpec::new(
    "secret_access_key",
    OptionType::Secret,
    "S3 secret key (write it as `'${ENV_VAR}'`); without it `AWS_SECRET_ACCESS_KEY` is used",
)
.derived("the standard environment variables");
/// `timeout`.
pub const TIMEOUT: OptionSpec = OptionSpec::new(
    "timeout",
    OptionType::Duration,
    "per request; connecting gives up after 5 s, and a failed request is retried once before the file is spilled",
)
.default("30s");
/// `compression`.
pub const COMPRESSION: OptionSpec = OptionSpec::new(
    "compression",
    OptionType::Choice(&["zstd", "snappy", "none"]),
    "Parquet compression",
)
.default("zstd");
/// `zstd_level`.
pub const ZSTD_LEVEL: OptionSpec = OptionSpec::new(
    "zstd_level",
    OptionType::Integer,
    "zstd level (1 to 22), with `compression = 'zstd'`",
)
.default("3");
/// `row_group_rows`.
pub const ROW_GROUP_ROWS: OptionSpec = OptionSpec::new(
    "row_group_rows",
    OptionType::Integer,
    "Parquet row group size",
)
.default("65536");
/// `roll_rows`.
pub const ROLL_ROWS: OptionSpec = OptionSpec::new(
    "roll_rows",
    OptionType::Integer,
    "a file is closed and uploaded after this many rows (or at `roll_bytes` or `roll_interval`, whichever comes first)",
)
.default("1000000");
/// `roll_bytes`.
pub const ROLL_BYTES: OptionSpec = OptionSpec::new(
    "roll_bytes",
    OptionType::Bytes,
    "a file is closed and uploaded at this size",
)
.default("64MiB");
/// `roll_interval`.
pub const ROLL_INTERVAL: OptionSpec = OptionSpec::new(
    "roll_interval",
    OptionType::Duration,
    "a file is closed and uploaded at this age (checked every second, also without new rows)",
)
.default("1m");
/// `key_layout`.
pub const KEY_LAYOUT: OptionSpec = OptionSpec::new(
    "key_layout",
    OptionType::Text,
    "object keys below the URL's prefix: `/`-separated parts with `{pipeline}` (the sink's name), `{node}` (`--node-id`), `{schema}` (a hash of the output columns), `{date}`, `{hour}` (of the rows' first window start, UTC), `{start}`, `{end}` (their window range) and `{seq}` (required); without `{node}` two nodes writing to the same prefix overwrite each other's files (warned), without `{schema}` a changed output is refused",
)
.default(keys::DEFAULT_LAYOUT);
/// `spill_dir`.
pub const SPILL_DIR: OptionSpec = OptionSpec::new(
    "spill_dir",
    OptionType::Path,
    "directory for files waiting to be uploaded; the sink uses `spill_dir/SINK_NAME/`",
)
.default("spill");
/// `spill_max_bytes`.
pub const SPILL_MAX_BYTES: OptionSpec = OptionSpec::new(
    "spill_max_bytes",
    OptionType::Bytes,
    "disk budget of the spill directory",
)
.default("1GiB");
/// `spill_policy`.
pub const SPILL_POLICY: OptionSpec = OptionSpec::new(
    "spill_policy",
    OptionType::Choice(&["drop_oldest", "block"]),
    "at the budget: `drop_oldest` deletes the oldest spilled files (logged as errors, counted in `weir_sink_dropped_files_total` and `weir_sink_dropped_rows_total`); `block` stops taking new files, which slows the pipeline down and so the sources (an MQTT broker then holds the messages)",
)
.default("drop_oldest");

/// Every option of the sink.
pub const OPTIONS: &[OptionSpec] = &[
    URL,
    ENDPOINT,
    REGION,
    PATH_STYLE,
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    TIMEOUT,
    COMPRESSION,
    ZSTD_LEVEL,
    ROW_GROUP_ROWS,
    ROLL_ROWS,
    ROLL_BYTES,
    ROLL_INTERVAL,
    KEY_LAYOUT,
    SPILL_DIR,
    SPILL_MAX_BYTES,
    SPILL_POLICY,
];

/// When to close a file and start the next.
#[derive(Debug, Clone, Copy)]
pub struct Roll {
    /// Rows per file at most.
    pub rows: u64,
    /// Bytes per file at most.
    pub bytes: u64,
    /// Age of a file at which it is closed.
    pub interval: Duration,
}

/// The sink's settings.
#[derive(Debug)]
pub struct Settings {
    /// Where files go.
    pub target: Target,
    /// How their keys are made.
    pub layout: KeyLayout,
    /// How files are written.
    pub props: WriterProperties,
    /// When files are closed.
    pub roll: Roll,
    /// This sink's spill directory.
    pub spill_dir: PathBuf,
    /// Its budget.
    pub spill_max_bytes: u64,
    /// What happens at the budget.
    pub policy: Policy,
}

impl Settings {
    /// Reads the options of sink `name`.
    pub fn from_options(o: &Options, name: &str) -> Result<Self, PipelineError> {
        let target = store::target(o)?;
        let layout = match o.entry(&KEY_LAYOUT) {
            Some(e) => KeyLayout::parse(&e.value).map_err(|m| o.value_error(e, &m))?,
            None => KeyLayout::parse(keys::DEFAULT_LAYOUT).expect("the default layout reads"),
        };
        if !layout.uses("node") {
            tracing::warn!(
                sink = name,
                file = o.file(),
                line = o.statement_location().line,
                "key_layout has no {{node}}: two Weir nodes writing this sink to the same prefix would overwrite each other's files"
            );
        }
        let level = o.value::<u64>(&ZSTD_LEVEL)?.clamp(1, 22) as i32;
        let compression = match o.value::<String>(&COMPRESSION)?.as_str() {
            "snappy" => Compression::SNAPPY,
            "none" => Compression::UNCOMPRESSED,
            _ => Compression::ZSTD(
                ZstdLevel::try_new(level)
                    .map_err(|e| o.error(format!("internal: zstd level {level}: {e}")))?,
            ),
        };
        let row_group_rows = o.value::<u64>(&ROW_GROUP_ROWS)?.max(1) as usize;
        let roll = Roll {
            rows: o.value::<u64>(&ROLL_ROWS)?.max(1),
            bytes: o.value::<u64>(&ROLL_BYTES)?.max(1024),
            interval: o.value(&ROLL_INTERVAL)?,
        };
        let spill_dir = o.value::<PathBuf>(&SPILL_DIR)?.join(name);
        let policy = match o.value::<String>(&SPILL_POLICY)?.as_str() {
            "block" => Policy::Block,
            _ => Policy::DropOldest,
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(row_group_rows))
            .build();
        Ok(Self {
            target,
            layout,
            props,
            roll,
            spill_dir,
            spill_max_bytes: o.value(&SPILL_MAX_BYTES)?,
            policy,
        })
    }
}
