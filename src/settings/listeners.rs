//! The listening sockets: `[listen].addresses` and each `[[listen.extra]]` entry, with the
//! PROXY protocol decision of each, and the rule that no two listeners that judge the
//! client's address differently can receive the same connection.
//!
//! Which listener a connection arrived on decides whether its first bytes must be a PROXY
//! header: the accept loop tags each socket with its [`Listener`], and the session asks it,
//! never `[listen]` alone. An address listed in two listeners, or a wildcard that overlaps a
//! specific address on the same port, would let the kernel choose which rule applies (with
//! `reuse_port`, per connection): check-config refuses it, an IPv4-mapped IPv6 address
//! (`[::ffff:10.0.0.5]`) counting as the IPv4 address whose connections it takes.

use std::net::SocketAddr;

use serde::Serialize;

use super::{ListenSettings, Problems};
use crate::config::schema::{ProxyProtocol, RawConfig};

/// Which configured listener a bound socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// One of `[listen].addresses`: `listen.proxy_protocol` of the connection's settings.
    Main,
    /// One of a `[[listen.extra]]` entry's addresses: its own `proxy_protocol`, fixed when
    /// the socket was bound (like the address itself, a change needs a restart).
    Extra {
        /// The entry's `proxy_protocol = "v2"`.
        proxy_v2: bool,
    },
}

impl Listener {
    /// Whether a connection to this listener must start with a PROXY v2 header.
    pub(crate) fn proxy_v2(self, listen: &ListenSettings) -> bool {
        match self {
            Listener::Main => listen.proxy_v2,
            Listener::Extra { proxy_v2 } => proxy_v2,
        }
    }
}

/// One `[[listen.extra]]` entry, validated; serialized under its keys' names so a reload
/// can tell it changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtraListener {
    /// `addresses`.
    pub addresses: Vec<SocketAddr>,
    /// `proxy_protocol`.
    pub proxy_protocol: ProxyProtocol,
}

/// Parses a list of socket addresses (`key` names it in errors).
pub(super) fn addresses(key: &str, list: &[String], problems: &mut Problems) -> Vec<SocketAddr> {
    let mut parsed = Vec::with_capacity(list.len());
    for text in list {
        match text.parse::<SocketAddr>() {
            Ok(a) => parsed.push(a),
            Err(_) => problems.key(
                key,
                format!(
                    "{text:?} is not an IP socket address such as \"0.0.0.0:5432\" or \"[::]:5432\""
                ),
            ),
        }
    }
    if list.is_empty() {
        problems.key(key, "at least one address is needed");
    }
    parsed
}

/// `[[listen.extra]]`, validated against `main` (`[listen].addresses`) and each other.
pub(super) fn extra(
    raw: &RawConfig,
    main: &[SocketAddr],
    problems: &mut Problems,
) -> Vec<ExtraListener> {
    let mut seen: Vec<(SocketAddr, ProxyProtocol, String)> = main
        .iter()
        .map(|&a| (a, raw.listen.proxy_protocol, "listen.addresses".to_owned()))
        .collect();
    let mut entries = Vec::with_capacity(raw.listen.extra.len());
    for (i, entry) in raw.listen.extra.iter().enumerate() {
        let key = format!("listen.extra[{i}].addresses");
        let parsed = addresses(&key, &entry.addresses, problems);
        for &addr in &parsed {
            for (other, protocol, owner) in &seen {
                if let Some(message) = conflict(addr, entry.proxy_protocol, *other, *protocol) {
                    problems.key(&key, format!("{addr} {message} in {owner}"));
                }
            }
            seen.push((addr, entry.proxy_protocol, key.clone()));
        }
        entries.push(ExtraListener {
            addresses: parsed,
            proxy_protocol: entry.proxy_protocol,
        });
    }
    entries
}

/// Why `[listen]`'s rule `main_protocol`, as a reload would set it, may not apply to the
/// bound `main` addresses beside the bound `extra` entries (whose rule a reload does not
/// change): the pairs check-config would refuse, e.g. a `0.0.0.0:P` turned "off" over an
/// extra `10.0.0.5:P` that stays "v2" under `reuse_port`.
pub(crate) fn reload_conflicts(
    main: &[SocketAddr],
    main_protocol: ProxyProtocol,
    extra: &[ExtraListener],
) -> Vec<String> {
    let mut found = Vec::new();
    for &addr in main {
        for (i, entry) in extra.iter().enumerate() {
            for &other in &entry.addresses {
                if let Some(message) = conflict(addr, main_protocol, other, entry.proxy_protocol) {
                    found.push(format!(
                        "listen.proxy_protocol: {:?} would leave listen.addresses' {addr} \
                         beside a bound extra listener: {addr} {message} in \
                         listen.extra[{i}].addresses, whose proxy_protocol changes only with a \
                         restart; put listen.proxy_protocol back, or restart",
                        String::from(main_protocol)
                    ));
                }
            }
        }
    }
    found
}

