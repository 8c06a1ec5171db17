//! The operator page: `GET /` on the HTTP endpoints' listener serves one self-contained page
//! (HTML, CSS and a small script compiled into the binary; nothing is fetched from
//! elsewhere) that polls `/api/status` once a second and draws the pipeline graph, every
//! source, pipeline and sink with their rates and lags, charts of the last ten minutes
//! (`/api/history`), the newest rows of each pipeline and the process.
//!
//! With a token (`--http-token`, else the Flight SQL token) the page and its API need it as
//! `Authorization: Bearer <token>` or the `weir_token` cookie that `/?token=<token>` sets;
//! `/metrics`, `/healthz` and `/readyz` stay open.

mod api;
pub mod history;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, HeaderMap, HeaderValue, LOCATION,
    SET_COOKIE,
};
use hyper::{Response, StatusCode};

use self::history::History;
use super::status::RunStatus;
use super::telemetry::CheckpointTelemetry;
use crate::live::LiveHub;
use crate::sync::lock;

pub use api::LATEST_ROWS;

/// How often the charts' history takes a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/weir.js");
const STYLE: &str = include_str!("assets/weir.css");
/// The cookie that carries the token.
const COOKIE_NAME: &str = "weir_token";
/// Scripts and styles only from the page's own origin; nothing else is loaded.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'";

/// What the page says about the build.
#[derive(Debug, Clone)]
pub struct PageInfo {
    /// Weir's version.
    pub version: String,
    /// Cargo features built in.
    pub features: Vec<String>,
    /// Source connectors built in.
    pub sources: Vec<String>,
    /// Sink connectors built in.
    pub sinks: Vec<String>,
    /// The run's checkpoints, when taken.
    pub checkpoints: Option<Arc<CheckpointTelemetry>>,
    /// When the process started.
    pub started: Instant,
}

/// The operator page and its API.
#[derive(Clone)]
pub struct Page {
    info: Arc<PageInfo>,
    hub: Arc<LiveHub>,
    token: Option<Arc<str>>,
    history: Arc<Mutex<History>>,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Page {
    /// A page over the live state in `hub`; with `token`, the page and API require it.
    pub fn new(info: PageInfo, hub: Arc<LiveHub>, token: Option<String>) -> Self {
        Self {
            info: Arc::new(info),
            hub,
            token: token.map(Arc::from),
            history: Arc::default(),
        }
    }

    /// Samples the history every [`SAMPLE_EVERY`] on a background task (one sample costs a
    /// snapshot's counters; nothing more when nobody watches).
    pub fn start_sampling(&self) {
        let (hub, history) = (Arc::clone(&self.hub), Arc::clone(&self.history));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let snap = hub.snapshot();
                lock(&history).sample(&snap);
            }
        });
    }

    /// The response to `path` (with `query`), or `None` when it is not the page's.
    pub fn respond(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        run: &RunStatus,
    ) -> Option<Response<Full<Bytes>>> {
        let (body, content_type): (Bytes, &'static str) = match path {
            "/" | "/index.html" | "/weir.js" | "/weir.css" | "/api/status" | "/api/history" => {
                if let Some(token) = &self.token {
                    if path == "/"
                        && let Some(given) = query.and_then(|q| param(q, "token"))
                    {
                        return Some(if crate::secret::same(given.as_bytes(), token.as_bytes()) {
                            with_cookie(&given)
                        } else {
                            login(true)
                        });
                    }
                    if !self.authorized(headers, token) {
                        return Some(if path.starts_with("/api/") {
                            json_response(
                                StatusCode::UNAUTHORIZED,
                                serde_json::json!({"error": "missing or wrong token: send 'Authorization: Bearer <token>' (--http-token, else --flight-token)"}),
                            )
                        } else {
                            login(false)
                        });
                    }
                }
                match path {
                    "/" | "/index.html" => (
                        Bytes::from_static(INDEX.as_bytes()),
                        "text/html; charset=utf-8",
                    ),
                    "/weir.js" => (
                        Bytes::from_static(SCRIPT.as_bytes()),
                        "text/javascript; charset=utf-8",
                    ),
                    "/weir.css" => (
                        Bytes::from_static(STYLE.as_bytes()),
                        "text/css; charset=utf-8",
                    ),
                    "/api/status" => {
                        let snap = self.hub.snapshot();
                        let doc = {
                            let history = lock(&self.history);
                            api::status(&self.info, run, &snap, &history)
                        };
                        return Some(json_response(StatusCode::OK, doc));
                    }
                    _ => {
                        let doc = serde_json::to_value(&*lock(&self.history))
                            .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}));
                        return Some(json_response(StatusCode::OK, doc));
                    }
                }
            }
            _ => return None,
        };
        let mut r = Response::new(Full::new(body));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        secure(h);
        Some(r)
    }

    /// The request carries the token as a bearer header or in the cookie.
    fn authorized(&self, headers: &HeaderMap, token: &str) -> bool {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        let cookies = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .filter(|(name, _)| *name == COOKIE_NAME)
            .map(|(_, value)| percent_decode(value));
        bearer
            .into_iter()
            .chain(cookies)
            .any(|t| crate::secret::same(t.as_bytes(), token.as_bytes()))
    }
}

/// Headers every page response carries.
fn secure(h: &mut HeaderMap) {
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

fn json_response(code: StatusCode, doc: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(doc.to_string())));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    r
}

/// `/?token=…` with the right token: the cookie is set and the browser sent to `/` (so the
/// token leaves the address bar and the history).
fn with_cookie(token: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    let h = r.headers_mut();
    h.insert(LOCATION, HeaderValue::from_static("/"));
    let cookie = format!(
        "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict",
        percent_encode(token)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(SET_COOKIE, v);
    }
    secure(h);
    r
}

/// The page a browser without the token gets: a form that sends it.
fn login(wrong: bool) -> Response<Full<Bytes>> {
    let note = if wrong {
        "<p class=\"bad\">Wrong token.</p>"
    } else {
        ""
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Weir — token needed</title></head>\
         <body><h1>Weir</h1><p>This page needs the token Weir was started with \
         (<code>--http-token</code>, else <code>--flight-token</code>).</p>{note}\
         <form method=\"get\" action=\"/\"><input type=\"password\" name=\"token\" autofocus \
         aria-label=\"token\"> <button>Open</button></form></body></html>"
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    r
}

/// The value of `name` in a query string, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(&v.replace('+', " ")))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_through_the_query_and_the_cookie() {
        let token = "a b+c%d;é";
        let encoded = percent_encode(token);
        assert!(!encoded.contains([';', ' ', '%']) || encoded.contains("%25"));
        assert_eq!(percent_decode(&encoded), token);
        assert_eq!(
            param(&format!("x=1&token={encoded}"), "token").as_deref(),
            Some(token)
        );
        assert_eq!(param("token=a+b", "token").as_deref(), Some("a b"));
        assert_eq!(param("x=1", "token"), None);
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn assets_are_small_and_load_nothing_from_elsewhere() {
        let total = INDEX.len() + SCRIPT.len() + STYLE.len();
        assert!(total <= 150 * 1024, "{total} bytes");
        for asset in [INDEX, SCRIPT, STYLE] {
            // The SVG namespace is an identifier, never fetched.
            let asset = asset.replace("\"http://www.w3.org/2000/svg\"", "");
            assert!(!asset.contains("http://") && !asset.contains("https://"));
        }
        assert!(INDEX.contains("src=\"/weir.js\"") && INDEX.contains("href=\"/weir.css\""));
    }
}
