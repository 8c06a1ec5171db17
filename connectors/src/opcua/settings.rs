//! The connection settings of an OPC UA source: endpoint, security, identity, PKI, and how
//! values are read (subscription or polling), from the `WITH (...)` options.

use std::path::PathBuf;
use std::time::Duration;

use opcua::crypto::SecurityPolicy;
use opcua::types::MessageSecurityMode;
use weir_engine::PipelineError;
use weir_engine::parse::Options;

/// Who the client logs in as.
#[derive(Clone)]
pub enum Identity {
    /// No user.
    Anonymous,
    /// User name and password.
    User {
        /// User name.
        name: String,
        /// Password (never logged).
        password: String,
    },
    /// An X.509 user certificate (DER) and its private key (PEM).
    X509 {
        /// Certificate file.
        certificate: PathBuf,
        /// Private key file.
        private_key: PathBuf,
    },
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::User { name, .. } => write!(f, "user {name}"),
            Identity::X509 { certificate, .. } => {
                write!(f, "X.509 certificate {}", certificate.display())
            }
        }
    }
}

/// How values arrive.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Monitored items in one subscription.
    Subscribe {
        /// How often the server samples each item.
        sampling_interval: Duration,
        /// How often the server sends what changed.
        publishing_interval: Duration,
        /// Samples the server keeps per item between publishes.
        queue_size: u32,
        /// Report a change only beyond this deadband.
        deadband: Option<Deadband>,
    },
    /// One Read of every node per interval.
    Poll {
        /// Time between reads.
        interval: Duration,
    },
}

/// A data-change deadband.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadband {
    /// Change of at least this much, in the value's unit.
    Absolute(f64),
    /// Change of at least this percentage of the variable's EURange.
    Percent(f64),
}

/// Which values are kept, by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Everything, status included.
    KeepAll,
    /// Values with a Bad status are dropped.
    DropBad,
    /// Only values with a Good status.
    GoodOnly,
}

impl StatusFilter {
    /// Whether a value with `status` passes.
    pub fn keeps(self, status: opcua::types::StatusCode) -> bool {
        match self {
            StatusFilter::KeepAll => true,
            StatusFilter::DropBad => !status.is_bad(),
            StatusFilter::GoodOnly => status.is_good(),
        }
    }
}

/// Everything needed to connect and read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `opc.tcp://host:port/path`.
    pub url: String,
    /// Security policy of the endpoint to use.
    pub policy: SecurityPolicy,
    /// Message security mode of the endpoint to use.
    pub mode: MessageSecurityMode,
    /// User identity.
    pub identity: Identity,
    /// The client's PKI directory (own certificate, trusted and rejected server certificates).
    pub pki_dir: PathBuf,
    /// Trust any server certificate (commissioning only).
    pub trust_server_cert: bool,
    /// Subscription or polling.
    pub read: Mode,
    /// Values kept by status.
    pub status_filter: StatusFilter,
    /// Longest wait for one request.
    pub timeout: Duration,
    /// Session timeout asked of the server.
    pub session_timeout: Duration,
}

fn policy(v: &str) -> Result<SecurityPolicy, String> {
    let p = match v
        .trim()
        .to_ascii_lowercase()
        .replace(['-', '_'], "")
        .as_str()
    {
        "none" => SecurityPolicy::None,
        "basic256sha256" => SecurityPolicy::Basic256Sha256,
        "aes128sha256rsaoaep" => SecurityPolicy::Aes128Sha256RsaOaep,
        "aes256sha256rsapss" => SecurityPolicy::Aes256Sha256RsaPss,
        _ => {
            return Err(
                "expected None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss"
                    .into(),
            );
        }
    };
    Ok(p)
}

fn security_mode(v: &str) -> Result<MessageSecurityMode, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "none" => Ok(MessageSecurityMode::None),
        "sign" => Ok(MessageSecurityMode::Sign),
        "signandencrypt" | "sign_and_encrypt" => Ok(MessageSecurityMode::SignAndEncrypt),
        _ => Err("expected None, Sign or SignAndEncrypt".into()),
    }
}

fn deadband(v: &str) -> Result<Deadband, String> {
    let v = v.trim();
    let (kind, amount) = v
        .split_once(':')
        .ok_or("expected 'absolute:<amount>' or 'percent:<amount>'")?;
    let amount: f64 = amount
        .trim()
        .parse()
        .ok()
        .filter(|a: &f64| *a >= 0.0 && a.is_finite())
        .ok_or("the deadband amount must be a number ≥ 0")?;
    match kind.trim().to_ascii_lowercase().as_str() {
        "absolute" => Ok(Deadband::Absolute(amount)),
        "percent" if amount <= 100.0 => Ok(Deadband::Percent(amount)),
        "percent" => Err("a percent deadband is at most 100".into()),
        _ => Err("expected 'absolute:<amount>' or 'percent:<amount>'".into()),
    }
}

