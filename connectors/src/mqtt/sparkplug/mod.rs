//! Sparkplug B on the MQTT source (`format = 'sparkplug_b'`): the payload's protobuf types,
//! its topics, what a host remembers of each edge node, and messages to rows; optionally
//! Weir as a primary host application (`host_id`: a retained `spBv1.0/STATE/{host_id}`
//! birth with its death as the connection's will).

pub mod decode;
pub mod edge;
pub mod nodes;
pub mod proto;
pub mod topic;

use arrow::datatypes::{DataType, SchemaRef};
use weir_engine::PipelineError;
use weir_engine::observe::telemetry::MetricDef;
use weir_engine::parse::Options;
use weir_engine::parse::options::{OptionSpec, OptionType};

use self::decode::{Behaviour, Part};
use super::settings::{
    ARRIVAL_TIME, JSON_PATHS, PAYLOAD_COLUMN, REQUIRED, TIMESTAMP_UNIT, TOPIC_COLUMN, Will,
};
use crate::columns::{column_index, supported};

/// `rebirth`.
pub const REBIRTH: OptionSpec = OptionSpec::new(
    "rebirth",
    OptionType::Bool,
    "sparkplug_b: publish a Rebirth request (NCMD `Node Control/Rebirth`) to a node whose state is unknown (data before its birth, an unknown alias, a sequence gap); off, Weir only listens",
)
.default("false");
/// `death_rows`.
pub const DEATH_ROWS: OptionSpec = OptionSpec::new(
    "death_rows",
    OptionType::Bool,
    "sparkplug_b: when a node or device dies, a row per metric it declared with a null value and `stale` true",
)
.default("true");
/// `host_id`.
pub const HOST_ID: OptionSpec = OptionSpec::new(
    "host_id",
    OptionType::Text,
    "sparkplug_b: act as the primary host application with this id: publish the retained `spBv1.0/STATE/{host_id}` birth on connect, with its death as the will",
);

/// Sink `group`.
pub const GROUP: OptionSpec = OptionSpec::new(
    "group",
    OptionType::Text,
    "sparkplug_b (required): the Sparkplug group id Weir publishes under",
);
/// Sink `edge_node`.
pub const EDGE_NODE: OptionSpec = OptionSpec::new(
    "edge_node",
    OptionType::Text,
    "sparkplug_b (required): the edge node id Weir publishes as",
);
/// Sink `device_column`.
pub const DEVICE_COLUMN: OptionSpec = OptionSpec::new(
    "device_column",
    OptionType::Text,
    "sparkplug_b: the column whose values are device ids (each its own DBIRTH/DDATA); without it the columns are the edge node's own metrics",
);
/// Sink `time_column`.
pub const TIME_COLUMN: OptionSpec = OptionSpec::new(
    "time_column",
    OptionType::Text,
    "sparkplug_b: a TIMESTAMP column whose values are the metrics' timestamps (e.g. window_end); without it, the time of publishing",
);

/// Edge nodes by state.
pub const NODES: MetricDef = MetricDef::gauge(
    "weir_sparkplug_nodes",
    &["source", "state"],
    "Sparkplug B edge nodes a source has seen, by state: online (born, in sequence), offline (dead), unknown (not born while Weir listened, or out of sequence since)",
);
/// Rebirths needed.
pub const REBIRTHS: MetricDef = MetricDef::counter(
    "weir_sparkplug_rebirths_total",
    &["source"],
    "Times a Sparkplug B node's state was unknown and a rebirth was due (requested with rebirth = 'true'; at most one per node every 5 s)",
);
/// Sequence gaps.
pub const SEQ_ERRORS: MetricDef = MetricDef::counter(
    "weir_sparkplug_seq_errors_total",
    &["source"],
    "Sparkplug B messages whose sequence number did not follow the node's previous message",
);
/// Deaths of earlier sessions.
pub const STALE_DEATHS: MetricDef = MetricDef::counter(
    "weir_sparkplug_stale_deaths_total",
    &["source"],
    "Sparkplug B NDEATHs ignored because their bdSeq was not that of the node's last birth (the will of an earlier connection)",
);

/// A primary host application's state message (Sparkplug 3.0: JSON, retained, QoS 1).
pub fn host_state(host_id: &str, online: bool, timestamp_ms: i64) -> Will {
    Will {
        topic: format!("{}/STATE/{host_id}", topic::NAMESPACE),
        payload: serde_json::json!({ "online": online, "timestamp": timestamp_ms })
            .to_string()
            .into_bytes(),
        qos: 1,
        retain: true,
    }
}

/// A Sparkplug B source's settings.
#[derive(Debug, Clone)]
pub struct Setup {
    /// What each column holds.
    pub parts: Vec<Part>,
    /// Rebirth requests and death rows.
    pub behaviour: Behaviour,
    /// Primary host application id.
    pub host_id: Option<String>,
}

