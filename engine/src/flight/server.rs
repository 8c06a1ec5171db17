//! The Flight SQL server itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::sync::oneshot;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracing::{debug, error, info, warn};

use super::auth::Auth;
use super::throttle::AuthThrottle;
use super::{FlightSettings, plain, sql};
use crate::live::{LiveHub, QueryLimits};
use crate::observe::RunStatus;
use crate::observe::telemetry::FlightTelemetry;
use crate::sync::lock;

/// How long a stopping server waits for calls in flight.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// A running Flight SQL server; dropping it stops the server.
pub struct FlightServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FlightServer {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FlightServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `settings.addr` and serves `hub`'s tables from a thread of its own.
pub fn start(
    settings: FlightSettings,
    hub: Arc<LiveHub>,
    status: Arc<RunStatus>,
) -> anyhow::Result<FlightServer> {
    settings.check()?;
    let tls = match &settings.tls {
        Some(files) => {
            let cert = std::fs::read(&files.cert)
                .with_context(|| format!("reading the TLS certificate {}", files.cert.display()))?;
            let key = std::fs::read(&files.key)
                .with_context(|| format!("reading the TLS key {}", files.key.display()))?;
            let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
            // a certificate or key that does not parse is an error now, not once serving
            Server::builder().tls_config(tls.clone()).with_context(|| {
                format!(
                    "Flight SQL TLS: the certificate {} or the key {} is not usable",
                    files.cert.display(),
                    files.key.display()
                )
            })?;
            Some(tls)
        }
        None => None,
    };
    let listener = std::net::TcpListener::bind(settings.addr)
        .with_context(|| format!("Flight SQL cannot listen on {}", settings.addr))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let auth = Auth::new(settings.token.clone());
    if !auth.required() {
        warn!(%addr, "Flight SQL serves WITHOUT authentication (loopback only)");
    }
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("weir-flight")
        .build()?;
    let secure = tls.is_some();
    let queries = settings.queries;
    // queries are planned here: a deep plan must not overflow the thread's stack
    let thread = std::thread::Builder::new()
        .name("weir-flight".into())
        .stack_size(crate::parse::limits::PLANNING_STACK)
        .spawn(move || {
            crate::observe::process::lower_thread_priority("Flight SQL");
            runtime.block_on(async move {
                if let Err(e) = serve(listener, tls, auth, hub, queries, stop_rx).await {
                    let e = format!("{e:#}");
                    error!(%addr, error = %e, "Flight SQL server failed: not ready from now on");
                    status.listener_failed("Flight SQL", &e);
                }
            })
        })?;
    info!(%addr, tls = secure, "Flight SQL listening");
    Ok(FlightServer {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<ServerTlsConfig>,
    auth: Auth,
    hub: Arc<LiveHub>,
    queries: QueryLimits,
    stop: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    // small answers go out at once instead of waiting for the peer's delayed ACK
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let telemetry = Arc::new(FlightTelemetry::default());
    let service = plain::LiveFlight::new(sql::LiveSql::new(
        hub,
        auth.clone(),
        queries,
        Arc::clone(&telemetry),
    ));
    let throttle = Arc::new(std::sync::Mutex::new(AuthThrottle::default()));
    let service = FlightServiceServer::with_interceptor(service, move |req: tonic::Request<()>| {
        if !auth.required() {
            return Ok(req);
        }
        let peer = req.remote_addr().map(|a| a.ip());
        let now = std::time::Instant::now();
        if let Some(wait) = peer.and_then(|p| lock(&throttle).refusing(p, now)) {
            telemetry.auth_throttled();
            return Err(tonic::Status::resource_exhausted(format!(
                "too many failed authentications from this address: calls are refused for {} ms more",
                wait.as_millis().max(1)
            )));
        }
        match auth.check(req.metadata()) {
            Ok(()) => {
                if let Some(p) = peer {
                    lock(&throttle).succeeded(p);
                }
                Ok(req)
            }
            Err(e) => {
                if let Some(p) = peer {
                    lock(&throttle).failed(p, now);
                }
                telemetry.auth_failed();
                debug!(error = %e.message(), peer = ?peer, "Flight SQL call refused");
                Err(e)
            }
        }
    });
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("TLS configuration")?;
    }
    let (graceful_tx, graceful) = oneshot::channel::<()>();
    let server = builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = graceful.await;
        });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r.context("serving Flight SQL"),
        _ = stop => {}
    }
    let _ = graceful_tx.send(());
    // answers in flight get a moment to finish; connections still open after it are cut
    match tokio::time::timeout(SHUTDOWN_WAIT, server).await {
        Ok(r) => r.context("serving Flight SQL"),
        Err(_) => Ok(()),
    }
}
