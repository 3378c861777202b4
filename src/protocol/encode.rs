//! The messages the proxy writes itself during the startup phase: Authentication requests to
//! clients (with SCRAM termination), and SASL responses, a StartupMessage's parameterised
//! query and its framing toward the server (its own logins). Pure functions appending to a
//! buffer.

use super::message::tag;

/// Appends a message with `tag` and `body`.
pub fn encode(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

/// An Authentication* request: `code` and its data.
pub fn encode_authentication(out: &mut Vec<u8>, code: i32, data: &[u8]) {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    encode(out, tag::AUTHENTICATION, &body);
}

/// AuthenticationSASL offering `mechanisms`.
pub fn encode_authentication_sasl(out: &mut Vec<u8>, mechanisms: &[&str]) {
    let mut list = Vec::new();
    for m in mechanisms {
        list.extend_from_slice(m.as_bytes());
        list.push(0);
    }
    list.push(0);
    encode_authentication(out, auth_code::SASL, &list);
}

/// BackendKeyData: the pid and secret key a client's CancelRequest must carry.
pub fn encode_backend_key_data(out: &mut Vec<u8>, pid: i32, key: &[u8]) {
    out.push(tag::BACKEND_KEY_DATA);
    out.extend_from_slice(&((key.len() + 8) as i32).to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(key);
}

/// Authentication request codes the proxy sends.
pub mod auth_code {
    /// AuthenticationOk.
    pub const OK: i32 = 0;
    /// AuthenticationSASL.
    pub const SASL: i32 = 10;
    /// AuthenticationSASLContinue.
    pub const SASL_CONTINUE: i32 = 11;
    /// AuthenticationSASLFinal.
    pub const SASL_FINAL: i32 = 12;
}

/// SASLInitialResponse choosing `mechanism` with `data`.
pub fn encode_sasl_initial_response(out: &mut Vec<u8>, mechanism: &str, data: &[u8]) {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(data.len() as i32).to_be_bytes());
    body.extend_from_slice(data);
    encode(out, tag::PASSWORD_MESSAGE, &body);
}

/// The extended-protocol messages of one parameterised query with text parameters and
/// text results: Parse (unnamed), Bind, Execute and Sync.
pub fn encode_query_with_params(out: &mut Vec<u8>, sql: &str, params: &[&str]) {
    let mut parse = sql.as_bytes().to_vec();
    parse.insert(0, 0); // unnamed statement
    parse.push(0);
    parse.extend_from_slice(&0i16.to_be_bytes()); // parameter types: inferred
    encode(out, b'P', &parse);
    let mut bind = vec![0, 0]; // unnamed portal, unnamed statement
    bind.extend_from_slice(&0i16.to_be_bytes()); // all parameters in text
    bind.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        bind.extend_from_slice(&(p.len() as i32).to_be_bytes());
        bind.extend_from_slice(p.as_bytes());
    }
    bind.extend_from_slice(&0i16.to_be_bytes()); // all results in text
    encode(out, b'B', &bind);
    encode(out, b'E', &[0, 0, 0, 0, 0]); // unnamed portal, no row limit
    encode(out, b'S', &[]);
}
