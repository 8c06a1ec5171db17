//! Reference tables: `CREATE TABLE name (columns, PRIMARY KEY (...)) WITH (connector = 'file',
//! ...)`. A table is read whole before any source starts and checked (declared columns,
//! primary key unique and not null, `max_rows`, `max_bytes`); while the run goes on its data
//! is looked at every `reload` and read again when it changed. A new version replaces the old
//! one in one step — a batch of stream rows joins one version, never half of two — and a load
//! that fails keeps the version in use.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use arrow::array::Array;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result as DfResult, plan_err};
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::watch;

use crate::connector::TableLoader;
use crate::observe::telemetry::TableTelemetry;
use crate::parse::options::{OptionSpec, OptionType};
use crate::sync;

/// `reload`: how often a table's data is looked at for changes.
pub const RELOAD: OptionSpec = OptionSpec::new(
    "reload",
    OptionType::Duration,
    "how often to look whether the data changed and read it again (`0s`: read once, at start)",
)
.default("30s");
/// `max_rows`: the most rows a table may have.
pub const MAX_ROWS: OptionSpec = OptionSpec::new(
    "max_rows",
    OptionType::Integer,
    "the most rows the table may have: a load with more fails (at start: the run does not start)",
)
.default("1000000");
/// `max_bytes`: the most memory a table may take.
pub const MAX_BYTES: OptionSpec = OptionSpec::new(
    "max_bytes",
    OptionType::Bytes,
    "the most memory (Arrow buffers) the table may take, and the largest file read for it: a load with more fails",
)
.default("64MiB");

/// `fill_keys` (a view option): the table column whose keys every window must have.
pub const FILL_KEYS: OptionSpec = OptionSpec::new(
    "fill_keys",
    OptionType::Text,
    "`table.column`: every closed window gets a row for each key of this reference-table column that had no rows in it (`count` 0, other aggregates null); TUMBLE or HOP with one key",
);

/// The options the engine reads on every reference table, besides the connector's own.
pub const TABLE_OPTIONS: &[OptionSpec] =
    &[crate::connector::CONNECTOR, RELOAD, MAX_ROWS, MAX_BYTES];

/// One version of a table's rows.
#[derive(Debug)]
pub struct TableVersion {
    /// 1 for the first load, then one more per load that changed something.
    pub number: u64,
    /// Every row.
    pub batch: RecordBatch,
    /// When it was read.
    pub loaded_at: SystemTime,
    /// The loader's stamp of the data it was read from.
    stamp: String,
}

/// Limits a load must stay within.
#[derive(Debug, Clone, Copy)]
pub struct TableLimits {
    /// Most rows.
    pub max_rows: u64,
    /// Most bytes of Arrow buffers.
    pub max_bytes: u64,
}

/// A reference table: its declaration, its loader and the version in use.
pub struct ReferenceTable {
    name: String,
    schema: SchemaRef,
    key: Vec<usize>,
    loader: Box<dyn TableLoader>,
    reload: Option<Duration>,
    limits: TableLimits,
    current: RwLock<Arc<TableVersion>>,
    telemetry: TableTelemetry,
}

impl std::fmt::Debug for ReferenceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceTable")
            .field("name", &self.name)
            .field("location", &self.loader.location())
            .field("version", &self.current().number)
            .finish()
    }
}

