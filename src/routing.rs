//! The route table: which upstream a connection goes to, by the server name it sent (SNI) or,
//! failing that, its database; pure lookups over a table built once per (re)load.
//!
//! Names match as RFC 6125 says: case-insensitively, with one trailing dot ignored, and a
//! wildcard only as the whole leftmost label, matching exactly one label (so
//! `*.db.example.com` matches `a.db.example.com`, not `db.example.com` or
//! `a.b.db.example.com`; stunnel's suffix match is the mistake avoided). Order: an exact
//! server name, then the most specific wildcard, then the database, then the default.

use std::collections::HashMap;

/// A server name as compared: lowercase, without one trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Whether `pattern` (a name, or `*.` and a name) is a valid route server name.
pub fn valid_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether `pattern` covers `name` (both already normalized).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        None => pattern == name,
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
    }
}

/// One route: what it matches and the index of what it leads to (the caller's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<T> {
    /// A server name or `*.name`, normalized; `None` for a database route.
    pub server_name: Option<String>,
    /// A database name; `None` for a server-name route.
    pub database: Option<String>,
    /// What the route leads to.
    pub target: T,
}

/// The routes of one configuration.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    exact: HashMap<String, T>,
    /// Wildcards by the suffix they cover (one label each, so the longest suffix is the
    /// most specific).
    wildcards: Vec<(String, T)>,
    databases: HashMap<String, T>,
    default: Option<T>,
}

impl<T: Clone> RouteTable<T> {
    /// A table of `routes` (first definition of a name wins; duplicates are refused by the
    /// settings before this) and the route for what matches none.
    pub fn new(routes: &[Route<T>], default: Option<T>) -> Self {
        let mut table = Self {
            exact: HashMap::new(),
            wildcards: Vec::new(),
            databases: HashMap::new(),
            default,
        };
        for r in routes {
            match (&r.server_name, &r.database) {
                (Some(name), _) => match name.strip_prefix("*.") {
                    Some(suffix) => table.wildcards.push((suffix.to_owned(), r.target.clone())),
                    None => {
                        table.exact.entry(name.clone()).or_insert(r.target.clone());
                    }
                },
                (None, Some(db)) => {
                    table
                        .databases
                        .entry(db.clone())
                        .or_insert(r.target.clone());
                }
                (None, None) => {}
            }
        }
        table
            .wildcards
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        table
    }

    /// Whether any route exists (without routes, everything goes to the default).
    pub fn has_routes(&self) -> bool {
        !(self.exact.is_empty() && self.wildcards.is_empty() && self.databases.is_empty())
    }

    /// The route for a server name alone (known at the TLS handshake).
    pub fn by_server_name(&self, server_name: Option<&str>) -> Option<&T> {
        let name = normalize(server_name?);
        if let Some(t) = self.exact.get(&name) {
            return Some(t);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| matches(&format!("*.{suffix}"), &name))
            .map(|(_, t)| t)
    }

    /// The route for a connection: by server name, then database, then the default.
    pub fn route(&self, server_name: Option<&str>, database: Option<&str>) -> Option<&T> {
        self.route_after(self.by_server_name(server_name), database)
    }

    /// The route for a connection whose server name found `by_name` ([`Self::by_server_name`],
    /// looked up once at its handshake): that, else the database's, else the default.
    pub fn route_after<'a>(
        &'a self,
        by_name: Option<&'a T>,
        database: Option<&str>,
    ) -> Option<&'a T> {
        by_name
            .or_else(|| self.databases.get(database?))
            .or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        let r = |name: Option<&str>, db: Option<&str>, t| Route {
            server_name: name.map(normalize),
            database: db.map(str::to_owned),
            target: t,
        };
        RouteTable::new(
            &[
                r(Some("orders.db.example.com"), None, "orders"),
                r(Some("*.db.example.com"), None, "wild"),
                r(Some("*.eu.db.example.com"), None, "eu"),
                r(None, Some("billing"), "billing"),
            ],
            Some("default"),
        )
    }

    #[test]
    fn exact_then_most_specific_wildcard_then_database_then_default() {
        let t = table();
        assert_eq!(
            t.route(Some("ORDERS.db.example.com."), None),
            Some(&"orders")
        );
        assert_eq!(
            t.route(Some("a.db.example.com"), Some("billing")),
            Some(&"wild")
        );
        assert_eq!(t.route(Some("x.eu.db.example.com"), None), Some(&"eu"));
        assert_eq!(
            t.route(Some("a.b.db.example.com"), None),
            Some(&"default"),
            "one label only"
        );
        assert_eq!(t.route(Some("db.example.com"), None), Some(&"default"));
        assert_eq!(t.route(None, Some("billing")), Some(&"billing"));
        assert_eq!(
            t.route(Some("other.example.com"), Some("billing")),
            Some(&"billing")
        );
        assert_eq!(
            RouteTable::<u8>::new(&[], None).route(Some("a"), Some("b")),
            None
        );
    }

    #[test]
    fn patterns() {
        assert!(valid_pattern("*.db.example.com") && valid_pattern("db"));
        assert!(!valid_pattern("a.*.example.com") && !valid_pattern("*") && !valid_pattern("a..b"));
        assert!(!valid_pattern("*.") && !valid_pattern(""));
        assert!(matches("*.example.com", "a.example.com"));
        assert!(!matches("*.example.com", ".example.com"));
        assert!(!matches("*.example.com", "example.com"));
    }
}
