//! One interface over rumqttc's MQTT 3.1.1 and MQTT 5 clients: connect, subscribe, publish,
//! and the events the source and sink need.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as Code5, Filter, Packet as Packet5};
use rumqttc::{ConnectReturnCode as Code4, Packet as Packet4, QoS as QoS4, TlsConfiguration};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::settings::{Protocol, Settings, TlsFiles};

/// A received message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Topic it was published to.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// Packet identifier (QoS 1 and 2).
    pub pkid: u16,
    /// QoS it was delivered at.
    pub qos: u8,
    /// The broker delivers it again (DUP flag).
    pub dup: bool,
}

/// What polling the connection produced.
#[derive(Debug)]
pub enum Event {
    /// The broker accepted the connection.
    Connected {
        /// The broker still had this client's persistent session.
        session_present: bool,
    },
    /// A message arrived.
    Message(Message),
    /// A publish of ours left (QoS 0) or was acknowledged (QoS 1 and 2).
    Delivered,
    /// Anything else (pings, subscription acks, ...).
    Other,
}

/// A connection failure, with a message for people.
#[derive(Debug)]
pub struct ConnectError {
    /// What went wrong and what to check.
    pub message: String,
    /// The broker refused us (credentials, client id, authorization): retrying will not help
    /// until someone changes the configuration.
    pub refused: bool,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The handle used to subscribe and publish.
#[derive(Clone)]
pub enum Client {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(rumqttc::v5::AsyncClient),
}

/// The connection; poll it continuously for anything to happen.
pub enum Connection {
    /// MQTT 3.1.1.
    V4(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<rumqttc::v5::EventLoop>),
}

fn qos4(q: u8) -> QoS4 {
    match q {
        0 => QoS4::AtMostOnce,
        1 => QoS4::AtLeastOnce,
        _ => QoS4::ExactlyOnce,
    }
}

fn qos5(q: u8) -> QoS5 {
    match q {
        0 => QoS5::AtMostOnce,
        1 => QoS5::AtLeastOnce,
        _ => QoS5::ExactlyOnce,
    }
}

/// Builds the rustls configuration for `files`, with the ring provider.
pub fn tls_config(files: &TlsFiles) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("cannot read CA file {}", ca.display()))?
            {
                let cert = cert.with_context(|| format!("bad certificate in {}", ca.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("unusable CA certificate in {}", ca.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        anyhow::bail!("no CA certificates to check the broker's certificate with (set 'ca_file')");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("cannot read client certificate {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("bad client certificate {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("cannot read client key {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("client certificate and key do not match")?
        }
        _ => builder.with_no_client_auth(),
    })
}

/// Checks that the TLS files load (so that `weir check` reports them).
pub fn check_tls(s: &Settings) -> anyhow::Result<()> {
    if let Some(files) = &s.tls {
        tls_config(files)?;
    }
    Ok(())
}

/// Where the client library connects.
enum Endpoint<'a> {
    /// The broker itself (TCP or TLS as the settings say).
    Broker,
    /// A packet guard's socket, which owns the broker connection and lets no PUBLISH
    /// larger than the source's limit through: the client can read whatever it is handed.
    Guard(&'a std::path::Path),
}

/// A client connected to the broker directly (the sink: it receives no messages); nothing
/// happens until the connection is polled.
pub fn connect(s: &Settings, requests: usize) -> anyhow::Result<(Client, Connection)> {
    open(s, requests, Endpoint::Broker)
}

/// A client that connects through the packet guard listening on `socket`.
pub fn connect_via(
    s: &Settings,
    requests: usize,
    socket: &std::path::Path,
) -> anyhow::Result<(Client, Connection)> {
    open(s, requests, Endpoint::Guard(socket))
}

fn open(s: &Settings, requests: usize, to: Endpoint<'_>) -> anyhow::Result<(Client, Connection)> {
    let (host, port, transport, read_limit) = match to {
        Endpoint::Broker => {
            let transport = match &s.tls {
                Some(files) => Some(rumqttc::Transport::tls_with_config(
                    TlsConfiguration::Rustls(Arc::new(tls_config(files)?)),
                )),
                None => None,
            };
            (s.host.clone(), s.port, transport, s.max_packet_size)
        }
        Endpoint::Guard(socket) => (
            socket.display().to_string(),
            0,
            Some(rumqttc::Transport::Unix),
            super::guard::PROTOCOL_MAX,
        ),
    };
    Ok(match s.protocol {
        Protocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(&s.client_id, host, port);
            o.set_keep_alive(s.keep_alive)
                .set_clean_session(s.clean_session)
                .set_max_packet_size(read_limit, s.max_packet_size)
                .set_request_channel_capacity(requests)
                .set_manual_acks(s.manual_acks);
            if let Some((u, p)) = &s.credentials {
                o.set_credentials(u, p);
            }
            if let Some(w) = &s.will {
                o.set_last_will(rumqttc::LastWill::new(
                    &w.topic,
                    w.payload.clone(),
                    qos4(w.qos),
                    w.retain,
                ));
            }
            if let Some(t) = transport {
                o.set_transport(t);
            }
            let (c, l) = rumqttc::AsyncClient::new(o, requests);
            (Client::V4(c), Connection::V4(Box::new(l)))
        }
        Protocol::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(&s.client_id, host, port);
            o.set_keep_alive(s.keep_alive)
                .set_clean_start(s.clean_session)
                .set_max_packet_size(Some(read_limit.min(u32::MAX as usize) as u32))
                .set_request_channel_capacity(requests)
                .set_manual_acks(s.manual_acks);
            if let Some(r) = s.receive_maximum {
                o.set_receive_maximum(Some(r));
            }
            if !s.clean_session {
                o.set_session_expiry_interval(Some(
                    s.session_expiry.as_secs().min(u32::MAX as u64) as u32,
                ));
            }
            if let Some((u, p)) = &s.credentials {
                o.set_credentials(u, p);
            }
            if let Some(w) = &s.will {
                o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                    &w.topic,
                    w.payload.clone(),
                    qos5(w.qos),
                    w.retain,
                    None,
                ));
            }
            if let Some(t) = transport {
                o.set_transport(t);
            }
            let (c, l) = rumqttc::v5::AsyncClient::new(o, requests);
            (Client::V5(c), Connection::V5(Box::new(l)))
        }
    })
}

