//! A Modbus server for the tests (tokio-modbus' server, on its own runtime): per unit a
//! register bank the test writes (and Weir's sink writes: functions 5, 6, 15, 16 and 22), a
//! log of every request with what was answered or written, and faults the test switches on:
//! an exception for an address range, a unit that never answers, no mask write. Serves TCP on a free loopback port or RTU on one end of a `socat`
//! pseudo-terminal pair.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// The four tables of one unit.
pub struct Bank {
    /// Holding registers.
    pub holding: Vec<u16>,
    /// Input registers.
    pub input: Vec<u16>,
    /// Coils.
    pub coils: Vec<bool>,
    /// Discrete inputs.
    pub discrete: Vec<bool>,
}

impl Default for Bank {
    fn default() -> Self {
        Bank {
            holding: vec![0; 65536],
            input: vec![0; 65536],
            coils: vec![false; 65536],
            discrete: vec![false; 65536],
        }
    }
}

/// One request the server answered (or refused).
#[derive(Debug, Clone)]
pub struct Served {
    /// Unit id.
    pub unit: u8,
    /// Function code.
    pub function: u8,
    /// First address.
    pub start: u16,
    /// Items.
    pub count: u16,
    /// Registers answered, or written (empty for bits and exceptions).
    pub words: Vec<u16>,
    /// Coils written.
    pub bits: Vec<bool>,
    /// Exception sent instead of data.
    pub exception: Option<ExceptionCode>,
    /// When the answer left, milliseconds since the epoch.
    pub at_ms: i64,
}

/// What the server holds and does.
#[derive(Default)]
pub struct Device {
    /// Banks by unit id; requests to other units get no answer.
    pub banks: BTreeMap<u8, Bank>,
    /// Every request served (unless `count_only`).
    pub log: Vec<Served>,
    /// Only count requests (for benchmarks): `log` stays empty.
    pub count_only: bool,
    /// Requests answered.
    pub requests: u64,
    /// (function, first, last address): requests touching it get this exception.
    pub exceptions: Vec<(u8, u16, u16, ExceptionCode)>,
    /// Units that do not answer at all (the client times out).
    pub silent: Vec<u8>,
    /// Answer mask writes (function 22) with "illegal function", as many devices do.
    pub no_mask_write: bool,
    /// (address, max): the device acknowledges writes to this holding register but keeps
    /// at most `max` (as a PLC with its own limit does).
    pub clamp: Option<(u16, u16)>,
}

/// The device, shared between the test and the server.
pub type Shared = Arc<Mutex<Device>>;

