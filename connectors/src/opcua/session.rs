//! The client side of one OPC UA source or sink: the client and its certificate (created in
//! the PKI directory on first start), the endpoint and identity, and the session's event
//! loop, which reconnects with backoff and re-creates subscriptions by itself. Connection
//! state goes to the part's telemetry and the logs; refusals are explained.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use opcua::client::{Client, ClientBuilder, IdentityToken, Session, SessionPollResult};
use opcua::crypto::SecurityPolicy;
use opcua::types::{EndpointDescription, StatusCode, UserTokenType};
use tracing::{error, info, warn};

use super::settings::{ClientSettings, Identity};
use crate::owner::Owner;

/// Largest message either side may send (a Read of thousands of nodes is several MB).
const MAX_MESSAGE: usize = 64 << 20;

/// Serializes the creation of clients: the first one of a PKI directory creates its
/// certificate, and two sources starting together must not both write it.
static CLIENT_CREATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The application URI of this process's OPC UA client, the same for every source (they
/// share one certificate per PKI directory, which names it): `urn:weir:<host name>`.
fn application_uri() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("urn:weir:{host}")
}

/// Rewrites a PEM file written with bare CR line ends (as the library writes its private
/// key) with LF line ends, atomically, so that other tools (`openssl`) read it.
fn normalize_pem(path: &std::path::Path) -> std::io::Result<()> {
    let text = std::fs::read(path)?;
    if !text.contains(&b'\r') {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&text)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The client, with its certificate in place.
pub fn client(part: &str, s: &ClientSettings) -> Result<Client, String> {
    let _creating = weir_engine::sync::lock(&CLIENT_CREATION);
    if s.trust_server_cert {
        warn!(part, url = %s.url, pki_dir = %s.pki_dir.display(),
            "TRUST_SERVER_CERT IS ON: any server certificate is accepted and stored as trusted. \
             Use this for commissioning only, then turn it off and keep the trusted certificate");
    }
    let own = s.pki_dir.join("own").join("cert.der");
    let first_start = !own.exists();
    let client = ClientBuilder::new()
        .application_name("Weir")
        .application_uri(application_uri())
        .product_uri("urn:weir")
        .pki_dir(&s.pki_dir)
        .create_sample_keypair(true)
        .trust_server_certs(s.trust_server_cert)
        .session_retry_limit(-1)
        .session_retry_initial(Duration::from_millis(500))
        .session_retry_max(Duration::from_secs(30))
        .session_timeout(s.session_timeout.as_millis().min(u32::MAX as u128) as u32)
        .request_timeout(s.timeout)
        // a dead link or a session the server dropped shows within ~2 keep-alives
        .keep_alive_interval(
            (s.session_timeout / 3).clamp(Duration::from_millis(500), Duration::from_secs(5)),
        )
        .max_failed_keep_alive_count(2)
        .recreate_subscriptions(true)
        .max_message_size(MAX_MESSAGE)
        .max_chunk_count(MAX_MESSAGE / 65_535 + 1)
        .max_array_length(1_000_000)
        .session_name(format!("weir {part}"))
        .client()
        .map_err(|e| format!("OPC UA client configuration: {}", e.join("; ")))?;
    if first_start && own.exists() {
        let key = s.pki_dir.join("private").join("private.pem");
        if let Err(e) = normalize_pem(&key) {
            warn!(part, key = %key.display(), error = %e, "cannot rewrite the private key with LF line ends");
        }
        info!(part, certificate = %own.display(), application_uri = %application_uri(),
            "created this process's OPC UA certificate (shared by its sources and sinks); a server with a trust list must trust it");
    }
    Ok(client)
}

fn identity(i: &Identity) -> Result<IdentityToken, String> {
    Ok(match i {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::User { name, password } => {
            IdentityToken::UserName(name.clone(), password.clone().into())
        }
        Identity::X509 {
            certificate,
            private_key,
        } => IdentityToken::new_x509_path(certificate, private_key).map_err(|e| {
            format!(
                "cannot load the user certificate {} or key {}: {e}",
                certificate.display(),
                private_key.display()
            )
        })?,
    })
}

/// What a refusal means, with what to do about it.
pub fn explain(code: StatusCode, s: &ClientSettings) -> String {
    let name = code.sub_code().name();
    let pki = s.pki_dir.display();
    if code.is_bad() {
        let m = match code {
            StatusCode::BadUserAccessDenied
            | StatusCode::BadIdentityTokenRejected
            | StatusCode::BadIdentityTokenInvalid => format!(
                "the server refused the user identity ({:?}): wrong user name or password, or this identity may not log in",
                s.identity
            ),
            StatusCode::BadCertificateUntrusted | StatusCode::BadSecurityChecksFailed => format!(
                "the server's certificate is not trusted: it was saved to {pki}/rejected; after checking it, move it to {pki}/trusted (or set trust_server_cert = 'true' while commissioning)"
            ),
            StatusCode::BadCertificateHostNameInvalid => format!(
                "the server's certificate does not name the host in {}: use the host name its certificate was made for",
                s.url
            ),
            StatusCode::BadCertificateTimeInvalid => {
                "the server's certificate has expired or is not yet valid".to_string()
            }
            StatusCode::BadSecurityPolicyRejected | StatusCode::BadSecurityModeRejected => format!(
                "the server offers no endpoint with security policy {} and mode {:?}",
                s.policy, s.mode
            ),
            StatusCode::BadTcpEndpointUrlInvalid
            | StatusCode::BadConnectionRejected
            | StatusCode::BadCommunicationError
            | StatusCode::BadNotConnected
            | StatusCode::BadConnectionClosed
            | StatusCode::BadTimeout => {
                format!("cannot reach {}", s.url)
            }
            _ => String::new(),
        };
        if m.is_empty() {
            return name.to_string();
        }
        return format!("{m} ({name})");
    }
    name.to_string()
}

/// Skip reason of a refusal, for the counts.
fn reason(code: StatusCode) -> &'static str {
    match code {
        StatusCode::BadUserAccessDenied
        | StatusCode::BadIdentityTokenRejected
        | StatusCode::BadIdentityTokenInvalid => "auth",
        StatusCode::BadCertificateUntrusted
        | StatusCode::BadSecurityChecksFailed
        | StatusCode::BadCertificateHostNameInvalid
        | StatusCode::BadCertificateTimeInvalid
        | StatusCode::BadCertificateInvalid => "certificate",
        _ => "not_connected",
    }
}

