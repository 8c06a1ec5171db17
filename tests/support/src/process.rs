//! A server a test starts as a child process: its stderr in a log file, waited for until it
//! listens on its ports, killed (SIGKILL) on request and on drop.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One server process (or none, while stopped).
pub struct ServerProcess {
    name: &'static str,
    log: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    /// A stopped server called `name` that logs to `log`.
    pub fn new(name: &'static str, log: PathBuf) -> ServerProcess {
        ServerProcess {
            name,
            log,
            child: None,
        }
    }

    /// Starts `cmd` (stopping a running one first) and waits until it listens on `ports`.
    pub fn start(&mut self, cmd: &mut Command, ports: &[u16]) {
        self.kill();
        let log = std::fs::File::create(&self.log).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {} ({e}): scripts/test installs it", self.name)
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in ports {
            while TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "{} did not listen on {port}: {}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops it with SIGKILL: clients see their connections drop.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Python from the virtual environment `scripts/test` makes (pyarrow, ADBC, DuckDB), else
/// the system's `python3`.
pub fn python() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/test-tools/venv/bin/python");
    if venv.exists() {
        venv
    } else {
        std::path::PathBuf::from("python3")
    }
}