/// Why `a` (with `pa`) may not be bound beside `b` (with `pb`), if it may not.
fn conflict(a: SocketAddr, pa: ProxyProtocol, b: SocketAddr, pb: ProxyProtocol) -> Option<String> {
    // Port 0 binds a fresh port each time: never the same socket.
    if a.port() != b.port() || a.port() == 0 {
        return None;
    }
    let text = |p: ProxyProtocol| String::from(p);
    let (shown_b, a, b) = (b, canonical(a), canonical(b));
    if a == b {
        return Some(if pa == pb {
            "is listed twice: it is".into()
        } else {
            format!(
                "is listed twice, with proxy_protocol = {:?} here and {:?}: whether a PROXY \
                 header is required would depend on which socket the kernel picks; it is",
                text(pa),
                text(pb)
            )
        });
    }
    let covers = |w: SocketAddr, s: SocketAddr| {
        // A `[::]` socket also takes IPv4 (dual stack); `0.0.0.0` takes IPv4 only.
        w.ip().is_unspecified() && (w.is_ipv6() || s.is_ipv4())
    };
    (pa != pb && (covers(a, b) || covers(b, a))).then(|| {
        format!(
            "overlaps {shown_b} (same port, one a wildcard) with proxy_protocol = {:?} here and \
             {:?} there: the kernel would choose which rule a connection gets; use another \
             port; {shown_b} is",
            text(pa),
            text(pb)
        )
    })
}

/// `a` as the kernel matches connections to it: an IPv4-mapped IPv6 address
/// (`[::ffff:10.0.0.5]`) takes that IPv4 address's connections, so it is that address.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Every address to bind with its listener, `[listen]`'s first.
pub(crate) fn all(main: &[SocketAddr], extra: &[ExtraListener]) -> Vec<(SocketAddr, Listener)> {
    let main = main.iter().map(|&a| (a, Listener::Main));
    let extra = extra.iter().flat_map(|e| {
        let proxy_v2 = e.proxy_protocol == ProxyProtocol::V2;
        e.addresses
            .iter()
            .map(move |&a| (a, Listener::Extra { proxy_v2 }))
    });
    main.chain(extra).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: ProxyProtocol = ProxyProtocol::Off;
    const V2: ProxyProtocol = ProxyProtocol::V2;

    fn a(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_same_address_twice_conflicts_whatever_the_protocols() {
        let same = conflict(a("0.0.0.0:5432"), V2, a("0.0.0.0:5432"), OFF).unwrap();
        assert!(same.contains("listed twice, with proxy_protocol"), "{same}");
        assert!(conflict(a("0.0.0.0:5432"), OFF, a("0.0.0.0:5432"), OFF).is_some());
    }

    #[test]
    fn a_wildcard_over_a_specific_address_conflicts_only_across_protocols() {
        assert!(conflict(a("10.0.0.5:5432"), V2, a("0.0.0.0:5432"), OFF).is_some());
        assert!(conflict(a("0.0.0.0:5432"), V2, a("10.0.0.5:5432"), OFF).is_some());
        assert!(conflict(a("[::]:5432"), V2, a("10.0.0.5:5432"), OFF).is_some());
        assert!(conflict(a("10.0.0.5:5432"), V2, a("0.0.0.0:5432"), V2).is_none());
        // 0.0.0.0 takes no IPv6, another port is another socket, port 0 is always fresh.
        assert!(conflict(a("0.0.0.0:5432"), V2, a("[::1]:5432"), OFF).is_none());
        assert!(conflict(a("0.0.0.0:5433"), V2, a("0.0.0.0:5432"), OFF).is_none());
        assert!(conflict(a("127.0.0.1:0"), V2, a("127.0.0.1:0"), OFF).is_none());
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        let mapped = a("[::ffff:10.0.0.5]:5432");
        assert!(conflict(mapped, V2, a("10.0.0.5:5432"), OFF).is_some());
        assert!(conflict(mapped, V2, a("10.0.0.5:5432"), V2).is_some());
        let over = conflict(mapped, V2, a("0.0.0.0:5432"), OFF).unwrap();
        assert!(over.contains("overlaps 0.0.0.0:5432"), "{over}");
        assert!(conflict(a("0.0.0.0:5432"), OFF, mapped, V2).is_some());
        assert!(conflict(mapped, V2, a("10.0.0.6:5432"), OFF).is_none());
    }

    #[test]
    fn a_reloaded_main_rule_is_judged_against_the_bound_extras() {
        let extra = [ExtraListener {
            addresses: vec![a("127.0.0.5:5432")],
            proxy_protocol: V2,
        }];
        let main = [a("0.0.0.0:5432")];
        assert!(reload_conflicts(&main, V2, &extra).is_empty());
        let refused = reload_conflicts(&main, OFF, &extra);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].contains("overlaps 127.0.0.5:5432"),
            "{refused:?}"
        );
        assert!(reload_conflicts(&[a("0.0.0.0:5433")], OFF, &extra).is_empty());
    }

    #[test]
    fn every_socket_is_tagged_with_its_listeners_rule() {
        let extra = [ExtraListener {
            addresses: vec![a("0.0.0.0:5433")],
            proxy_protocol: V2,
        }];
        assert_eq!(
            all(&[a("0.0.0.0:5432")], &extra),
            [
                (a("0.0.0.0:5432"), Listener::Main),
                (a("0.0.0.0:5433"), Listener::Extra { proxy_v2: true }),
            ]
        );
    }
}
