//! The poll's floor: the leanest Arkouda metrics client we can write. Sends the agent's own
//! `metrics ALL` request frame on one ZeroMQ REQ socket (libzmq, as the agent), waits for
//! the reply and drops it unread: no parsing, no translation. Prints one line per request,
//! `poll <ms>`. With `put_floor` (the PUT's floor) it makes the floor of a whole cycle.
//!
//!     poll_floor tcp://HOST:PORT CYCLES

use std::time::Instant;

use arkouda_push_agent::arkouda::protocol::{request, ArgStyle};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(endpoint), Some(cycles)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok()))
    else {
        eprintln!("usage: poll_floor tcp://HOST:PORT CYCLES");
        std::process::exit(2);
    };
    let cycles: usize = cycles;
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::REQ).unwrap_or_else(|e| fail("socket", e));
    socket.set_linger(0).unwrap_or_else(|e| fail("linger", e));
    socket
        .connect(endpoint)
        .unwrap_or_else(|e| fail("connect", e));
    // The newest releases' frame, what the simulator's default release reads.
    let frame = request("bench", "", "metrics", Some("ALL"), ArgStyle::Json);
    let mut reply = zmq::Message::new();
    for _ in 0..cycles {
        let t = Instant::now();
        socket.send(&frame, 0).unwrap_or_else(|e| fail("send", e));
        socket
            .recv(&mut reply, 0)
            .unwrap_or_else(|e| fail("recv", e));
        println!("poll {:.3}", t.elapsed().as_secs_f64() * 1e3);
    }
}

fn fail(what: &str, e: zmq::Error) -> ! {
    eprintln!("poll_floor: {what}: {e}");
    std::process::exit(1)
}
