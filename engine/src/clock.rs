//! The wall clock as event-time values.

/// Nanoseconds since the Unix epoch, now (arrival times, lags against event time).
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
