//! The generator's options.

use std::collections::HashMap;
use std::time::Duration;

use weir_engine::PipelineError;
use weir_engine::clock::now_nanos;
use weir_engine::parse::Options;
use weir_engine::parse::options::{OptionSpec, OptionType};

use super::signals::Fault;

/// `machines`.
pub const MACHINES: OptionSpec = OptionSpec::new(
    "machines",
    OptionType::Integer,
    "number of machines `M1`..`Mn`",
)
.default("4");
/// `lines`.
pub const LINES: OptionSpec = OptionSpec::new(
    "lines",
    OptionType::Integer,
    "production lines `L1`..; machine i is on line `i mod lines`",
)
.default("1");
/// `sensors`.
pub const SENSORS: OptionSpec = OptionSpec::new(
    "sensors",
    OptionType::List,
    "sensor names; the prefix picks the signal: `vib*` 13 Hz vibration (mm/s) + noise, `temp*` ≈60 °C with a 10-minute cycle, `current*` ≈12 A, `power*` ≈40 kW with a 5-minute load cycle, anything else a slow sine around 1",
)
.default("vib_x,vib_y,temp,current");
/// `rate`.
pub const RATE: OptionSpec = OptionSpec::new(
    "rate",
    OptionType::Text,
    "rows per second of wall time, or `max` (as fast as possible); rows are paced, in batches of at most a tenth of a second's rows (and `batch_rows`), and the input ends when its last row is due",
)
.default("1000");
/// `interval`.
pub const INTERVAL: OptionSpec = OptionSpec::new(
    "interval",
    OptionType::Duration,
    "event time between two samples of one sensor (`10ms` when `rate = 'max'`)",
)
.derived("machines×sensors/rate");
/// `limit`.
pub const LIMIT: OptionSpec =
    OptionSpec::new("limit", OptionType::Integer, "stop after this many rows");
/// `duration`.
pub const DURATION: OptionSpec = OptionSpec::new(
    "duration",
    OptionType::Duration,
    "stop after this much event time",
);
/// `start`.
pub const START: OptionSpec = OptionSpec::new(
    "start",
    OptionType::Text,
    "event time of the first sample (RFC 3339)",
)
.derived("now");
/// `seed`.
pub const SEED: OptionSpec =
    OptionSpec::new("seed", OptionType::Integer, "random seed").default("42");
/// `faults`.
pub const FAULTS: OptionSpec = OptionSpec::new(
    "faults",
    OptionType::List,
    "`MACHINE:FAULT,...` with `bearing` (vibration grows, impacts every 50 samples raise crest factor, kurtosis and high-frequency energy), `overheat` (+0.05 °C/s), `overload` (current and power +50%), `silent` (sends nothing after its first minute)",
);
/// `disorder`.
pub const DISORDER: OptionSpec = OptionSpec::new(
    "disorder",
    OptionType::Duration,
    "event times are moved back by a random amount up to this: out-of-order rows",
)
.default("0s");
/// `batch_rows`.
pub const BATCH_ROWS: OptionSpec =
    OptionSpec::new("batch_rows", OptionType::Integer, "rows per batch")
        .derived("`1024` (`8192` at `max`)");

/// Every option of the generator.
pub const OPTIONS: &[OptionSpec] = &[
    MACHINES, LINES, SENSORS, RATE, INTERVAL, LIMIT, DURATION, START, SEED, FAULTS, DISORDER,
    BATCH_ROWS,
];

/// Generator settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Number of machines (`M1`..`Mn`).
    pub machines: usize,
    /// Sensor names; the prefix selects the signal (`vib`, `temp`, `current`).
    pub sensors: Vec<String>,
    /// Number of production lines (`L1`..); machine i is on line i mod lines.
    pub lines: usize,
    /// Rows per second of wall time, or `None` for as fast as possible.
    pub rate: Option<f64>,
    /// Event-time step between two samples of one sensor (ns).
    pub interval: i64,
    /// Stop after this many rows.
    pub limit: Option<u64>,
    /// Stop when event time passes start + this (ns).
    pub duration: Option<i64>,
    /// Random seed.
    pub seed: u64,
    /// Event time of the first sample (ns since the epoch).
    pub start: i64,
    /// Faults per machine name.
    pub faults: HashMap<String, Vec<Fault>>,
    /// Largest random delay of an event time (ns): rows arrive out of order by up to this.
    pub disorder: i64,
    /// Rows per batch.
    pub batch_rows: usize,
}

