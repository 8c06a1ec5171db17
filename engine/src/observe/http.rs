//! The HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the process is
//! alive and serving) and `/readyz` (every pipeline started, no source failed for good).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

#[cfg(feature = "page")]
use super::page::Page;
use super::process;
use super::status::RunStatus;
use super::telemetry::{HTTP_CONNECTIONS_REFUSED, LogLimit, MetricDef};

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
    #[cfg(feature = "page")]
    page: Option<Page>,
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
        Ok(Self {
            metrics,
            status,
            #[cfg(feature = "page")]
            page: None,
        })
    }

    #[cfg(feature = "page")]
    /// Also serves the operator page (`/`, `/api/status`, `/api/history`).
    pub fn with_page(mut self, page: Page) -> Self {
        self.page = Some(page);
        self
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
                // weir_ready depends on time (sources failing for --unready-after)
                self.status.readiness();
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
            #[cfg(feature = "page")]
            path => {
                if let Some(page) = &self.page
                    && let Some(r) =
                        page.respond(path, req.uri().query(), req.headers(), &self.status)
                {
                    return r;
                }
                let page = if self.page.is_some() {
                    ", / (the operator page), /api/status"
                } else {
                    ""
                };
                not_found(page)
            }
            #[cfg(not(feature = "page"))]
            _ => not_found(""),
        }
    }
}

/// The answer to a path nothing serves, listing what is served (`more`: the operator page's).
fn not_found(more: &str) -> Response<Full<Bytes>> {
    text(
        StatusCode::NOT_FOUND,
        format!("not found: try /metrics, /healthz, /readyz{more}\n"),
    )
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

/// Connections served at once; one more is closed as soon as it is accepted, so that held
/// connections can never take the descriptors the pipelines need.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request's headers (also the idle time allowed between
/// requests of a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// After this long a connection is closed once its current request is answered.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after a failed accept (such as running out of descriptors) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds `addr` and serves the endpoints on a background task; returns the bound address
/// (useful with port 0).
pub async fn serve(addr: SocketAddr, endpoints: Endpoints) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the HTTP endpoints"))?;
    let bound = listener.local_addr()?;
    #[cfg(feature = "page")]
    if let Some(page) = &endpoints.page {
        page.start_sampling();
        info!(addr = %bound, "serving /metrics, /healthz, /readyz and the operator page (/, /api/status, /api/history)");
    } else {
        info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    }
    #[cfg(not(feature = "page"))]
    info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    tokio::spawn(accept(listener, endpoints));
    Ok(bound)
}

async fn accept(listener: TcpListener, endpoints: Endpoints) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let accept_log = LogLimit::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                if let Some(unlogged) = accept_log.admit() {
                    warn!(error = %e, not_logged_since_last = unlogged, "accepting an HTTP connection failed");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            HTTP_CONNECTIONS_REFUSED.counter_with(&[]).increment(1);
            drop(stream);
            continue;
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = endpoints.respond(&req);
                async move { Ok::<_, Infallible>(r) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(HEADER_TIMEOUT, conn).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}
