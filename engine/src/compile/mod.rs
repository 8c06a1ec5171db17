//! Compiles pipeline files into a runnable project: checks every statement, plans queries
//! with DataFusion and lowers them into streaming operators — all before anything connects.

mod join;
mod locate;
mod lower;
mod tables;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::DataFusionError;
use datafusion::common::ScalarValue;
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{DdlStatement, Expr, LogicalPlan};
use datafusion::optimizer::Optimizer;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{self, ObjectName, ObjectNamePart, Spanned};

use crate::connector::{
    CONNECTOR, Connectors, EVENT_TIME, IDLE_TIMEOUT, SINK_OPTIONS, SOURCE_OPTIONS, Sink, SinkSpec,
    Source, SourceSpec, WATERMARK, each_option,
};
use crate::diagnostic::{Diagnostics, Location, PipelineError};
use crate::exec::budget::{MAX_STATE_BYTES, STATE_POLICY, StateBudget, StatePolicy, VIEW_OPTIONS};
use crate::exec::dataflow::{Dataflow, SourceClock, StreamState};
use crate::exec::ids::{SinkId, StreamId};
use crate::exec::pipeline::{PipelineExec, Target};
use crate::observe::telemetry::{PipelineTelemetry, SinkTelemetry, SourceTelemetry};
use crate::parse::{
    Options, PipelineFile, QueryStatement, SinkStatement, SourceStatement, Statement,
    TableStatement,
};
use crate::reference::{
    FILL_KEYS, MAX_BYTES, MAX_ROWS, RELOAD, ReferenceProvider, ReferenceTable, TABLE_OPTIONS,
    TableLimits,
};
use crate::sync;
use lower::{FillKeys, StreamInfo, lower};
use tables::{StreamCatalog, StreamEntry, StreamTable, WindowFn, WindowTvf};

/// A source ready to start.
pub struct CompiledSource {
    /// Name.
    pub name: String,
    /// Connector name.
    pub connector: String,
    /// Stream id (same as its index among sources).
    pub stream: StreamId,
    /// The source.
    pub source: Box<dyn Source>,
    /// Its counters.
    pub telemetry: Arc<SourceTelemetry>,
}

/// A sink ready to open.
pub struct CompiledSink {
    /// Name.
    pub name: String,
    /// Connector name.
    pub connector: String,
    /// The sink.
    pub sink: Box<dyn Sink>,
    /// Its counters.
    pub telemetry: Arc<SinkTelemetry>,
}

/// Everything `weir run` starts.
pub struct Project {
    /// Sources, by stream id.
    pub sources: Vec<CompiledSource>,
    /// Sinks, by sink id.
    pub sinks: Vec<CompiledSink>,
    /// Streams and pipelines.
    pub dataflow: Dataflow,
    /// Per pipeline: its description and DataFusion plan, for `weir check --explain`.
    pub explain: Vec<String>,
    /// Reference tables, loaded.
    pub tables: Vec<Arc<ReferenceTable>>,
}

/// Runs `work` (parsing and planning, which recurse over statements) on a thread of its own
/// with a [`PLANNING_STACK`](crate::parse::limits::PLANNING_STACK) stack and a runtime of its
/// own, so that a deep statement can never overflow the stack of the caller's thread (a
/// runtime worker's is 2 MiB). Panics of `work` come back as errors.
pub async fn on_planning_thread<F, Fut, T>(work: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("weir-planning".into())
        .stack_size(crate::parse::limits::PLANNING_STACK)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let _ = tx.send(runtime.map(|r| r.block_on(work())));
        })?;
    match rx.await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(anyhow::anyhow!("cannot start the planning runtime: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "planning failed: the planning thread panicked"
        )),
    }
}

