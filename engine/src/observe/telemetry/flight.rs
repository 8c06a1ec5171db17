//! The Flight SQL server's telemetry: queries by result, their latency, refused calls.

use std::time::Duration;

use super::{
    FLIGHT_AUTH_FAILURES, FLIGHT_AUTH_THROTTLED, FLIGHT_QUERIES, FLIGHT_QUERY_SECONDS, Lazy,
};

/// How a query ended, as the `result` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryResult {
    /// Answered.
    Ok,
    /// Bad SQL, unknown column, a statement that is not a query.
    Invalid,
    /// Unknown table.
    NotFound,
    /// Failed while running.
    Failed,
    /// Needed more than `--flight-query-memory`.
    TooLarge,
    /// Ran longer than `--flight-query-timeout`.
    TimedOut,
    /// Refused: `--flight-query-concurrency` queries were running.
    Busy,
}

impl QueryResult {
    fn label(self) -> &'static str {
        match self {
            QueryResult::Ok => "ok",
            QueryResult::Invalid => "invalid",
            QueryResult::NotFound => "not_found",
            QueryResult::Failed => "failed",
            QueryResult::TooLarge => "too_large",
            QueryResult::TimedOut => "timed_out",
            QueryResult::Busy => "busy",
        }
    }
}

/// The telemetry of the Flight SQL server.
#[derive(Debug, Default)]
pub struct FlightTelemetry {
    seconds: Lazy<metrics::Histogram>,
    auth_failures: Lazy<metrics::Counter>,
    auth_throttled: Lazy<metrics::Counter>,
}

impl FlightTelemetry {
    /// A query ended with `result` after `elapsed` (recorded for answered queries).
    pub fn query(&self, result: QueryResult, elapsed: Option<Duration>) {
        FLIGHT_QUERIES.counter_with(&[result.label()]).increment(1);
        if let Some(e) = elapsed {
            self.seconds
                .get(|| FLIGHT_QUERY_SECONDS.histogram_with(&[]))
                .record(e.as_secs_f64());
        }
    }

    /// A call was refused for missing or wrong credentials.
    pub fn auth_failed(&self) {
        self.auth_failures
            .get(|| FLIGHT_AUTH_FAILURES.counter_with(&[]))
            .increment(1);
    }

    /// A call was refused without checking its credentials: its address failed too often.
    pub fn auth_throttled(&self) {
        self.auth_throttled
            .get(|| FLIGHT_AUTH_THROTTLED.counter_with(&[]))
            .increment(1);
    }
}
