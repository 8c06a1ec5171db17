//! The two row shapes of an OPC UA source. Long: one row per value, with the columns
//! `node`, `node_id`, `value`, `source_timestamp`, `server_timestamp`, `status`,
//! `status_code` (any subset, `value` required). Wide: one row per sampling instant, one
//! column per node (named as in `nodes`, or by browse name), the instant in the time
//! column, and optionally `<column>_status`.

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use opcua::types::{DataValue, StatusCode};
use weir_engine::observe::telemetry::SourceTelemetry;

use super::nodes::Node;
use super::values::{ValueColumn, unix_nanos};
use crate::columns::column_index;

/// The columns long rows may have.
pub const LONG_COLUMNS: [&str; 7] = [
    "node",
    "node_id",
    "value",
    "source_timestamp",
    "server_timestamp",
    "status",
    "status_code",
];

/// Where each part of a value goes.
#[derive(Debug, Clone)]
pub enum Layout {
    /// One row per value; each entry the column index of [`LONG_COLUMNS`]' part, if present.
    Long([Option<usize>; 7]),
    /// One row per instant.
    Wide {
        /// Column of the instant.
        time: Option<usize>,
        /// Per resolved node: its value column and status column.
        nodes: Vec<(Option<usize>, Option<usize>)>,
        /// Columns no node fills (always null).
        unfilled: Vec<usize>,
    },
}

/// Checks the declared columns for long rows.
pub fn long_layout(schema: &SchemaRef) -> Result<Layout, String> {
    let mut at = [None; 7];
    for (i, f) in schema.fields().iter().enumerate() {
        let name = f.name().to_ascii_lowercase();
        let Some(part) = LONG_COLUMNS.iter().position(|c| *c == name) else {
            return Err(format!(
                "column '{}' is not one of the long shape's columns ({})",
                f.name(),
                LONG_COLUMNS.join(", ")
            ));
        };
        let t = f.data_type();
        let ok = match part {
            2 => ValueColumn::new(t).is_some(),
            3 | 4 => matches!(t, DataType::Timestamp(..)),
            6 => t.is_integer(),
            _ => matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8),
        };
        if !ok {
            return Err(format!(
                "column '{}' cannot be {t} (node, node_id and status are TEXT, the timestamps TIMESTAMP, status_code an integer)",
                f.name()
            ));
        }
        at[part] = Some(i);
    }
    if at[2].is_none() {
        return Err("the long shape needs a 'value' column".into());
    }
    Ok(Layout::Long(at))
}

/// Matches resolved nodes to the declared columns for wide rows: a node fills the column
/// named like it (its browse path with `/` as `_`, or its last browse name when that is
/// unique). Returns the layout and the names of columns no node fills.
pub fn wide_layout(
    schema: &SchemaRef,
    time: Option<usize>,
    nodes: &[Node],
) -> (Layout, Vec<String>) {
    let last = |n: &Node| n.name.rsplit('/').next().unwrap_or(&n.name).to_string();
    let mut filled = vec![false; schema.fields().len()];
    if let Some(t) = time {
        filled[t] = true;
    }
    let mut out = Vec::new();
    for n in nodes {
        let by_path = column_index(schema, &n.name.replace('/', "_"));
        let unique = nodes
            .iter()
            .filter(|o| last(o).eq_ignore_ascii_case(&last(n)))
            .count()
            == 1;
        let c = by_path.or_else(|| unique.then(|| column_index(schema, &last(n))).flatten());
        let c =
            c.filter(|c| !filled[*c] && ValueColumn::new(schema.field(*c).data_type()).is_some());
        let status =
            c.and_then(|c| column_index(schema, &format!("{}_status", schema.field(c).name())));
        for i in [c, status].into_iter().flatten() {
            filled[i] = true;
        }
        out.push((c, status));
    }
    let unfilled: Vec<usize> = (0..filled.len()).filter(|i| !filled[*i]).collect();
    let names = unfilled
        .iter()
        .map(|i| schema.field(*i).name().clone())
        .collect();
    (
        Layout::Wide {
            time,
            nodes: out,
            unfilled,
        },
        names,
    )
}

/// Rows being built.
pub struct Rows {
    schema: SchemaRef,
    columns: Vec<ValueColumn>,
    rows: usize,
}

fn status_text(s: StatusCode) -> String {
    s.sub_code().name().to_string()
}

impl Rows {
    /// Empty rows of `schema`, whose column types were checked when the source was built.
    pub fn new(schema: SchemaRef) -> Rows {
        let columns = schema
            .fields()
            .iter()
            .map(|f| ValueColumn::new(f.data_type()).expect("column types checked by the layout"))
            .collect();
        Rows {
            schema,
            columns,
            rows: 0,
        }
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// One long row; a value that does not fit is counted and its row left out.
    pub fn push_long(
        &mut self,
        at: &[Option<usize>; 7],
        node: &Node,
        v: &DataValue,
        telemetry: &SourceTelemetry,
    ) {
        let value = at[2].expect("checked");
        if let Err(e) = self.columns[value].push(v.value.as_ref().unwrap_or(&Default::default())) {
            telemetry.skip(
                "conversion",
                &node.id.to_string(),
                format!("{}: {e}", node.name),
            );
            return;
        }
        let status = v.status();
        for (part, c) in at.iter().enumerate() {
            let Some(c) = *c else { continue };
            let col = &mut self.columns[c];
            match part {
                0 => col.push_str(&node.name),
                1 => col.push_str(&node.id.to_string()),
                3 | 4 => {
                    let t = if part == 3 {
                        &v.source_timestamp
                    } else {
                        &v.server_timestamp
                    };
                    match t {
                        Some(t) => col.push_time(unix_nanos(t)),
                        None => col.push_null(),
                    }
                }
                5 => col.push_str(&status_text(status)),
                6 => {
                    let _ = col.push(&opcua::types::Variant::UInt32(status.bits()));
                }
                _ => {}
            }
        }
        self.rows += 1;
    }

    /// One wide row at `instant` (ns since the epoch), with the value of each node or none.
    #[allow(clippy::too_many_arguments)]
    pub fn push_wide(
        &mut self,
        time: Option<usize>,
        nodes: &[(Option<usize>, Option<usize>)],
        unfilled: &[usize],
        names: &[Node],
        instant: i64,
        values: &[Option<DataValue>],
        telemetry: &SourceTelemetry,
    ) {
        if let Some(t) = time {
            self.columns[t].push_time(instant);
        }
        for c in unfilled {
            self.columns[*c].push_null();
        }
        for ((slot, node), v) in nodes.iter().zip(names).zip(values) {
            let (Some(c), status_col) = *slot else {
                continue;
            };
            match v {
                Some(v) => {
                    if let Err(e) =
                        self.columns[c].push(v.value.as_ref().unwrap_or(&Default::default()))
                    {
                        telemetry.skip(
                            "conversion",
                            &node.id.to_string(),
                            format!("{}: {e}", node.name),
                        );
                        self.columns[c].push_null();
                    }
                    if let Some(s) = status_col {
                        self.columns[s].push_str(&status_text(v.status()));
                    }
                }
                None => {
                    self.columns[c].push_null();
                    if let Some(s) = status_col {
                        self.columns[s].push_null();
                    }
                }
            }
        }
        self.rows += 1;
    }

    /// The rows as a batch; empty afterwards.
    pub fn finish(&mut self) -> anyhow::Result<RecordBatch> {
        let arrays = self
            .columns
            .iter_mut()
            .map(ValueColumn::finish)
            .collect::<Result<Vec<_>, _>>()?;
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}
