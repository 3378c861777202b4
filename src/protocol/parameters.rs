//! A StartupMessage's parameters as the server will act on them, and the packet the proxy
//! sends the server instead of the client's bytes.
//!
//! The proxy judges the user, the database and the route from these values, so the server
//! must open exactly that session. PostgreSQL's `ProcessStartupPacket` keeps the *last* of
//! repeated keys, defaults an absent or empty database to the user, cuts both names to
//! `NAMEDATALEN - 1` bytes, and gives a physical replication connection no database at all.
//! [`judge`] refuses what could be read two ways (a repeated key, in any letter case, since
//! GUC names are case-insensitive), applies the same rules, and [`StartupParams::encode`]
//! writes a packet with one value per key, the judged ones written out, so the server has
//! nothing left to decide differently.

use super::startup::StartupMessage;

/// Longest user or database name the server keeps (`NAMEDATALEN - 1`); it cuts longer ones.
pub const MAX_NAME: usize = 63;
/// What the server's pg_hba calls the "database" of a physical replication connection.
pub const REPLICATION_DATABASE: &str = "replication";

/// Why a StartupMessage's parameters cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// A key appears twice (compared ignoring ASCII case).
    #[error("parameter \"{0}\" appears more than once in the startup packet")]
    Repeated(String),
    /// `User`, `DATABASE`...: the server would read it as a setting, not as the name, while a
    /// reader that ignores case would not.
    #[error("parameter \"{0}\" differs from \"user\" or \"database\" only in letter case")]
    LetterCase(String),
    /// No `user`, or an empty one.
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    /// `user` or `database` is not UTF-8, so the proxy could not compare it with what it
    /// knows.
    #[error("parameter \"{0}\" is not valid UTF-8")]
    NotUtf8(&'static str),
    /// `replication` is neither a boolean nor "database".
    #[error("invalid value for parameter \"replication\": \"{0}\"")]
    BadReplication(String),
}

/// Which kind of walsender the client asked for (`replication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// A normal session (absent, or a false value).
    No,
    /// `replication=database`: logical replication, connected to the database.
    Logical,
    /// `replication=true`: physical replication, connected to no database.
    Physical,
}