fn nanos(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

/// `rate`: rows per second, or `max` (None).
fn parse_rate(v: &str) -> Result<Option<f64>, String> {
    if v.trim().eq_ignore_ascii_case("max") {
        return Ok(None);
    }
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| *r > 0.0 && r.is_finite())
        .map(Some)
        .ok_or_else(|| "expected rows per second (a positive number) or 'max'".to_string())
}

/// `start`: an RFC 3339 time, in ns since the epoch.
fn parse_start(v: &str) -> Result<i64, String> {
    humantime::parse_rfc3339_weak(v.trim())
        .map(|t| nanos(t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default()))
        .map_err(|e| format!("expected a time such as 2026-01-01T00:00:00Z ({e})"))
}

/// `faults`: `MACHINE:FAULT,...`.
fn parse_faults(v: &str) -> Result<HashMap<String, Vec<Fault>>, String> {
    let mut faults: HashMap<String, Vec<Fault>> = HashMap::new();
    for item in v.split(',').filter(|s| !s.trim().is_empty()) {
        let (m, f) = item.split_once(':').unwrap_or((item, ""));
        let fault = Fault::parse(f).ok_or_else(|| {
            format!(
                "'{item}': expected MACHINE:FAULT with FAULT one of bearing, overheat, overload, silent"
            )
        })?;
        faults.entry(m.trim().to_string()).or_default().push(fault);
    }
    Ok(faults)
}

impl Settings {
    /// Reads the options.
    pub fn from_options(o: &Options) -> Result<Self, PipelineError> {
        let machines = o.value::<u64>(&MACHINES)?.max(1) as usize;
        let lines = o.value::<u64>(&LINES)?.max(1) as usize;
        let sensors: Vec<String> = o.value(&SENSORS)?;
        if sensors.is_empty() {
            return Err(o.error("option 'sensors' lists no sensor"));
        }
        let groups = (machines * sensors.len()) as f64;
        let rate = o.parse_with(&RATE, parse_rate)?.flatten();
        let interval = match o.optional::<Duration>(&INTERVAL)? {
            Some(d) if d.is_zero() => return Err(o.error("option 'interval' must be positive")),
            Some(d) => nanos(d),
            None => match rate {
                Some(r) => ((groups / r) * 1e9).max(1.0) as i64,
                None => 10_000_000,
            },
        };
        let batch_rows = o
            .optional::<u64>(&BATCH_ROWS)?
            .unwrap_or(if rate.is_none() { 8192 } else { 1024 })
            .clamp(1, 1 << 20) as usize;
        Ok(Self {
            machines,
            sensors,
            lines,
            rate,
            interval,
            limit: o.optional(&LIMIT)?,
            duration: o.optional::<Duration>(&DURATION)?.map(nanos),
            seed: o.value(&SEED)?,
            start: o.parse_with(&START, parse_start)?.unwrap_or_else(now_nanos),
            faults: o.parse_with(&FAULTS, parse_faults)?.unwrap_or_default(),
            disorder: nanos(o.value(&DISORDER)?),
            batch_rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_faults() {
        assert_eq!(parse_rate("max").unwrap(), None);
        assert_eq!(parse_rate(" 250 ").unwrap(), Some(250.0));
        assert!(parse_rate("-1").is_err());
        let f = parse_faults("M1:bearing, M2:overheat,M1:overload").unwrap();
        assert_eq!(f["M1"], vec![Fault::Bearing, Fault::Overload]);
        assert_eq!(f["M2"], vec![Fault::Overheat], "machine names are trimmed");
        assert!(
            parse_faults("M1:melting")
                .unwrap_err()
                .contains("'M1:melting'")
        );
    }
}
