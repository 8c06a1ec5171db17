//! The Flight SQL service over the live tables: statements, prepared statements and the
//! metadata commands generic clients browse with.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::auth::Auth;
use datafusion::execution::memory_pool::MemoryPool;
use tokio::sync::Semaphore;

use crate::live::query::plan_sql;
use crate::live::{CATALOG, LiveHub, QueryError, QueryLimits, SCHEMAS, run_sql};
use crate::observe::telemetry::{FlightTelemetry, QueryResult};

/// A stream of Flight data for DoGet.
pub type DataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// Table types clients can filter by.
pub const TABLE_TYPES: [&str; 2] = ["TABLE", "SYSTEM TABLE"];

/// Serves the live tables of `hub` to Flight SQL clients.
pub struct LiveSql {
    hub: Arc<LiveHub>,
    auth: Auth,
    info: SqlInfoData,
    telemetry: Arc<FlightTelemetry>,
    limits: QueryLimits,
    /// The memory all queries share.
    pool: Arc<dyn MemoryPool>,
    /// A permit per query that may run.
    running: Arc<Semaphore>,
}

impl LiveSql {
    /// A service over `hub`, handing `auth`'s token out on handshakes, running queries within
    /// `limits`, counting them in `telemetry`.
    pub fn new(
        hub: Arc<LiveHub>,
        auth: Auth,
        limits: QueryLimits,
        telemetry: Arc<FlightTelemetry>,
    ) -> Self {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "weir");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(
            SqlInfo::FlightSqlServerStatementTimeout,
            i32::try_from(limits.timeout.as_millis()).unwrap_or(i32::MAX),
        );
        b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(SqlInfo::SqlQuotedIdentifierCase, 1i32); // case sensitive
        b.append(SqlInfo::SqlAllTablesAreSelectable, true);
        b.append(SqlInfo::SqlTransactionsSupported, false);
        let info = b.build().expect("static SqlInfo values build");
        Self {
            hub,
            auth,
            info,
            telemetry,
            pool: limits.pool(),
            running: Arc::new(Semaphore::new(limits.concurrency)),
            limits,
        }
    }

    /// The service's hub.
    pub fn hub(&self) -> &Arc<LiveHub> {
        &self.hub
    }

    async fn query(&self, sql: &str) -> Result<DataStream, Status> {
        let started = Instant::now();
        let Ok(permit) = Arc::clone(&self.running).try_acquire_owned() else {
            let e = QueryError::Busy(format!(
                "{} queries are running already (--flight-query-concurrency): try again when one has finished",
                self.limits.concurrency
            ));
            return Err(self.failed(sql, e));
        };
        let snap = self.hub.snapshot();
        let run = run_sql(&snap, sql, &self.pool);
        let out = if self.limits.timeout.is_zero() {
            run.await
        } else {
            match tokio::time::timeout(self.limits.timeout, run).await {
                Ok(r) => r,
                Err(_) => Err(QueryError::TimedOut(format!(
                    "the query ran longer than --flight-query-timeout ({}) and was stopped",
                    humantime::format_duration(self.limits.timeout)
                ))),
            }
        };
        drop(permit);
        let out = out.map_err(|e| {
            release_memory();
            self.failed(sql, e)
        })?;
        let elapsed = started.elapsed();
        self.telemetry.query(QueryResult::Ok, Some(elapsed));
        let rows: usize = out.batches.iter().map(|b| b.num_rows()).sum();
        debug!(sql, rows, elapsed = ?elapsed, "query answered");
        let held = out.held;
        let batches = stream(out.schema, out.batches);
        // the result's memory goes back to the pool, and to the system, once it is sent
        let release = futures::stream::once(async move {
            let big = held.size() >= RELEASE_ABOVE;
            drop(held);
            if big {
                release_memory();
            }
        })
        .filter_map(|()| async { None });
        Ok(Box::pin(batches.chain(release)))
    }

    async fn plan(&self, sql: &str) -> Result<SchemaRef, Status> {
        plan_sql(&self.hub.snapshot(), sql, &self.pool)
            .await
            .map_err(|e| self.failed(sql, e))
    }

    /// Counts and logs a failed query; its Flight status.
    fn failed(&self, sql: &str, e: QueryError) -> Status {
        let result = match &e {
            QueryError::Invalid(_) => QueryResult::Invalid,
            QueryError::NotFound(_) => QueryResult::NotFound,
            QueryError::Failed(_) => QueryResult::Failed,
            QueryError::TooLarge(_) => QueryResult::TooLarge,
            QueryError::TimedOut(_) => QueryResult::TimedOut,
            QueryError::Busy(_) => QueryResult::Busy,
        };
        self.telemetry.query(result, None);
        debug!(sql, error = %e, "query rejected");
        to_status(e)
    }
}

