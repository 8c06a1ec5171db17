//! Ad-hoc SQL over a snapshot of the live tables, with DataFusion.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::MemTable;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;

use super::snapshot::Snapshot;
use super::{CATALOG, LATEST, SCHEMAS};
use crate::parse::limits;

/// Why a query failed, by whose fault.
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
}

/// A context whose catalog `weir` holds the snapshot's tables (`latest` is the default
/// schema), with Weir's functions registered.
pub fn session(snap: &Snapshot) -> Result<SessionContext, QueryError> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, LATEST)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .with_target_partitions(1);
    let ctx = SessionContext::new_with_config(config);
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
    QueryError::Failed(crate::compile::clean_message(&e))
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
pub async fn plan_sql(snap: &Snapshot, sql: &str) -> Result<SchemaRef, QueryError> {
    let ctx = session(snap)?;
    let df = dataframe(&ctx, sql).await?;
    Ok(Arc::new(df.schema().as_arrow().clone()))
}

/// Runs `sql` against `snap`: the schema and rows of its result.
pub async fn run_sql(
    snap: &Snapshot,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
    let ctx = session(snap)?;
    let df = dataframe(&ctx, sql).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(failed)?;
    Ok((schema, batches))
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}