impl Client {
    /// Asks for `filters` at `qos` (queued; sent by the connection's poll).
    pub fn subscribe(&self, filters: &[String], qos: u8) -> anyhow::Result<()> {
        match self {
            Client::V4(c) => c.try_subscribe_many(
                filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos4(qos))),
            )?,
            Client::V5(c) => {
                c.try_subscribe_many(filters.iter().map(|f| Filter::new(f.clone(), qos5(qos))))?
            }
        }
        Ok(())
    }

    /// Publishes, waiting while the request queue is full.
    pub async fn publish(
        &self,
        topic: String,
        qos: u8,
        retain: bool,
        payload: Bytes,
    ) -> anyhow::Result<()> {
        match self {
            Client::V4(c) => c.publish_bytes(topic, qos4(qos), retain, payload).await?,
            Client::V5(c) => c.publish_bytes(topic, qos5(qos), retain, payload).await?,
        }
        Ok(())
    }

    /// Publishes if the request queue has room; false when it is full (poll the
    /// connection, then try again).
    pub fn try_publish(&self, topic: String, qos: u8, retain: bool, payload: Bytes) -> bool {
        match self {
            Client::V4(c) => c.try_publish(topic, qos4(qos), retain, payload).is_ok(),
            Client::V5(c) => c.try_publish(topic, qos5(qos), retain, payload).is_ok(),
        }
    }

    /// Queues the acknowledgement of the message with packet id `pkid` received at `qos`
    /// (PUBACK, or PUBREC for QoS 2); false when the request queue is full (try again
    /// after polling the connection).
    pub fn ack(&self, pkid: u16, qos: u8) -> bool {
        match self {
            Client::V4(c) => c
                .try_ack(&rumqttc::Publish {
                    dup: false,
                    qos: qos4(qos),
                    retain: false,
                    topic: String::new(),
                    pkid,
                    payload: Bytes::new(),
                })
                .is_ok(),
            Client::V5(c) => c
                .try_ack(&rumqttc::v5::mqttbytes::v5::Publish {
                    dup: false,
                    qos: qos5(qos),
                    retain: false,
                    topic: Bytes::new(),
                    pkid,
                    payload: Bytes::new(),
                    properties: None,
                })
                .is_ok(),
        }
    }

    /// Asks the connection to disconnect cleanly.
    pub fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

