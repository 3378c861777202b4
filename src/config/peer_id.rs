//! `cluster.peer_id` as written: a number, or `"from-hostname"` for replicas that share one
//! configuration (a StatefulSet's pods) and take their id from their host name's ordinal.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The word that asks for the id from the host name.
pub const FROM_HOSTNAME: &str = "from-hostname";

/// This replica's id as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerIdSetting {
    /// A fixed id (0: no cluster).
    Fixed(u16),
    /// The host name's trailing `-N`, plus one (0 keeps its meaning: no cluster).
    FromHostname,
}

impl Default for PeerIdSetting {
    fn default() -> Self {
        Self::Fixed(0)
    }
}

impl Serialize for PeerIdSetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(id) => s.serialize_u16(*id),
            Self::FromHostname => s.serialize_str(FROM_HOSTNAME),
        }
    }
}

impl<'de> Deserialize<'de> for PeerIdSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PeerIdVisitor)
    }
}

/// Numbers, and strings (an environment variable's value is one): a number's text or the
/// word.
struct PeerIdVisitor;

impl PeerIdVisitor {
    fn fixed<E: de::Error>(value: i128) -> Result<PeerIdSetting, E> {
        u16::try_from(value).map(PeerIdSetting::Fixed).map_err(|_| {
            E::custom(format!(
                "{value} is out of range: 1 to 16383, 0 for no cluster, or \"{FROM_HOSTNAME}\""
            ))
        })
    }
}

impl Visitor<'_> for PeerIdVisitor {
    type Value = PeerIdSetting;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "a peer id (1 to 16383, 0 for no cluster) or \"{FROM_HOSTNAME}\""
        )
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Self::fixed(i128::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Self::fixed(i128::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v.trim() == FROM_HOSTNAME {
            return Ok(PeerIdSetting::FromHostname);
        }
        match v.trim().parse::<i128>() {
            Ok(n) => Self::fixed(n),
            Err(_) => Err(E::custom(format!(
                "{v:?} is neither a peer id (1 to 16383, 0 for no cluster) nor \"{FROM_HOSTNAME}\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        peer_id: PeerIdSetting,
    }

    fn parse(value: &str) -> Result<PeerIdSetting, String> {
        toml::from_str::<Doc>(&format!("peer_id = {value}"))
            .map(|d| d.peer_id)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn a_number_or_the_word() {
        assert_eq!(parse("3"), Ok(PeerIdSetting::Fixed(3)));
        assert_eq!(parse("0"), Ok(PeerIdSetting::Fixed(0)));
        assert_eq!(parse("\"7\""), Ok(PeerIdSetting::Fixed(7)));
        assert_eq!(parse("\"from-hostname\""), Ok(PeerIdSetting::FromHostname));
        let wrong = parse("\"from-host\"").unwrap_err();
        assert!(
            wrong.contains("\"from-host\" is neither a peer id"),
            "{wrong}"
        );
        let big = parse("70000").unwrap_err();
        assert!(big.contains("70000 is out of range"), "{big}");
        assert!(parse("-1").unwrap_err().contains("-1 is out of range"));
    }

    #[test]
    fn written_back_as_read() {
        for setting in [PeerIdSetting::Fixed(12), PeerIdSetting::FromHostname] {
            let text =
                toml::to_string(&std::collections::BTreeMap::from([("peer_id", setting)])).unwrap();
            assert_eq!(
                parse(text.trim().trim_start_matches("peer_id = ")),
                Ok(setting)
            );
        }
    }
}
