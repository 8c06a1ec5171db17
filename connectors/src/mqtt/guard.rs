//! The packet guard between the MQTT client library and the broker: it owns the connection to
//! the broker (TCP or TLS), hands packets on to the client over a private Unix socket, and
//! takes out every PUBLISH larger than the source's limit at the framing level, before the
//! client library would see it — reading it off the wire without holding it, acknowledging
//! it to the broker (PUBACK, or PUBREC/PUBCOMP for QoS 2) and reporting it, its first bytes
//! kept for the dead-letter file.
//!
//! Without it, one message larger than what the client library can read breaks the
//! connection; with a persistent session the broker redelivers that message on every
//! reconnection and no later message is ever processed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    BufWriter,
};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_engine::sync::lock;

use super::settings::Settings;

/// Bytes of an oversized message kept for the dead-letter file.
pub const PREFIX_BYTES: usize = 4096;
/// Room for the topic and the properties of a PUBLISH beyond its payload.
const HEADER_ROOM: usize = 64 * 1024;
/// Read and write buffers of the relay.
const BUFFER: usize = 64 * 1024;
/// The largest packet MQTT can frame (remaining length 268,435,455).
pub const PROTOCOL_MAX: usize = 268_435_455;

const PUBLISH: u8 = 3;
const PUBREL: u8 = 6;

/// An oversized PUBLISH the guard took out.
#[derive(Debug, Clone)]
pub struct Oversized {
    /// Its topic.
    pub topic: String,
    /// The size of the packet after its fixed header, in bytes.
    pub size: usize,
    /// The size of its payload (the packet without its topic, packet id and properties).
    pub payload_size: usize,
    /// The first bytes of its payload.
    pub prefix: Bytes,
}

/// Anything that carries a connection to the broker.
trait Link: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Link for T {}

/// A running guard: a Unix socket the client library connects to instead of the broker.
pub struct Guard {
    dir: PathBuf,
    socket: PathBuf,
    task: JoinHandle<()>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// What a guard needs to reach the broker and to report.
struct Config {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    limit: usize,
    /// MQTT 5: a PUBLISH has properties between its packet id and its payload.
    v5: bool,
    oversized: mpsc::UnboundedSender<Oversized>,
    last_error: Arc<Mutex<Option<String>>>,
    /// QoS 2 messages taken out and acknowledged with PUBREC: their PUBREL is answered here
    /// (also after a reconnection of a persistent session).
    swallowed: Mutex<HashSet<u16>>,
}

impl Guard {
    /// Starts a guard for `settings`, reporting oversized messages (a PUBLISH larger than
    /// `max_packet_size` plus room for its topic) on `oversized`.
    pub fn start(
        settings: &Settings,
        tls: Option<Arc<rustls::ClientConfig>>,
        oversized: mpsc::UnboundedSender<Oversized>,
    ) -> anyhow::Result<Guard> {
        let dir = private_dir()?;
        let socket = dir.join("broker.sock");
        let listener = UnixListener::bind(&socket)?;
        let last_error = Arc::new(Mutex::new(None));
        let config = Arc::new(Config {
            host: settings.host.clone(),
            port: settings.port,
            tls,
            limit: settings.max_packet_size.saturating_add(HEADER_ROOM),
            v5: settings.protocol == super::settings::Protocol::V5,
            oversized,
            last_error: Arc::clone(&last_error),
            swallowed: Mutex::default(),
        });
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let config = Arc::clone(&config);
                // one client connection at a time: the client library reconnects by
                // connecting again
                tokio::spawn(serve(config, client));
            }
        });
        Ok(Guard {
            dir,
            socket,
            task,
            last_error,
        })
    }

    /// The socket the client library connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Why the last connection to the broker failed, once.
    pub fn take_error(&self) -> Option<String> {
        lock(&self.last_error).take()
    }
}

/// A directory only this user can enter, for the socket.
fn private_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("weir-mqtt-{}-{nanos:x}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

async fn dial(config: &Config) -> anyhow::Result<Box<dyn Link>> {
    let tcp = TcpStream::connect((config.host.as_str(), config.port)).await?;
    tcp.set_nodelay(true)?;
    Ok(match &config.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(config.host.clone())?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
            Box::new(connector.connect(name, tcp).await?)
        }
    })
}

