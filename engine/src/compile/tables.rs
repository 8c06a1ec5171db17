//! How streams look to DataFusion's planner: each source and view is a table, and
//! `TUMBLE`/`HOP`/`SESSION` are table functions over them. These tables are only planned,
//! never scanned: the compiler turns plans that read them into streaming operators.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::exec::ids::StreamId;
use crate::exec::window::{Panes, WindowKind};

/// Most panes one `HOP` window may span (size / gcd(size, slide)): also the most windows one
/// row can fall into. Beyond it each closing window merges too much state.
pub const MAX_PANES_PER_WINDOW: i64 = 1000;

/// A source or view as a table; with `window`, a window table function over one.
#[derive(Debug)]
pub struct StreamTable {
    /// Stream id.
    pub stream: StreamId,
    /// The table's schema: the stream's, or for a window its kept columns, then
    /// `window_start`, `window_end`.
    pub schema: SchemaRef,
    /// The window table function, if this is one.
    pub window: Option<WindowScan>,
}

/// `TUMBLE(stream, time_column, size)` and friends: which window over which columns.
#[derive(Debug, Clone)]
pub struct WindowScan {
    /// Event-time column in the stream.
    pub time_col: usize,
    /// The window.
    pub kind: WindowKind,
    /// Stream columns kept, in order (an earlier `window_start`/`window_end` is replaced).
    pub keep: Vec<usize>,
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan_err!("streams and windows are processed by weir's streaming engine, not scanned")
    }
}

/// A stream the window functions can read: its id, schema and time columns.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    /// Stream id.
    pub id: StreamId,
    /// Schema.
    pub schema: SchemaRef,
    /// Columns with a watermark (event time of a source; window bounds of a view).
    pub time_cols: Vec<usize>,
}

/// Streams by name, shared between the compiler and the window functions.
pub type StreamCatalog = Arc<RwLock<HashMap<String, StreamEntry>>>;

/// Downcasts a provider to one of ours.
pub fn as_table<T: 'static>(p: &Arc<dyn TableProvider>) -> Option<&T> {
    let any: &dyn Any = p.as_ref();
    any.downcast_ref::<T>()
}

/// Which window table function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFn {
    /// `TUMBLE(stream, time, size)`.
    Tumble,
    /// `HOP(stream, time, slide, size)`.
    Hop,
    /// `SESSION(stream, time, gap)`.
    Session,
}

/// The window table functions.
#[derive(Debug)]
pub struct WindowTvf {
    /// Which one.
    pub kind: WindowFn,
    /// Streams it can read.
    pub catalog: StreamCatalog,
}

impl WindowTvf {
    fn usage(&self) -> &'static str {
        match self.kind {
            WindowFn::Tumble => "TUMBLE(stream, time_column, INTERVAL '1' MINUTE)",
            WindowFn::Hop => {
                "HOP(stream, time_column, INTERVAL '10' SECOND /* slide */, INTERVAL '1' MINUTE /* size */)"
            }
            WindowFn::Session => "SESSION(stream, time_column, INTERVAL '30' SECOND /* gap */)",
        }
    }
}

/// The name a bare identifier argument refers to.
fn name_arg(e: &Expr) -> Option<String> {
    match e {
        Expr::Column(c) if c.relation.is_none() => Some(c.name.clone()),
        _ => None,
    }
}

/// A duration argument (an interval, or a string such as '10s') in nanoseconds.
fn duration_arg(e: &Expr, what: &str) -> Result<i64> {
    let nanos = match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) => {
            if v.months != 0 {
                return plan_err!(
                    "the window {what} cannot be given in months or years (their length varies): use days, hours, minutes or seconds"
                );
            }
            Some(i128::from(v.days) * 86_400_000_000_000 + i128::from(v.nanoseconds))
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(i128::from(v.days) * 86_400_000_000_000 + i128::from(v.milliseconds) * 1_000_000)
        }
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => match humantime::parse_duration(s) {
            Ok(d) => Some(d.as_nanos() as i128),
            Err(err) => return plan_err!("window {what} '{s}' is not a duration: {err}"),
        },
        _ => None,
    };
    match nanos {
        Some(n) if n > 0 && n <= i128::from(i64::MAX) => Ok(n as i64),
        Some(_) => plan_err!("the window {what} must be positive"),
        None => plan_err!(
            "the window {what} must be an interval such as INTERVAL '1' MINUTE, found {e}"
        ),
    }
}

