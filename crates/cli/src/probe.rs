//! `deeprust probe`: a health check that needs no curl (for minimal container images).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args)]
pub struct ProbeArgs {
    /// host:port of the server.
    #[arg(long, default_value = "127.0.0.1:8080", env = "DEEPRUST_PROBE_ADDR")]
    pub addr: String,
    /// Path to GET.
    #[arg(long, default_value = "/health")]
    pub path: String,
}

pub fn run(a: &ProbeArgs) -> Result<()> {
    let addr = a
        .addr
        .parse()
        .with_context(|| format!("`{}` is not host:port", a.addr))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("connecting to {}", a.addr))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        a.path, a.addr
    )?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..n]);
    if line.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        bail!(
            "{}{}: {}",
            a.addr,
            a.path,
            line.lines().next().unwrap_or("no answer")
        )
    }
}
