//! A simulated plant as an OPC UA server (async-opcua's server), for Weir's tests and
//! benches: machines whose variables change every tick on the schedule of [`schedule`], a
//! folder with one variable per OPC UA type, optionally many bulk variables, and writable
//! setpoints and a method ([`setpoints`]) whose writes and calls it records.
//!
//! The server runs on a runtime and thread of its own, listens on `127.0.0.1:<port>`,
//! offers a None endpoint (anonymous or user) and signed and encrypted endpoints (user or
//! X.509 identity), and can be stopped and started again on the same port and PKI directory.
#![allow(clippy::unwrap_used)] // a test (or bench) fails by panicking

pub mod schedule;
pub mod setpoints;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opcua::crypto::SecurityPolicy;
use opcua::server::address_space::Variable;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{
    InMemoryNodeManager, SimpleNodeManager, SimpleNodeManagerImpl, simple_node_manager,
};
use opcua::server::{ANONYMOUS_USER_TOKEN_ID, ServerBuilder, ServerHandle, ServerUserToken};
use opcua::types::{
    DataTypeId, DataValue, DateTime, MessageSecurityMode, NodeId, ObjectId, StatusCode,
};
pub use opcua::types::{DateTime as OpcDateTime, Variant};
use schedule::Value;
use setpoints::{PlantAuth, WriteLog};

/// The plant's namespace URI (index 2 on this server).
pub const NAMESPACE: &str = "urn:weir:test-plant";

/// The user the secure endpoints accept.
pub const USER: &str = "operator";

/// What the server holds and how it lets clients in.
#[derive(Debug, Clone)]
pub struct PlantConfig {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// The server's PKI directory (its own certificate is created there on first start).
    pub pki_dir: PathBuf,
    /// Machines `Machine1` … `Machine<n>`.
    pub machines: u32,
    /// Every variable changes once per tick.
    pub tick: Duration,
    /// Variables `Bulk.0` … `Bulk.<n-1>` (Double), for the benchmark.
    pub bulk: u32,
    /// Password of [`USER`].
    pub password: String,
    /// A DER certificate whose holder may log in with an X.509 identity.
    pub x509_user_cert: Option<PathBuf>,
}

impl PlantConfig {
    /// Three machines, 100 ms ticks, no bulk variables.
    pub fn new(port: u16, pki_dir: &Path) -> PlantConfig {
        PlantConfig {
            port,
            pki_dir: pki_dir.to_path_buf(),
            machines: 3,
            tick: Duration::from_millis(100),
            bulk: 0,
            password: "s3cret-pass".into(),
            x509_user_cert: None,
        }
    }
}

/// A running (or stopped) plant server.
pub struct PlantServer {
    config: PlantConfig,
    log: Arc<WriteLog>,
    running: Option<Running>,
}

