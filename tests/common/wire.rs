//! A TCP relay that keeps the first bytes each server sends, so a test can see on the wire
//! whether a TLS server answered with a HelloRetryRequest.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A HelloRetryRequest is a ServerHello with this random (RFC 8446, 4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// A TCP relay to 127.0.0.1:`target` that keeps the first bytes each server sends, where a
/// HelloRetryRequest would be. At most 8 connections, 64 KiB each.
pub struct Wire {
    pub port: u16,
    from_server: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Wire {
    pub fn to(target: u16) -> Wire {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let from_server = Arc::new(Mutex::new(Vec::new()));
        let seen = from_server.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().take(8) {
                let Ok(mut client) = client else { return };
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let slot = {
                    let mut all = seen.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = server.read(&mut buf) {
                        if n == 0 || client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let mut all = seen.lock().unwrap();
                        let kept = &mut all[slot];
                        let room = 65536usize.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                    let _ = client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Wire { port, from_server }
    }

    /// (connections relayed, HelloRetryRequests among them).
    pub fn hello_retries(&self) -> (usize, usize) {
        let all = self.from_server.lock().unwrap();
        let retries = all
            .iter()
            .filter(|bytes| bytes.windows(32).any(|w| w == HRR_RANDOM))
            .count();
        (all.len(), retries)
    }
}