/// Relays one client connection to a new broker connection until either side closes.
async fn serve(config: Arc<Config>, client: UnixStream) {
    let broker = match dial(&config).await {
        Ok(b) => b,
        Err(e) => {
            *lock(&config.last_error) = Some(format!("{e:#}"));
            return; // closing the client's socket tells it the connection failed
        }
    };
    let (from_broker, mut to_broker) = tokio::io::split(broker);
    let (from_client, to_client) = tokio::io::split(client);
    // packets for the broker, whole: the client's and the guard's acknowledgements
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    let writer = async move {
        while let Some(p) = rx.recv().await {
            if to_broker.write_all(&p).await.is_err() {
                break;
            }
        }
        let _ = to_broker.shutdown().await;
    };
    let upstream = relay_client(BufReader::with_capacity(BUFFER, from_client), tx.clone());
    let downstream = relay_broker(
        &config,
        BufReader::with_capacity(BUFFER, from_broker),
        BufWriter::with_capacity(BUFFER, to_client),
        tx,
    );
    tokio::select! {
        _ = writer => {}
        _ = upstream => {}
        _ = downstream => {}
    }
}

/// Reads one packet's fixed header: the first byte and the remaining length.
async fn header<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, usize, BytesMut)> {
    let first = r.read_u8().await?;
    let mut raw = BytesMut::with_capacity(5);
    raw.put_u8(first);
    let mut len = 0usize;
    for i in 0..4 {
        let b = r.read_u8().await?;
        raw.put_u8(b);
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((first, len, raw));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "malformed remaining length",
    ))
}

/// Client to broker: whole packets, as they are.
async fn relay_client<R: AsyncRead + Unpin>(
    mut from: R,
    to: mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    loop {
        let (_, len, mut packet) = header(&mut from).await?;
        let start = packet.len();
        packet.resize(start + len, 0);
        from.read_exact(&mut packet[start..]).await?;
        if to.send(packet.freeze()).await.is_err() {
            return Ok(());
        }
    }
}

/// Broker to client: packets as they are, but oversized PUBLISH packets are read off,
/// acknowledged and reported, and the PUBREL of those of QoS 2 answered. What is written
/// to the client is flushed whenever nothing more has been read.
async fn relay_broker<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin>(
    config: &Config,
    mut from: R,
    mut to: W,
    acks: mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    loop {
        if from
            .fill_buf()
            .now_or_never()
            .is_none_or(|b| b.map_or(true, |b| b.is_empty()))
        {
            to.flush().await?;
        }
        let (first, len, mut packet) = header(&mut from).await?;
        let kind = first >> 4;
        if kind == PUBLISH && len > config.limit {
            let qos = (first >> 1) & 0b11;
            let (message, id) = take_out(&mut from, len, qos, config.v5).await?;
            if let Some(id) = id {
                let ack = if qos == 2 {
                    lock(&config.swallowed).insert(id);
                    0x50 // PUBREC
                } else {
                    0x40 // PUBACK
                };
                let [hi, lo] = id.to_be_bytes();
                if acks.send(Bytes::from(vec![ack, 2, hi, lo])).await.is_err() {
                    return Ok(());
                }
            }
            let _ = config.oversized.send(message);
            continue;
        }
        let start = packet.len();
        packet.resize(start + len, 0);
        from.read_exact(&mut packet[start..]).await?;
        if kind == PUBREL && len >= 2 {
            let id = u16::from_be_bytes([packet[start], packet[start + 1]]);
            if lock(&config.swallowed).remove(&id) {
                let [hi, lo] = id.to_be_bytes();
                if acks.send(Bytes::from(vec![0x70, 2, hi, lo])).await.is_err() {
                    return Ok(());
                }
                continue;
            }
        }
        to.write_all(&packet).await?;
    }
}

/// Reads an oversized PUBLISH of `len` bytes after its fixed header: its topic, packet id
/// (QoS 1 and 2) and the first [`PREFIX_BYTES`] of the rest; the remainder is discarded as
/// it is read.
async fn take_out<R: AsyncRead + Unpin>(
    from: &mut R,
    len: usize,
    qos: u8,
    v5: bool,
) -> std::io::Result<(Oversized, Option<u16>)> {
    let mut left = len;
    let topic_len = usize::from(from.read_u16().await?);
    left = left.saturating_sub(2);
    let mut topic = vec![0; topic_len.min(left)];
    from.read_exact(&mut topic).await?;
    left -= topic.len();
    let id = if qos > 0 && left >= 2 {
        left -= 2;
        Some(from.read_u16().await?)
    } else {
        None
    };
    if v5 && left > 0 {
        // the properties: a variable byte integer of their length, then that many bytes
        let mut properties = 0usize;
        for i in 0..4 {
            let b = from.read_u8().await?;
            left -= 1;
            properties |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 || left == 0 {
                break;
            }
        }
        let properties = properties.min(left);
        let skipped =
            tokio::io::copy(&mut from.take(properties as u64), &mut tokio::io::sink()).await?;
        if skipped < properties as u64 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        left -= properties;
    }
    let payload_size = left;
    let mut prefix = vec![0; PREFIX_BYTES.min(left)];
    from.read_exact(&mut prefix).await?;
    left -= prefix.len();
    let mut sink = tokio::io::sink();
    let copied = tokio::io::copy(&mut from.take(left as u64), &mut sink).await?;
    if copied < left as u64 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((
        Oversized {
            topic: String::from_utf8_lossy(&topic).into_owned(),
            size: len,
            payload_size,
            prefix: Bytes::from(prefix),
        },
        id,
    ))
}