struct Running {
    handle: ServerHandle,
    thread: JoinHandle<()>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn opc_time(unix_ms: i64) -> DateTime {
    // DateTime counts 100 ns ticks since 1601-01-01
    DateTime::from(unix_ms * 10_000 + 116_444_736_000_000_000)
}

fn variant(name: &str, v: Value) -> Variant {
    match (name, v) {
        (_, Value::Bool(b)) => Variant::Boolean(b),
        ("SByte", Value::Int(i)) => Variant::SByte(i as i8),
        ("Int16", Value::Int(i)) => Variant::Int16(i as i16),
        ("Int32" | "Speed", Value::Int(i)) => Variant::Int32(i as i32),
        (_, Value::Int(i)) => Variant::Int64(i),
        ("Byte", Value::UInt(u)) => Variant::Byte(u as u8),
        ("UInt16", Value::UInt(u)) => Variant::UInt16(u as u16),
        ("UInt32" | "Counter", Value::UInt(u)) => Variant::UInt32(u as u32),
        (_, Value::UInt(u)) => Variant::UInt64(u),
        ("Float" | "Pressure", Value::Float(f)) => Variant::Float(f as f32),
        (_, Value::Float(f)) => Variant::Double(f),
        (_, Value::Text(s)) => Variant::from(s),
        (_, Value::TimeMs(ms)) => Variant::from(opc_time(ms)),
        (_, Value::Floats(v)) => Variant::from(v),
        (_, Value::Ints(v)) => Variant::from(v.into_iter().map(|i| i as i32).collect::<Vec<_>>()),
    }
}

/// One variable of the address space and how its value follows the tick.
struct Point {
    id: NodeId,
    name: String,
    value: Box<dyn Fn(i64) -> (Variant, StatusCode) + Send + Sync>,
}

fn points(config: &PlantConfig, ns: u16) -> Vec<(NodeId, Point)> {
    let tick_ms = config.tick.as_millis() as i64;
    let mut out = Vec::new();
    for m in 1..=config.machines {
        let folder = NodeId::new(ns, format!("Machine{m}"));
        for name in schedule::MACHINE_VARIABLES {
            let id = if name == "Counter" {
                NodeId::new(ns, schedule::counter_id(m))
            } else {
                NodeId::new(ns, format!("Machine{m}.{name}"))
            };
            out.push((
                folder.clone(),
                Point {
                    id,
                    name: name.to_string(),
                    value: Box::new(move |k| {
                        let status = if name == "Pressure" && schedule::pressure_uncertain(k) {
                            StatusCode::UncertainLastUsableValue
                        } else {
                            StatusCode::Good
                        };
                        (variant(name, schedule::machine_value(name, m, k)), status)
                    }),
                },
            ));
        }
    }
    let types = NodeId::new(ns, "Types");
    for name in schedule::TYPE_VARIABLES {
        out.push((
            types.clone(),
            Point {
                id: NodeId::new(ns, format!("Types.{name}")),
                name: name.to_string(),
                value: Box::new(move |k| {
                    let v = variant(name, schedule::type_value(name, k, tick_ms));
                    (v, StatusCode::Good)
                }),
            },
        ));
    }
    let bulk = NodeId::new(ns, "Bulk");
    for i in 0..config.bulk {
        out.push((
            bulk.clone(),
            Point {
                id: NodeId::new(ns, format!("Bulk.{i}")),
                name: format!("B{i}"),
                value: Box::new(move |k| (Variant::Double(schedule::bulk(i, k)), StatusCode::Good)),
            },
        ));
    }
    out
}

fn data_type(v: &Variant) -> NodeId {
    let scalar = match v {
        Variant::Array(a) => a.values.first(),
        v => Some(v),
    };
    scalar
        .and_then(|s| s.data_type())
        .map(|t| t.node_id)
        .unwrap_or_else(|| DataTypeId::BaseDataType.into())
}

fn builder(config: &PlantConfig) -> ServerBuilder {
    let url = format!("opc.tcp://127.0.0.1:{}/", config.port);
    let secure_users: &[&str] = if config.x509_user_cert.is_some() {
        &[USER, "x509"]
    } else {
        &[USER]
    };
    let none_users = [ANONYMOUS_USER_TOKEN_ID, USER];
    let mut users = std::collections::BTreeMap::new();
    users.insert(
        USER.to_string(),
        ServerUserToken::user_pass(USER, &config.password),
    );
    if let Some(cert) = &config.x509_user_cert {
        let mut token = ServerUserToken::x509("x509", cert);
        token.read_thumbprint();
        users.insert("x509".to_string(), token);
    }
    let mut b = ServerBuilder::new()
        .application_name("Weir test plant")
        .application_uri("urn:weir:test-plant-server")
        .product_uri("urn:weir:test-plant-server")
        .host("127.0.0.1")
        .port(config.port)
        .pki_dir(&config.pki_dir)
        .create_sample_keypair(true)
        .trust_client_certs(true)
        .discovery_urls(vec![url])
        .add_user_token(USER, ServerUserToken::user_pass(USER, &config.password))
        .with_authenticator(Arc::new(PlantAuth::new(users, 2)))
        .add_endpoint(
            "none",
            (
                "/",
                SecurityPolicy::None,
                MessageSecurityMode::None,
                &none_users as &[&str],
            ),
        )
        .add_endpoint(
            "basic256sha256",
            (
                "/",
                SecurityPolicy::Basic256Sha256,
                MessageSecurityMode::SignAndEncrypt,
                secure_users,
            ),
        )
        .add_endpoint(
            "aes128",
            (
                "/",
                SecurityPolicy::Aes128Sha256RsaOaep,
                MessageSecurityMode::SignAndEncrypt,
                secure_users,
            ),
        )
        .add_endpoint(
            "aes256_sign",
            (
                "/",
                SecurityPolicy::Aes256Sha256RsaPss,
                MessageSecurityMode::Sign,
                secure_users,
            ),
        )
        .with_node_manager(simple_node_manager(
            NamespaceMetadata {
                namespace_uri: NAMESPACE.to_string(),
                ..Default::default()
            },
            "plant",
        ));
    if let Some(cert) = &config.x509_user_cert {
        b = b.add_user_token("x509", ServerUserToken::x509("x509", cert));
    }
    let limits = b.limits_mut();
    limits.max_message_size = 64 << 20;
    limits.max_chunk_count = 1024;
    limits.max_array_length = 100_000;
    limits.subscriptions.max_monitored_items_per_sub = 100_000;
    limits.subscriptions.max_monitored_item_queue_size = 100;
    limits.subscriptions.max_queued_notifications = 1000;
    limits.operational.max_monitored_items_per_call = 1000;
    limits.operational.max_nodes_per_read = 10_000;
    b
}

/// Creates an X.509 user certificate (`user.der`) and its key (`user.pem`) in `dir`, for
/// [`PlantConfig::x509_user_cert`] and a client's X.509 identity.
pub fn make_user_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    use opcua::crypto::{CertificateStore, X509Data};
    use opcua::types::ApplicationDescription;
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("user.der"), dir.join("user.pem"));
    let description = ApplicationDescription {
        application_uri: "urn:weir:test-user".into(),
        application_name: "Weir test user".into(),
        ..Default::default()
    };
    CertificateStore::create_certificate_and_key(&X509Data::from(description), true, &cert, &key)
        .expect("user certificate");
    (cert, key)
}

