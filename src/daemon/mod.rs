//! The daemon: the process around the sessions. It starts, listens, hands each connection
//! to a session thread, tells systemd and a balancer how it is doing, reloads, and stops;
//! what happens on a connection is `session`'s.

mod admin;
mod app;
mod memory;
mod runtimes;
mod server;
mod service;
mod shared;

pub use self::app::main;