impl Settings {
    /// Reads the connection and reading options.
    pub fn from_options(o: &Options) -> Result<Settings, PipelineError> {
        let url = o
            .require("url", "the server's endpoint, e.g. 'opc.tcp://plc:4840/'")?
            .trim()
            .to_string();
        if !url.starts_with("opc.tcp://") {
            return Err(o.value_error(
                o.entry("url").expect("required"),
                "expected an opc.tcp:// URL, e.g. 'opc.tcp://plc:4840/'",
            ));
        }
        let policy = o
            .parsed("security_policy", policy)?
            .unwrap_or(SecurityPolicy::None);
        let default_mode = if policy == SecurityPolicy::None {
            MessageSecurityMode::None
        } else {
            MessageSecurityMode::SignAndEncrypt
        };
        let mode = o
            .parsed("security_mode", security_mode)?
            .unwrap_or(default_mode);
        if (policy == SecurityPolicy::None) != (mode == MessageSecurityMode::None) {
            return Err(o.error(
                "security_policy None goes with security_mode None, and a security policy with Sign or SignAndEncrypt",
            ));
        }
        let identity = match (
            o.get("username"),
            o.get("password"),
            o.get("user_certificate"),
            o.get("user_private_key"),
        ) {
            (None, None, None, None) => Identity::Anonymous,
            (Some(name), Some(password), None, None) => Identity::User {
                name: name.to_string(),
                password: password.to_string(),
            },
            (None, None, Some(c), Some(k)) => {
                let base = std::path::Path::new(o.file())
                    .parent()
                    .unwrap_or(std::path::Path::new("."));
                Identity::X509 {
                    certificate: base.join(c.trim()),
                    private_key: base.join(k.trim()),
                }
            }
            (Some(_), None, ..) | (None, Some(_), ..) => {
                return Err(o.error(
                    "give both username and password (e.g. password = '${OPCUA_PASSWORD}')",
                ));
            }
            (_, _, Some(_), None) | (_, _, None, Some(_)) => {
                return Err(o.error("an X.509 identity needs both user_certificate (DER) and user_private_key (PEM)"));
            }
            _ => {
                return Err(o.error(
                    "give either username/password or user_certificate/user_private_key, not both",
                ));
            }
        };
        let pki_dir = PathBuf::from(o.get("pki_dir").unwrap_or("pki").trim());
        let trust_server_cert = o.bool("trust_server_cert")?.unwrap_or(false);
        let read = match o.choice("mode", &["subscribe", "poll"])?.as_deref() {
            Some("poll") => {
                for key in [
                    "sampling_interval",
                    "publishing_interval",
                    "queue_size",
                    "deadband",
                ] {
                    if o.get(key).is_some() {
                        return Err(o.error(format!(
                            "{key} applies to mode = 'subscribe'; polling reads at 'interval'"
                        )));
                    }
                }
                Mode::Poll {
                    interval: o.duration("interval")?.unwrap_or(Duration::from_secs(1)),
                }
            }
            _ => {
                if o.get("interval").is_some() {
                    return Err(o.error("interval applies to mode = 'poll'; a subscription uses sampling_interval and publishing_interval"));
                }
                let sampling_interval = o
                    .duration("sampling_interval")?
                    .unwrap_or(Duration::from_millis(100));
                Mode::Subscribe {
                    sampling_interval,
                    publishing_interval: o
                        .duration("publishing_interval")?
                        .unwrap_or(Duration::from_millis(500).max(sampling_interval)),
                    queue_size: o.u64("queue_size")?.unwrap_or(10).clamp(1, 10_000) as u32,
                    deadband: o.parsed("deadband", deadband)?,
                }
            }
        };
        let status_filter = match o
            .choice("status_filter", &["keep_all", "drop_bad", "good_only"])?
            .as_deref()
        {
            Some("drop_bad") => StatusFilter::DropBad,
            Some("good_only") => StatusFilter::GoodOnly,
            _ => StatusFilter::KeepAll,
        };
        Ok(Settings {
            url,
            policy,
            mode,
            identity,
            pki_dir,
            trust_server_cert,
            read,
            status_filter,
            timeout: o.duration("timeout")?.unwrap_or(Duration::from_secs(5)),
            session_timeout: o
                .duration("session_timeout")?
                .unwrap_or(Duration::from_secs(60)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_modes_and_deadbands() {
        assert_eq!(
            policy("Aes128_Sha256_RsaOaep").unwrap(),
            SecurityPolicy::Aes128Sha256RsaOaep
        );
        assert_eq!(
            policy("basic256sha256").unwrap(),
            SecurityPolicy::Basic256Sha256
        );
        assert!(policy("Basic128Rsa15").is_err());
        assert_eq!(
            security_mode("SignAndEncrypt").unwrap(),
            MessageSecurityMode::SignAndEncrypt
        );
        assert!(security_mode("encrypt").is_err());
        assert_eq!(deadband("absolute:0.5").unwrap(), Deadband::Absolute(0.5));
        assert_eq!(deadband("Percent: 2").unwrap(), Deadband::Percent(2.0));
        assert!(deadband("percent:200").is_err());
        assert!(deadband("0.5").is_err());
    }

    #[test]
    fn status_filters() {
        use opcua::types::StatusCode;
        let u = StatusCode::UncertainLastUsableValue;
        let b = StatusCode::BadNodeIdUnknown;
        assert!(StatusFilter::KeepAll.keeps(b));
        assert!(StatusFilter::DropBad.keeps(u) && !StatusFilter::DropBad.keeps(b));
        assert!(!StatusFilter::GoodOnly.keeps(u) && StatusFilter::GoodOnly.keeps(StatusCode::Good));
    }
}
