//! A real Mosquitto broker for tests: started on free loopback ports with a generated config
//! (plain, password and TLS listeners; a test CA made with openssl), stopped on drop, and
//! restartable on the same ports.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::certs::run;
use crate::http::free_port;
use crate::process::ServerProcess;

/// User and password accepted by the password listener.
pub const USER: &str = "plant";
/// Password of [`USER`].
pub const PASSWORD: &str = "s3cret-pw";

/// A running (or stopped) broker.
pub struct Mosquitto {
    /// Declared first: dropped (killed) before its directory goes.
    process: ServerProcess,
    dir: tempfile::TempDir,
    /// Anonymous plain listener.
    pub port: u16,
    /// Listener that requires [`USER`]/[`PASSWORD`] (0 from [`Mosquitto::start_anonymous`]).
    pub password_port: u16,
    /// TLS listener (certificate for 127.0.0.1 signed by [`Mosquitto::ca_file`]; 0 from
    /// [`Mosquitto::start_anonymous`]).
    pub tls_port: u16,
}

/// The Mosquitto program `name`: from `WEIR_MOSQUITTO_DIR` when it is set (another build of
/// the broker, e.g. for the MQTT bench), else from the system's directories.
fn program(name: &str) -> PathBuf {
    let chosen = std::env::var_os("WEIR_MOSQUITTO_DIR").map(PathBuf::from);
    for dir in chosen
        .iter()
        .map(PathBuf::as_path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin"].map(Path::new))
    {
        let p = dir.join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

impl Mosquitto {
    /// The broker's version line (`mosquitto version 2.0.11`).
    pub fn version() -> String {
        let out = Command::new(program("mosquitto"))
            .arg("-h")
            .output()
            .expect("mosquitto runs");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().next().unwrap_or_default().trim().to_string()
    }

    /// Starts a broker; `extra` is appended to its config (e.g. queue limits).
    pub fn start(extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::make_certificates(dir.path());
        let pw = dir.path().join("passwords");
        run(Command::new(program("mosquitto_passwd")).args([
            "-b",
            "-c",
            pw.to_str().unwrap(),
            USER,
            PASSWORD,
        ]));
        let (port, password_port, tls_port) = (free_port(), free_port(), free_port());
        let d = dir.path().display();
        let listeners = format!(
            "per_listener_settings true\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             listener {password_port} 127.0.0.1\n\
             allow_anonymous false\n\
             password_file {d}/passwords\n\
             listener {tls_port} 127.0.0.1\n\
             allow_anonymous true\n\
             cafile {d}/ca.crt\n\
             certfile {d}/server.crt\n\
             keyfile {d}/server.key\n"
        );
        Mosquitto::launch(dir, [port, password_port, tls_port], &listeners, extra)
    }

    /// Starts a broker with only the anonymous plain listener and no per-listener settings
    /// (Mosquitto 2.0.21 with `per_listener_settings` delivers no queued messages to a
    /// resumed persistent session); `extra` is appended to its config.
    pub fn start_anonymous(extra: &str) -> Mosquitto {
        let port = free_port();
        let listeners = format!("listener {port} 127.0.0.1\nallow_anonymous true\n");
        Mosquitto::launch(
            tempfile::tempdir().unwrap(),
            [port, 0, 0],
            &listeners,
            extra,
        )
    }

    /// Writes the config of a broker with `listeners` on `ports` (plain, password, TLS; 0 for
    /// none) into `dir` and starts it.
    fn launch(dir: tempfile::TempDir, ports: [u16; 3], listeners: &str, extra: &str) -> Mosquitto {
        // as root, mosquitto would switch to its own user, which cannot read our files
        let user =
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        let config = format!(
            "user {}\n\
             persistence false\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             {listeners}\
             {extra}\n",
            user.trim()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config).unwrap();
        let log = dir.path().join("mosquitto.log");
        let [port, password_port, tls_port] = ports;
        let mut m = Mosquitto {
            dir,
            port,
            password_port,
            tls_port,
            process: ServerProcess::new("mosquitto", log),
        };
        m.restart();
        m
    }

    /// The CA certificate that signed the TLS listener's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Stops the broker (SIGKILL: clients see the connection drop).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the broker again on the same ports.
    pub fn restart(&mut self) {
        let config = self.dir.path().join("mosquitto.conf");
        let ports: Vec<u16> = [self.port, self.password_port, self.tls_port]
            .into_iter()
            .filter(|&p| p != 0)
            .collect();
        self.process.start(
            Command::new(program("mosquitto")).arg("-c").arg(config),
            &ports,
        );
    }
}