/// Options of the JSON and raw formats.
const NOT_FOR_SPARKPLUG: &[&OptionSpec] =
    &[&JSON_PATHS, &PAYLOAD_COLUMN, &TIMESTAMP_UNIT, &REQUIRED];
/// Options of this format.
const SPARKPLUG_ONLY: &[&OptionSpec] = &[&REBIRTH, &DEATH_ROWS, &HOST_ID];

impl Setup {
    /// Reads the Sparkplug options (`None` for the other formats, which must not give them)
    /// and matches the declared columns to the row shape.
    pub fn from_options(
        o: &Options,
        schema: &SchemaRef,
        sparkplug: bool,
    ) -> Result<Option<Setup>, PipelineError> {
        let (misplaced, format) = if sparkplug {
            (NOT_FOR_SPARKPLUG, "the json and raw formats")
        } else {
            (SPARKPLUG_ONLY, "format = 'sparkplug_b'")
        };
        for spec in misplaced {
            if let Some(e) = o.entry(spec) {
                return Err(o.value_error(e, &format!("'{}' applies to {format}", spec.name)));
            }
        }
        if !sparkplug {
            return Ok(None);
        }
        let mut extra = Vec::new();
        for (spec, part) in [(&TOPIC_COLUMN, Part::Topic), (&ARRIVAL_TIME, Part::Arrival)] {
            if let Some(c) = o.text(spec) {
                let i = column_index(schema, c).ok_or_else(|| {
                    o.error(format!(
                        "{} '{c}' is not a column of this source",
                        spec.name
                    ))
                })?;
                extra.push((i, part));
            }
        }
        let parts = decode::parts(schema, &extra).map_err(|m| o.error(m))?;
        for needed in [Part::Metric, Part::Value] {
            if !parts.contains(&needed) {
                return Err(o.error(
                    "a sparkplug_b source needs the columns metric and value (besides any of group, edge_node, device, ts, datatype, alias, is_historical, is_null, stale, seq, message_type)",
                ));
            }
        }
        for (f, part) in schema.fields().iter().zip(&parts) {
            let fits = match part {
                Part::Ts | Part::Arrival => matches!(f.data_type(), DataType::Timestamp(..)),
                Part::IsHistorical | Part::IsNull | Part::Stale => {
                    f.data_type() == &DataType::Boolean
                }
                _ => supported(f.data_type()),
            };
            if !fits {
                return Err(o.error(format!(
                    "column '{}' is {}, which does not fit what a sparkplug_b row has there (ts: TIMESTAMP; is_historical, is_null, stale: BOOLEAN; value: a number, boolean, text, binary or timestamp type)",
                    f.name(),
                    f.data_type()
                )));
            }
        }
        Ok(Some(Setup {
            parts,
            behaviour: Behaviour {
                rebirth: o.value::<bool>(&REBIRTH)?,
                death_rows: o.value::<bool>(&DEATH_ROWS)?,
            },
            host_id: o.text(&HOST_ID).map(str::to_string),
        }))
    }
}

/// Reads a Sparkplug sink's options (`None` for JSON, which must not give them).
pub fn edge_setup(o: &Options, sparkplug: bool) -> Result<Option<edge::EdgeSetup>, PipelineError> {
    use super::settings::{RETAIN, SINK_QOS, SINK_TOPIC};
    let (misplaced, format): (&[&OptionSpec], &str) = if sparkplug {
        (
            &[&SINK_TOPIC, &RETAIN, &SINK_QOS],
            "format = 'json' (Sparkplug B publishes births and data at QoS 0, not retained)",
        )
    } else {
        (
            &[&GROUP, &EDGE_NODE, &DEVICE_COLUMN, &TIME_COLUMN],
            "format = 'sparkplug_b'",
        )
    };
    for spec in misplaced {
        if let Some(e) = o.entry(spec) {
            return Err(o.value_error(e, &format!("'{}' applies to {format}", spec.name)));
        }
    }
    if !sparkplug {
        o.require(&SINK_TOPIC)?;
        return Ok(None);
    }
    let id = |spec: &OptionSpec| -> Result<String, PipelineError> {
        let e = o.require(spec)?;
        let v = e.value.trim();
        if v.is_empty() || v.contains(['/', '+', '#']) {
            return Err(o.value_error(
                e,
                "a Sparkplug id must be non-empty and hold no '/', '+' or '#'",
            ));
        }
        Ok(v.to_string())
    };
    Ok(Some(edge::EdgeSetup {
        group: id(&GROUP)?,
        edge_node: id(&EDGE_NODE)?,
        device_column: o.text(&DEVICE_COLUMN).map(str::to_string),
        time_column: o.text(&TIME_COLUMN).map(str::to_string),
        // a new value for each process (reconnects of one process keep theirs)
        bd_seq: ((weir_engine::clock::now_nanos() / 1_000_000_000) % 256) as u64,
    }))
}
