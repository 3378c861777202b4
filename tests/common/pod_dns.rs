//! A DNS server inside a pod's network namespace ([`super::netns`]), at the address of the
//! machine's nameserver (the pod's /etc/resolv.conf is the machine's): it records the names
//! asked and answers NXDOMAIN, or never (a DNS that stalls), so a test sees what lookups a
//! pod makes.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use super::netns::Netns;

/// The names with `needle` asked of a DNS server inside `ns` at the address of the
/// machine's first nameserver (the pod's /etc/resolv.conf is the machine's), one per query;
/// it answers NXDOMAIN when `answer`, else never (a DNS that stalls).
pub fn serve(ns: &Netns, needle: &'static str, answer: bool) -> Arc<Mutex<Vec<String>>> {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let server: std::net::IpAddr = resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|a| a.trim().parse().ok())
        .unwrap_or(Ipv4Addr::LOCALHOST.into());
    let socket = ns.within(move || {
        // The pod has its own loopback only: the nameserver's address is put on it.
        if !server.is_loopback() {
            let prefix = if server.is_ipv4() { 32 } else { 128 };
            let status = std::process::Command::new("ip")
                .args(["addr", "add", &format!("{server}/{prefix}"), "dev", "lo"])
                .status()
                .unwrap();
            assert!(status.success(), "ip addr add {server}");
        }
        std::net::UdpSocket::bind((server, 53)).unwrap()
    });
    let asked = Arc::new(Mutex::new(Vec::new()));
    let names = Arc::clone(&asked);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            // Header, then the question's labels up to the root, then type and class.
            let mut end = 12;
            let mut name = Vec::new();
            while end < n && buf[end] != 0 {
                let len = usize::from(buf[end]);
                name.extend_from_slice(&buf[(end + 1).min(n)..(end + 1 + len).min(n)]);
                name.push(b'.');
                end += 1 + len;
            }
            let end = (end + 5).min(n);
            let name = String::from_utf8_lossy(&name).into_owned();
            if name.contains(needle) {
                names.lock().unwrap().push(name);
            }
            if !answer {
                continue;
            }
            let mut reply = buf[..end].to_vec();
            reply[2] |= 0x80; // a response
            reply[3] = 0x80 | 3; // recursion available, NXDOMAIN
            reply[6..12].fill(0); // no answers, authority or additional records
            let _ = socket.send_to(&reply, from);
        }
    });
    asked
}
