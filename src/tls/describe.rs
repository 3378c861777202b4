//! Certificates, connections and OpenSSL errors as people read them: in log lines, client
//! errors and `check-config`.

use openssl::asn1::Asn1Time;
use openssl::ssl::SslRef;
use openssl::x509::{X509NameRef, X509Ref};

/// A certificate as messages name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CertSummary {
    /// Its subject, e.g. `CN=db, O=Example`.
    pub(crate) subject: String,
    /// Its serial number, hex.
    pub(crate) serial: String,
    /// Its issuer's name.
    pub(crate) issuer: String,
}

impl CertSummary {
    /// The summary of `cert`.
    pub(crate) fn of(cert: &X509Ref) -> Self {
        Self {
            subject: name_to_string(cert.subject_name()),
            serial: serial_hex(cert),
            issuer: name_to_string(cert.issuer_name()),
        }
    }
}

/// A certificate's serial number in hex.
pub(super) fn serial_hex(cert: &X509Ref) -> String {
    cert.serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Days until `cert` expires (negative once expired) and whether it is valid yet.
pub(crate) fn validity(cert: &X509Ref) -> Result<(i32, bool), openssl::error::ErrorStack> {
    let now = Asn1Time::days_from_now(0)?;
    let until_expiry = now.diff(cert.not_after())?;
    let since_start = cert.not_before().diff(&now)?;
    let started = since_start.days > 0 || (since_start.days == 0 && since_start.secs >= 0);
    Ok((until_expiry.days, started))
}

/// A distinguished name as `CN=db, O=Example`.
pub(crate) fn name_to_string(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let field = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{field}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The names a certificate is valid for: its DNS and IP SANs, else its CN.
pub(crate) fn certificate_names(cert: &X509Ref) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(sans) = cert.subject_alt_names() {
        for san in &sans {
            if let Some(dns) = san.dnsname() {
                names.push(format!("DNS:{dns}"));
            } else if let Some(ip) = san.ipaddress() {
                let ip = match ip.len() {
                    4 => <[u8; 4]>::try_from(ip).map(std::net::IpAddr::from).ok(),
                    16 => <[u8; 16]>::try_from(ip).map(std::net::IpAddr::from).ok(),
                    _ => None,
                };
                if let Some(ip) = ip {
                    names.push(format!("IP:{ip}"));
                }
            }
        }
    }
    if names.is_empty() {
        for cn in cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        {
            if let Ok(cn) = cn.data().to_string() {
                names.push(format!("CN:{cn}"));
            }
        }
    }
    names
}

/// Whether `cert` is valid for host `name` (X509_check_host: SANs, wildcards as RFC 6125).
pub(crate) fn covers_host(cert: &X509Ref, name: &str) -> bool {
    use foreign_types::ForeignTypeRef;
    // SAFETY: a live certificate and a name buffer of the given length; no peername out.
    unsafe {
        super::ffi::X509_check_host(
            cert.as_ptr(),
            name.as_ptr().cast(),
            name.len(),
            0,
            std::ptr::null_mut(),
        ) == 1
    }
}

/// A connection's protocol and cipher, e.g. `TLSv1.3 TLS_AES_256_GCM_SHA384`.
pub(crate) fn describe_tls(ssl: &SslRef) -> String {
    let cipher = ssl.current_cipher().map(|c| c.name()).unwrap_or("none");
    format!("{} {}", ssl.version_str(), cipher)
}

/// OpenSSL's error without the source-file noise, or the IO error behind it.
pub(crate) fn describe_ssl_error(e: &openssl::ssl::Error) -> String {
    if let Some(first) = e.ssl_error().and_then(|stack| stack.errors().first()) {
        return first
            .reason()
            .map(str::to_owned)
            .unwrap_or_else(|| first.to_string());
    }
    if let Some(io) = e.io_error() {
        return io.to_string();
    }
    match e.code() {
        openssl::ssl::ErrorCode::SYSCALL | openssl::ssl::ErrorCode::ZERO_RETURN => {
            "the peer closed the connection".into()
        }
        _ => e.to_string(),
    }
}

/// OpenSSL's errors as "reason (detail)", without source file positions.
pub(crate) fn openssl_errors(stack: &openssl::error::ErrorStack) -> String {
    let parts: Vec<String> = stack
        .errors()
        .iter()
        .map(|e| match (e.reason(), e.data()) {
            (Some(r), Some(d)) => format!("{r} ({d})"),
            (Some(r), None) => r.to_owned(),
            (None, Some(d)) => d.to_owned(),
            (None, None) => e.to_string(),
        })
        .collect();
    if parts.is_empty() {
        "no detail from OpenSSL".into()
    } else {
        parts.join("; ")
    }
}