/// The Flight status for a failed query.
pub fn to_status(e: QueryError) -> Status {
    match e {
        QueryError::Invalid(m) => Status::invalid_argument(m),
        QueryError::NotFound(m) => Status::not_found(m),
        QueryError::Failed(m) => Status::internal(m),
        QueryError::TooLarge(m) | QueryError::Busy(m) => Status::resource_exhausted(m),
        QueryError::TimedOut(m) => Status::deadline_exceeded(m),
    }
}

/// Results at least this large hand their memory back to the system once sent.
const RELEASE_ABOVE: usize = 1 << 20;

/// Hands memory freed by a large query back to the system (glibc keeps freed memory in its
/// arenas otherwise; other allocators return it themselves).
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Encodes `batches` (with `schema`, also when there are none) as a DoGet stream.
pub fn stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> DataStream {
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Box::pin(data)
}

/// A FlightInfo with one endpoint holding `ticket`.
pub fn info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
    rows: i64,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor)
        .with_total_records(rows))
}

/// A FlightInfo whose ticket is the command `cmd` itself.
fn command_info(
    cmd: &impl ProstMessageExt,
    schema: &Schema,
    request: Request<FlightDescriptor>,
    rows: i64,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = cmd.as_any().encode_to_vec();
    Ok(Response::new(info(
        schema,
        ticket,
        request.into_inner(),
        rows,
    )?))
}

fn utf8(bytes: &[u8]) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8"))
}

fn one_batch<E: std::fmt::Display>(batch: Result<RecordBatch, E>) -> Result<DataStream, Status> {
    let b = batch.map_err(|e| Status::internal(e.to_string()))?;
    Ok(stream(b.schema(), vec![b]))
}

#[tonic::async_trait]
impl FlightSqlService for LiveSql {
    type FlightService = LiveSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        self.auth.check(request.metadata())?;
        let token = self.auth.token().unwrap_or_default().to_string();
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into_bytes().into(),
        };
        let out: Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>> =
            Box::pin(futures::stream::iter([Ok(reply)]));
        let mut response = Response::new(out);
        if !token.is_empty() {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("the token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.plan(&query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        let ticket = ticket.as_any().encode_to_vec();
        Ok(Response::new(info(
            &schema,
            ticket,
            request.into_inner(),
            -1,
        )?))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.plan(&utf8(&cmd.prepared_statement_handle)?).await?;
        command_info(&cmd, &schema, request, -1)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = utf8(&ticket.statement_handle)?;
        Ok(Response::new(self.query(&sql).await?))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = utf8(&cmd.prepared_statement_handle)?;
        Ok(Response::new(self.query(&sql).await?))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let schema = self.plan(&query.query).await?;
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Handles are the statement's text: nothing is held per statement.
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query, &query.into_builder().schema(), request, 1)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG);
        Ok(Response::new(one_batch(b.build())?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query, &query.clone().into_builder().schema(), request, -1)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for s in SCHEMAS {
            b.append(CATALOG, s);
        }
        Ok(Response::new(one_batch(b.build())?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query, &query.clone().into_builder().schema(), request, -1)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for e in self.hub.snapshot().entries() {
            b.append(CATALOG, e.schema, &e.name, e.table_type, &e.arrow_schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(one_batch(b.build())?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(
            &query,
            &query.into_builder().schema(),
            request,
            TABLE_TYPES.len() as i64,
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for t in TABLE_TYPES {
            b.append(t);
        }
        Ok(Response::new(one_batch(b.build())?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query, SqlInfoDataBuilder::schema(), request, -1)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(Response::new(one_batch(
            self.info.record_batch(query.info),
        )?))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