/// `host:port` of an `opc.tcp://host[:port]/path` URL (port 4840 when not given).
fn address(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("opc.tcp://")
        .ok_or_else(|| format!("{url}: not an opc.tcp:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']');
    Ok(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:4840")
    })
}

/// Why a session could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The server cannot be reached, or refused for a reason it names.
    Unreachable(String),
    /// The chosen endpoint accepts no login of the configured kind (counted as `auth`).
    Identity(String),
}

impl From<String> for OpenError {
    fn from(e: String) -> Self {
        OpenError::Unreachable(e)
    }
}

/// The user token type the configured identity logs in with, and the options that set it.
fn token_type(i: &Identity) -> (UserTokenType, &'static str) {
    match i {
        Identity::Anonymous => (UserTokenType::Anonymous, "anonymous (no username)"),
        Identity::User { .. } => (UserTokenType::UserName, "username and password"),
        Identity::X509 { .. } => (
            UserTokenType::Certificate,
            "user_certificate and user_private_key",
        ),
    }
}

/// Refuses an endpoint whose user token policies do not include the configured identity's
/// kind, saying what it accepts and which options to set: the server would refuse the
/// session with a misleading security policy error.
fn check_identity(endpoint: &EndpointDescription, s: &ClientSettings) -> Result<(), String> {
    let Some(policies) = endpoint
        .user_identity_tokens
        .as_ref()
        .filter(|p| !p.is_empty())
    else {
        return Ok(());
    };
    let (wanted, ours) = token_type(&s.identity);
    if policies.iter().any(|p| p.token_type == wanted) {
        return Ok(());
    }
    let accepted: Vec<&str> = policies
        .iter()
        .map(|p| match p.token_type {
            UserTokenType::Anonymous => "anonymous (no username)",
            UserTokenType::UserName => "username and password",
            UserTokenType::Certificate => {
                "an X.509 user certificate (user_certificate and user_private_key)"
            }
            UserTokenType::IssuedToken => "an issued token (not supported)",
        })
        .collect();
    Err(format!(
        "the endpoint {} {:?} of {} does not accept {ours} logins: it accepts {}; set the options for one of those",
        s.policy,
        s.mode,
        s.url,
        accepted.join(", ")
    ))
}

