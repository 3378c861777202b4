//! `check-config --connect`: every upstream reached as a session would reach it, and what its
//! TLS and its trust of the proxy's address say, one line each.

use std::fmt::Write;

use crate::settings::Settings;

use super::{auth_query, targets};

/// Connects to every upstream as a session would: one line each. Returns the lines and
/// whether all succeeded.
pub(crate) fn connect_all(settings: &Settings) -> (String, bool) {
    let mut out = String::from(
        "
connecting to every upstream (as a session would):
",
    );
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return (
            out + "  cannot start a runtime
",
            false,
        );
    };
    let mut ok = true;
    for (prefix, target) in targets(settings) {
        let u = &target.upstream;
        let result = rt.block_on(crate::upstream::connect(u, &target.connector));
        let reached = result.is_ok();
        let _ = match result {
            Ok(up) => writeln!(
                out,
                "  {prefix} ({}:{}): ok, {} at {}, certificate verified for \"{}\"",
                u.host,
                u.port,
                crate::tls::describe::describe_tls(up.stream.ssl()),
                up.addr,
                u.server_name
            ),
            Err(e) => {
                ok = false;
                let hint = e
                    .refusal()
                    .hint
                    .map(|h| format!(" HINT: {h}"))
                    .unwrap_or_default();
                writeln!(out, "  {prefix} ({}:{}): FAILED: {e}{hint}", u.host, u.port)
            }
        };
        if reached {
            let answer = rt.block_on(crate::trust_probe::probe(u, &target.connector));
            let (line, fine) = crate::trust_probe::describe(&prefix, &target.auth, &answer);
            ok &= fine;
            let _ = writeln!(out, "{line}");
        }
        if let Some(query) = auth_query(target) {
            let checked = rt.block_on(query.check());
            let _ = match checked {
                Ok(()) => writeln!(
                    out,
                    "  {prefix} auth.query_user \"{}\": logs in",
                    query.user()
                ),
                Err(e) => {
                    ok = false;
                    writeln!(
                        out,
                        "  {prefix} auth.query_user \"{}\": FAILED: {e}",
                        query.user()
                    )
                }
            };
        }
    }
    (out, ok)
}
