//! Object keys: by default
//! `PREFIX/pipeline=NAME/node=NODE/dt=YYYY-MM-DD/hour=HH/part-START-END-NODE-SEQ.parquet`,
//! derived from the sink's name, the writer's node id, the window range of the rows in the
//! file and a sequence number, so that a retried or replayed upload of a file overwrites the
//! same key and two nodes of a fleet never write the same one. The layout is a template
//! (`key_layout`).

use arrow::array::AsArray;
use arrow::compute::kernels::aggregate::{max, min};
use arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;

/// The event-time range of the rows written to one file, in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Earliest `window_start` (or earliest time of the first timestamp column).
    pub start: Option<i64>,
    /// Latest `window_end` (or latest time of the first timestamp column).
    pub end: Option<i64>,
}

fn nanos_column(batch: &RecordBatch, name: Option<&str>) -> Option<arrow::array::ArrayRef> {
    let schema = batch.schema();
    let i = match name {
        Some(n) => schema
            .fields()
            .iter()
            .position(|f| f.name() == n && matches!(f.data_type(), DataType::Timestamp(..)))?,
        None => schema
            .fields()
            .iter()
            .position(|f| matches!(f.data_type(), DataType::Timestamp(..)))?,
    };
    arrow::compute::cast(
        batch.column(i),
        &DataType::Timestamp(TimeUnit::Nanosecond, None),
    )
    .ok()
}

impl TimeRange {
    /// Widens the range by `batch`: its `window_start`/`window_end` columns, else its first
    /// timestamp column.
    pub fn add(&mut self, batch: &RecordBatch) {
        let (lo, hi) = match (
            nanos_column(batch, Some("window_start")),
            nanos_column(batch, Some("window_end")),
        ) {
            (Some(s), Some(e)) => (s, e),
            _ => match nanos_column(batch, None) {
                Some(t) => (t.clone(), t),
                None => return,
            },
        };
        let lo = min(lo.as_primitive::<TimestampNanosecondType>());
        let hi = max(hi.as_primitive::<TimestampNanosecondType>());
        if let Some(lo) = lo {
            self.start = Some(self.start.map_or(lo, |s| s.min(lo)));
        }
        if let Some(hi) = hi {
            self.end = Some(self.end.map_or(hi, |e| e.max(hi)));
        }
    }
}

fn utc(ns: i64) -> chrono::NaiveDateTime {
    arrow::temporal_conversions::timestamp_ns_to_datetime(ns).unwrap_or_default()
}

/// `key_layout` when none is given.
pub const DEFAULT_LAYOUT: &str =
    "pipeline={pipeline}/node={node}/dt={date}/hour={hour}/part-{start}-{end}-{node}-{seq}.parquet";

/// The placeholders a layout may use.
const PLACEHOLDERS: &[&str] = &[
    "pipeline", "node", "schema", "date", "hour", "start", "end", "seq",
];

/// How the keys of a sink's files are made, below the URL's prefix: a template of
/// `/`-separated parts with placeholders (see [`DEFAULT_LAYOUT`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    template: String,
}

/// What a key is made of.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    /// The sink's name.
    pub pipeline: &'a str,
    /// The writer's node id.
    pub node: &'a str,
    /// The output schema's version (a hash of its columns).
    pub schema: &'a str,
    /// The event-time range of the rows.
    pub range: TimeRange,
    /// The file's sequence number.
    pub seq: u64,
    /// When the file was opened (ns), for a range the rows do not give.
    pub opened_ns: i64,
}

