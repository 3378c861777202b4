//! What one row of the auth query's reply says about the user asked for: the verifier in
//! its second column when its first (`username`) is exactly that user; a row about any
//! other role is no answer, and is logged.

use crate::protocol::message;
use crate::protocol::scram::{Verifier, parse_verifier};

/// A row's answer for `user`, and whether it is about `user` at all: a row for another
/// role (or for none, with a verifier) is no answer.
pub(super) fn answer_of(body: &[u8], user: &str) -> (Result<Option<Verifier>, String>, bool) {
    let columns = match message::parse_data_row(body) {
        Ok(columns) => columns,
        Err(e) => return (Err(e.to_string()), true),
    };
    let (name, verifier) = match columns.as_slice() {
        [name, verifier, ..] => (*name, *verifier),
        _ => {
            return (
                Err("the auth query must return two columns: username, verifier".into()),
                true,
            );
        }
    };
    match (name, verifier) {
        (Some(name), _) if name == user.as_bytes() => {}
        (None, None) => return (Ok(None), true),
        (name, _) => {
            let answered = name.map_or_else(|| "NULL".into(), String::from_utf8_lossy);
            tracing::warn!(
                user = ?user,
                answered = ?answered,
                "the auth query answered for another role than the one asked for; \
                 taken as no verifier, and its connection closed"
            );
            return (Ok(None), false);
        }
    }
    let answer = match verifier {
        None => Ok(None),
        Some(text) => parse_verifier(&String::from_utf8_lossy(text))
            .map(Some)
            .map_err(|e| format!("the auth query returned {e}")),
    };
    (answer, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    /// A DataRow body with these columns.
    fn row(columns: &[Option<&str>]) -> Vec<u8> {
        let mut out = (columns.len() as i16).to_be_bytes().to_vec();
        for c in columns {
            match c {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(text) => {
                    out.extend_from_slice(&(text.len() as i32).to_be_bytes());
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn the_row_must_name_the_user_asked_for() {
        let (answer, ours) = answer_of(&row(&[Some("alice"), Some(V)]), "alice");
        assert!(ours && matches!(answer, Ok(Some(_))));
        let (answer, ours) = answer_of(&row(&[Some("alice"), None]), "alice");
        assert!(ours && matches!(answer, Ok(None)));
        // Another role's row, a differently cased or padded name, or none with a verifier.
        for (name, asked) in [
            (Some("alice"), "bob"),
            (Some("Alice"), "alice"),
            (Some("alice "), "alice"),
            (None, "alice"),
        ] {
            let (answer, ours) = answer_of(&row(&[name, Some(V)]), asked);
            assert!(!ours && matches!(answer, Ok(None)), "{name:?} for {asked}");
        }
        let (answer, ours) = answer_of(&row(&[Some("alice"), None]), "bob");
        assert!(!ours && matches!(answer, Ok(None)));
        // A row of NULLs is the plain "no such user" of a query with an outer join.
        let (answer, ours) = answer_of(&row(&[None, None]), "bob");
        assert!(ours && matches!(answer, Ok(None)));
    }

    #[test]
    fn bad_rows_are_errors_on_a_sound_connection() {
        let (answer, ours) = answer_of(&row(&[Some("alice")]), "alice");
        assert!(ours && answer.unwrap_err().contains("two columns"));
        let (answer, ours) = answer_of(&row(&[Some("alice"), Some("md5abc")]), "alice");
        assert!(ours && answer.is_err());
        let (answer, _) = answer_of(b"\x00", "alice");
        assert!(answer.is_err());
    }
}
