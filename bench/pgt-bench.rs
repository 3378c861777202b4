//! The benchmark's and soak test's own PostgreSQL-protocol tools: a connect-latency client,
//! a holder of many idle authenticated sessions, a connection flood, a minimal TLS
//! upstream that authenticates everyone and then idles, and the SCRAM server-first timing
//! of known and unknown users (`scram_timing.rs`).
//!
//! Built by `scripts/bench` and `scripts/soak` (`cargo build --release --example pgt-bench`);
//! not part of the product. Clients speak SSLRequest + TLS with full verification (CA and
//! host name, like `sslmode=verify-full`) and expect trust authentication.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use openssl::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;

#[path = "scram_timing.rs"]
mod scram_timing;

#[derive(Parser)]
#[command(about = "pgt-proxy's benchmark and soak tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where and how a client connects.
#[derive(clap::Args, Clone)]
struct Target {
    /// host:port to connect to.
    #[arg(long)]
    addr: SocketAddr,
    /// The name to verify the server's certificate against (and send as SNI).
    #[arg(long, default_value = "localhost")]
    host: String,
    /// CA certificate(s) to trust.
    #[arg(long)]
    ca: PathBuf,
    /// User name in the StartupMessage (trust authentication).
    #[arg(long, default_value = "bench")]
    user: String,
    /// Database in the StartupMessage.
    #[arg(long, default_value = "bench")]
    database: String,
}

#[derive(Subcommand)]
enum Command {
    /// Opens and closes sessions one after another; prints connect-to-ReadyForQuery p50,
    /// p99 and mean in milliseconds.
    Connect {
        #[command(flatten)]
        target: Target,
        /// How many sessions.
        #[arg(long, default_value_t = 500)]
        count: usize,
    },
    /// Opens `count` sessions, prints `ready OPENED FAILED`, holds them until stdin ends,
    /// then checks each still answers a query and prints `alive N dead M`.
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        count: usize,
        /// Sessions being opened at once.
        #[arg(long, default_value_t = 50)]
        parallel: usize,
    },
    /// Opens `rate` sessions per second for `seconds`, each closed once ready; prints how
    /// many were served, refused with each SQLSTATE, or failed otherwise, and the slowest.
    Flood {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 200)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// Known and unknown users in turns, each up to its server-first-message: prints the
    /// median and p10-p90 of the client-first to server-first time of each.
    ScramTiming {
        #[command(flatten)]
        target: Target,
        /// A user the proxy has a verifier for.
        #[arg(long)]
        known: String,
        /// A user it has none for.
        #[arg(long, default_value = "nobody_here")]
        unknown: String,
        /// Attempts per user.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// A minimal TLS upstream: answers SSLRequest, completes the handshake, answers any
    /// StartupMessage with AuthenticationOk, BackendKeyData and ReadyForQuery, any query
    /// with EmptyQueryResponse and ReadyForQuery, and idles otherwise.
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Connect { target, count } => connect(target, count).await,
            Command::Idle {
                target,
                count,
                parallel,
            } => idle(target, count, parallel).await,
            Command::Flood {
                target,
                rate,
                seconds,
            } => flood(target, rate, seconds).await,
            Command::Upstream { listen, cert, key } => upstream(listen, cert, key).await,
            Command::ScramTiming {
                target,
                known,
                unknown,
                count,
            } => scram_timing::run(target, known, unknown, count).await,
        }
    })
}

/// A session that ended in an ErrorResponse carries its SQLSTATE.
#[derive(Debug)]
enum SessionError {
    Refused(String),
    Other(String),
}

impl<E: std::fmt::Display> From<E> for SessionError {
    fn from(e: E) -> Self {
        SessionError::Other(e.to_string())
    }
}

fn connector(target: &Target) -> Result<SslConnector, BoxError> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_ca_file(&target.ca)?;
    b.set_verify(SslVerifyMode::PEER);
    Ok(b.build())
}

fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", database)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// One backend message: (tag, body); bodies over 1 MiB are refused.
async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u8, Vec<u8>), SessionError> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(4..=1 << 20).contains(&len) {
        return Err(SessionError::Other(format!("bad message length {len}")));
    }
    let mut body = vec![0u8; len - 4];
    r.read_exact(&mut body).await?;
    Ok((head[0], body))
}

/// The SQLSTATE and message of an ErrorResponse body.
fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = String::from_utf8_lossy(v).into(),
            Some((b'M', v)) => message = String::from_utf8_lossy(v).into(),
            _ => {}
        }
    }
    (code, message)
}

/// Reads until ReadyForQuery; an ErrorResponse ends it with its SQLSTATE.
async fn until_ready<R: AsyncRead + Unpin>(r: &mut R) -> Result<(), SessionError> {
    loop {
        match read_message(r).await? {
            (b'Z', _) => return Ok(()),
            (b'E', body) => {
                let (code, message) = error_fields(&body);
                return Err(SessionError::Refused(format!("{code} {message}")));
            }
            (b'R', body) if body.get(..4) != Some(&[0, 0, 0, 0]) => {
                return Err(SessionError::Other(
                    "the server asks for a password; the benchmark expects trust".into(),
                ));
            }
            _ => {}
        }
    }
}

/// SSLRequest, verified TLS, StartupMessage, up to ReadyForQuery.
async fn open(
    target: &Target,
    connector: &SslConnector,
) -> Result<SslStream<TcpStream>, SessionError> {
    let mut tcp = TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        // A refusal before TLS is an ErrorResponse in plaintext.
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
        return Err(SessionError::Other(format!(
            "SSLRequest answered {:?}",
            answer[0] as char
        )));
    }
    let ssl = connector.configure()?.into_ssl(&target.host)?;
    let mut tls = SslStream::new(ssl, tcp)?;
    std::pin::Pin::new(&mut tls).connect().await?;
    tls.write_all(&startup_packet(&target.user, &target.database))
        .await?;
    until_ready(&mut tls).await?;
    Ok(tls)
}

