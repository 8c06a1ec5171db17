//! Plain Flight over the live tables for simple clients: `ListFlights` lists every table,
//! `GetFlightInfo` takes a path descriptor `[schema, table]` (or `[table]` for `latest`),
//! and `DoGet` takes a ticket holding `schema.table`. Everything else is Flight SQL.

use std::pin::Pin;

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use futures::Stream;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::sql::{DataStream, LiveSql, info, stream};
use crate::live::TableEntry;

/// Type URLs of Flight SQL's commands and tickets start with this.
const FLIGHT_SQL_TYPE: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Flight SQL plus table access by name.
pub struct LiveFlight {
    sql: LiveSql,
}

impl LiveFlight {
    /// Serves `sql`'s tables by name too.
    pub fn new(sql: LiveSql) -> Self {
        Self { sql }
    }

    fn table(&self, name: &str) -> Result<TableEntry, Status> {
        self.sql.hub().snapshot().entry(name).ok_or_else(|| {
            Status::not_found(format!(
                "no table '{name}': ListFlights lists them (latest.<view or sink>, history.<view or sink>, sources.<source>, system.<table>)"
            ))
        })
    }

    fn path_name(descriptor: &FlightDescriptor) -> Result<String, Status> {
        match descriptor.path.as_slice() {
            [table] => Ok(table.clone()),
            [schema, table] => Ok(format!("{schema}.{table}")),
            [catalog, schema, table] if catalog == crate::live::CATALOG => {
                Ok(format!("{schema}.{table}"))
            }
            _ => Err(Status::invalid_argument(
                "a path descriptor names a table as [schema, table] or [table]",
            )),
        }
    }
}

fn table_info(e: &TableEntry) -> Result<FlightInfo, Status> {
    info(
        &e.arrow_schema,
        e.qualified().into_bytes(),
        FlightDescriptor::new_path(vec![e.schema.to_string(), e.name.clone()]),
        e.rows() as i64,
    )
}

fn is_path(d: &FlightDescriptor) -> bool {
    d.r#type == DescriptorType::Path as i32
}

#[tonic::async_trait]
impl FlightService for LiveFlight {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = DataStream;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.sql.handshake(request).await
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let infos: Vec<Result<FlightInfo, Status>> = self
            .sql
            .hub()
            .snapshot()
            .entries()
            .iter()
            .map(table_info)
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        if is_path(request.get_ref()) {
            let name = Self::path_name(request.get_ref())?;
            return Ok(Response::new(table_info(&self.table(&name)?)?));
        }
        self.sql.get_flight_info(request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.sql.poll_flight_info(request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        if !is_path(request.get_ref()) {
            return self.sql.get_schema(request).await;
        }
        let e = self.table(&Self::path_name(request.get_ref())?)?;
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        let schema = SchemaAsIpc::new(&e.arrow_schema, &options)
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(schema))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = &request.get_ref().ticket;
        let is_sql = any_type_url(ticket).is_some_and(|url| url.starts_with(FLIGHT_SQL_TYPE));
        if is_sql {
            return self.sql.do_get(request).await;
        }
        let name = std::str::from_utf8(ticket).map_err(|_| {
            Status::invalid_argument("a table ticket holds 'schema.table' in UTF-8")
        })?;
        let e = self.table(name)?;
        Ok(Response::new(stream(e.arrow_schema, e.batches)))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.sql.do_put(request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.sql.do_exchange(request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.sql.do_action(request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.sql.list_actions(request).await
    }
}

/// The type URL of `bytes` read as a protobuf `Any`, if they are one.
fn any_type_url(bytes: &[u8]) -> Option<String> {
    arrow_flight::sql::Any::decode(bytes)
        .ok()
        .map(|a| a.type_url)
}
