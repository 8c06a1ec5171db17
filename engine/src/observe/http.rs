//! The HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the process is
//! alive and serving) and `/readyz` (every pipeline started, no source failed for good).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing::{debug, info};

use super::process;
use super::status::RunStatus;
use super::telemetry::MetricDef;

/// Histogram buckets (seconds) for delays such as a window's emission after its end, and
/// query latencies.
const DELAY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// What the endpoints serve from.
#[derive(Clone)]
pub struct Endpoints {
    metrics: PrometheusHandle,
    status: Arc<RunStatus>,
}

impl Endpoints {
    /// Installs the Prometheus recorder as the process-wide `metrics` recorder (once per
    /// process), describes the `described` metrics (help texts and units) and reads readiness from `status`.
    pub fn install<'a>(
        status: Arc<RunStatus>,
        described: impl IntoIterator<Item = &'a MetricDef>,
    ) -> anyhow::Result<Self> {
        let metrics = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DELAY_BUCKETS)
            .context("histogram buckets")?
            .install_recorder()
            .context("installing the Prometheus recorder")?;
        for m in described {
            m.describe();
        }
        process::record();
        Ok(Self { metrics, status })
    }

    /// The response to one request.
    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match req.uri().path() {
            "/metrics" => {
                process::record();
                self.metrics.run_upkeep();
                let mut r = text(StatusCode::OK, self.metrics.render());
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => {
                let (ready, why) = self.status.readiness();
                let code = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                text(code, why)
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Binds `addr` and serves the endpoints on a background task; returns the bound address
/// (useful with port 0).
pub async fn serve(addr: SocketAddr, endpoints: Endpoints) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the HTTP endpoints"))?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "accepting an HTTP connection failed");
                    continue;
                }
            };
            let endpoints = endpoints.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let r = endpoints.respond(&req);
                    async move { Ok::<_, Infallible>(r) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            });
        }
    });
    Ok(bound)
}