/// Creates the session (asking the server for its endpoints first) and starts its event
/// loop on a task that logs and records the connection state (failed or lost connections
/// counted in `failures`). The task ends when a reconnection stalls; the caller then starts
/// over with a new session.
pub async fn open(
    client: &mut Client,
    s: &ClientSettings,
    owner: Owner,
    failures_counted: metrics::Counter,
) -> Result<(Arc<Session>, tokio::task::JoinHandle<()>), OpenError> {
    let token = identity(&s.identity)?;
    // the library retries a server that is away without end: try the address first
    let address = address(&s.url)?;
    match tokio::time::timeout(s.timeout, tokio::net::TcpStream::connect(&address)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("cannot reach {address}: {e}").into()),
        Err(_) => {
            return Err(format!("cannot reach {address}: no answer within {:?}", s.timeout).into());
        }
    }
    let endpoints = tokio::time::timeout(
        s.timeout * 2,
        client.get_server_endpoints_from_url(s.url.as_str()),
    )
    .await
    .map_err(|_| {
        format!(
            "{} did not describe its endpoints within {:?}",
            s.url,
            s.timeout * 2
        )
    })?
    .map_err(|e| format!("asking {} for its endpoints: {e}", s.url))?;
    let mut endpoint = endpoints
        .iter()
        .find(|e| {
            e.security_mode == s.mode
                && SecurityPolicy::from_uri(e.security_policy_uri.as_ref()) == s.policy
        })
        .cloned()
        .ok_or_else(|| {
            let offered: Vec<String> = endpoints
                .iter()
                .map(|e| {
                    format!(
                        "{} {:?}",
                        SecurityPolicy::from_uri(e.security_policy_uri.as_ref()),
                        e.security_mode
                    )
                })
                .collect();
            format!(
                "{} offers no endpoint with security policy {} and mode {:?} (it offers: {})",
                s.url,
                s.policy,
                s.mode,
                offered.join(", ")
            )
        })?;
    check_identity(&endpoint, s).map_err(OpenError::Identity)?;
    // the server may advertise an address this node cannot reach (another name, a port behind
    // NAT or a proxy): connect where the pipeline says
    endpoint.endpoint_url = s.url.as_str().into();
    let (session, event_loop) = client
        .connect_to_endpoint_directly(endpoint, token)
        .map_err(|e| format!("{}: {e}", explain(e.status(), s)))?;
    let part = owner.name().to_string();
    let settings = s.clone();
    let publisher = session.clone();
    let task = tokio::spawn(async move {
        let events = event_loop.enter();
        tokio::pin!(events);
        let mut failures = 0u64;
        let mut up = false;
        // a connection attempt that neither succeeds nor fails in time (a link that swallows
        // packets) ends the session: the source then starts a new one
        let stall = (settings.timeout * 4).max(Duration::from_secs(10));
        let mut connecting_since: Option<tokio::time::Instant> = None;
        loop {
            let next = match connecting_since {
                Some(t) => match tokio::time::timeout_at(t + stall, events.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        warn!(part = %part, url = %settings.url, waited = ?stall,
                            "opcua connection attempt stalled; starting a new session");
                        break;
                    }
                },
                None => events.next().await,
            };
            let Some(event) = next else { break };
            match &event {
                Ok(SessionPollResult::BeginConnect) | Ok(SessionPollResult::ReconnectFailed(_)) => {
                    connecting_since = Some(tokio::time::Instant::now());
                }
                Ok(SessionPollResult::Reconnected(_)) => connecting_since = None,
                _ => {}
            }
            match event {
                Ok(SessionPollResult::Reconnected(how)) => {
                    info!(part = %part, url = %settings.url, mode = ?how,
                        failed_attempts = failures, "opcua session connected");
                    failures = 0;
                    up = true;
                    owner.set_up(true);
                    // the client re-created the subscriptions while connecting, before the
                    // new connection's publish loop listened: wake it
                    publisher.trigger_publish_now();
                }
                Ok(SessionPollResult::ConnectionLost(code)) => {
                    warn!(part = %part, url = %settings.url, status = %code,
                        "opcua connection lost; reconnecting");
                    up = false;
                    owner.set_up(false);
                }
                Ok(SessionPollResult::ReconnectFailed(code)) => {
                    failures += 1;
                    owner.set_up(false);
                    failures_counted.increment(1);
                    owner.refused(reason(code), &settings.url, explain(code, &settings));
                    if failures == 1 || failures.is_power_of_two() {
                        error!(part = %part, url = %settings.url, failed_attempts = failures,
                            error = %explain(code, &settings), "opcua cannot connect; retrying");
                    }
                }
                Ok(_) => {}
                Err(code) => {
                    // only when retries are limited, which they are not
                    error!(part = %part, status = %code, "opcua session ended; starting a new one");
                    break;
                }
            }
        }
        if up {
            owner.set_up(false);
        }
    });
    Ok((session, task))
}

#[cfg(test)]
mod tests {
    use super::address;

    #[test]
    fn addresses_of_urls() {
        assert_eq!(address("opc.tcp://plc:4841/ua").unwrap(), "plc:4841");
        assert_eq!(address("opc.tcp://plc/").unwrap(), "plc:4840");
        assert_eq!(address("opc.tcp://10.0.0.2").unwrap(), "10.0.0.2:4840");
        assert_eq!(address("opc.tcp://[::1]:4840/").unwrap(), "[::1]:4840");
        assert_eq!(address("opc.tcp://[::1]/").unwrap(), "[::1]:4840");
        assert!(address("opc.tcp:///x").is_err());
    }
}