impl TableFunctionImpl for WindowTvf {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let args = args.exprs();
        let want = if self.kind == WindowFn::Hop { 4 } else { 3 };
        if args.len() != want {
            return plan_err!(
                "{} takes {want} arguments: {}",
                fn_name(self.kind),
                self.usage()
            );
        }
        let Some(stream_name) = name_arg(&args[0]) else {
            return plan_err!(
                "the first argument of {} must name a source or view: {}",
                fn_name(self.kind),
                self.usage()
            );
        };
        let catalog = crate::sync::read(&self.catalog);
        let Some(stream) = catalog.get(&stream_name) else {
            let mut known: Vec<&String> = catalog.keys().collect();
            known.sort();
            return plan_err!(
                "unknown source or view '{stream_name}' in {} (defined so far: {})",
                fn_name(self.kind),
                known
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let Some(time_name) = name_arg(&args[1]) else {
            return plan_err!(
                "the second argument of {} must be the event-time column: {}",
                fn_name(self.kind),
                self.usage()
            );
        };
        let Ok(time_col) = stream.schema.index_of(&time_name) else {
            return plan_err!("'{stream_name}' has no column '{time_name}'");
        };
        if !stream.time_cols.contains(&time_col) {
            let names: Vec<&str> = stream
                .time_cols
                .iter()
                .map(|&i| stream.schema.field(i).name().as_str())
                .collect();
            return if names.is_empty() {
                plan_err!(
                    "'{stream_name}' has no event-time column: declare one with event_time = '...' on the source"
                )
            } else {
                plan_err!(
                    "column '{time_name}' of '{stream_name}' carries no watermark; use {}",
                    names.join(" or ")
                )
            };
        }
        let kind = match self.kind {
            WindowFn::Tumble => WindowKind::Tumble {
                size: duration_arg(&args[2], "size")?,
            },
            WindowFn::Hop => {
                let slide = duration_arg(&args[2], "slide")?;
                let size = duration_arg(&args[3], "size")?;
                if slide > size {
                    return plan_err!(
                        "HOP slide must not exceed the window size (HOP(stream, time, slide, size))"
                    );
                }
                let panes = Panes::new(size, slide);
                let per_window = size / panes.pane;
                if per_window > MAX_PANES_PER_WINDOW {
                    let d = |ns: i64| {
                        humantime::format_duration(std::time::Duration::from_nanos(ns as u64))
                    };
                    return plan_err!(
                        "HOP with slide {} and size {} keeps {per_window} panes per window and puts each row into {} windows (at most {MAX_PANES_PER_WINDOW}): every closing window would merge them all. Use a slide of at least {} that divides the size, or a TUMBLE window",
                        d(slide),
                        d(size),
                        size / slide + i64::from(size % slide != 0),
                        d(size / MAX_PANES_PER_WINDOW)
                    );
                }
                WindowKind::Hop { slide, size }
            }
            WindowFn::Session => WindowKind::Session {
                gap: duration_arg(&args[2], "gap")?,
            },
        };
        let tz = match stream.schema.field(time_col).data_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let keep: Vec<usize> = (0..stream.schema.fields().len())
            .filter(|&i| {
                let n = stream.schema.field(i).name();
                n != "window_start" && n != "window_end"
            })
            .collect();
        let mut fields: Vec<Field> = keep
            .iter()
            .map(|&i| stream.schema.field(i).clone())
            .collect();
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, tz);
        fields.push(Field::new("window_start", ts.clone(), false));
        fields.push(Field::new("window_end", ts, false));
        Ok(Arc::new(StreamTable {
            stream: stream.id,
            schema: Arc::new(Schema::new(fields)),
            window: Some(WindowScan {
                time_col,
                kind,
                keep,
            }),
        }))
    }
}

/// The SQL name of a window function.
pub fn fn_name(kind: WindowFn) -> &'static str {
    match kind {
        WindowFn::Tumble => "TUMBLE",
        WindowFn::Hop => "HOP",
        WindowFn::Session => "SESSION",
    }
}
