//! Compiles pipeline files into a runnable project: checks every statement, plans queries
//! with DataFusion and lowers them into streaming operators — all before anything connects.

mod locate;
pub mod lower;
pub mod tables;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::optimizer::Optimizer;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{self, ObjectName, ObjectNamePart, Spanned};

use crate::connector::{Connectors, Sink, SinkSpec, SinkStats, Source, SourceSpec};
use crate::diagnostic::{Diagnostics, Location, PipelineError};
use crate::exec::dataflow::{Dataflow, SourceClock, StreamState};
use crate::exec::pipeline::{PipelineExec, Target};
use crate::parse::{
    Options, PipelineFile, QueryStatement, SinkStatement, SourceStatement, Statement,
};
use lower::{StreamInfo, lower};
use tables::{StreamCatalog, StreamEntry, StreamTable, WindowFn, WindowTvf};

/// Default for `idle_timeout` on sources.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A source ready to start.
pub struct CompiledSource {
    /// Name.
    pub name: String,
    /// Connector name.
    pub connector: String,
    /// Stream id (same as its index among sources).
    pub stream: usize,
    /// The source.
    pub source: Box<dyn Source>,
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
    pub stats: Arc<SinkStats>,
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
    fn time_cols(&self, stream: usize) -> Vec<usize> {
        self.time[stream].clone()
    }
    fn is_bounded(&self, stream: usize) -> bool {
        self.bounded[stream]
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
    sink_ids: HashMap<String, usize>,
    sink_schemas: HashMap<usize, SchemaRef>,
    pipelines: Vec<PipelineExec>,
    explain: Vec<String>,
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

    fn add_stream(
        &mut self,
        name: &str,
        schema: SchemaRef,
        time_cols: Vec<usize>,
        bounded: bool,
        clock: Option<SourceClock>,
    ) -> usize {
        let id = self.streams.len();
        self.streams
            .push(StreamState::new(name, Arc::clone(&schema), clock));
        self.info.time.push(time_cols.clone());
        self.info.bounded.push(bounded);
        self.catalog.write().expect("catalog lock").insert(
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
        let Some(entry) = opts.entry("connector") else {
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
        self.errors.push(PipelineError::new(
            opts.file(),
            entry.value_location,
            format!(
                "unknown {kind} connector '{}' (available: {})",
                entry.value,
                known.join(", ")
            ),
        ));
        None
    }

    async fn source(&mut self, file: &str, s: SourceStatement) {
        let opts = &s.options;
        let names = self.connectors.source_names();
        let Some(factory) = self
            .connector_name(opts, "source", &names)
            .and_then(|n| self.connectors.source(&n).cloned())
        else {
            return;
        };
        // Column types, as DataFusion maps SQL types.
        let table =
            ast::helpers::stmt_create_table::CreateTableBuilder::new(ObjectName::from(vec![
                ast::Ident::new(s.name.clone()),
            ]))
            .columns(s.columns.clone())
            .build();
        let schema = match self
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(
                ast::Statement::CreateTable(table),
            )))
            .await
        {
            Ok(LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(t))) => {
                normalize_schema(t.input.schema().as_arrow())
            }
            Ok(_) => unreachable!("CREATE TABLE plans to CreateMemoryTable"),
            Err(e) => {
                let at = s
                    .columns
                    .first()
                    .map(|c| Location::from_sql(c.span().start))
                    .unwrap_or(s.location);
                self.errors
                    .push(PipelineError::new(file, at, clean_message(&e)));
                return;
            }
        };
        let mut ok = true;
        let event_time = match opts.entry("event_time") {
            None => None,
            Some(e) => match schema.index_of(&e.value) {
                Err(_) => {
                    self.errors.push(opts.value_error(
                        e,
                        &format!(
                                "no such column (columns: {})",
                                schema
                                    .fields()
                                    .iter()
                                    .map(|f| f.name().as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                    ));
                    ok = false;
                    None
                }
                Ok(i) if !matches!(schema.field(i).data_type(), DataType::Timestamp(_, _)) => {
                    self.errors.push(opts.value_error(e, &format!(
                        "type mismatch: the event-time column must be TIMESTAMP, but '{}' is {}",
                        e.value,
                        schema.field(i).data_type()
                    )));
                    ok = false;
                    None
                }
                Ok(i) => Some(i),
            },
        };
        let delay = opts.duration("watermark");
        let idle = opts.duration("idle_timeout");
        let (delay, idle) = match (delay, idle) {
            (Ok(d), Ok(i)) => (d.unwrap_or_default(), i.unwrap_or(DEFAULT_IDLE_TIMEOUT)),
            (d, i) => {
                self.errors.extend(d.err());
                self.errors.extend(i.err());
                return;
            }
        };
        if event_time.is_none() && opts.get("watermark").is_some() {
            self.errors.push(opts.error(
                "option 'watermark' needs an event-time column: add event_time = '<column>'",
            ));
            ok = false;
        }
        let spec = SourceSpec {
            name: s.name.clone(),
            schema: Arc::clone(&schema),
            event_time,
        };
        let source = factory.build(&spec, opts);
        self.errors.extend(opts.unknown(factory.name()));
        let source = match source {
            Ok(src) => src,
            Err(e) => {
                self.errors.push(e);
                return;
            }
        };
        if !ok || !self.claim_name(file, &s.name, s.location, "source") {
            return;
        }
        let clock = event_time.map(|c| SourceClock {
            event_time: c,
            delay: delay.as_nanos().min(i64::MAX as u128) as i64,
            idle_timeout: idle,
            max_time: None,
        });
        let bounded = source.is_bounded();
        let id = self.add_stream(
            &s.name,
            schema,
            event_time.into_iter().collect(),
            bounded,
            clock,
        );
        self.sources.push(CompiledSource {
            name: s.name,
            connector: factory.name().to_string(),
            stream: id,
            source,
        });
    }

    fn sink(&mut self, file: &str, s: SinkStatement) {
        let opts = &s.options;
        let names = self.connectors.sink_names();
        let Some(factory) = self
            .connector_name(opts, "sink", &names)
            .and_then(|n| self.connectors.sink(&n).cloned())
        else {
            return;
        };
        let stats = Arc::new(SinkStats::default());
        let sink = factory.build(
            &SinkSpec {
                name: s.name.clone(),
                stats: Arc::clone(&stats),
            },
            opts,
        );
        self.errors.extend(opts.unknown(factory.name()));
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
        self.sink_ids.insert(s.name.clone(), self.sinks.len());
        self.sinks.push(CompiledSink {
            name: s.name,
            connector: factory.name().to_string(),
            sink,
            stats,
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
        let mut known: Vec<String> = self
            .catalog
            .read()
            .expect("catalog lock")
            .keys()
            .cloned()
            .collect();
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

    async fn query(&mut self, file: &str, q: QueryStatement, is_view: bool) {
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
        let state = self.state();
        let lowered = match lower(&state, &plan, &self.info) {
            Ok(l) => l,
            Err(e) => {
                let at = locate::part_location(&q.query, e.part).unwrap_or(q.location);
                self.errors.push(PipelineError::new(file, at, e.message));
                return;
            }
        };
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
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
                self.sink_schemas.insert(k, Arc::clone(&schema));
                Target::Sink(k)
            }
            None => {
                if !self.claim_name(file, &q.name, q.location, "view") {
                    return;
                }
                let bounded = lowered.branches.iter().all(|b| self.info.bounded[b.stream]);
                let id = self.add_stream(
                    &q.name,
                    Arc::clone(&schema),
                    lowered.time_cols.clone(),
                    bounded,
                    None,
                );
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
            name: q.name,
            branches: lowered.branches,
            window: lowered.window,
            post: lowered.post,
            schema,
            target,
            out_time: lowered.out_time,
            rows_in: 0,
            rows_out: 0,
            errors: 0,
        });
    }
}

fn same_columns(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

fn columns(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
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
    let dataflow = Dataflow::new(c.streams, c.pipelines, emit_on_end);
    Ok(Project {
        sources: c.sources,
        sinks: c.sinks,
        dataflow,
        explain: c.explain,
    })
}
