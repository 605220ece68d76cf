//! Where metric families go. A sink sees only encoded families and grouping labels: it
//! never imports `arkouda` and knows nothing of ZeroMQ.

pub mod http;
pub mod listen;
pub mod pushgateway;
pub mod remote_write;
pub mod retry;
