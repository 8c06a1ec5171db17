//! The Modbus source's options: where the devices are, which units, how often, and the
//! register map.

use weir_engine::parse::options::{OptionSpec, OptionType};

/// `url`.
pub const URL: OptionSpec = OptionSpec::new(
    "url",
    OptionType::Url,
    "`tcp://host[:port]` (502) or `rtu:///dev/ttyXXX`",
)
.required();
/// `baud_rate`.
pub const BAUD_RATE: OptionSpec =
    OptionSpec::new("baud_rate", OptionType::Integer, "RTU: line speed").default("19200");
/// `parity`.
pub const PARITY: OptionSpec = OptionSpec::new(
    "parity",
    OptionType::Choice(&["none", "even", "odd"]),
    "RTU: parity (the Modbus serial-line default is even)",
)
.default("even");
/// `data_bits`.
pub const DATA_BITS: OptionSpec = OptionSpec::new(
    "data_bits",
    OptionType::Choice(&["5", "6", "7", "8"]),
    "RTU: data bits",
)
.default("8");
/// `stop_bits`.
pub const STOP_BITS: OptionSpec = OptionSpec::new(
    "stop_bits",
    OptionType::Choice(&["1", "2"]),
    "RTU: stop bits",
)
.default("1");
/// `unit_id`.
pub const UNIT_ID: OptionSpec = OptionSpec::new(
    "unit_id",
    OptionType::Text,
    "unit (slave) ids to poll: `1`, `1,2,7`, `1-4`",
)
.default("1");
/// `interval`.
pub const INTERVAL: OptionSpec = OptionSpec::new(
    "interval",
    OptionType::Duration,
    "time between polls (a poll that takes longer delays the next one); `0s` polls back to back",
)
.default("1s");
/// `batch_latency`.
pub const BATCH_LATENCY: OptionSpec = OptionSpec::new(
    "batch_latency",
    OptionType::Duration,
    "with polls faster than this, their rows are sent together, at most this late (and at most 1000 rows at once)",
)
.default("50ms");
/// `timeout`.
pub const TIMEOUT: OptionSpec = OptionSpec::new(
    "timeout",
    OptionType::Duration,
    "how long to wait for each answer",
)
.default("1s");
/// `retries`.
pub const RETRIES: OptionSpec = OptionSpec::new(
    "retries",
    OptionType::Integer,
    "retries (at most 10) of a request that timed out or whose connection failed (on a new connection); exception answers are not retried",
)
.default("1");
/// `registers`.
pub const REGISTERS: OptionSpec = OptionSpec::new(
    "registers",
    OptionType::Text,
    "the register map inline: entries separated by `;` or new lines",
);
/// `register_map`.
pub const REGISTER_MAP: OptionSpec = OptionSpec::new(
    "register_map",
    OptionType::Path,
    "a YAML file (or `.json`) with the map under `registers:`, relative to the pipeline file; may be combined with `registers`",
);
/// `max_gap`.
pub const MAX_GAP: OptionSpec = OptionSpec::new(
    "max_gap",
    OptionType::Integer,
    "unmapped registers (or bits) a read may span to join two neighbours; `0` for devices that refuse reads over unmapped addresses",
)
.default("16");
/// `coalesce`.
pub const COALESCE: OptionSpec = OptionSpec::new(
    "coalesce",
    OptionType::Bool,
    "`false`: one request per mapped value, for devices that answer only reads of exactly one value",
)
.default("true");
/// `time_column`.
pub const TIME_COLUMN: OptionSpec = OptionSpec::new(
    "time_column",
    OptionType::Text,
    "a `TIMESTAMP` column filled with the time the unit's first answer of the poll arrived",
)
.derived("the `event_time` column");
/// `unit_column`.
pub const UNIT_COLUMN: OptionSpec = OptionSpec::new(
    "unit_column",
    OptionType::Text,
    "a column filled with the unit id",
);
/// `timestamp_unit`.
pub const TIMESTAMP_UNIT: OptionSpec = OptionSpec::new(
    "timestamp_unit",
    OptionType::Choice(&["s", "ms", "us", "ns"]),
    "unit of epoch numbers read from registers into `TIMESTAMP` columns",
)
.default("s");

/// `unit_id` of a sink.
pub const SINK_UNIT_ID: OptionSpec = OptionSpec::new(
    "unit_id",
    OptionType::Text,
    "units (slave ids) the sink may write to: `1`, `1,2,7`, `1-4`; with several, `unit_column` says which unit a row is for",
)
.default("1");
/// `unit_column` of a sink.
pub const SINK_UNIT_COLUMN: OptionSpec = OptionSpec::new(
    "unit_column",
    OptionType::Text,
    "an integer column with the unit each row is written to (one of `unit_id`; other rows are refused)",
);
/// `registers` of a sink.
pub const SINK_REGISTERS: OptionSpec = OptionSpec::new(
    "registers",
    OptionType::Text,
    "the register map inline (coils and holding registers): the only places the sink can ever write",
);
/// `register_map` of a sink.
pub const SINK_REGISTER_MAP: OptionSpec = OptionSpec::new(
    "register_map",
    OptionType::Path,
    "a YAML file (or `.json`) with the map under `registers:`, relative to the pipeline file; may be combined with `registers`",
);
/// `coalesce` of a sink.
pub const SINK_COALESCE: OptionSpec = OptionSpec::new(
    "coalesce",
    OptionType::Bool,
    "values for neighbouring registers (or coils) of a unit due together go in one write (function 16 or 15); `false`: one write per value",
)
.default("true");
/// `allow_read_modify_write`.
pub const ALLOW_READ_MODIFY_WRITE: OptionSpec = OptionSpec::new(
    "allow_read_modify_write",
    OptionType::Bool,
    "a bit of a holding register (`bit=N`) on a device without mask write (function 22): read the register, change the bit and write it back (not atomic); else such values are refused",
)
.default("false");

/// Every option of the sink (the safety options are in `write_back`).
pub const SINK_OPTIONS: &[OptionSpec] = &[
    URL,
    BAUD_RATE,
    PARITY,
    DATA_BITS,
    STOP_BITS,
    SINK_UNIT_ID,
    SINK_UNIT_COLUMN,
    TIMEOUT,
    RETRIES,
    SINK_REGISTERS,
    SINK_REGISTER_MAP,
    SINK_COALESCE,
    ALLOW_READ_MODIFY_WRITE,
];

/// Every option of the source.
pub const OPTIONS: &[OptionSpec] = &[
    URL,
    BAUD_RATE,
    PARITY,
    DATA_BITS,
    STOP_BITS,
    UNIT_ID,
    INTERVAL,
    BATCH_LATENCY,
    TIMEOUT,
    RETRIES,
    REGISTERS,
    REGISTER_MAP,
    MAX_GAP,
    COALESCE,
    TIME_COLUMN,
    UNIT_COLUMN,
    TIMESTAMP_UNIT,
];