impl PlantServer {
    /// Starts the server and waits until it accepts connections.
    pub fn start(config: PlantConfig) -> PlantServer {
        let mut s = PlantServer {
            config,
            log: Arc::default(),
            running: None,
        };
        s.restart();
        s
    }

    /// `opc.tcp://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/", self.config.port)
    }

    /// What clients wrote to the setpoints and called (kept across restarts).
    pub fn log(&self) -> &WriteLog {
        &self.log
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &PlantConfig {
        &self.config
    }

    /// The server's own certificate (DER), to put in a client's trust list.
    pub fn certificate(&self) -> PathBuf {
        self.config.pki_dir.join("own").join("cert.der")
    }

    /// Puts the server's certificate in the trust list of the client PKI directory `pki`,
    /// under the name the client looks for.
    pub fn trust_in(&self, pki: &Path) {
        use opcua::crypto::CertificateStore;
        let cert = CertificateStore::read_cert(&self.certificate()).expect("server certificate");
        let trusted = pki.join("trusted");
        std::fs::create_dir_all(&trusted).unwrap();
        std::fs::copy(
            self.certificate(),
            trusted.join(CertificateStore::cert_file_name(&cert)),
        )
        .unwrap();
    }

    /// Stops the server: its connections drop, its port closes.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.handle.cancel();
            let _ = r.thread.join();
        }
    }

    /// Starts it (again, after [`PlantServer::stop`]) on the same port and PKI directory.
    pub fn restart(&mut self) {
        self.stop();
        let config = self.config.clone();
        let log = Arc::clone(&self.log);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("opcua-test-plant".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(serve(config, log, ready_tx));
            })
            .unwrap();
        let handle = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the OPC UA test server did not start");
        self.running = Some(Running { handle, thread });
    }
}

impl Drop for PlantServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    config: PlantConfig,
    log: Arc<WriteLog>,
    ready: std::sync::mpsc::Sender<ServerHandle>,
) {
    // the port can stay in TIME_WAIT briefly after a stop: retry the bind
    let listener = {
        let mut tries = 0;
        loop {
            match StdListener::bind(("127.0.0.1", config.port)) {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot listen on {}: {e}", config.port),
            }
        }
    };
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let (server, handle) = builder(&config).build().expect("test server configuration");
    let manager: Arc<InMemoryNodeManager<SimpleNodeManagerImpl>> = handle
        .node_managers()
        .get_of_type::<SimpleNodeManager>()
        .expect("plant node manager");
    let ns = handle
        .get_namespace_index(NAMESPACE)
        .expect("plant namespace");
    assert_eq!(ns, 2, "the plant namespace is expected at index 2");
    let points = points(&config, ns);
    let tick_ms = config.tick.as_millis() as i64;
    let k0 = now_ms() / tick_ms;
    {
        let mut space = manager.address_space().write();
        let plant = NodeId::new(ns, "Plant");
        space.add_folder(&plant, "Plant", "Plant", &ObjectId::ObjectsFolder.into());
        for m in 1..=config.machines {
            let f = NodeId::new(ns, format!("Machine{m}"));
            space.add_folder(&f, format!("Machine{m}"), format!("Machine{m}"), &plant);
        }
        space.add_folder(&NodeId::new(ns, "Types"), "Types", "Types", &plant);
        let setpoints = NodeId::new(ns, "Setpoints");
        space.add_folder(&setpoints, "Setpoints", "Setpoints", &plant);
        setpoints::add(&mut space, manager.inner(), ns, (&plant, &setpoints), &log);
        if config.bulk > 0 {
            space.add_folder(
                &NodeId::new(ns, "Bulk"),
                "Bulk",
                "Bulk",
                &ObjectId::ObjectsFolder.into(),
            );
        }
        for (parent, p) in &points {
            let (v, _) = (p.value)(k0);
            let t = data_type(&v);
            let var =
                Variable::new_data_value(&p.id, p.name.as_str(), p.name.as_str(), t, None, None, v);
            space.add_variables(vec![var], parent);
        }
    }
    let subscriptions = handle.subscriptions().clone();
    let token = handle.token().clone();
    let _ = ready.send(handle);
    let updater = async {
        let mut k = now_ms() / tick_ms;
        loop {
            k += 1;
            let wait = k * tick_ms - now_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            let at = opc_time(k * tick_ms);
            let now = DateTime::now();
            let values: Vec<(&NodeId, DataValue)> = points
                .iter()
                .map(|(_, p)| {
                    let (v, status) = (p.value)(k);
                    let dv = DataValue {
                        value: Some(v),
                        status: Some(status),
                        source_timestamp: Some(at),
                        source_picoseconds: None,
                        server_timestamp: Some(now),
                        server_picoseconds: None,
                    };
                    (&p.id, dv)
                })
                .collect();
            let _ = manager.set_values(
                &subscriptions,
                values.into_iter().map(|(id, dv)| (id, None, dv)),
            );
        }
    };
    tokio::select! {
        _ = server.run_with(listener) => {}
        _ = updater => {}
        _ = token.cancelled() => {}
    }
}