/// A device with banks for `units`.
pub fn device(units: &[u8]) -> Shared {
    let mut d = Device::default();
    for u in units {
        d.banks.insert(*u, Bank::default());
    }
    Arc::new(Mutex::new(d))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl Device {
    /// Carries out a write request (function 5, 6, 15, 16 or 22) and logs it.
    fn write(&mut self, unit: u8, function: u8, request: Request<'static>) -> Answer {
        let (start, count) = match &request {
            Request::WriteMultipleCoils(a, c) => (*a, c.len()),
            Request::WriteMultipleRegisters(a, w) => (*a, w.len()),
            Request::WriteSingleCoil(a, _)
            | Request::WriteSingleRegister(a, _)
            | Request::MaskWriteRegister(a, _, _) => (*a, 1),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        let exception = self
            .exceptions
            .iter()
            .find(|(f, a, b, _)| {
                *f == function
                    && start as u32 <= *b as u32
                    && (start as usize + count).saturating_sub(1) >= *a as usize
            })
            .map(|e| e.3);
        if count == 0 || start as usize + count > 65536 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        self.requests += 1;
        let (mut words, mut bits) = (Vec::new(), Vec::new());
        let response = if exception.is_some() {
            None
        } else {
            let bank = self.banks.get_mut(&unit).expect("checked by the caller");
            let s = start as usize;
            Some(match request {
                Request::WriteSingleCoil(a, b) => {
                    bank.coils[s] = b;
                    bits.push(b);
                    Response::WriteSingleCoil(a, b)
                }
                Request::WriteMultipleCoils(a, c) => {
                    bank.coils[s..s + count].copy_from_slice(&c);
                    bits.extend_from_slice(&c);
                    Response::WriteMultipleCoils(a, count as u16)
                }
                Request::WriteSingleRegister(a, w) => {
                    bank.holding[s] = w;
                    words.push(w);
                    Response::WriteSingleRegister(a, w)
                }
                Request::WriteMultipleRegisters(a, w) => {
                    bank.holding[s..s + count].copy_from_slice(&w);
                    words.extend_from_slice(&w);
                    Response::WriteMultipleRegisters(a, count as u16)
                }
                Request::MaskWriteRegister(a, and, or) => {
                    let r = &mut bank.holding[s];
                    *r = (*r & and) | (or & !and);
                    words.push(*r);
                    Response::MaskWriteRegister(a, and, or)
                }
                _ => unreachable!("matched above"),
            })
        };
        if let Some((a, max)) = self.clamp
            && let Some(bank) = self.banks.get_mut(&unit)
        {
            let r = &mut bank.holding[a as usize];
            *r = (*r).min(max);
        }
        if !self.count_only {
            self.log.push(Served {
                unit,
                function,
                start,
                count: count as u16,
                words,
                bits,
                exception,
                at_ms: now_ms(),
            });
        }
        match exception {
            Some(code) => Err(code),
            None => Ok(response),
        }
    }

    /// The write requests served (functions 5, 6, 15, 16, 22), in order.
    pub fn writes(&self) -> Vec<Served> {
        self.log
            .iter()
            .filter(|s| s.function > 4)
            .cloned()
            .collect()
    }
}

/// Answers requests from the shared device.
#[derive(Clone)]
struct DeviceService(Shared);

type Answer = Result<Option<Response>, ExceptionCode>;

impl DeviceService {
    fn answer(&self, req: SlaveRequest<'static>) -> Answer {
        let mut d = self.0.lock().unwrap();
        let unit = req.slave;
        if d.silent.contains(&unit) || !d.banks.contains_key(&unit) {
            // no answer at all: the client's request times out
            return Ok(None);
        }
        let (function, start, count) = match &req.request {
            Request::ReadCoils(a, n) => (1, *a, *n),
            Request::ReadDiscreteInputs(a, n) => (2, *a, *n),
            Request::ReadHoldingRegisters(a, n) => (3, *a, *n),
            Request::ReadInputRegisters(a, n) => (4, *a, *n),
            Request::WriteSingleCoil(a, _) => (5, *a, 1),
            Request::WriteSingleRegister(a, _) => (6, *a, 1),
            Request::WriteMultipleCoils(a, c) => (15, *a, c.len() as u16),
            Request::WriteMultipleRegisters(a, w) => (16, *a, w.len() as u16),
            Request::MaskWriteRegister(a, _, _) if !d.no_mask_write => (22, *a, 1),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        if function > 4 {
            return d.write(unit, function, req.request);
        }
        let last = start as u32 + count as u32 - 1;
        let exception = d
            .exceptions
            .iter()
            .find(|(f, a, b, _)| *f == function && start as u32 <= *b as u32 && last >= *a as u32)
            .map(|e| e.3);
        let (s, e) = (start as usize, start as usize + count as usize);
        if count == 0 || e > 65536 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        d.requests += 1;
        let bank = &d.banks[&unit];
        let response = match function {
            1 => Response::ReadCoils(bank.coils[s..e].to_vec()),
            2 => Response::ReadDiscreteInputs(bank.discrete[s..e].to_vec()),
            3 => Response::ReadHoldingRegisters(bank.holding[s..e].to_vec()),
            _ => Response::ReadInputRegisters(bank.input[s..e].to_vec()),
        };
        if !d.count_only {
            let words = match (&response, exception) {
                (Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w), None) => {
                    w.clone()
                }
                _ => vec![],
            };
            d.log.push(Served {
                unit,
                function,
                start,
                count,
                words,
                bits: vec![],
                exception,
                at_ms: now_ms(),
            });
        }
        match exception {
            Some(code) => Err(code),
            None => Ok(Some(response)),
        }
    }
}

impl Service for DeviceService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Answer>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.answer(req))
    }
}

