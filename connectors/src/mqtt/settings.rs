//! The MQTT connector's options: how to reach the broker (shared by the source and the
//! sink), what the source subscribes to and how it decodes, and what the sink publishes.

use std::path::PathBuf;
use std::time::Duration;
use weir_engine::dead_letter;

use weir_engine::PipelineError;
use weir_engine::parse::Options;
use weir_engine::parse::options::{OptionSpec, OptionType};

/// `url`.
pub const URL: OptionSpec = OptionSpec::new(
    "url",
    OptionType::Url,
    "`mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883); also `tcp://`, `ssl://`",
)
.required();
/// `protocol`.
pub const PROTOCOL: OptionSpec = OptionSpec::new(
    "protocol",
    OptionType::Choice(&["3.1.1", "5"]),
    "MQTT protocol version",
)
.default("3.1.1");
/// `client_id`.
pub const CLIENT_ID: OptionSpec = OptionSpec::new(
    "client_id",
    OptionType::Text,
    "client identifier; required for a persistent session",
)
.derived("`weir-NAME-...` (unique)");
/// `clean_session`.
pub const CLEAN_SESSION: OptionSpec = OptionSpec::new(
    "clean_session",
    OptionType::Bool,
    "`false`: persistent session (MQTT 5: clean start off, session expiry `session_expiry`)",
)
.default("true");
/// `session_expiry`.
pub const SESSION_EXPIRY: OptionSpec = OptionSpec::new(
    "session_expiry",
    OptionType::Duration,
    "MQTT 5, persistent session: how long the broker keeps it while Weir is away",
)
.default("24h");
/// `username`.
pub const USERNAME: OptionSpec = OptionSpec::new("username", OptionType::Text, "user name");
/// `password`.
pub const PASSWORD: OptionSpec = OptionSpec::new(
    "password",
    OptionType::Secret,
    "password; write it as `'${ENV_VAR}'` (never logged)",
);
/// `ca_file`.
pub const CA_FILE: OptionSpec = OptionSpec::new(
    "ca_file",
    OptionType::Path,
    "`mqtts://`: CA certificates (PEM) to check the broker's certificate",
)
.derived("system roots");
/// `client_cert_file`.
pub const CLIENT_CERT_FILE: OptionSpec = OptionSpec::new(
    "client_cert_file",
    OptionType::Path,
    "`mqtts://`: client certificate (PEM), for brokers that require one; goes with `client_key_file`",
);
/// `client_key_file`.
pub const CLIENT_KEY_FILE: OptionSpec = OptionSpec::new(
    "client_key_file",
    OptionType::Path,
    "`mqtts://`: the client certificate's private key (PEM)",
);
/// `keep_alive`.
pub const KEEP_ALIVE: OptionSpec = OptionSpec::new(
    "keep_alive",
    OptionType::Duration,
    "MQTT keep-alive (at least 1s)",
)
.default("30s");
/// `max_packet_size`.
pub const MAX_PACKET_SIZE: OptionSpec = OptionSpec::new(
    "max_packet_size",
    OptionType::Bytes,
    "largest message accepted (`65536`, `256KiB`, `1MiB`, ...); rumqttc's own default, 10 KiB, is too small for gateways that batch readings. A larger message, of any size, is read off the connection without being held, acknowledged, skipped and counted as `oversized` (its first 4 KiB go to `dead_letter`): it never breaks the connection nor stalls a persistent session",
)
.default("1MiB");

/// How to reach the broker: options of both the source and the sink.
pub const CONNECTION_OPTIONS: &[OptionSpec] = &[
    URL,
    PROTOCOL,
    CLIENT_ID,
    CLEAN_SESSION,
    SESSION_EXPIRY,
    USERNAME,
    PASSWORD,
    CA_FILE,
    CLIENT_CERT_FILE,
    CLIENT_KEY_FILE,
    KEEP_ALIVE,
    MAX_PACKET_SIZE,
];

