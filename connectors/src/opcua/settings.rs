//! The settings of an OPC UA source or sink from the `WITH (...)` options: the client's
//! (endpoint, security, identity, PKI, timeouts), shared by both, and the source's (how
//! values are read: subscription or polling).

use std::path::PathBuf;
use std::time::Duration;

use opcua::crypto::SecurityPolicy;
use opcua::types::MessageSecurityMode;
use weir_engine::PipelineError;
use weir_engine::parse::Options;
use weir_engine::parse::options::{OptionSpec, OptionType};

/// `url`.
pub const URL: OptionSpec = OptionSpec::new(
    "url",
    OptionType::Url,
    "the endpoint, `opc.tcp://host:port/path`",
)
.required();
/// `security_policy`.
pub const SECURITY_POLICY: OptionSpec = OptionSpec::new(
    "security_policy",
    OptionType::Choice(&[
        "None",
        "Basic256Sha256",
        "Aes128_Sha256_RsaOaep",
        "Aes256_Sha256_RsaPss",
    ]),
    "the endpoint's security policy",
)
.default("None");
/// `security_mode`.
pub const SECURITY_MODE: OptionSpec = OptionSpec::new(
    "security_mode",
    OptionType::Choice(&["None", "Sign", "SignAndEncrypt"]),
    "the endpoint's message security mode",
)
.derived("`None` (`SignAndEncrypt` with a policy)");
/// `username`.
pub const USERNAME: OptionSpec = OptionSpec::new(
    "username",
    OptionType::Text,
    "user identity, with `password`",
)
.derived("anonymous");
/// `password`.
pub const PASSWORD: OptionSpec = OptionSpec::new(
    "password",
    OptionType::Secret,
    "the user's password; write it as `${ENV_VAR}` (never logged)",
);
/// `user_certificate`.
pub const USER_CERTIFICATE: OptionSpec = OptionSpec::new(
    "user_certificate",
    OptionType::Path,
    "X.509 user identity: certificate (DER), relative to the pipeline file; with `user_private_key`",
);
/// `user_private_key`.
pub const USER_PRIVATE_KEY: OptionSpec = OptionSpec::new(
    "user_private_key",
    OptionType::Path,
    "X.509 user identity: private key (PEM), relative to the pipeline file",
);
/// `pki_dir`.
pub const PKI_DIR: OptionSpec = OptionSpec::new(
    "pki_dir",
    OptionType::Path,
    "Weir's PKI directory (relative to the working directory): `own/cert.der` and `private/private.pem` are created on first start; server certificates are trusted from `trusted/`, unknown ones are stored in `rejected/`",
)
.default("pki");
/// `trust_server_cert`.
pub const TRUST_SERVER_CERT: OptionSpec = OptionSpec::new(
    "trust_server_cert",
    OptionType::Bool,
    "`true` accepts any server certificate and stores it in `trusted/` — for commissioning only; logged as a warning at every start",
)
.default("false");
/// `mode`.
pub const MODE: OptionSpec = OptionSpec::new(
    "mode",
    OptionType::Choice(&["subscribe", "poll"]),
    "`subscribe` (monitored items) or `poll` (Read)",
)
.default("subscribe");
/// `sampling_interval`.
pub const SAMPLING_INTERVAL: OptionSpec = OptionSpec::new(
    "sampling_interval",
    OptionType::Duration,
    "subscribe: how often the server samples each node",
)
.default("100ms");
/// `publishing_interval`.
pub const PUBLISHING_INTERVAL: OptionSpec = OptionSpec::new(
    "publishing_interval",
    OptionType::Duration,
    "subscribe: how often the server sends the changes",
)
.derived("`500ms` (at least `sampling_interval`)");
/// `queue_size`.
pub const QUEUE_SIZE: OptionSpec = OptionSpec::new(
    "queue_size",
    OptionType::Integer,
    "subscribe: samples the server keeps per node between two publishes (keep ≥ publishing / sampling interval, or samples are lost)",
)
.default("10");
/// `deadband`.
pub const DEADBAND: OptionSpec = OptionSpec::new(
    "deadband",
    OptionType::Text,
    "subscribe: `absolute:<amount>` or `percent:<amount>` (of the variable's EURange); changes smaller than this are not reported",
);
/// `interval`.
pub const INTERVAL: OptionSpec = OptionSpec::new(
    "interval",
    OptionType::Duration,
    "poll: time between Reads (all nodes in one request, up to 10,000 nodes per request)",
)
.default("1s");
/// `status_filter`.
pub const STATUS_FILTER: OptionSpec = OptionSpec::new(
    "status_filter",
    OptionType::Choice(&["keep_all", "drop_bad", "good_only"]),
    "`keep_all`, `drop_bad` (values with a Bad status are left out) or `good_only` (Bad and Uncertain left out); counted in `weir_opcua_values_filtered_total`",
)
.default("keep_all");
/// `timeout`.
pub const TIMEOUT: OptionSpec = OptionSpec::new(
    "timeout",
    OptionType::Duration,
    "longest wait for a request",
)
.default("5s");
/// `session_timeout`.
pub const SESSION_TIMEOUT: OptionSpec = OptionSpec::new(
    "session_timeout",
    OptionType::Duration,
    "session timeout asked of the server",
)
.default("60s");
/// `nodes`.
pub const NODES: OptionSpec = OptionSpec::new(
    "nodes",
    OptionType::Text,
    "`[name =] NodeId` entries separated by commas or new lines: `ns=2;s=Machine1.Temperature`, `ns=2;i=1001`, `nsu=<namespace URI>;s=…`; the name is the column (wide) or the `node` value (long), the NodeId itself when not given",
);
/// `browse`.
pub const BROWSE: OptionSpec = OptionSpec::new(
    "browse",
    OptionType::Text,
    "a folder NodeId: every variable below it (8 levels at most) is read, named by its browse path below the folder (`Machine1/Temperature`); may be combined with `nodes`",
);
/// `shape`.
pub const SHAPE: OptionSpec = OptionSpec::new(
    "shape",
    OptionType::Choice(&["long", "wide"]),
    "`long`: one row per value; `wide`: one row per sampling instant, a column per node",
)
.default("long");
/// `time_column`.
pub const TIME_COLUMN: OptionSpec = OptionSpec::new(
    "time_column",
    OptionType::Text,
    "wide: the `TIMESTAMP` column of the instant (the values' source time when subscribed, the time of the Read when polled)",
)
.derived("the `event_time` column");
/// `batch_latency`.
pub const BATCH_LATENCY: OptionSpec = OptionSpec::new(
    "batch_latency",
    OptionType::Duration,
    "values are sent on in batches at most this late (or 8192 rows)",
)
.default("100ms");

