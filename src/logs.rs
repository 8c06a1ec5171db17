//! Logs: human-readable lines or JSON on stderr, filtered by `--log-level` or `RUST_LOG`, with
//! one library's noise kept out.

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::LogFormat;

/// Installs the log subscriber: `level` unless `RUST_LOG` says otherwise.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter).with_filter(LibraryNoise))
        .init();
}

/// Leaves out a library's error lines about a state it handles itself: the OPC UA client logs
/// every publish request answered `BadNoSubscription` — what a server says while a
/// subscription is being created, and which the client treats as "no subscriptions yet" (it
/// logs that at debug) — twice at ERROR.
struct LibraryNoise;

/// Finds a text in an event's message.
struct MessageHas<'a> {
    needles: &'a [&'a str],
    found: bool,
}

impl Visit for MessageHas<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let text = format!("{value:?}");
            self.found = self.needles.iter().all(|n| text.contains(n));
        }
    }
}

/// True for the event [`LibraryNoise`] leaves out.
fn is_noise(event: &Event<'_>) -> bool {
    let meta = event.metadata();
    if *meta.level() != Level::ERROR || !meta.target().starts_with("opcua_client::session") {
        return false;
    }
    let mut v = MessageHas {
        needles: &["BadNoSubscription"],
        found: false,
    };
    event.record(&mut v);
    v.found
}

impl<S> Filter<S> for LibraryNoise {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        !is_noise(event)
    }
}