/// Source `topic`.
pub const SOURCE_TOPIC: OptionSpec = OptionSpec::new(
    "topic",
    OptionType::List,
    "one or more topic filters, comma-separated, with `+` and `#` wildcards; a level written `{column}` matches any value (`+`) and fills that column",
)
.required();
/// Source `qos`.
pub const SOURCE_QOS: OptionSpec = OptionSpec::new(
    "qos",
    OptionType::Choice(&["0", "1", "2"]),
    "subscription QoS",
)
.default("1");
/// `format`.
pub const FORMAT: OptionSpec = OptionSpec::new(
    "format",
    OptionType::Choice(&["json", "raw", "sparkplug_b"]),
    "`json`: one JSON object, or an array of objects (one row each), per message; `raw`: the payload as one column; `sparkplug_b`: Sparkplug B messages, a row per metric (see the Sparkplug B section)",
)
.default("json");
/// `json_paths`.
pub const JSON_PATHS: OptionSpec = OptionSpec::new(
    "json_paths",
    OptionType::List,
    "`column = path.to.field, ...` for fields not at the top level under the column's name (keys match exactly, else ignoring case)",
)
.derived("column names");
/// `timestamp_unit`.
pub const TIMESTAMP_UNIT: OptionSpec = OptionSpec::new(
    "timestamp_unit",
    OptionType::Choice(&["s", "ms", "us", "ns"]),
    "unit of numeric times in `TIMESTAMP` columns (fractions allowed). Text times are RFC 3339 (`2026-01-01T00:00:00.5Z`, `...+02:00`) or an epoch number in that unit",
)
.default("ms");
/// `arrival_time`.
pub const ARRIVAL_TIME: OptionSpec = OptionSpec::new(
    "arrival_time",
    OptionType::Text,
    "a `TIMESTAMP` column filled with the time the message arrived (use it as `event_time` when devices send no time)",
);
/// `topic_column`.
pub const TOPIC_COLUMN: OptionSpec = OptionSpec::new(
    "topic_column",
    OptionType::Text,
    "a column filled with the message's topic",
);
/// `payload_column`.
pub const PAYLOAD_COLUMN: OptionSpec = OptionSpec::new(
    "payload_column",
    OptionType::Text,
    "`format = 'raw'`: the column that gets the payload (`VARCHAR`: must be UTF-8; `BYTEA`/binary: as is)",
)
.default("payload");
/// `required`.
pub const REQUIRED: OptionSpec = OptionSpec::new(
    "required",
    OptionType::List,
    "more columns a message must have a value for (`machine, value`)",
)
.derived("the event-time column");
/// `batch_rows`.
pub const BATCH_ROWS: OptionSpec =
    OptionSpec::new("batch_rows", OptionType::Integer, "rows per batch at most").default("1000");
/// `batch_latency`.
pub const BATCH_LATENCY: OptionSpec = OptionSpec::new(
    "batch_latency",
    OptionType::Duration,
    "a batch is sent at the latest this long after its first message",
)
.default("50ms");
/// `max_unacked`.
pub const MAX_UNACKED: OptionSpec = OptionSpec::new(
    "max_unacked",
    OptionType::Integer,
    "with `--state-dir`, QoS 1/2 and `clean_session = 'false'` messages are acknowledged only once the two newest checkpoints cover them: the broker's limit of unacknowledged messages per client (Mosquitto `max_inflight_messages`, 20 by default; sent as Receive Maximum with MQTT 5); half of it held back asks for a checkpoint at once",
)
.default("20");
/// `dead_letter`.
pub const DEAD_LETTER: OptionSpec = OptionSpec::new(
    "dead_letter",
    OptionType::Path,
    "NDJSON file that receives every skipped message (time, topic, reason, error, payload)",
);

/// What the source subscribes to and how it decodes.
pub const SOURCE_OPTIONS: &[OptionSpec] = &[
    SOURCE_TOPIC,
    SOURCE_QOS,
    FORMAT,
    JSON_PATHS,
    TIMESTAMP_UNIT,
    ARRIVAL_TIME,
    TOPIC_COLUMN,
    PAYLOAD_COLUMN,
    REQUIRED,
    BATCH_ROWS,
    BATCH_LATENCY,
    MAX_UNACKED,
    DEAD_LETTER,
    dead_letter::MAX_BYTES,
    dead_letter::PAYLOAD_BYTES,
    #[cfg(feature = "sparkplug")]
    super::sparkplug::REBIRTH,
    #[cfg(feature = "sparkplug")]
    super::sparkplug::DEATH_ROWS,
    #[cfg(feature = "sparkplug")]
    super::sparkplug::HOST_ID,
];