/// A map of 200 registers scattered over two tables: its columns (with `unit INT` first), its
/// entries, and the reads (function, start, count) a person plans for it by hand.
pub fn scattered_map() -> (String, Vec<String>, BTreeSet<(u8, u16, u16)>) {
    let mut map = Vec::new();
    let mut columns = vec!["unit INT".to_string()];
    let mut add = |name: String, entry: String, sql: &str| {
        columns.push(format!("{name} {sql}"));
        map.push(format!("{name} = {entry}"));
    };
    for a in (0..10).chain(20..30) {
        add(format!("h{a}"), format!("holding {a} uint16"), "BIGINT");
    }
    for a in [100, 102] {
        add(format!("f{a}"), format!("holding {a} float32"), "DOUBLE");
    }
    for k in 0..125u16 {
        let a = 200 + 2 * k;
        add(format!("s{a}"), format!("holding {a} int16"), "BIGINT");
    }
    for a in [0, 50] {
        add(format!("i{a}"), format!("input {a} uint16"), "BIGINT");
    }
    for a in 2000..=2010 {
        add(format!("j{a}"), format!("input {a} int16"), "BIGINT");
    }
    for a in 1000..1040 {
        add(format!("t{a}"), format!("input {a}"), "BIGINT");
    }
    // with max_gap 16: holding 0..=29 (the 10-register gap is bridged), holding 100..=103,
    // holding 200..=324 (125 registers, the most one request may read), holding 326..=448,
    // input 0 and input 50 apart (gap 49), input 1000..=1039, input 2000..=2010
    let expected: BTreeSet<(u8, u16, u16)> = [
        (3, 0, 30),
        (3, 100, 4),
        (3, 200, 125),
        (3, 326, 123),
        (4, 0, 1),
        (4, 50, 1),
        (4, 1000, 40),
        (4, 2000, 11),
    ]
    .into();
    assert_eq!(map.len(), 200);
    (columns.join(", "), map, expected)
}

/// A running Modbus server.
pub struct ModbusServer {
    runtime: Runtime,
    /// The device it serves.
    pub device: Shared,
    /// TCP port (TCP servers).
    pub port: u16,
    task: Option<JoinHandle<()>>,
    socat: Option<Child>,
    /// The client's end of the pseudo-terminal pair (RTU servers).
    pub client_tty: PathBuf,
    /// The server's end of the pseudo-terminal pair (RTU servers).
    pub server_tty: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

impl ModbusServer {
    /// Serves `device` over TCP on a free loopback port.
    pub fn tcp(device: Shared) -> ModbusServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = ModbusServer {
            runtime: runtime(),
            device,
            port,
            task: None,
            socat: None,
            client_tty: PathBuf::new(),
            server_tty: PathBuf::new(),
            _dir: None,
        };
        s.start_tcp();
        s
    }

    fn start_tcp(&mut self) {
        let service = DeviceService(Arc::clone(&self.device));
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .expect("bind the modbus test server");
        let server = tokio_modbus::server::tcp::Server::new(listener);
        self.task = Some(self.runtime.spawn(async move {
            let on_connected = |stream, _addr| {
                let service = service.clone();
                async move { Ok(Some((service, stream))) }
            };
            let _ = server.serve(&on_connected, |_err| {}).await;
        }));
    }

    /// Stops serving and closes every connection.
    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = self.runtime.block_on(t);
        }
    }

    /// Serves again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.start_tcp();
    }

    /// Serves `device` as RTU on one end of a new pseudo-terminal pair (socat); the client
    /// opens [`ModbusServer::client_tty`].
    pub fn rtu(device: Shared, baud_rate: u32) -> ModbusServer {
        let dir = tempfile::tempdir().unwrap();
        let (client_tty, server_tty) = (dir.path().join("client"), dir.path().join("server"));
        let socat = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", client_tty.display()))
            .arg(format!("pty,raw,echo=0,link={}", server_tty.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (the test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(client_tty.exists() && server_tty.exists()) {
            assert!(Instant::now() < deadline, "socat made no pseudo-terminals");
            std::thread::sleep(Duration::from_millis(20));
        }
        let runtime = runtime();
        let service = DeviceService(Arc::clone(&device));
        let path = server_tty.clone();
        let task = runtime.spawn(async move {
            let server = tokio_modbus::server::rtu::Server::new_from_path(&path, baud_rate)
                .expect("open the server's pseudo-terminal");
            let _ = server.serve_forever(service).await;
        });
        ModbusServer {
            runtime,
            device,
            port: 0,
            task: Some(task),
            socat: Some(socat),
            client_tty,
            server_tty,
            _dir: Some(dir),
        }
    }

    /// Writes `bytes` onto the line towards the client, as noise would arrive.
    pub fn noise(&self, bytes: &[u8]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.server_tty)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    /// Requests served so far.
    pub fn log(&self) -> Vec<Served> {
        self.device.lock().unwrap().log.clone()
    }

    /// Changes the device.
    pub fn with<R>(&self, f: impl FnOnce(&mut Device) -> R) -> R {
        f(&mut self.device.lock().unwrap())
    }
}

impl Drop for ModbusServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut s) = self.socat.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}
