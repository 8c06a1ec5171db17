//! A Rust Flight SQL client for the tests: SQL with status codes kept, metadata commands,
//! and results as JSON rows.

use std::path::Path;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, FlightInfo};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A channel to `addr` (TLS verified against `ca` when given).
pub async fn channel(addr: &str, ca: Option<&Path>) -> Result<Channel, String> {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let mut e = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some(ca) = ca {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
            .domain_name("localhost");
        e = e.tls_config(tls).unwrap();
    }
    e.connect().await.map_err(|e| format!("{e:?}"))
}

/// Runs `sql` with plain Flight calls (GetFlightInfo + DoGet), keeping the status.
pub async fn sql(
    channel: Channel,
    token: Option<&str>,
    sql: &str,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let header: Option<tonic::metadata::MetadataValue<_>> =
        token.map(|t| format!("Bearer {t}").parse().unwrap());
    let mut client =
        FlightServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            if let Some(h) = &header {
                r.metadata_mut().insert("authorization", h.clone());
            }
            Ok(r)
        });
    let cmd = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()))
        .await?
        .into_inner();
    let mut out = Vec::new();
    for ep in info.endpoint {
        let data = client.do_get(ep.ticket.unwrap()).await?.into_inner();
        let mut s = FlightRecordBatchStream::new_from_flight_data(
            data.map_err(|s| FlightError::Tonic(Box::new(s))),
        );
        while let Some(b) = s.next().await {
            out.push(b.map_err(|e| tonic::Status::internal(e.to_string()))?);
        }
    }
    Ok(out)
}

/// The rows of a FlightInfo's endpoints, fetched with the Flight SQL client.
pub async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for ep in info.endpoint {
        let s = client.do_get(ep.ticket.unwrap()).await.unwrap();
        out.extend(s.try_collect::<Vec<_>>().await.unwrap());
    }
    out
}

/// Rows as JSON objects (timestamps as text, as the ndjson sink writes them).
pub fn json_rows(batches: &[RecordBatch]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut w: arrow::json::ArrayWriter<_> = weir_engine::json::writer(Vec::new());
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    let buf = w.into_inner();
    if buf.is_empty() {
        return vec![];
    }
    serde_json::from_slice(&buf).unwrap()
}

/// Retries `sql` until `done` holds for its rows, for up to `timeout`.
pub async fn sql_until(
    addr: &str,
    token: Option<&str>,
    sql_text: &str,
    timeout: Duration,
    done: impl Fn(&[serde_json::Map<String, serde_json::Value>]) -> bool,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(ch) = channel(addr, None).await
            && let Ok(b) = sql(ch, token, sql_text).await
        {
            let rows = json_rows(&b);
            if done(&rows) {
                return rows;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on: {sql_text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
