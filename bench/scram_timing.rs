//! `pgt-bench scram-timing`: whether a user the proxy has a verifier for can be told from
//! one it has none for by the time its server-first-message takes (`auth.mode = "scram"`).
//! Known and unknown users take turns; each attempt is SSLRequest, verified TLS,
//! StartupMessage, AuthenticationSASL, then the timed step: SASLInitialResponse sent to
//! server-first-message received. Prints the median and p10-p90 of each, in milliseconds.

use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::{BoxError, SessionError, Target, connector, read_message, startup_packet};

/// Attempts per user not counted, while the proxy and the server warm up.
const WARM_UP: usize = 5;

pub async fn run(
    target: Target,
    known: String,
    unknown: String,
    count: usize,
) -> Result<(), BoxError> {
    let connector = connector(&target)?;
    let (mut k, mut u) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count + WARM_UP {
        let a = server_first(&target, &connector, &known)
            .await
            .map_err(|e| format!("{known}: {e:?}"))?;
        let b = server_first(&target, &connector, &unknown)
            .await
            .map_err(|e| format!("{unknown}: {e:?}"))?;
        if i >= WARM_UP {
            k.push(a);
            u.push(b);
        }
    }
    let (km, kl, kh) = stats(&mut k);
    let (um, ul, uh) = stats(&mut u);
    println!("known   {known:<12} median {km:.3} p10 {kl:.3} p90 {kh:.3} (n={count})");
    println!("unknown {unknown:<12} median {um:.3} p10 {ul:.3} p90 {uh:.3} (n={count})");
    let spread = (kh - kl).min(uh - ul);
    println!(
        "difference of medians {:.3} ms; smaller p10-p90 spread {spread:.3} ms: {}",
        um - km,
        if (um - km).abs() < spread {
            "below the spread"
        } else {
            "NOT below the spread"
        }
    );
    Ok(())
}

/// Median, p10 and p90 of `times`.
fn stats(times: &mut [f64]) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (pct(0.5), pct(0.1), pct(0.9))
}

/// One attempt as `user`: the milliseconds from client-first sent to server-first read.
async fn server_first(
    target: &Target,
    connector: &openssl::ssl::SslConnector,
    user: &str,
) -> Result<f64, SessionError> {
    use tokio::io::AsyncReadExt;
    let mut tcp = TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        return Err(SessionError::Other("SSLRequest refused".into()));
    }
    let ssl = connector.configure()?.into_ssl(&target.host)?;
    let mut tls = SslStream::new(ssl, tcp)?;
    std::pin::Pin::new(&mut tls).connect().await?;
    tls.write_all(&startup_packet(user, &target.database))
        .await?;
    let (tag, body) = read_message(&mut tls).await?;
    if tag != b'R' || body.get(..4) != Some(&10i32.to_be_bytes()) {
        return Err(SessionError::Other("no AuthenticationSASL".into()));
    }
    let first = b"n,,n=,r=pgtbenchpgtbenchpgtbench";
    let mut payload = b"SCRAM-SHA-256\0".to_vec();
    payload.extend_from_slice(&(first.len() as i32).to_be_bytes());
    payload.extend_from_slice(first);
    let mut m = vec![b'p'];
    m.extend_from_slice(&((payload.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(&payload);
    let sent = Instant::now();
    tls.write_all(&m).await?;
    let (tag, body) = read_message(&mut tls).await?;
    let elapsed = sent.elapsed().as_secs_f64() * 1e3;
    if tag != b'R' || body.get(..4) != Some(&11i32.to_be_bytes()) {
        return Err(SessionError::Other("no server-first-message".into()));
    }
    let _ = tls.shutdown().await;
    Ok(elapsed)
}
