//! Free loopback ports and plain HTTP/1.1 GETs against Weir's endpoints, for tests and the
//! footprint benchmark.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request to 127.0.0.1:`port`: (status code, body), None if it could not be made.
pub fn request(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    request_with(port, method, path, &[]).map(|r| (r.code, r.body))
}

/// A response: status code, header lines and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub code: u16,
    /// The status line and header lines.
    pub head: String,
    /// Body.
    pub body: String,
}

impl Reply {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One request to 127.0.0.1:`port` with extra `headers`, None if it could not be made.
pub fn request_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some(Reply {
        code,
        head: head.to_string(),
        body: body.to_string(),
    })
}