/// The parameters the server will act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupParams {
    /// Protocol major version (3).
    pub major: u16,
    /// Protocol minor version, forwarded as sent (the server negotiates it down).
    pub minor: u16,
    /// The role the session runs as, as the server cuts it.
    pub user: String,
    /// The database the session opens (the user's name when absent or empty), as the server
    /// cuts it; for physical replication, [`REPLICATION_DATABASE`].
    pub database: String,
    /// The `replication` kind.
    pub replication: Replication,
    /// Every other parameter (`options`, `replication`, GUCs, `_pq_.` extensions) in the
    /// client's order, with its value as sent.
    pub rest: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StartupParams {
    /// A parameter of [`StartupParams::rest`] by exact name.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.rest
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The StartupMessage for the server: `user` and `database` first, as judged, then the
    /// rest in the client's order. `database` is left out where the server's own default
    /// gives the same (the user's name) or ignores it (physical replication), so the packet
    /// is never longer than the client's and stays within `MAX_STARTUP_PACKET`.
    pub fn encode(&self) -> Vec<u8> {
        let mut params: Vec<(&[u8], &[u8])> = vec![(b"user", self.user.as_bytes())];
        if self.replication != Replication::Physical && self.database != self.user {
            params.push((b"database", self.database.as_bytes()));
        }
        params.extend(self.rest.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let code = (u32::from(self.major) << 16) | u32::from(self.minor);
        encode_packet(code, &params)
    }
}

/// A StartupMessage with protocol `code` (major << 16 | minor) and `params` in order, as
/// given: repeated or empty ones too (the tests use it to write what a client might send).
pub fn encode_packet(code: u32, params: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = vec![0; 4];
    out.extend_from_slice(&code.to_be_bytes());
    for (name, value) in params {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out.push(0);
    let len = out.len() as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Judges a parsed StartupMessage the way the server will read it.
pub fn judge(message: &StartupMessage<'_>) -> Result<StartupParams, ParamsError> {
    let mut user = None;
    let mut database = None;
    let mut rest: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    // Lowercased names seen: a set, so a 10 kB packet of tiny names costs no more than a
    // short one per name.
    let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for (name, value) in message.params() {
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(ParamsError::Repeated(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        match name {
            b"user" => user = Some(value),
            b"database" => database = Some(value),
            _ if name.eq_ignore_ascii_case(b"user") || name.eq_ignore_ascii_case(b"database") => {
                return Err(ParamsError::LetterCase(
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
            _ => rest.push((name.to_vec(), value.to_vec())),
        }
    }
    let user = match user {
        Some(u) if !u.is_empty() => name_of("user", u)?,
        _ => return Err(ParamsError::NoUser),
    };
    let replication = match rest.iter().find(|(n, _)| n == b"replication") {
        None => Replication::No,
        Some((_, v)) => replication(v)?,
    };
    let database = match (replication, database) {
        (Replication::Physical, _) => REPLICATION_DATABASE.to_owned(),
        (_, Some(d)) if !d.is_empty() => name_of("database", d)?,
        _ => user.clone(),
    };
    Ok(StartupParams {
        major: message.major,
        minor: message.minor,
        user,
        database,
        replication,
        rest,
    })
}

/// A user or database name as the server keeps it: cut to [`MAX_NAME`] bytes (a plain byte
/// cut, as the server makes it), and UTF-8.
fn name_of(key: &'static str, value: &[u8]) -> Result<String, ParamsError> {
    let kept = &value[..value.len().min(MAX_NAME)];
    String::from_utf8(kept.to_vec()).map_err(|_| ParamsError::NotUtf8(key))
}

/// `replication`'s value as the server reads it: "database", or a boolean
/// (`parse_bool`: true/false, yes/no, on/off, 1/0, unique prefixes, any case).
fn replication(value: &[u8]) -> Result<Replication, ParamsError> {
    if value == b"database" {
        return Ok(Replication::Logical);
    }
    match parse_bool(value) {
        Some(true) => Ok(Replication::Physical),
        Some(false) => Ok(Replication::No),
        None => Err(ParamsError::BadReplication(
            String::from_utf8_lossy(value).into_owned(),
        )),
    }
}

/// PostgreSQL's `parse_bool`: a case-insensitive prefix of true/false/yes/no, "on"/"of(f)"
/// (at least two letters), or exactly 1/0.
fn parse_bool(value: &[u8]) -> Option<bool> {
    let lower = value.to_ascii_lowercase();
    let prefix_of = |word: &[u8], min: usize| lower.len() >= min && word.starts_with(&lower);
    if prefix_of(b"true", 1) || prefix_of(b"yes", 1) || prefix_of(b"on", 2) || lower == b"1" {
        Some(true)
    } else if prefix_of(b"false", 1) || prefix_of(b"no", 1) || prefix_of(b"off", 2) || lower == b"0"
    {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::startup::{FirstPacket, parse_untagged};

    fn packet(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
        let params: Vec<(&[u8], &[u8])> = params
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        encode_packet(version, &params)
    }

    fn judged(params: &[(&str, &str)]) -> Result<StartupParams, ParamsError> {
        let bytes = packet(0x0003_0000, params);
        let Ok(Some((FirstPacket::Startup(s), _))) = parse_untagged(&bytes) else {
            panic!("not a startup packet")
        };
        judge(&s)
    }

    fn reparsed(p: &StartupParams) -> StartupParams {
        let bytes = p.encode();
        let Ok(Some((FirstPacket::Startup(s), used))) = parse_untagged(&bytes) else {
            panic!("the rebuilt packet does not parse")
        };
        assert_eq!(used, bytes.len());
        judge(&s).unwrap()
    }

    #[test]
    fn a_repeated_user_or_database_is_refused_naming_it() {
        let twice = [
            ("user", "alice"),
            ("database", "postgres"),
            ("user", "victim"),
        ];
        assert_eq!(judged(&twice), Err(ParamsError::Repeated("user".into())));
        let twice = [("user", "alice"), ("database", "a"), ("database", "b")];
        assert_eq!(
            judged(&twice),
            Err(ParamsError::Repeated("database".into()))
        );
        let case = [
            ("user", "a"),
            ("application_name", "x"),
            ("Application_Name", "y"),
        ];
        assert_eq!(
            judged(&case),
            Err(ParamsError::Repeated("Application_Name".into()))
        );
        let upper = [("user", "a"), ("DATABASE", "b")];
        assert_eq!(
            judged(&upper),
            Err(ParamsError::LetterCase("DATABASE".into()))
        );
    }

    #[test]
    fn the_database_defaults_to_the_user_and_names_are_cut_as_the_server_cuts_them() {
        let p = judged(&[("user", "alice")]).unwrap();
        assert_eq!((p.user.as_str(), p.database.as_str()), ("alice", "alice"));
        let p = judged(&[("user", "alice"), ("database", "")]).unwrap();
        assert_eq!(p.database, "alice");
        let long = "x".repeat(70);
        let p = judged(&[("user", &long), ("database", &long)]).unwrap();
        assert_eq!((p.user.len(), p.database.len()), (63, 63));
        assert_eq!(judged(&[("user", "")]), Err(ParamsError::NoUser));
        assert_eq!(judged(&[("database", "d")]), Err(ParamsError::NoUser));
    }

    #[test]
    fn replication_is_read_as_the_server_reads_it() {
        let p = judged(&[("user", "r"), ("database", "db"), ("replication", "On")]).unwrap();
        assert_eq!(p.replication, Replication::Physical);
        assert_eq!(p.database, REPLICATION_DATABASE);
        assert!(!String::from_utf8_lossy(&p.encode()).contains("database"));
        let p = judged(&[
            ("user", "r"),
            ("database", "db"),
            ("replication", "database"),
        ]);
        assert_eq!(p.unwrap().replication, Replication::Logical);
        let p = judged(&[("user", "r"), ("replication", "f")]).unwrap();
        assert_eq!((p.replication, p.database.as_str()), (Replication::No, "r"));
        assert!(matches!(
            judged(&[("user", "r"), ("replication", "o")]),
            Err(ParamsError::BadReplication(_))
        ));
        for (text, value) in [("t", true), ("YES", true), ("1", true), ("of", false)] {
            assert_eq!(parse_bool(text.as_bytes()), Some(value), "{text}");
        }
        assert_eq!(parse_bool(b"10"), None);
    }

    #[test]
    fn the_rebuilt_packet_reads_back_the_same() {
        let p = judged(&[
            ("database", "app"),
            ("user", "alice"),
            ("options", "-c search_path=x"),
            ("_pq_.test", "1"),
            ("client_encoding", "UTF8"),
        ])
        .unwrap();
        assert_eq!(reparsed(&p), p);
        assert_eq!(p.get("options"), Some(&b"-c search_path=x"[..]));
        let bytes = p.encode();
        assert!(bytes.starts_with(&[0, 0, 0, bytes.len() as u8, 0, 3, 0, 0]));
        assert!(bytes[8..].starts_with(b"user\0alice\0database\0app\0options\0"));
        // Never longer than what the client sent, whatever it left to the server's default.
        let p = judged(&[("user", &"u".repeat(70))]).unwrap();
        assert_eq!(p.encode().len(), 8 + "user\0".len() + 64 + 1);
        assert_eq!(reparsed(&p), p);
    }
}
