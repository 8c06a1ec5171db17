//! How to reach the broker: the connection options shared by the MQTT source and sink.

use std::path::PathBuf;
use std::time::Duration;

use weir_engine::PipelineError;
use weir_engine::parse::Options;

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

/// Default largest packet accepted or sent: gateways often batch many readings into one
/// message, and rumqttc's own default (10 KiB) is too small for them.
pub const DEFAULT_MAX_PACKET: u64 = 1024 * 1024;

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
}

impl Settings {
    /// `host:port` for messages.
    pub fn broker(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Reads the connection options; `role` names the source or sink (for a default client
    /// id).
    pub fn from_options(o: &Options, role: &str) -> Result<Settings, PipelineError> {
        let url_entry = o
            .entry("url")
            .ok_or_else(|| o.error("missing required option 'url' (e.g. 'mqtt://broker:1883')"))?;
        let (tls, host, port) =
            parse_url(&url_entry.value).map_err(|m| o.value_error(url_entry, &m))?;
        let tls = tls.then(|| TlsFiles {
            ca: o.get("ca_file").map(PathBuf::from),
            cert: o.get("client_cert_file").map(PathBuf::from),
            key: o.get("client_key_file").map(PathBuf::from),
        });
        if tls.is_none() {
            for key in ["ca_file", "client_cert_file", "client_key_file"] {
                if let Some(e) = o.entry(key) {
                    return Err(o.value_error(e, &format!("'{key}' needs an mqtts:// url")));
                }
            }
        }
        if let Some(t) = &tls
            && t.cert.is_some() != t.key.is_some()
        {
            return Err(o.error("'client_cert_file' and 'client_key_file' go together"));
        }
        let protocol = match o.choice("protocol", &["3.1.1", "5"])?.as_deref() {
            Some("5") => Protocol::V5,
            _ => Protocol::V311,
        };
        let credentials = match (o.get("username"), o.entry("password")) {
            (Some(u), Some(p)) => Some((u.to_string(), p.value.clone())),
            (Some(u), None) => Some((u.to_string(), String::new())),
            (None, Some(_)) => return Err(o.error("'password' needs a 'username'")),
            (None, None) => None,
        };
        let clean_session = o.bool("clean_session")?.unwrap_or(true);
        let client_id = match o.get("client_id") {
            Some(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ if !clean_session => {
                return Err(o.error(
                    "a persistent session (clean_session = 'false') needs a fixed 'client_id': \
                     the broker keeps the session under that id",
                ));
            }
            _ => format!("weir-{role}-{}", unique_suffix()),
        };
        let session_expiry = o
            .duration("session_expiry")?
            .unwrap_or(Duration::from_secs(24 * 3600));
        let keep_alive = o.duration("keep_alive")?.unwrap_or(Duration::from_secs(30));
        if keep_alive < Duration::from_secs(1) {
            return Err(o.error("'keep_alive' must be at least 1s"));
        }
        let max_packet_size = o.bytes("max_packet_size")?.unwrap_or(DEFAULT_MAX_PACKET);
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