/// A DataFusion context for planning pipelines: our functions, window table functions and
/// an optimizer without rules that rewrite one aggregation into two.
pub fn planning_context(catalog: &StreamCatalog) -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(1);
    config.options_mut().sql_parser.collect_spans = true;
    let rules = Optimizer::new()
        .rules
        .into_iter()
        .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
        .collect();
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rules(rules)
        .build();
    let ctx = SessionContext::new_with_state(state);
    weir_udf::register(&ctx);
    ctx.register_udaf(crate::exec::window::partial::window_partial());
    ctx.register_udf(join::asof_marker());
    for (name, kind) in [
        ("tumble", WindowFn::Tumble),
        ("hop", WindowFn::Hop),
        ("session", WindowFn::Session),
    ] {
        ctx.register_udtf(
            name,
            Arc::new(WindowTvf {
                kind,
                catalog: Arc::clone(catalog),
            }),
        );
    }
    ctx
}

/// A DataFusion error as a short message for users.
pub fn clean_message(e: &DataFusionError) -> String {
    let mut s = e.find_root().strip_backtrace();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "Optimizer rule 'type_coercion' failed\ncaused by\n",
        "type_coercion\ncaused by\n",
        "Execution error: ",
        "Internal error: ",
    ] {
        while let Some(rest) = s.strip_prefix(prefix) {
            s = rest.to_string();
        }
    }
    s.trim().to_string()
}

/// Lower-cases unquoted calls of our window functions (DataFusion looks table functions up
/// case-sensitively).
fn normalize_window_calls(query: &mut ast::Query) {
    let _ = ast::visit_relations_mut(query, |name: &mut ObjectName| {
        if let [ObjectNamePart::Identifier(id)] = name.0.as_mut_slice()
            && id.quote_style.is_none()
            && ["tumble", "hop", "session"].contains(&id.value.to_ascii_lowercase().as_str())
        {
            id.value = id.value.to_ascii_lowercase();
        }
        ControlFlow::<()>::Continue(())
    });
}

struct Streams {
    time: Vec<Vec<usize>>,
    bounded: Vec<bool>,
}

impl StreamInfo for Streams {
    fn time_cols(&self, stream: StreamId) -> Vec<usize> {
        self.time[stream.index()].clone()
    }
    fn is_bounded(&self, stream: StreamId) -> bool {
        self.bounded[stream.index()]
    }
}

/// Timestamps of any unit become nanoseconds: the engine's one time unit.
fn normalize_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Timestamp(_, tz) => f
                    .as_ref()
                    .clone()
                    .with_data_type(DataType::Timestamp(TimeUnit::Nanosecond, tz.clone())),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<Field>>(),
    ))
}

struct Compiler<'a> {
    connectors: &'a Connectors,
    ctx: SessionContext,
    catalog: StreamCatalog,
    errors: Vec<PipelineError>,
    streams: Vec<StreamState>,
    info: Streams,
    names: HashMap<String, (String, Location)>,
    /// Sources and sinks whose statements failed: errors that only repeat this are dropped.
    broken: std::collections::HashSet<String>,
    sources: Vec<CompiledSource>,
    sinks: Vec<CompiledSink>,
    sink_ids: HashMap<String, SinkId>,
    sink_schemas: HashMap<SinkId, SchemaRef>,
    pipelines: Vec<PipelineExec>,
    explain: Vec<String>,
    tables: Vec<Arc<ReferenceTable>>,
}

impl<'a> Compiler<'a> {
    fn state(&self) -> SessionState {
        self.ctx.state()
    }

    fn claim_name(&mut self, file: &str, name: &str, at: Location, what: &str) -> bool {
        if let Some((f, l)) = self.names.get(name) {
            self.errors.push(PipelineError::new(
                file,
                at,
                format!(
                    "{what} '{name}': the name is already used at {f}:{}:{}",
                    l.line, l.column
                ),
            ));
            return false;
        }
        self.names.insert(name.to_string(), (file.to_string(), at));
        true
    }

