//! The floor: the leanest Pushgateway client we can write. PUTs a pre-encoded body over
//! one keep-alive HTTP/1.1 connection (std only, no HTTP library) and prints one line per
//! PUT, `put <ms>`. With several paths, each cycle PUTs the body of each path once (the
//! one-group-per-locale layout) and prints `cycle <ms>`.
//!
//!     put_floor HOST:PORT CYCLES PATH=BODYFILE [PATH=BODYFILE ...]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

fn put(
    conn: &mut BufReader<TcpStream>,
    host: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<u16> {
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // One write per request: headers and body in two writes would meet Nagle's algorithm
    // and the server's delayed ACK (a 40 ms stall per request).
    let mut req = Vec::with_capacity(head.len() + body.len());
    req.extend_from_slice(head.as_bytes());
    req.extend_from_slice(body);
    conn.get_mut().write_all(&req)?;
    let mut status = String::new();
    conn.read_line(&mut status)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut rest = vec![0u8; len];
    conn.read_exact(&mut rest)?;
    Ok(code)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let host = &args[1];
    let cycles: usize = args[2].parse().expect("CYCLES");
    let groups: Vec<(String, Vec<u8>)> = args[3..]
        .iter()
        .map(|a| {
            let (path, file) = a.split_once('=').expect("PATH=BODYFILE");
            (path.to_string(), std::fs::read(file).expect("body file"))
        })
        .collect();
    let stream = TcpStream::connect(host)?;
    stream.set_nodelay(true)?;
    let mut conn = BufReader::new(stream);
    for _ in 0..cycles {
        let start = Instant::now();
        for (path, body) in &groups {
            let t = Instant::now();
            let code = put(&mut conn, host, path, body)?;
            assert!((200..300).contains(&code), "PUT {path}: HTTP {code}");
            if groups.len() == 1 {
                println!("put {:.3}", t.elapsed().as_secs_f64() * 1e3);
            }
        }
        if groups.len() > 1 {
            println!("cycle {:.3}", start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(())
}
