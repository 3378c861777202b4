//! `cluster.peer_address`: one template that gives any peer's address from its id, so the
//! replicas of a StatefulSet behind a headless Service share one configuration and scaling
//! needs no edit. `{ordinal}` is the id minus one (the pod's StatefulSet ordinal, see
//! [`super::peer_id`]), `{id}` the id itself; nothing else is substituted.

/// A validated template.
#[derive(Debug, Clone)]
pub(crate) struct PeerAddress {
    /// The template as written, trimmed.
    template: String,
}

/// The placeholders a template may hold.
const PLACEHOLDERS: [&str; 2] = ["{ordinal}", "{id}"];

impl PeerAddress {
    /// Checks the template: only known placeholders, at least one (else every peer would be
    /// the same address), and `HOST:PORT` once filled in (judged by `is_address`).
    pub fn parse(text: &str, is_address: impl Fn(&str) -> bool) -> Result<Self, String> {
        let template = text.trim().to_owned();
        let mut rest = template.as_str();
        let mut found = 0;
        while let Some(open) = rest.find(['{', '}']) {
            let tail = &rest[open..];
            let Some(known) = PLACEHOLDERS.iter().find(|p| tail.starts_with(**p)) else {
                let shown: String = tail.chars().take(12).collect();
                return Err(format!(
                    "{text:?} has {shown:?}: the only placeholders are {{ordinal}} (the peer \
                     id minus one) and {{id}}"
                ));
            };
            found += 1;
            rest = &tail[known.len()..];
        }
        if found == 0 {
            return Err(format!(
                "{text:?} names no peer: put {{ordinal}} where the StatefulSet ordinal goes, \
                 e.g. \"pgt-proxy-{{ordinal}}.pgt-proxy-peers.NAMESPACE.svc.cluster.local:5432\""
            ));
        }
        let address = Self { template };
        let sample = address.render(1);
        if !is_address(&sample) {
            return Err(format!(
                "{text:?} does not give HOST:PORT (for peer 1 it gives {sample:?})"
            ));
        }
        Ok(address)
    }

    /// The address of peer `id`.
    pub fn render(&self, id: u16) -> String {
        self.template
            .replace("{ordinal}", &id.saturating_sub(1).to_string())
            .replace("{id}", &id.to_string())
    }

    /// The template as written.
    pub fn template(&self) -> &str {
        &self.template
    }
}

#[cfg(test)]
mod tests {
    use super::PeerAddress;

    fn parse(text: &str) -> Result<PeerAddress, String> {
        PeerAddress::parse(text, |a| {
            a.rsplit_once(':').is_some_and(|(h, _)| !h.is_empty())
        })
    }

    #[test]
    fn the_ordinal_is_the_id_minus_one() {
        let a = parse("pgt-proxy-{ordinal}.pgt-proxy-peers.prod.svc.cluster.local:5432").unwrap();
        assert_eq!(
            a.render(4),
            "pgt-proxy-3.pgt-proxy-peers.prod.svc.cluster.local:5432"
        );
        let a = parse(" proxy-{id}.internal:64{ordinal} ").unwrap();
        assert_eq!(a.render(1), "proxy-1.internal:640");
        assert_eq!(a.template(), "proxy-{id}.internal:64{ordinal}");
    }

    #[test]
    fn unknown_placeholders_none_or_no_address_are_refused() {
        let why = parse("pgt-proxy-{n}.peers:5432").unwrap_err();
        assert!(why.contains("the only placeholders are {ordinal}"), "{why}");
        assert!(parse("pgt-proxy-{ordinal.peers:5432").is_err());
        assert!(parse("pgt-proxy-{ordinal}}.peers:5432").is_err());
        let why = parse("pgt-proxy-0.peers:5432").unwrap_err();
        assert!(why.contains("names no peer"), "{why}");
        let why = parse("pgt-proxy-{ordinal}").unwrap_err();
        assert!(why.contains("does not give HOST:PORT"), "{why}");
    }
}