/// Relays `bytes`, as if a broker had sent them, through the guard's framing with a small
/// limit (for fuzzing): whatever the bytes, it ends without panicking.
pub async fn fuzz_frames(bytes: &[u8]) {
    let (tx, _rx) = mpsc::unbounded_channel();
    let config = Config {
        host: String::new(),
        port: 0,
        tls: None,
        limit: 64,
        v5: bytes.first().is_some_and(|b| b & 1 == 1),
        oversized: tx,
        last_error: Arc::default(),
        swallowed: Mutex::default(),
    };
    let (acks, mut taken) = mpsc::channel(1 << 16);
    let mut to_client = Vec::new();
    let _ = relay_broker(&config, bytes, &mut to_client, acks).await;
    while taken.try_recv().is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: u8, topic: &str, id: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend((topic.len() as u16).to_be_bytes());
        body.extend(topic.as_bytes());
        if qos > 0 {
            body.extend(id.to_be_bytes());
        }
        body.extend(payload);
        let mut p = vec![0x30 | (qos << 1)];
        let mut len = body.len();
        loop {
            let mut b = (len & 0x7f) as u8;
            len >>= 7;
            if len > 0 {
                b |= 0x80;
            }
            p.push(b);
            if len == 0 {
                break;
            }
        }
        p.extend(body);
        p
    }

    /// A guard's configuration for tests: a limit of 100 bytes.
    fn config(v5: bool) -> (Config, mpsc::UnboundedReceiver<Oversized>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let config = Config {
            host: String::new(),
            port: 0,
            tls: None,
            limit: 100,
            v5,
            oversized: tx,
            last_error: Arc::default(),
            swallowed: Mutex::default(),
        };
        (config, rx)
    }

    #[tokio::test]
    async fn mqtt5_properties_are_not_kept_as_payload() {
        let (config, mut rx) = config(true);
        // a properties length of 3, then 3 bytes the guard skips by that length
        let mut payload = vec![3, 0x01, 0x01, 0x02];
        payload.extend(b"{\"v\": 1}");
        payload.extend(vec![b' '; 500]);
        let wire = publish(1, "a/5", 11, &payload);
        let (acks_tx, mut acks) = mpsc::channel(8);
        let mut to_client = Vec::new();
        let _ = relay_broker(&config, wire.as_slice(), &mut to_client, acks_tx).await;
        assert!(to_client.is_empty());
        assert_eq!(acks.try_recv().unwrap().to_vec(), vec![0x40, 2, 0, 11]);
        let taken = rx.recv().await.unwrap();
        assert!(
            taken.prefix.starts_with(b"{\"v\": 1}"),
            "{:?}",
            taken.prefix
        );
    }

    #[tokio::test]
    async fn oversized_publishes_are_taken_out_and_acknowledged() {
        let (config, mut rx) = config(false);
        let mut wire = Vec::new();
        wire.extend(publish(1, "a/1", 7, b"small"));
        wire.extend(publish(1, "a/2", 8, &vec![b'x'; 300_000]));
        wire.extend(publish(2, "a/3", 9, &vec![b'y'; 5_000]));
        wire.extend([0x62, 2, 0, 9]); // PUBREL of the QoS 2 message taken out
        wire.extend(publish(0, "a/4", 0, b"after"));
        let mut to_client = Vec::new();
        let (acks_tx, mut acks) = mpsc::channel(8);
        let r = relay_broker(&config, wire.as_slice(), &mut to_client, acks_tx).await;
        assert_eq!(
            r.unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof,
            "end of input"
        );
        let mut want = publish(1, "a/1", 7, b"small");
        want.extend(publish(0, "a/4", 0, b"after"));
        assert_eq!(to_client, want, "only the small messages reach the client");
        let mut sent = Vec::new();
        while let Ok(a) = acks.try_recv() {
            sent.push(a.to_vec());
        }
        assert_eq!(
            sent,
            vec![
                vec![0x40, 2, 0, 8],
                vec![0x50, 2, 0, 9],
                vec![0x70, 2, 0, 9]
            ]
        );
        let first = rx.recv().await.unwrap();
        assert_eq!(first.topic, "a/2");
        assert_eq!(first.prefix.len(), PREFIX_BYTES);
        assert!(first.size > 300_000);
        assert_eq!(rx.recv().await.unwrap().topic, "a/3");
        assert!(lock(&config.swallowed).is_empty());
    }
}
