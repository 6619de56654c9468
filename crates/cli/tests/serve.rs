//! `deeprust serve` as a process: SIGTERM stops new work but lets in-flight requests finish.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deeprust"))
        .args([
            "serve",
            "--port",
            "0",
            "--kv-cache-gb",
            "0.1",
            "--grace-secs",
            "20",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect(&line)
        .to_string();

    let body =
        r#"{"prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": true, "stream": true}"#;
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut first = [0u8; 256];
    let n = s.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("data: [DONE]"),
        "the in-flight stream was cut: {}",
        &rest[rest.len().saturating_sub(300)..]
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "no new connections after shutdown"
    );
}
