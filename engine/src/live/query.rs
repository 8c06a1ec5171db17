//! Ad-hoc SQL over a snapshot of the live tables, with DataFusion.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::MemTable;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;

use super::snapshot::Snapshot;
use super::{CATALOG, LATEST, SCHEMAS};
use crate::parse::limits;

/// Why a query failed, by whose fault.
#[cfg_attr(not(feature = "flight"), allow(dead_code))] // parts only Flight SQL uses
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL does not parse, plan or type-check, or is not a read-only query.
    #[error("{0}")]
    Invalid(String),
    /// A table it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Running it failed.
    #[error("{0}")]
    Failed(String),
    /// It needed more memory than `--flight-query-memory` allows.
    #[error("{0}")]
    TooLarge(String),
    /// It ran longer than `--flight-query-timeout`.
    #[error("{0}")]
    TimedOut(String),
    /// `--flight-query-concurrency` queries were already running.
    #[error("{0}")]
    Busy(String),
}

/// Bounds on ad-hoc queries: `--flight-query-memory`, `--flight-query-timeout` and
/// `--flight-query-concurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Memory all running queries together may take: their operators' state and their
    /// results (nothing spills to disk).
    pub memory: usize,
    /// Longest a query may run (0: no limit).
    pub timeout: Duration,
    /// Queries that may run at once; more are refused.
    pub concurrency: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            memory: 32 << 20,
            timeout: Duration::from_secs(30),
            concurrency: 2,
        }
    }
}

impl QueryLimits {
    /// The memory pool queries run in: at most `memory` bytes, shared by all of them.
    pub fn pool(&self) -> Arc<dyn MemoryPool> {
        Arc::new(GreedyMemoryPool::new(self.memory))
    }
}

/// A query's rows and the memory they hold in the pool (released when dropped).
#[cfg_attr(not(feature = "flight"), allow(dead_code))] // parts only Flight SQL uses
pub struct QueryOutput {
    /// The result's schema.
    pub schema: SchemaRef,
    /// Its rows.
    pub batches: Vec<RecordBatch>,
    /// Their bytes, reserved in the query pool.
    pub held: MemoryReservation,
}

/// A context whose catalog `weir` holds the snapshot's tables (`latest` is the default
/// schema), with Weir's functions registered.
pub fn session(snap: &Snapshot, pool: &Arc<dyn MemoryPool>) -> Result<SessionContext, QueryError> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, LATEST)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .with_target_partitions(1);
    // operators that would spill fail instead: the edge node's disk is for the spill directory
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::clone(pool))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(failed)?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let catalog = MemoryCatalogProvider::new();
    for name in SCHEMAS {
        catalog
            .register_schema(name, Arc::new(MemorySchemaProvider::new()))
            .map_err(failed)?;
    }
    for entry in snap.entries() {
        let table =
            MemTable::try_new(entry.arrow_schema.clone(), vec![entry.batches]).map_err(failed)?;
        let schema = catalog
            .schema(entry.schema)
            .expect("every schema was registered above");
        schema
            .register_table(entry.name, Arc::new(table))
            .map_err(failed)?;
    }
    ctx.register_catalog(CATALOG, Arc::new(catalog));
    weir_udf::register(&ctx);
    Ok(ctx)
}

fn failed(e: DataFusionError) -> QueryError {
    let message = crate::compile::clean_message(&e);
    if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
        QueryError::TooLarge(format!(
            "the query needs more memory than --flight-query-memory allows: {message}"
        ))
    } else {
        QueryError::Failed(message)
    }
}

/// Sorts a planning error into the client's fault (bad SQL, unknown table).
fn planning(e: DataFusionError) -> QueryError {
    let msg = crate::compile::clean_message(&e);
    if msg.contains("table '") && msg.contains("' not found") {
        QueryError::NotFound(format!(
            "{msg}: live tables are latest.<view or sink>, history.<view or sink>, sources.<source> and system.{{pipelines, sources, source_errors, watermarks, sinks}} (list them with SELECT * FROM information_schema.tables)"
        ))
    } else {
        QueryError::Invalid(msg)
    }
}

/// Parses `sql`, checks it against the expression bounds and that it only reads, and plans
/// it in `ctx`.
async fn dataframe(ctx: &SessionContext, sql: &str) -> Result<DataFrame, QueryError> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect).map_err(planning)?;
    if let DfStatement::Statement(s) = &statement {
        limits::check_statement(s).map_err(|e| {
            let at = e.location;
            QueryError::Invalid(if at.is_unknown() {
                e.message
            } else {
                format!("{} (at line {}, column {})", e.message, at.line, at.column)
            })
        })?;
    }
    let plan = state.statement_to_plan(statement).await.map_err(planning)?;
    read_only().verify_plan(&plan).map_err(planning)?;
    ctx.execute_logical_plan(plan).await.map_err(planning)
}

/// Plans `sql` against `snap`: the schema of its result.
#[cfg_attr(not(feature = "flight"), allow(dead_code))] // parts only Flight SQL uses
pub async fn plan_sql(
    snap: &Snapshot,
    sql: &str,
    pool: &Arc<dyn MemoryPool>,
) -> Result<SchemaRef, QueryError> {
    let ctx = session(snap, pool)?;
    let df = dataframe(&ctx, sql).await?;
    Ok(Arc::new(df.schema().as_arrow().clone()))
}

/// Runs `sql` against `snap` in `pool`: the schema and rows of its result, whose bytes are
/// held in the pool too (a result larger than the pool is refused, not collected).
pub async fn run_sql(
    snap: &Snapshot,
    sql: &str,
    pool: &Arc<dyn MemoryPool>,
) -> Result<QueryOutput, QueryError> {
    let ctx = session(snap, pool)?;
    let df = dataframe(&ctx, sql).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let held = MemoryConsumer::new("Flight SQL result").register(pool);
    let mut stream = df.execute_stream().await.map_err(failed)?;
    let mut batches = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b.map_err(failed)?;
        held.try_grow(b.get_array_memory_size()).map_err(failed)?;
        batches.push(b);
        // a query over in-memory tables may never wait: let the timeout and others run
        tokio::task::consume_budget().await;
    }
    Ok(QueryOutput {
        schema,
        batches,
        held,
    })
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}