/// The sink's `nodes`.
pub const SINK_NODES: OptionSpec = OptionSpec::new(
    "nodes",
    OptionType::Text,
    "`column = NodeId` entries separated by commas or new lines: each row's value of the column is written to the node as the node's DataType (read from the server when the sink connects; a column that does not fit it is an error naming both)",
);
/// `method`.
pub const METHOD: OptionSpec = OptionSpec::new(
    "method",
    OptionType::Text,
    "a method NodeId called for each row (Call service) with the `arguments` columns as its input arguments, checked against the method's InputArguments when the sink connects",
);
/// `method_object`.
pub const METHOD_OBJECT: OptionSpec = OptionSpec::new(
    "method_object",
    OptionType::Text,
    "the NodeId of the object `method` is called on",
)
.derived("the object the method is a component of (browsed)");
/// `arguments`.
pub const ARGUMENTS: OptionSpec = OptionSpec::new(
    "arguments",
    OptionType::Text,
    "the columns passed to `method`, in order, separated by commas",
)
.derived("every inserted column, in order");
/// `method_key`.
pub const METHOD_KEY: OptionSpec = OptionSpec::new(
    "method_key",
    OptionType::Text,
    "columns saying what a call is for (e.g. `machine`): `write_on_change` and `min_interval` apply per value of them, and a newer call replaces a waiting one only for the same value",
)
.derived("none: the method is one target");

/// The sink's own options.
pub const SINK_OPTIONS: &[OptionSpec] = &[SINK_NODES, METHOD, METHOD_OBJECT, ARGUMENTS, METHOD_KEY];

/// The client's options, shared by the source and the sink.
pub const CLIENT_OPTIONS: &[OptionSpec] = &[
    URL,
    SECURITY_POLICY,
    SECURITY_MODE,
    USERNAME,
    PASSWORD,
    USER_CERTIFICATE,
    USER_PRIVATE_KEY,
    PKI_DIR,
    TRUST_SERVER_CERT,
    TIMEOUT,
    SESSION_TIMEOUT,
];

