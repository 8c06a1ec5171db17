//! `weir query`: runs SQL on a running Weir's Flight SQL server and prints the result.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, Ticket};
use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// How `weir query` prints rows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row and line.
    Json,
}

/// `weir query`'s arguments.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The SQL (tables: latest.<view or sink>, history.<...>, sources.<source>,
    /// system.pipelines|sources|source_errors|watermarks|sinks).
    pub sql: String,
    /// Server: host:port, or a URL (http://, https://, grpc://, grpc+tls://).
    #[arg(long, env = "WEIR_FLIGHT_URL", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Bearer token.
    #[arg(long, env = "WEIR_FLIGHT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify the server's TLS certificate; implies TLS.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Give up after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Runs the query; prints the rows on stdout and errors on stderr.
pub async fn run(args: QueryArgs) -> ExitCode {
    match query(&args).await {
        Ok((schema, batches)) => match print(args.format, &schema, &batches) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir query: {e:#}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("weir query: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The URL for `addr`: plain host:port gets http:// (https:// with TLS).
fn url(addr: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    match addr.split_once("://") {
        Some(("grpc" | "grpc+tcp", rest)) => format!("http://{rest}"),
        Some(("grpc+tls", rest)) => format!("https://{rest}"),
        Some(_) => addr.to_string(),
        None => format!("{scheme}://{addr}"),
    }
}

fn status(e: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let what = match e.code() {
        Code::InvalidArgument => "invalid argument",
        Code::NotFound => "not found",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission denied",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Unimplemented => "not implemented",
        Code::Internal => "server error",
        c => c.description(),
    };
    anyhow!("{what}: {}", e.message())
}

async fn connect(args: &QueryArgs) -> anyhow::Result<(Channel, String)> {
    let url = url(&args.addr, args.tls_ca.is_some());
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("bad address {url}"))?
        .connect_timeout(Duration::from_secs(5).min(args.timeout))
        .timeout(args.timeout);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &args.tls_ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).context("TLS configuration")?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow!("cannot connect to {url}: {}", source_chain(&e)))?;
    Ok((channel, url))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Runs `args.sql` and collects the result.
pub async fn query(args: &QueryArgs) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
    let (channel, _url) = connect(args).await?;
    let auth = args
        .token
        .as_ref()
        .map(|t| MetadataValue::try_from(format!("Bearer {t}")))
        .transpose()
        .context("the token is not a valid header value")?;
    let mut client =
        FlightServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            if let Some(v) = &auth {
                req.metadata_mut().insert("authorization", v.clone());
            }
            Ok(req)
        });
    let cmd = CommandStatementQuery {
        query: args.sql.clone(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let info = client
        .get_flight_info(descriptor)
        .await
        .map_err(status)?
        .into_inner();
    let schema: SchemaRef = std::sync::Arc::new(
        info.clone()
            .try_decode_schema()
            .context("the server sent an unreadable schema")?,
    );
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket: Ticket = endpoint
            .ticket
            .ok_or_else(|| anyhow!("the server sent an endpoint without a ticket"))?;
        let data = client.do_get(ticket).await.map_err(status)?.into_inner();
        let mut stream = FlightRecordBatchStream::new_from_flight_data(
            data.map_err(|s| FlightError::Tonic(Box::new(s))),
        );
        while let Some(b) = stream.next().await {
            batches.push(b.map_err(|e| match e {
                FlightError::Tonic(s) => status(*s),
                e => anyhow!(e),
            })?);
        }
    }
    Ok((schema, batches))
}

fn print(format: Format, schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => {
            let table =
                arrow::util::pretty::pretty_format_batches_with_schema(schema.clone(), batches)?;
            writeln!(out, "{table}")?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            eprintln!("({rows} row{})", if rows == 1 { "" } else { "s" });
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w: arrow::json::LineDelimitedWriter<_> = weir_engine::json::writer(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn addresses_become_urls() {
        assert_eq!(url("127.0.0.1:50051", false), "http://127.0.0.1:50051");
        assert_eq!(url("edge-1:50051", true), "https://edge-1:50051");
        assert_eq!(url("grpc+tls://edge-1:1", false), "https://edge-1:1");
        assert_eq!(url("grpc://edge-1:1", true), "http://edge-1:1");
        assert_eq!(url("https://edge-1:1", false), "https://edge-1:1");
    }
}
