//! `callhippo-ingest healthcheck`: asks the local `serve` for `/readyz`. The runtime image has
//! no curl, and a plain HTTP/1.0 request over a socket is all this needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `Ok` with the answer's first line when `/readyz` answered 200.
pub fn check(listen_addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut addr = listen_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    write!(stream, "GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("cannot ask {addr}: {e}"))?;
    let mut answer = String::new();
    stream
        .take(64 * 1024)
        .read_to_string(&mut answer)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    let status_line = answer.lines().next().unwrap_or("").to_owned();
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_owned();
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(format!("{status_line} {body}"))
    } else {
        Err(format!("{addr} is not ready: {status_line} {body}"))
    }
}