/// Sink `topic`.
pub const SINK_TOPIC: OptionSpec = OptionSpec::new(
    "topic",
    OptionType::Text,
    "json (required): topic template; `{column}` is replaced by the row's value (a `/`, `+` or `#` in a value becomes `_`; null becomes `null`)",
);
/// Sink `format`.
pub const SINK_FORMAT: OptionSpec = OptionSpec::new(
    "format",
    OptionType::Choice(&["json", "sparkplug_b"]),
    "`json`: a JSON object per row to `topic`; `sparkplug_b`: Weir is a Sparkplug B edge node, the columns its metrics (see the Sparkplug B section)",
)
.default("json");
/// Sink `qos`.
pub const SINK_QOS: OptionSpec =
    OptionSpec::new("qos", OptionType::Choice(&["0", "1", "2"]), "publish QoS").default("1");
/// `retain`.
pub const RETAIN: OptionSpec = OptionSpec::new(
    "retain",
    OptionType::Bool,
    "publish as retained messages (the broker keeps the last one per topic for new subscribers)",
)
.default("false");

/// What the sink publishes.
pub const SINK_OPTIONS: &[OptionSpec] = &[
    SINK_FORMAT,
    SINK_TOPIC,
    SINK_QOS,
    RETAIN,
    #[cfg(feature = "sparkplug")]
    super::sparkplug::GROUP,
    #[cfg(feature = "sparkplug")]
    super::sparkplug::EDGE_NODE,
    #[cfg(feature = "sparkplug")]
    super::sparkplug::DEVICE_COLUMN,
    #[cfg(feature = "sparkplug")]
    super::sparkplug::TIME_COLUMN,
];

/// The error for `format = 'sparkplug_b'` in a build without Sparkplug B.
#[cfg(not(feature = "sparkplug"))]
pub fn sparkplug_not_in_build(o: &Options, format: &OptionSpec) -> PipelineError {
    match o.entry(format) {
        Some(e) => o.value_error(e, "not in this build (built without feature \"sparkplug\")"),
        None => o.error("Sparkplug B is not in this build (built without feature \"sparkplug\")"),
    }
}

/// The QoS option `spec` (`0`, `1` or `2`).
pub fn qos(o: &Options, spec: &OptionSpec) -> Result<u8, PipelineError> {
    o.parse_with(spec, |v| {
        v.trim()
            .parse::<u8>()
            .ok()
            .filter(|q| *q <= 2)
            .ok_or_else(|| "expected 0, 1 or 2".to_string())
    })
    .map(|q| q.unwrap_or(1))
}

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1.
    V311,
    /// MQTT 5.
    V5,
}

/// Certificate files for `mqtts://`.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA certificates (PEM) the broker's certificate must chain to; the system's roots when
    /// absent.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for brokers that require client certificates.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS, for `mqtts://`.
    pub tls: Option<TlsFiles>,
    /// Protocol version.
    pub protocol: Protocol,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// Client identifier.
    pub client_id: String,
    /// False for a persistent session (the broker keeps subscriptions and queues QoS ≥ 1
    /// messages while the client is away).
    pub clean_session: bool,
    /// MQTT 5: how long the broker keeps a persistent session after a disconnect.
    pub session_expiry: Duration,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Largest packet, in bytes.
    pub max_packet_size: usize,
    /// Messages are acknowledged by the source, not on arrival (exactly-once with
    /// checkpoints).
    pub manual_acks: bool,
    /// MQTT 5: the Receive Maximum to ask for (unacknowledged messages at most).
    pub receive_maximum: Option<u16>,
    /// The message the broker publishes if the connection is lost (a Sparkplug host's or
    /// edge node's death certificate).
    pub will: Option<Will>,
}

/// A last-will message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its QoS.
    pub qos: u8,
    /// Retained.
    pub retain: bool,
}

