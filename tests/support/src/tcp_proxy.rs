//! A TCP forwarder on a free loopback port whose link can be cut: while cut, bytes are
//! swallowed in both directions and nothing is closed — a network that silently stopped
//! carrying packets — and connections made meanwhile are held open without an upstream.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A running forwarder.
pub struct TcpProxy {
    /// The port clients connect to.
    pub port: u16,
    cut: Arc<AtomicBool>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if cut.load(Ordering::SeqCst) {
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

impl TcpProxy {
    /// Forwards a free loopback port to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cut);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if flag.load(Ordering::SeqCst) {
                    // held open, never answered
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(300));
                        drop(client);
                    });
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (f1, f2) = (Arc::clone(&flag), Arc::clone(&flag));
                std::thread::spawn(move || pump(client, server, f1));
                std::thread::spawn(move || pump(s2, c2, f2));
            }
        });
        TcpProxy { port, cut }
    }

    /// Stops carrying bytes (silently).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Carries bytes again, for connections made from now on.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