/// The source's own options.
pub const SOURCE_OPTIONS: &[OptionSpec] = &[
    NODES,
    BROWSE,
    SHAPE,
    MODE,
    SAMPLING_INTERVAL,
    PUBLISHING_INTERVAL,
    QUEUE_SIZE,
    DEADBAND,
    INTERVAL,
    STATUS_FILTER,
    TIME_COLUMN,
    BATCH_LATENCY,
];

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

/// Everything needed to connect: endpoint, security, identity, PKI, timeouts.
#[derive(Debug, Clone)]
pub struct ClientSettings {
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
    /// Longest wait for one request.
    pub timeout: Duration,
    /// Session timeout asked of the server.
    pub session_timeout: Duration,
}

/// Everything a source needs to connect and read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How to connect.
    pub client: ClientSettings,
    /// Subscription or polling.
    pub read: Mode,
    /// Values kept by status.
    pub status_filter: StatusFilter,
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

impl ClientSettings {
    /// Reads the client's options.
    pub fn from_options(o: &Options) -> Result<ClientSettings, PipelineError> {
        let url_entry = o.require(&URL)?;
        let url = url_entry.value.trim().to_string();
        if !url.starts_with("opc.tcp://") {
            return Err(o.value_error(
                url_entry,
                "expected an opc.tcp:// URL, e.g. 'opc.tcp://plc:4840/'",
            ));
        }
        let policy = o
            .parse_with(&SECURITY_POLICY, policy)?
            .unwrap_or(SecurityPolicy::None);
        let default_mode = if policy == SecurityPolicy::None {
            MessageSecurityMode::None
        } else {
            MessageSecurityMode::SignAndEncrypt
        };
        let mode = o
            .parse_with(&SECURITY_MODE, security_mode)?
            .unwrap_or(default_mode);
        if (policy == SecurityPolicy::None) != (mode == MessageSecurityMode::None) {
            return Err(o.error(
                "security_policy None goes with security_mode None, and a security policy with Sign or SignAndEncrypt",
            ));
        }
        let identity = match (
            o.text(&USERNAME),
            o.text(&PASSWORD),
            o.text(&USER_CERTIFICATE),
            o.text(&USER_PRIVATE_KEY),
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
        let pki_dir: PathBuf = o.value(&PKI_DIR)?;
        let trust_server_cert: bool = o.value(&TRUST_SERVER_CERT)?;
        Ok(ClientSettings {
            url,
            policy,
            mode,
            identity,
            pki_dir,
            trust_server_cert,
            timeout: o.value(&TIMEOUT)?,
            session_timeout: o.value(&SESSION_TIMEOUT)?,
        })
    }
}

impl Settings {
    /// Reads the client's and the reading options.
    pub fn from_options(o: &Options) -> Result<Settings, PipelineError> {
        let client = ClientSettings::from_options(o)?;
        let read = match o.value::<String>(&MODE)?.as_str() {
            "poll" => {
                for spec in [
                    &SAMPLING_INTERVAL,
                    &PUBLISHING_INTERVAL,
                    &QUEUE_SIZE,
                    &DEADBAND,
                ] {
                    if o.is_given(spec) {
                        return Err(o.error(format!(
                            "{} applies to mode = 'subscribe'; polling reads at 'interval'",
                            spec.name
                        )));
                    }
                }
                Mode::Poll {
                    interval: o.value(&INTERVAL)?,
                }
            }
            _ => {
                if o.is_given(&INTERVAL) {
                    return Err(o.error("interval applies to mode = 'poll'; a subscription uses sampling_interval and publishing_interval"));
                }
                let sampling_interval: Duration = o.value(&SAMPLING_INTERVAL)?;
                Mode::Subscribe {
                    sampling_interval,
                    publishing_interval: o
                        .optional(&PUBLISHING_INTERVAL)?
                        .unwrap_or(Duration::from_millis(500).max(sampling_interval)),
                    queue_size: o.value::<u64>(&QUEUE_SIZE)?.clamp(1, 10_000) as u32,
                    deadband: o.parse_with(&DEADBAND, deadband)?,
                }
            }
        };
        let status_filter = match o.value::<String>(&STATUS_FILTER)?.as_str() {
            "drop_bad" => StatusFilter::DropBad,
            "good_only" => StatusFilter::GoodOnly,
            _ => StatusFilter::KeepAll,
        };
        Ok(Settings {
            client,
            read,
            status_filter,
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
