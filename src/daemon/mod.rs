//! The daemon: the process around the sessions. It starts, listens, hands each connection
//! to a session thread, tells systemd and a balancer how it is doing, reloads, and stops;
//! what happens on a connection is `session`'s. Its arrows run one way: the daemon uses
//! the session, and nothing below knows the daemon.
//!
//! - `app`: the binary's orchestration, from the command line to the exit code.
//! - `shared`: the state of the whole process (the running settings, the live sessions,
//!   the accept loops' and the drain's state for readiness).
//! - `server`: listening sockets, the accept loops, the connection limit, graceful
//!   shutdown.
//! - `runtimes`: the control runtime and the session threads (one single-threaded runtime
//!   per core), and the cap on their blocking threads.
//! - `service`: systemd notifications, status, watchdog, reload on SIGHUP and on changed
//!   certificate and CRL files.
//! - `health`: whether the proxy is alive, for the watchdog and `/healthz`.
//! - `admin`: the admin endpoint (`/metrics`, `/healthz`, `/readyz`).
//! - `memory`: handing freed memory back to the system after sessions end.

mod admin;
mod app;
mod health;
mod memory;
mod runtimes;
mod server;
mod service;
mod shared;

pub use self::app::main;