impl ReferenceTable {
    /// Reads table `name` (columns `schema`, primary key columns `key`) through `loader`:
    /// the first version, checked. `reload`: how often to look for changes afterwards.
    pub fn load(
        name: &str,
        schema: SchemaRef,
        key: Vec<usize>,
        loader: Box<dyn TableLoader>,
        reload: Option<Duration>,
        limits: TableLimits,
    ) -> Result<Self, String> {
        let stamp = loader
            .stamp()
            .map_err(|e| format!("cannot read {}: {e}", loader.location()))?;
        let mut table = Self {
            name: name.to_string(),
            telemetry: TableTelemetry::new(name),
            current: RwLock::new(Arc::new(TableVersion {
                number: 0,
                batch: RecordBatch::new_empty(Arc::clone(&schema)),
                loaded_at: SystemTime::now(),
                stamp: String::new(),
            })),
            schema,
            key,
            loader,
            reload,
            limits,
        };
        let batch = table.read()?;
        let rows = batch.num_rows() as u64;
        table.current = RwLock::new(Arc::new(TableVersion {
            number: 1,
            batch,
            loaded_at: SystemTime::now(),
            stamp,
        }));
        table.telemetry.loaded(1, rows, &table.loader.location());
        Ok(table)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its declared columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Its primary key columns (empty when none is declared).
    pub fn key(&self) -> &[usize] {
        &self.key
    }

    /// Where its data comes from.
    pub fn location(&self) -> String {
        self.loader.location()
    }

    /// How often its data is looked at for changes (`None`: never).
    pub fn reload(&self) -> Option<Duration> {
        self.reload
    }

    /// The limits a load must stay within.
    pub fn limits(&self) -> TableLimits {
        self.limits
    }

    /// Its counters.
    pub fn telemetry(&self) -> &TableTelemetry {
        &self.telemetry
    }

    /// The version in use: every row of one batch is joined with the same one.
    pub fn current(&self) -> Arc<TableVersion> {
        Arc::clone(&sync::read(&self.current))
    }

    /// Reads the data again when its stamp changed; a version that fails its checks is not
    /// used (the error is counted and logged). `Ok(true)` when a new version is in use.
    /// Blocking: call it off the runtime's threads.
    pub fn refresh(&self) -> Result<bool, String> {
        let result = self.try_refresh();
        if let Err(e) = &result {
            self.telemetry.load_failed(e);
        }
        result
    }

    fn try_refresh(&self) -> Result<bool, String> {
        let stamp = self
            .loader
            .stamp()
            .map_err(|e| format!("cannot read {}: {e}", self.loader.location()))?;
        let old = self.current();
        if stamp == old.stamp {
            return Ok(false);
        }
        let batch = self.read()?;
        let rows = batch.num_rows() as u64;
        let number = old.number + 1;
        *sync::write(&self.current) = Arc::new(TableVersion {
            number,
            batch,
            loaded_at: SystemTime::now(),
            stamp,
        });
        self.telemetry.loaded(number, rows, &self.loader.location());
        Ok(true)
    }

    /// Every row, checked against the limits and the primary key.
    fn read(&self) -> Result<RecordBatch, String> {
        let location = self.loader.location();
        let batches = self.loader.load().map_err(|e| format!("{e:#}"))?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows as u64 > self.limits.max_rows {
            return Err(format!(
                "{location}: {rows} rows, more than max_rows = {} of table '{}' (raise max_rows or trim the file)",
                self.limits.max_rows, self.name
            ));
        }
        let batch = concat_batches(&self.schema, &batches).map_err(|e| e.to_string())?;
        let bytes = batch.get_array_memory_size() as u64;
        if bytes > self.limits.max_bytes {
            return Err(format!(
                "{location}: {bytes} bytes in memory, more than max_bytes = {} of table '{}' (raise max_bytes or trim the file)",
                self.limits.max_bytes, self.name
            ));
        }
        check_key(&batch, &self.key).map_err(|e| format!("{location}: {e}"))?;
        Ok(batch)
    }
}

/// Refuses a null or duplicate primary key, naming the key and the rows (counted from 1).
fn check_key(batch: &RecordBatch, key: &[usize]) -> Result<(), String> {
    if key.is_empty() {
        return Ok(());
    }
    let schema = batch.schema();
    let names: Vec<&str> = key
        .iter()
        .map(|&k| schema.field(k).name().as_str())
        .collect();
    for &k in key {
        let col = batch.column(k);
        if let Some(row) = (0..col.len()).find(|&r| col.is_null(r)) {
            return Err(format!(
                "row {}: primary key column '{}' is null",
                row + 1,
                schema.field(k).name()
            ));
        }
    }
    let columns: Vec<_> = key.iter().map(|&k| Arc::clone(batch.column(k))).collect();
    let converter = RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )
    .map_err(|e| e.to_string())?;
    let rows = converter
        .convert_columns(&columns)
        .map_err(|e| e.to_string())?;
    let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(rows.num_rows());
    let mut duplicates = Vec::new();
    for i in 0..rows.num_rows() {
        if let Some(first) = seen.insert(rows.row(i).data(), i) {
            duplicates.push((first, i));
        }
    }
    if duplicates.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = duplicates
        .iter()
        .take(5)
        .map(|&(first, again)| {
            let values: Vec<String> = key
                .iter()
                .map(|&k| {
                    arrow::util::display::array_value_to_string(batch.column(k), again)
                        .unwrap_or_default()
                })
                .collect();
            format!(
                "({}) in rows {} and {}",
                values.join(", "),
                first + 1,
                again + 1
            )
        })
        .collect();
    Err(format!(
        "{} duplicate primary key{} ({}): {}{}",
        duplicates.len(),
        if duplicates.len() == 1 { "" } else { "s" },
        names.join(", "),
        shown.join("; "),
        if duplicates.len() > 5 { "; ..." } else { "" }
    ))
}

/// Looks at each table's data every `reload` and reads it again when it changed, until
/// `stop` turns true.
pub async fn keep_fresh(tables: Vec<Arc<ReferenceTable>>, stop: watch::Receiver<bool>) {
    let watched: Vec<_> = tables
        .into_iter()
        .filter_map(|t| t.reload.map(|every| (t, every)))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (table, every) in watched {
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let t = Arc::clone(&table);
                // errors are counted and logged by refresh
                let _ = tokio::task::spawn_blocking(move || t.refresh()).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// A reference table as DataFusion's planner sees it. Only planned: the compiler turns a
/// join with it into a lookup step.
#[derive(Debug)]
pub struct ReferenceProvider {
    /// The table.
    pub table: Arc<ReferenceTable>,
}

#[async_trait]
impl TableProvider for ReferenceProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.table.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan_err!(
            "reference table '{}' is read by joining a stream with it (FROM stream JOIN {} ON ...)",
            self.table.name,
            self.table.name
        )
    }
}