impl Settings {
    /// `host:port` for messages.
    pub fn broker(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Reads the connection options; `role` names the source or sink (for a default client
    /// id).
    pub fn from_options(o: &Options, role: &str) -> Result<Settings, PipelineError> {
        let url_entry = o.require(&URL)?;
        let (tls, host, port) =
            parse_url(&url_entry.value).map_err(|m| o.value_error(url_entry, &m))?;
        let tls = tls.then(|| TlsFiles {
            ca: o.text(&CA_FILE).map(PathBuf::from),
            cert: o.text(&CLIENT_CERT_FILE).map(PathBuf::from),
            key: o.text(&CLIENT_KEY_FILE).map(PathBuf::from),
        });
        if tls.is_none() {
            for spec in [&CA_FILE, &CLIENT_CERT_FILE, &CLIENT_KEY_FILE] {
                if let Some(e) = o.entry(spec) {
                    return Err(o.value_error(e, &format!("'{}' needs an mqtts:// url", spec.name)));
                }
            }
        }
        if let Some(t) = &tls
            && t.cert.is_some() != t.key.is_some()
        {
            return Err(o.error("'client_cert_file' and 'client_key_file' go together"));
        }
        let protocol = match o.value::<String>(&PROTOCOL)?.as_str() {
            "5" => Protocol::V5,
            _ => Protocol::V311,
        };
        let credentials = match (o.text(&USERNAME), o.entry(&PASSWORD)) {
            (Some(u), Some(p)) => Some((u.to_string(), p.value.clone())),
            (Some(u), None) => Some((u.to_string(), String::new())),
            (None, Some(_)) => return Err(o.error("'password' needs a 'username'")),
            (None, None) => None,
        };
        let clean_session: bool = o.value(&CLEAN_SESSION)?;
        let client_id = match o.text(&CLIENT_ID) {
            Some(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ if !clean_session => {
                return Err(o.error(
                    "a persistent session (clean_session = 'false') needs a fixed 'client_id': \
                     the broker keeps the session under that id",
                ));
            }
            _ => format!("weir-{role}-{}", unique_suffix()),
        };
        let session_expiry: Duration = o.value(&SESSION_EXPIRY)?;
        let keep_alive: Duration = o.value(&KEEP_ALIVE)?;
        if keep_alive < Duration::from_secs(1) {
            return Err(o.error("'keep_alive' must be at least 1s"));
        }
        let max_packet_size: u64 = o.value(&MAX_PACKET_SIZE)?;
        if !(64..=256 * 1024 * 1024).contains(&max_packet_size) {
            return Err(o.error("'max_packet_size' must be between 64 bytes and 256MiB"));
        }
        Ok(Settings {
            host,
            port,
            tls,
            protocol,
            credentials,
            client_id,
            clean_session,
            session_expiry,
            keep_alive,
            max_packet_size: max_packet_size as usize,
            manual_acks: false,
            receive_maximum: None,
            will: None,
        })
    }
}

/// A suffix that keeps two clean-session clients of this host apart.
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos:08x}", std::process::id())
}

/// `mqtt://host[:port]` or `mqtts://host[:port]` (also `tcp://`, `ssl://`): (tls, host, port).
pub fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    let url = url.trim();
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("expected mqtt://host:port or mqtts://host:port, got '{url}'"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => {
            return Err(format!(
                "unsupported scheme '{other}' (use mqtt:// or mqtts://)"
            ));
        }
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('?') || rest.contains('@') {
        return Err("the url takes only host and port; give the topic, client id and credentials as options".into());
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("the url has no host".into());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("bad port '{p}'"))?,
        None if tls => 8883,
        None => 1883,
    };
    Ok((tls, host, port))
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://b:1884").unwrap(),
            (false, "b".into(), 1884)
        );
        assert_eq!(parse_url("mqtts://b").unwrap(), (true, "b".into(), 8883));
        assert_eq!(
            parse_url("tcp://127.0.0.1").unwrap(),
            (false, "127.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1").unwrap(),
            (false, "::1".into(), 1)
        );
        assert!(
            parse_url("http://b")
                .unwrap_err()
                .contains("unsupported scheme")
        );
        assert!(parse_url("mqtt://b:x").unwrap_err().contains("bad port"));
        assert!(
            parse_url("mqtt://b/t")
                .unwrap_err()
                .contains("only host and port")
        );
        assert!(parse_url("b:1883").is_err());
    }
}
