//! TCP options both legs use: no Nagle delay (the startup exchange is many small messages
//! and a delayed ACK would stall each connect by ~40 ms) and keepalive, so a peer that
//! vanished without a FIN is noticed instead of holding a session forever: an idle
//! connection after 60 s + 3 unanswered probes 10 s apart (90 s), and one with data
//! unacknowledged after the same 90 s (TCP_USER_TIMEOUT; the kernel's default is ~15 min of
//! retransmissions).

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Idle time before the first keepalive probe.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the connection is declared dead.
const KEEPALIVE_PROBES: u32 = 3;
/// How long sent data may stay unacknowledged before the connection is declared dead.
const USER_TIMEOUT: Duration = Duration::from_secs(90);

/// Applies the options; failures are harmless (the connection still works) and ignored.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let socket = SockRef::from(stream);
    let _ = socket.set_tcp_keepalive(&keepalive);
    let _ = socket.set_tcp_user_timeout(Some(USER_TIMEOUT));
}

/// The error a connection has been given by its peer (a reset, say), if any: what a read
/// would report, found without reading. The relay asks while it is not reading a side
/// because the other side does not take its bytes, so a client that has gone is noticed
/// even then.
pub fn pending_error(stream: &impl std::os::fd::AsFd) -> Option<std::io::Error> {
    SockRef::from(stream).take_error().ok().flatten()
}