/// Brokers (Mosquitto among them) answer a wrong password with "not authorized".
const NOT_AUTHORIZED: &str =
    "not authorized (bad user name or password, or this user may not connect)";

fn refusal4(code: Code4) -> (String, bool) {
    match code {
        Code4::BadUserNamePassword => ("bad user name or password".into(), true),
        Code4::NotAuthorized => (NOT_AUTHORIZED.into(), true),
        Code4::BadClientId => ("client id rejected".into(), true),
        Code4::RefusedProtocolVersion => ("protocol version 3.1.1 not accepted".into(), true),
        other => (format!("{other:?}"), false),
    }
}

fn refusal5(code: Code5) -> (String, bool) {
    match code {
        Code5::BadUserNamePassword => ("bad user name or password".into(), true),
        Code5::NotAuthorized => (NOT_AUTHORIZED.into(), true),
        Code5::ClientIdentifierNotValid | Code5::BadClientId => ("client id rejected".into(), true),
        Code5::Banned => ("this client is banned".into(), true),
        Code5::UnsupportedProtocolVersion | Code5::RefusedProtocolVersion => (
            "protocol version 5 not accepted (try protocol = '3.1.1')".into(),
            true,
        ),
        other => (format!("{other:?}"), false),
    }
}

fn failure(broker: &str, what: String, refused: bool) -> ConnectError {
    let message = if refused {
        format!("broker {broker} refused the connection: {what}")
    } else {
        format!("connection to {broker} failed: {what}")
    };
    ConnectError { message, refused }
}

impl Connection {
    /// True while the next [`Connection::poll`] returns an event already read from the
    /// network (the client library reads a few packets at a time) without waiting.
    pub fn has_buffered(&self) -> bool {
        match self {
            Connection::V4(l) => !l.state.events.is_empty(),
            Connection::V5(l) => !l.state.events.is_empty(),
        }
    }

    /// Drives the connection until something happens; after an error, the next call
    /// reconnects.
    pub async fn poll(&mut self, broker: &str) -> Result<Event, ConnectError> {
        match self {
            Connection::V4(l) => match l.poll().await {
                Ok(rumqttc::Event::Incoming(p)) => Ok(match p {
                    Packet4::ConnAck(a) => Event::Connected {
                        session_present: a.session_present,
                    },
                    Packet4::Publish(p) => Event::Message(Message {
                        topic: p.topic,
                        payload: p.payload,
                        pkid: p.pkid,
                        qos: p.qos as u8,
                        dup: p.dup,
                    }),
                    Packet4::PubAck(_) | Packet4::PubComp(_) => Event::Delivered,
                    _ => Event::Other,
                }),
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(0))) => Ok(Event::Delivered),
                Ok(rumqttc::Event::Outgoing(_)) => Ok(Event::Other),
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    let (what, refused) = refusal4(code);
                    Err(failure(broker, what, refused))
                }
                Err(e) => Err(failure(broker, e.to_string(), false)),
            },
            Connection::V5(l) => match l.poll().await {
                Ok(rumqttc::v5::Event::Incoming(p)) => Ok(match p {
                    Packet5::ConnAck(a) => Event::Connected {
                        session_present: a.session_present,
                    },
                    Packet5::Publish(p) => Event::Message(Message {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                        pkid: p.pkid,
                        qos: p.qos as u8,
                        dup: p.dup,
                    }),
                    Packet5::PubAck(_) | Packet5::PubComp(_) => Event::Delivered,
                    _ => Event::Other,
                }),
                Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Publish(0))) => {
                    Ok(Event::Delivered)
                }
                Ok(rumqttc::v5::Event::Outgoing(_)) => Ok(Event::Other),
                Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
                    let (what, refused) = refusal5(code);
                    Err(failure(broker, what, refused))
                }
                Err(e) => Err(failure(broker, e.to_string(), false)),
            },
        }
    }
}
