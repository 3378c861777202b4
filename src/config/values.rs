//! The configuration's closed sets of string values (`"1.2"`, `"soft-fail"`, ...): each
//! (de)serialized as its text, with an unknown value reported as `"x" is not one of: a, b`.

use serde::{Deserialize, Serialize};

/// Defines a closed set of string values: (de)serialized as text, and an unknown value is
/// reported as `"x" is not one of: a, b` rather than in serde's internal terms.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                match text.as_str() {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(format!(
                        "{text:?} is not one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                match value {
                    $($name::$variant => $text.into(),)+
                }
            }
        }
    };
}

string_enum! {
    /// Lowest TLS protocol version accepted from clients.
    TlsVersion {
        /// TLS 1.2 and 1.3 (Mozilla intermediate).
        V1_2 = "1.2",
        /// TLS 1.3 only (Mozilla modern).
        V1_3 = "1.3",
    }
}

string_enum! {
    /// How the proxy starts TLS with the upstream.
    TlsNegotiation {
        /// SSLRequest, wait for 'S', then the handshake (every PostgreSQL version).
        Postgres = "postgres",
        /// The ClientHello at once, with ALPN "postgresql" (PostgreSQL 17+).
        Direct = "direct",
    }
}

string_enum! {
    /// Log line format.
    LogFormat {
        /// Human-readable lines.
        Text = "text",
        /// One JSON object per line.
        Json = "json",
    }
}

string_enum! {
    /// Where log events go.
    LogTarget {
        /// The journal when stderr is connected to it (JOURNAL_STREAM matches), else stderr.
        Auto = "auto",
        /// The journal, with structured PGT_* fields; stderr if the journal is unreachable.
        Journald = "journald",
        /// Standard error.
        Stderr = "stderr",
    }
}

string_enum! {
    /// Which client certificate field the StartupMessage's user must equal.
    ClientCertUser {
        /// No check: any user may log in with a valid certificate.
        Off = "off",
        /// The subject's common name (PostgreSQL's clientcert=verify-full).
        Cn = "cn",
        /// An e-mail address in the subject alternative names.
        SanEmail = "san-email",
    }
}

string_enum! {
    /// The certificates a CRL is required for.
    CrlCheck {
        /// Every certificate in the chain below the trust anchor.
        Chain = "chain",
        /// The peer's own certificate only.
        Leaf = "leaf",
    }
}

string_enum! {
    /// What OCSP does when a certificate's status cannot be established.
    OcspMode {
        /// No OCSP.
        Off = "off",
        /// "revoked" refuses; "unknown" or an unreachable responder logs a warning and accepts.
        SoftFail = "soft-fail",
        /// Only "good" is accepted.
        HardFail = "hard-fail",
    }
}

string_enum! {
    /// Whether every cryptographic operation must go through OpenSSL's FIPS provider.
    FipsMode {
        /// The default providers.
        Off = "off",
        /// The FIPS provider, or no start.
        Require = "require",
        /// "require" when /proc/sys/crypto/fips_enabled is 1, else "off".
        Auto = "auto",
    }
}

string_enum! {
    /// Where a connection that matches no route goes.
    Unrouted {
        /// Refused with FATAL 08001 after its TLS handshake and StartupMessage.
        Reject = "reject",
        /// To `[upstream]`.
        Default = "default",
    }
}

string_enum! {
    /// Whether connections start with a PROXY protocol header.
    ProxyProtocol {
        /// No header: the socket's peer is the client.
        Off = "off",
        /// A PROXY protocol v2 header, required from `listen.trusted_proxies` only.
        V2 = "v2",
    }
}

string_enum! {
    /// Who authenticates clients.
    AuthMode {
        /// The server, through the proxy.
        Passthrough = "passthrough",
        /// The proxy, with SCRAM on both legs.
        Scram = "scram",
    }
}

string_enum! {
    /// What happens to a user the proxy has no verifier for.
    UnknownUser {
        /// Relayed to the server as in passthrough mode.
        Passthrough = "passthrough",
        /// Refused like a wrong password.
        Refuse = "refuse",
    }
}

string_enum! {
    /// Whether the upstream login must be bound to the server's certificate.
    ChannelBindingPolicy {
        /// SCRAM-SHA-256-PLUS when the server offers it, else SCRAM-SHA-256.
        Prefer = "prefer",
        /// SCRAM-SHA-256-PLUS or no session.
        Require = "require",
    }
}