    /// Adds `stream` (its event-time columns `time_cols`; `bounded` when it ends by itself)
    /// and registers it as a table for the queries that follow.
    fn add_stream(
        &mut self,
        stream: StreamState,
        time_cols: Vec<usize>,
        bounded: bool,
    ) -> StreamId {
        let id = StreamId::new(self.streams.len());
        let name = stream.name.clone();
        let name = name.as_str();
        let schema = Arc::clone(&stream.schema);
        self.streams.push(stream);
        self.info.time.push(time_cols.clone());
        self.info.bounded.push(bounded);
        sync::write(&self.catalog).insert(
            name.to_string(),
            StreamEntry {
                id,
                schema: Arc::clone(&schema),
                time_cols,
            },
        );
        let _ = self.ctx.deregister_table(name);
        self.ctx
            .register_table(
                name,
                Arc::new(StreamTable {
                    stream: id,
                    schema,
                    window: None,
                }),
            )
            .expect("register stream table");
        id
    }

    /// The `connector` option when it names one of `known` (lower-cased); otherwise records
    /// an error at the option (or at the statement when it is missing).
    fn connector_name(&mut self, opts: &Options, kind: &str, known: &[&str]) -> Option<String> {
        let Some(entry) = opts.entry(&CONNECTOR) else {
            self.errors.push(opts.error(format!(
                "missing required option 'connector' (one of: {})",
                known.join(", ")
            )));
            return None;
        };
        let name = entry.value.to_ascii_lowercase();
        if known.contains(&name.as_str()) {
            return Some(name);
        }
        let message = match self.connectors.absent(&name) {
            Some(feature) => format!(
                "connector '{name}' is not in this build (built without feature \"{feature}\")"
            ),
            None => format!(
                "unknown {kind} connector '{}' (available: {})",
                entry.value,
                known.join(", ")
            ),
        };
        self.errors.push(PipelineError::new(
            opts.file(),
            entry.value_location,
            message,
        ));
        None
    }