async fn close(mut tls: SslStream<TcpStream>) {
    let _ = tls.write_all(b"X\0\0\0\x04").await;
    let _ = tls.shutdown().await;
}

async fn connect(target: Target, count: usize) -> Result<(), BoxError> {
    let connector = connector(&target)?;
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        let tls = open(&target, &connector)
            .await
            .map_err(|e| format!("{e:?}"))?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        close(tls).await;
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!("p50 {:.3} p99 {:.3} mean {:.3}", pct(0.5), pct(0.99), mean);
    Ok(())
}

async fn idle(target: Target, count: usize, parallel: usize) -> Result<(), BoxError> {
    let connector = Arc::new(connector(&target)?);
    let target = Arc::new(target);
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..count {
        let (connector, target, gate) = (connector.clone(), target.clone(), gate.clone());
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await;
            open(&target, &connector).await
        });
    }
    let mut sessions = Vec::with_capacity(count);
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    while let Some(r) = opening.join_next().await {
        match r? {
            Ok(tls) => sessions.push(tls),
            Err(e) => *failures.entry(format!("{e:?}")).or_default() += 1,
        }
    }
    println!(
        "ready {} {}",
        sessions.len(),
        failures.values().sum::<usize>()
    );
    for (e, n) in &failures {
        eprintln!("{n} x {e}");
    }
    // Hold until told to stop (stdin ends or says anything).
    let mut line = String::new();
    let _ = tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
    let mut checks = tokio::task::JoinSet::new();
    for mut tls in sessions {
        checks.spawn(async move {
            let alive = async {
                tls.write_all(b"Q\0\0\0\x05\0").await?;
                until_ready(&mut tls).await
            };
            let alive = tokio::time::timeout(Duration::from_secs(30), alive).await;
            close(tls).await;
            match alive {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:?}")),
                Err(_) => Some("no answer in 30 s".to_string()),
            }
        });
    }
    let (mut alive, mut dead) = (0, std::collections::BTreeMap::<String, usize>::new());
    while let Some(r) = checks.join_next().await {
        match r.unwrap_or_else(|e| Some(e.to_string())) {
            None => alive += 1,
            Some(why) => *dead.entry(why).or_default() += 1,
        }
    }
    println!("alive {alive} dead {}", dead.values().sum::<usize>());
    for (why, n) in &dead {
        eprintln!("{n} x dead: {why}");
    }
    Ok(())
}

async fn flood(target: Target, rate: u32, seconds: u32) -> Result<(), BoxError> {
    let connector = Arc::new(connector(&target)?);
    let target = Arc::new(target);
    let slowest_us = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..rate * seconds {
        tick.tick().await;
        let (connector, target, slowest_us) =
            (connector.clone(), target.clone(), slowest_us.clone());
        tasks.spawn(async move {
            let start = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(30), open(&target, &connector)).await;
            slowest_us.fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
            match r {
                Ok(Ok(tls)) => {
                    close(tls).await;
                    "served".to_string()
                }
                Ok(Err(SessionError::Refused(e))) => {
                    format!("refused {}", e.split(' ').next().unwrap_or(""))
                }
                Ok(Err(SessionError::Other(e))) => format!("failed {e}"),
                Err(_) => "failed: no answer in 30 s".to_string(),
            }
        });
    }
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    while let Some(r) = tasks.join_next().await {
        *outcomes.entry(r?).or_default() += 1;
    }
    for (outcome, n) in &outcomes {
        println!("{outcome}: {n}");
    }
    println!(
        "slowest {:.1} ms",
        slowest_us.load(Ordering::Relaxed) as f64 / 1e3
    );
    Ok(())
}

async fn upstream(listen: SocketAddr, cert: PathBuf, key: PathBuf) -> Result<(), BoxError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_certificate_chain_file(&cert)?;
    b.set_private_key_file(&key, SslFiletype::PEM)?;
    b.set_mode(openssl::ssl::SslMode::RELEASE_BUFFERS);
    let acceptor = Arc::new(b.build());
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = serve(tcp, &acceptor).await;
        });
    }
}

async fn serve(mut tcp: TcpStream, acceptor: &SslAcceptor) -> Result<(), SessionError> {
    tcp.set_nodelay(true)?;
    let mut first = [0u8; 1];
    tcp.peek(&mut first).await?;
    if first[0] != 0x16 {
        let mut request = [0u8; 8];
        tcp.read_exact(&mut request).await?;
        tcp.write_all(b"S").await?;
    }
    let ssl = openssl::ssl::Ssl::new(acceptor.context())?;
    let mut tls = SslStream::new(ssl, tcp)?;
    std::pin::Pin::new(&mut tls).accept().await?;
    let mut len = [0u8; 4];
    tls.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if !(8..=10_000).contains(&len) {
        return Ok(());
    }
    let mut startup = vec![0u8; len - 4];
    tls.read_exact(&mut startup).await?;
    tls.write_all(b"R\0\0\0\x08\0\0\0\0K\0\0\0\x0c\0\0\0\x01\0\0\0\x02Z\0\0\0\x05I")
        .await?;
    loop {
        match read_frontend(&mut tls).await? {
            b'X' => return Ok(()),
            b'Q' => tls.write_all(b"I\0\0\0\x04Z\0\0\0\x05I").await?,
            _ => {}
        }
    }
}

/// Reads one frontend message and returns its tag.
async fn read_frontend<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<u8, SessionError> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(4..=1 << 20).contains(&len) {
        return Err(SessionError::Other("bad length".into()));
    }
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await?;
    Ok(head[0])
}