impl KeyLayout {
    /// Reads a layout; an error names what is wrong with it.
    pub fn parse(template: &str) -> Result<Self, String> {
        let t = template.trim().trim_matches('/');
        if !t.ends_with(".parquet") {
            return Err("the layout must end with a file name ending in '.parquet'".into());
        }
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| "a '{' without its '}'".to_string())?;
            let name = &after[..close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder {{{name}}} (known: {})",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            rest = &after[close + 1..];
        }
        if !t.contains("{seq}") {
            return Err(
                "the layout must contain {seq}: without it two files of one node could get the same key"
                    .into(),
            );
        }
        Ok(Self {
            template: t.to_string(),
        })
    }

    /// True when the layout uses placeholder `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.template.contains(&format!("{{{name}}}"))
    }

    /// The key of a file, under `prefix`.
    pub fn key(&self, prefix: &str, p: KeyParts<'_>) -> String {
        let start = p.range.start.unwrap_or(p.opened_ns);
        let end = p.range.end.unwrap_or(start);
        let (s, e) = (utc(start), utc(end));
        let key = self
            .template
            .replace("{pipeline}", p.pipeline)
            .replace("{node}", p.node)
            .replace("{schema}", p.schema)
            .replace("{date}", &s.format("%Y-%m-%d").to_string())
            .replace("{hour}", &s.format("%H").to_string())
            .replace("{start}", &s.format("%Y%m%dT%H%M%S%.3fZ").to_string())
            .replace("{end}", &e.format("%Y%m%dT%H%M%S%.3fZ").to_string())
            .replace("{seq}", &format!("{:06}", p.seq));
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            key
        } else {
            format!("{prefix}/{key}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn parts(range: TimeRange, seq: u64, opened_ns: i64) -> KeyParts<'static> {
        KeyParts {
            pipeline: "summaries",
            node: "edge-7",
            schema: "0a1b2c3d",
            range,
            seq,
            opened_ns,
        }
    }

    #[test]
    fn keys_follow_the_window_range_and_carry_the_node() {
        let t = DataType::Timestamp(TimeUnit::Millisecond, None);
        let schema = Arc::new(Schema::new(vec![
            Field::new("window_start", t.clone(), false),
            Field::new("window_end", t, false),
            Field::new("v", DataType::Float64, false),
        ]));
        let base = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![base + 60_000, base])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    base + 120_000,
                    base + 60_000,
                ])),
                Arc::new(Float64Array::from(vec![1.0, 2.0])),
            ],
        )
        .unwrap();
        let mut r = TimeRange::default();
        r.add(&b);
        assert_eq!(r.start, Some(base * 1_000_000));
        let layout = KeyLayout::parse(DEFAULT_LAYOUT).unwrap();
        assert!(layout.uses("node") && !layout.uses("schema"));
        assert_eq!(
            layout.key("edge/site1/", parts(r, 7, 0)),
            "edge/site1/pipeline=summaries/node=edge-7/dt=2026-01-01/hour=00/part-20260101T000000.000Z-20260101T000200.000Z-edge-7-000007.parquet"
        );
        assert_eq!(
            layout.key(
                "",
                parts(
                    TimeRange::default(),
                    0,
                    base * 1_000_000 + 3_600_000_000_000
                )
            ),
            "pipeline=summaries/node=edge-7/dt=2026-01-01/hour=01/part-20260101T010000.000Z-20260101T010000.000Z-edge-7-000000.parquet"
        );
        let versioned =
            KeyLayout::parse("p={pipeline}/schema={schema}/{node}/{seq}.parquet").unwrap();
        assert_eq!(
            versioned.key("x", parts(r, 3, 0)),
            "x/p=summaries/schema=0a1b2c3d/edge-7/000003.parquet"
        );
    }

    #[test]
    fn bad_layouts_say_what_is_wrong() {
        let e = KeyLayout::parse("dt={date}/{what}-{seq}.parquet").unwrap_err();
        assert!(e.contains("unknown placeholder {what}"), "{e}");
        let e = KeyLayout::parse("dt={date}/part.parquet").unwrap_err();
        assert!(e.contains("{seq}"), "{e}");
        let e = KeyLayout::parse("dt={date}/{seq}").unwrap_err();
        assert!(e.contains(".parquet"), "{e}");
    }
}