    /// The declared columns, as DataFusion maps SQL types (timestamps in nanoseconds).
    async fn declared_schema(
        &mut self,
        file: &str,
        name: &str,
        declared: &[ast::ColumnDef],
        location: Location,
    ) -> Option<SchemaRef> {
        let columns: Vec<ast::ColumnDef> = declared
            .iter()
            .map(|c| ast::ColumnDef {
                options: vec![],
                ..c.clone()
            })
            .collect();
        let table =
            ast::helpers::stmt_create_table::CreateTableBuilder::new(ObjectName::from(vec![
                ast::Ident::new(name.to_string()),
            ]))
            .columns(columns)
            .build();
        let plan = self
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(
                ast::Statement::CreateTable(table),
            )))
            .await;
        match plan {
            Ok(LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(t))) => {
                Some(normalize_schema(t.input.schema().as_arrow()))
            }
            Ok(other) => {
                self.errors.push(PipelineError::new(
                    file,
                    location,
                    format!("internal: the columns planned to {}", other.display()),
                ));
                None
            }
            Err(e) => {
                let at = declared
                    .first()
                    .map(|c| Location::from_sql(c.span().start))
                    .unwrap_or(location);
                self.errors
                    .push(PipelineError::new(file, at, clean_message(&e)));
                None
            }
        }
    }

    /// The event-time settings of a source: its `event_time` column (which must be a
    /// TIMESTAMP), `watermark` and `idle_timeout`. Errors are recorded; `Err` when the
    /// durations do not read (nothing more is checked then).
    fn source_clock(&mut self, opts: &Options, schema: &Schema) -> Result<Option<SourceClock>, ()> {
        let event_time = match opts.entry(&EVENT_TIME) {
            None => None,
            Some(e) => match schema.index_of(&e.value) {
                Err(_) => {
                    let columns: Vec<&str> =
                        schema.fields().iter().map(|f| f.name().as_str()).collect();
                    self.errors.push(opts.value_error(
                        e,
                        &format!("no such column (columns: {})", columns.join(", ")),
                    ));
                    None
                }
                Ok(i) if !matches!(schema.field(i).data_type(), DataType::Timestamp(_, _)) => {
                    self.errors.push(opts.value_error(e, &format!(
                        "type mismatch: the event-time column must be TIMESTAMP, but '{}' is {}",
                        e.value,
                        schema.field(i).data_type()
                    )));
                    None
                }
                Ok(i) => Some(i),
            },
        };
        let delay = opts.value::<Duration>(&WATERMARK);
        let idle = opts.value::<Duration>(&IDLE_TIMEOUT);
        let (delay, idle) = match (delay, idle) {
            (Ok(d), Ok(i)) => (d, i),
            (d, i) => {
                self.errors.extend(d.err());
                self.errors.extend(i.err());
                return Err(());
            }
        };
        if !opts.is_given(&EVENT_TIME) && opts.is_given(&WATERMARK) {
            self.errors.push(opts.error(
                "option 'watermark' needs an event-time column: add event_time = '<column>'",
            ));
        }
        Ok(event_time.map(|c| SourceClock {
            event_time: c,
            delay: delay.as_nanos().min(i64::MAX as u128) as i64,
            idle_timeout: idle,
            max_time: None,
        }))
    }

    async fn source(&mut self, file: &str, mut s: SourceStatement) {
        let names = self.connectors.source_names();
        let Some(factory) = self
            .connector_name(&s.options, "source", &names)
            .and_then(|n| self.connectors.source(&n).cloned())
        else {
            return;
        };
        s.options
            .declare(SOURCE_OPTIONS.iter().chain(each_option(factory.options())));
        let opts = &s.options;
        self.errors.extend(opts.unknown(factory.name()));
        let Some(schema) = self
            .declared_schema(file, &s.name, &s.columns, s.location)
            .await
        else {
            return;
        };
        let before = self.errors.len();
        let Ok(clock) = self.source_clock(opts, &schema) else {
            return;
        };
        let clock_ok = self.errors.len() == before;
        let spec = SourceSpec {
            name: s.name.clone(),
            schema: Arc::clone(&schema),
            event_time: clock.as_ref().map(|c| c.event_time),
        };
        let source = match factory.build(&spec, opts) {
            Ok(src) => src,
            Err(e) => {
                self.errors.push(e);
                return;
            }
        };
        if !clock_ok || !self.claim_name(file, &s.name, s.location, "source") {
            return;
        }
        let bounded = source.is_bounded();
        let time_cols = clock.iter().map(|c| c.event_time).collect();
        let telemetry = Arc::new(SourceTelemetry::new(&s.name));
        let fingerprint = crate::checkpoint::stable_hash(
            format!(
                "source {}\nconnector {}\ncolumns {}\n{}",
                s.name,
                factory.name(),
                columns(&schema),
                opts.fingerprint_text()
            )
            .as_bytes(),
        );
        let stream = StreamState::new(
            &s.name,
            schema,
            clock,
            Some(Arc::clone(&telemetry)),
            fingerprint,
        );
        let id = self.add_stream(stream, time_cols, bounded);
        self.sources.push(CompiledSource {
            name: s.name,
            connector: factory.name().to_string(),
            stream: id,
            source,
            telemetry,
        });
    }

    /// A reference table: declared, checked and loaded (its first version).
    async fn table(&mut self, file: &str, mut t: TableStatement) {
        let names = self.connectors.table_names();
        let Some(factory) = self
            .connector_name(&t.options, "table", &names)
            .and_then(|n| self.connectors.table(&n).cloned())
        else {
            return;
        };
        t.options
            .declare(TABLE_OPTIONS.iter().chain(each_option(factory.options())));
        let opts = &t.options;
        self.errors.extend(opts.unknown(factory.name()));
        let Some(schema) = self
            .declared_schema(file, &t.name, &t.columns, t.location)
            .await
        else {
            return;
        };
        let mut key = Vec::new();
        for (column, at) in &t.primary_key {
            match schema.index_of(column) {
                Ok(i) => key.push(i),
                Err(_) => {
                    self.errors.push(PipelineError::new(
                        file,
                        *at,
                        format!(
                            "primary key column '{column}' is not a column of table '{}'",
                            t.name
                        ),
                    ));
                    return;
                }
            }
        }
        let opts = &t.options;
        let (reload, max_rows, max_bytes) = match (
            opts.value::<Duration>(&RELOAD),
            opts.value::<u64>(&MAX_ROWS),
            opts.value::<u64>(&MAX_BYTES),
        ) {
            (Ok(r), Ok(m), Ok(b)) => (r, m, b),
            (r, m, b) => {
                self.errors.extend(r.err());
                self.errors.extend(m.err());
                self.errors.extend(b.err());
                return;
            }
        };
        let spec = crate::connector::TableSpec {
            name: t.name.clone(),
            schema: Arc::clone(&schema),
            base_dir: std::path::Path::new(file)
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default(),
            max_bytes,
        };
        let loader = match factory.build(&spec, opts) {
            Ok(l) => l,
            Err(e) => {
                self.errors.push(e);
                return;
            }
        };
        if !self.claim_name(file, &t.name, t.location, "table") {
            return;
        }
        let reload = (!reload.is_zero()).then_some(reload);
        let limits = TableLimits {
            max_rows,
            max_bytes,
        };
        let table = match ReferenceTable::load(&t.name, schema, key, loader, reload, limits) {
            Ok(table) => Arc::new(table),
            Err(e) => {
                self.errors.push(PipelineError::new(
                    file,
                    t.location,
                    format!("table '{}': {e}", t.name),
                ));
                return;
            }
        };
        self.ctx
            .register_table(
                t.name.as_str(),
                Arc::new(ReferenceProvider {
                    table: Arc::clone(&table),
                }),
            )
            .expect("register reference table");
        self.tables.push(table);
    }

    fn sink(&mut self, file: &str, mut s: SinkStatement) {
        let names = self.connectors.sink_names();
        let Some(factory) = self
            .connector_name(&s.options, "sink", &names)
            .and_then(|n| self.connectors.sink(&n).cloned())
        else {
            return;
        };
        s.options
            .declare(SINK_OPTIONS.iter().chain(each_option(factory.options())));
        let opts = &s.options;
        self.errors.extend(opts.unknown(factory.name()));
        let telemetry = Arc::new(SinkTelemetry::new(&s.name));
        let sink = factory.build(
            &SinkSpec {
                name: s.name.clone(),
                telemetry: Arc::clone(&telemetry),
            },
            opts,
        );
        let sink = match sink {
            Ok(k) => k,
            Err(e) => {
                self.errors.push(e);
                return;
            }
        };
        if self.sink_ids.contains_key(&s.name) {
            self.errors.push(PipelineError::new(
                file,
                s.location,
                format!("sink '{}' is already defined", s.name),
            ));
            return;
        }
        self.sink_ids
            .insert(s.name.clone(), SinkId::new(self.sinks.len()));
        self.sinks.push(CompiledSink {
            name: s.name,
            connector: factory.name().to_string(),
            sink,
            telemetry,
        });
    }

    /// Rewords DataFusion's messages about tables into ours about streams.
    fn friendly(&self, message: String) -> String {
        let Some(rest) = message.strip_prefix("table '") else {
            return message;
        };
        let Some(name) = rest.strip_suffix("' not found") else {
            return message;
        };
        let name = name.rsplit('.').next().unwrap_or(name);
        let mut known: Vec<String> = sync::read(&self.catalog).keys().cloned().collect();
        known.sort();
        format!(
            "unknown source or view '{name}' (defined so far: {})",
            known.join(", ")
        )
    }

    /// Plans a query, pointing errors at the offending part.
    async fn plan(&self, file: &str, q: &QueryStatement) -> Result<LogicalPlan, PipelineError> {
        let state = self.state();
        let mut query = q.query.as_ref().clone();
        normalize_window_calls(&mut query);
        join::rewrite_asof(&mut query);
        let stmt = DfStatement::Statement(Box::new(ast::Statement::Query(Box::new(query.clone()))));
        let result = match state.statement_to_plan(stmt).await {
            Ok(plan) => state.optimize(&plan),
            Err(e) => Err(e),
        };
        match result {
            Ok(plan) => Ok(plan),
            Err(e) => {
                let from_diag = e
                    .diagnostic()
                    .and_then(|d| d.span)
                    .map(|s| Location {
                        line: s.start.line,
                        column: s.start.column,
                    })
                    .filter(|l| !l.is_unknown());
                let at = match from_diag {
                    Some(l) => l,
                    None => locate::locate(&state, &query).await.unwrap_or(q.location),
                };
                Err(PipelineError::new(
                    file,
                    at,
                    self.friendly(clean_message(&e)),
                ))
            }
        }
    }

    /// A view's `max_state_bytes` and `state_policy`; errors are recorded.
    fn view_budget(&mut self, q: &mut QueryStatement) -> Result<StateBudget, ()> {
        let Some(opts) = q.options.as_mut() else {
            return Ok(StateBudget::default());
        };
        opts.declare(VIEW_OPTIONS.iter().chain([&FILL_KEYS]));
        let unknown = opts.unknown_for("a view");
        let max = opts.optional::<u64>(&MAX_STATE_BYTES);
        let policy = opts.optional::<String>(&STATE_POLICY);
        let before = self.errors.len();
        self.errors.extend(unknown);
        let max = max.map_err(|e| self.errors.push(e));
        let policy = policy.map_err(|e| self.errors.push(e));
        if self.errors.len() > before {
            return Err(());
        }
        let max = max?.map(|b| usize::try_from(b).unwrap_or(usize::MAX));
        let policy = policy?.map(|p| StatePolicy::parse(&p).expect("a declared choice"));
        Ok(StateBudget::declared(max, policy))
    }

    /// A view's `fill_keys = 'table.column'`; errors are recorded.
    fn fill_keys(&mut self, q: &QueryStatement) -> Result<Option<FillKeys>, ()> {
        let Some(opts) = q.options.as_ref() else {
            return Ok(None);
        };
        let Some(entry) = opts.entry(&FILL_KEYS) else {
            return Ok(None);
        };
        let found = entry.value.split_once('.').and_then(|(t, c)| {
            let table = self
                .tables
                .iter()
                .find(|x| x.name() == t.to_ascii_lowercase())?;
            let column = table.schema().index_of(&c.to_ascii_lowercase()).ok()?;
            Some(FillKeys {
                table: Arc::clone(table),
                column,
            })
        });
        match found {
            Some(f) => Ok(Some(f)),
            None => {
                let tables: Vec<&str> = self.tables.iter().map(|t| t.name()).collect();
                self.errors.push(opts.value_error(
                    entry,
                    &format!(
                        "expected table.column of a reference table (tables: {})",
                        if tables.is_empty() {
                            "none".to_string()
                        } else {
                            tables.join(", ")
                        }
                    ),
                ));
                Err(())
            }
        }
    }

    async fn query(&mut self, file: &str, mut q: QueryStatement, is_view: bool) {
        let (Ok(budget), Ok(fill)) = (self.view_budget(&mut q), self.fill_keys(&q)) else {
            // statements reading the view are not reported as reading an unknown one
            self.broken.insert(q.name);
            return;
        };
        let target = if is_view {
            None
        } else {
            match self.sink_ids.get(&q.name) {
                Some(&k) => Some(k),
                None if self.broken.contains(&q.name) => return,
                None => {
                    let hint = if self.names.contains_key(&q.name) {
                        format!(
                            "'{}' is a source or view, not a sink: INSERT INTO needs a sink (CREATE SINK {} WITH (...))",
                            q.name, q.name
                        )
                    } else {
                        format!(
                            "unknown sink '{}': declare it first with CREATE SINK {} WITH (connector = '...')",
                            q.name, q.name
                        )
                    };
                    self.errors.push(PipelineError::new(file, q.location, hint));
                    return;
                }
            }
        };
        let plan = match self.plan(file, &q).await {
            Ok(p) => p,
            Err(e) => {
                if !self
                    .broken
                    .iter()
                    .any(|b| e.message.contains(&format!("'{b}'")))
                {
                    self.errors.push(e);
                }
                return;
            }
        };
        if let Some((function, message)) = impossible_constants(&plan) {
            let at = locate::function_location(&q.query, &function).unwrap_or(q.location);
            self.errors.push(PipelineError::new(file, at, message));
            return;
        }
        let state = self.state();
        let lowered = match lower(&state, &plan, &self.info, fill) {
            Ok(l) => l,
            Err(e) => {
                let at = locate::part_location(&q.query, &e.part).unwrap_or(q.location);
                self.errors.push(PipelineError::new(file, at, e.message));
                return;
            }
        };
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let fingerprint = crate::checkpoint::stable_hash(
            format!(
                "{} {}\nstreaming: {}\noutput: {}\nplan:\n{}",
                if is_view { "view" } else { "insert into" },
                q.name,
                lowered.description,
                columns(&schema),
                plan.display_indent_schema()
            )
            .as_bytes(),
        );
        let target = match target {
            Some(k) => {
                if let Some(prev) = self.sink_schemas.get(&k)
                    && !same_columns(prev, &schema)
                {
                    self.errors.push(PipelineError::new(
                        file,
                        q.location,
                        format!("this INSERT's columns ({}) differ from an earlier INSERT INTO {} ({}): one sink takes one set of columns", columns(&schema), q.name, columns(prev)),
                    ));
                    return;
                }
                if let Err(e) = self.sinks[k.index()].sink.check_columns(&schema) {
                    self.errors.push(PipelineError::new(
                        file,
                        q.location,
                        format!("INSERT INTO {}: {e}", q.name),
                    ));
                    return;
                }
                self.sink_schemas.insert(k, Arc::clone(&schema));
                Target::Sink(k)
            }
            None => {
                if !self.claim_name(file, &q.name, q.location, "view") {
                    return;
                }
                let bounded = lowered
                    .branches
                    .iter()
                    .all(|b| self.info.bounded[b.stream.index()]);
                let stream =
                    StreamState::new(&q.name, Arc::clone(&schema), None, None, fingerprint);
                let id = self.add_stream(stream, lowered.time_cols.clone(), bounded);
                Target::Stream(id)
            }
        };
        let kind = if is_view { "view" } else { "insert into" };
        self.explain.push(format!(
            "{kind} {} ({}:{}:{})\n  streaming: {}\n  output: {}\n  plan:\n{}",
            q.name,
            file,
            q.location.line,
            q.location.column,
            lowered.description,
            columns(&schema),
            plan.display_indent()
                .to_string()
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
        self.pipelines.push(PipelineExec {
            telemetry: Arc::new(PipelineTelemetry::new(&q.name)),
            name: q.name,
            branches: lowered.branches,
            window: lowered.window,
            join: lowered.join,
            post: lowered.post,
            schema,
            target,
            out_time: lowered.out_time,
            dead_letters: None,
            budget,
            fingerprint,
        });
    }
}

/// A constant argument of one of Weir's functions that can never work (`ewma(x, 2)`,
/// `iso10816_zone(v, 'no_such_class')`, ...): the function and the message.
fn impossible_constants(plan: &LogicalPlan) -> Option<(String, String)> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    fn constant(e: &Expr) -> Option<ScalarValue> {
        match e {
            Expr::Literal(v, _) => Some(v.clone()),
            Expr::Alias(a) => constant(&a.expr),
            Expr::Cast(c) => constant(&c.expr).and_then(|v| v.cast_to(c.field.data_type()).ok()),
            Expr::TryCast(c) => constant(&c.expr).and_then(|v| v.cast_to(c.field.data_type()).ok()),
            _ => None,
        }
    }
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|sub| {
                let (name, args) = match sub {
                    Expr::ScalarFunction(f) => (f.name().to_string(), &f.args),
                    Expr::AggregateFunction(a) => (a.func.name().to_string(), &a.params.args),
                    Expr::WindowFunction(w) => (w.fun.name().to_string(), &w.params.args),
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                let constants: Vec<Option<ScalarValue>> = args.iter().map(constant).collect();
                match weir_udf::constants::check_constants(&name, &constants) {
                    Ok(()) => Ok(TreeNodeRecursion::Continue),
                    Err(m) => {
                        found = Some((name, m));
                        Ok(TreeNodeRecursion::Stop)
                    }
                }
            })
        })
    });
    found
}

