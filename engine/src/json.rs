//! How Weir writes rows as JSON (NDJSON sinks, MQTT payloads, dead letters, `weir query
//! --format json`): a timestamp without a zone is UTC and is written in RFC 3339 with `Z`
//! (`2026-12-01T16:43:32.5Z`); one with a zone keeps its offset.

use std::io::Write;

use arrow::json::writer::{JsonFormat, Writer, WriterBuilder};

/// The format of zoneless timestamps (chrono's; the fraction only when there is one).
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.fZ";

/// A JSON writer of format `F` (`LineDelimited` for NDJSON, `JsonArray`) writing to `w`.
pub fn writer<W: Write, F: JsonFormat>(w: W) -> Writer<W, F> {
    WriterBuilder::new()
        .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
        .build(w)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::TimestampNanosecondArray;
    use arrow::json::writer::LineDelimited;
    use arrow::record_batch::RecordBatch;

    use super::*;

    #[test]
    fn zoneless_timestamps_are_utc_with_z() {
        let b = RecordBatch::try_from_iter([(
            "ts",
            Arc::new(TimestampNanosecondArray::from(vec![
                1_764_607_412_000_000_000,
                1_764_607_412_500_000_000,
            ])) as _,
        )])
        .unwrap();
        let mut out = Vec::new();
        let mut w = writer::<_, LineDelimited>(&mut out);
        w.write(&b).unwrap();
        w.finish().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"ts\":\"2025-12-01T16:43:32Z\"}\n{\"ts\":\"2025-12-01T16:43:32.500Z\"}\n"
        );
    }
}
