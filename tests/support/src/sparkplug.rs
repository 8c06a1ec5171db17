//! Sparkplug B programs written with Eclipse Tahu's JavaScript libraries (npm
//! `sparkplug-client` and `sparkplug-payload`, which `scripts/test` installs under
//! `target/test-tools/node`), driven line by line: an edge node
//! (`tests/interop/sparkplug_edge_node.js`) and a host (`tests/interop/sparkplug_host.js`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Tahu script running.
pub struct Tahu {
    child: Child,
    stdin: ChildStdin,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Tahu {
    /// Starts an edge node `group`/`edge_node` with device `device` on the broker at
    /// `port`, its event times starting at `t0_ms`; returns once it published its births.
    pub fn edge_node(port: u16, group: &str, edge_node: &str, device: &str, t0_ms: i64) -> Self {
        let url = format!("mqtt://127.0.0.1:{port}");
        let t0 = t0_ms.to_string();
        Self::start(
            "sparkplug_edge_node.js",
            &[&url, group, edge_node, device, &t0],
        )
    }

    /// Starts a host on the broker at `port`; returns once it subscribed to `spBv1.0/#`.
    pub fn host(port: u16) -> Self {
        Self::start("sparkplug_host.js", &[&format!("mqtt://127.0.0.1:{port}")])
    }

    fn start(script: &str, args: &[&str]) -> Self {
        let modules = root().join("target/test-tools/node/node_modules");
        assert!(
            modules.join("sparkplug-client").exists() && modules.join("sparkplug-payload").exists(),
            "{} lacks sparkplug-client or sparkplug-payload: run scripts/test, which installs them from npm",
            modules.display()
        );
        let mut child = Command::new("node")
            .arg(root().join("tests/interop").join(script))
            .args(args)
            .env("NODE_PATH", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (Node.js) is missing: scripts/test installs Debian's nodejs");
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    l.lock().unwrap().push(v);
                }
            }
        });
        let script = Tahu {
            child,
            stdin,
            lines,
        };
        script.wait_event("ready", 1);
        script
    }

    /// Sends a command line (see the scripts: `data N`, `historical`, `gap`, `ddeath`,
    /// `exit` to the edge node, `rebirth GROUP EDGE_NODE` to the host) and waits until the
    /// script has carried it out.
    pub fn command(&mut self, line: &str) {
        let before = self.events("done");
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        if line != "exit" {
            self.wait_event("done", before + 1);
        }
    }

    /// How many times the script reported `event`.
    pub fn events(&self, event: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["event"] == event)
            .count()
    }

    /// Waits until the script reported `event` `n` times.
    pub fn wait_event(&self, event: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.events(event) < n {
            assert!(
                Instant::now() < deadline,
                "the Tahu script never reported '{event}' {n} times: {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every message the edge node published: (topic, payload as sparkplug-payload's JSON).
    pub fn sent(&self) -> Vec<(String, Value)> {
        self.messages("sent")
    }

    /// Every message the host received: (topic, payload as sparkplug-payload's JSON, 64-bit
    /// numbers as strings).
    pub fn received(&self) -> Vec<(String, Value)> {
        self.messages("topic")
    }

    fn messages(&self, key: &str) -> Vec<(String, Value)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|v| Some((v[key].as_str()?.to_string(), v["payload"].clone())))
            .collect()
    }

    /// Waits for the process to end (after `exit`).
    pub fn wait(&mut self) {
        let _ = self.child.wait();
    }
}

impl Drop for Tahu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