fn same_columns(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// `name type, ...`: a schema's columns, for messages.
pub fn columns(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Gives every pipeline a distinct, stable name (the summary's, the metrics' and the live
/// tables'): a view is its name; inserts into one sink are the sink's name, then `sink_2`,
/// `sink_3`, ... in file order.
fn name_inserts(pipelines: &mut [PipelineExec]) {
    let mut taken: std::collections::HashSet<String> = pipelines
        .iter()
        .filter(|p| matches!(p.target, Target::Stream(_)))
        .map(|p| p.name.clone())
        .collect();
    for p in pipelines
        .iter_mut()
        .filter(|p| matches!(p.target, Target::Sink(_)))
    {
        let mut name = p.name.clone();
        let mut n = 1;
        while !taken.insert(name.clone()) {
            n += 1;
            name = format!("{}_{n}", p.name);
        }
        if name != p.name {
            p.telemetry = Arc::new(PipelineTelemetry::new(&name));
            p.name = name;
        }
    }
}

/// Compiles parsed pipeline files, in order. Every error found is returned.
pub async fn compile(
    files: Vec<PipelineFile>,
    connectors: &Connectors,
    emit_on_end: bool,
) -> Result<Project, Diagnostics> {
    let catalog: StreamCatalog = Arc::new(RwLock::new(HashMap::new()));
    let mut c = Compiler {
        connectors,
        ctx: planning_context(&catalog),
        catalog,
        errors: Vec::new(),
        streams: Vec::new(),
        info: Streams {
            time: Vec::new(),
            bounded: Vec::new(),
        },
        names: HashMap::new(),
        broken: Default::default(),
        sources: Vec::new(),
        sinks: Vec::new(),
        sink_ids: HashMap::new(),
        sink_schemas: HashMap::new(),
        pipelines: Vec::new(),
        explain: Vec::new(),
        tables: Vec::new(),
    };
    // Sources and sinks first so queries may refer to them wherever they are declared;
    // views are read in file order.
    let mut queries = Vec::new();
    for f in files {
        for s in f.statements {
            match s {
                Statement::Source(s) => {
                    let (name, before) = (s.name.clone(), c.errors.len());
                    c.source(&f.path, s).await;
                    if c.errors.len() > before {
                        c.broken.insert(name);
                    }
                }
                Statement::Sink(s) => {
                    let (name, before) = (s.name.clone(), c.errors.len());
                    c.sink(&f.path, s);
                    if c.errors.len() > before {
                        c.broken.insert(name);
                    }
                }
                Statement::Table(t) => {
                    let (name, before) = (t.name.clone(), c.errors.len());
                    c.table(&f.path, t).await;
                    if c.errors.len() > before {
                        c.broken.insert(name);
                    }
                }
                Statement::View(q) => queries.push((f.path.clone(), q, true)),
                Statement::Insert(q) => queries.push((f.path.clone(), q, false)),
            }
        }
    }
    for (file, q, is_view) in queries {
        c.query(&file, q, is_view).await;
    }
    if c.errors.is_empty() && c.pipelines.is_empty() {
        return Err(Diagnostics(vec![PipelineError::new(
            "weir",
            Location { line: 1, column: 1 },
            "nothing to run: the files define no CREATE VIEW or INSERT INTO",
        )]));
    }
    if !c.errors.is_empty() {
        c.errors
            .sort_by(|a, b| (a.file.as_str(), a.location).cmp(&(b.file.as_str(), b.location)));
        return Err(Diagnostics(c.errors));
    }
    name_inserts(&mut c.pipelines);
    let dataflow = Dataflow::new(c.streams, c.pipelines, emit_on_end);
    Ok(Project {
        sources: c.sources,
        sinks: c.sinks,
        dataflow,
        explain: c.explain,
        tables: c.tables,
    })
}
