//! Pods without Kubernetes: a process in network, UTS and mount namespaces of its own (its
//! own loopback, host name and `/etc/hosts`, as a pod has), started under util-linux's
//! `unshare`, and sockets the test opens inside such a namespace (a thread of its own joins
//! it with setns), to listen there or dial into it, relayed to sockets elsewhere. Needs root,
//! as the tests and CI run; nothing of the machine's own network, name or files changes.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Brings up the namespace's loopback, sets the host name ($1), puts the hosts file ($2)
/// over /etc/hosts (unshare makes the mount namespace private first), then runs the rest.
const POD_SETUP: &str = "ip link set lo up && hostname \"$1\" && mount --bind \"$2\" /etc/hosts && shift 2 && exec \"$@\"";

/// `program` (its arguments to be added) as a pod named `host_name` resolving names with
/// `hosts`.
pub fn pod_command(host_name: &str, hosts: &Path, program: &Path) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--uts", "--mount", "--net", "--", "sh", "-c", POD_SETUP, "pod",
    ])
    .arg(host_name)
    .arg(hosts)
    .arg(program);
    cmd
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread inside the network namespace of a process; it ends when this is dropped.
pub struct Netns {
    jobs: mpsc::Sender<Job>,
}

impl Netns {
    /// Joins the network namespace of process `pid` (which has made its own already).
    pub fn of(pid: u32) -> Arc<Netns> {
        let file = File::open(format!("/proc/{pid}/ns/net")).expect("the process's namespace");
        let (jobs, queue) = mpsc::channel::<Job>();
        let (joined, result) = mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a namespace file we hold open.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let _ = joined.send((rc == 0).then_some(()).ok_or_else(io::Error::last_os_error));
            for job in queue {
                job();
            }
        });
        result
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("setns into process {pid}'s network (root needed): {e}"));
        Arc::new(Netns { jobs })
    }

    /// Runs `f` on the thread inside the namespace.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = mpsc::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(f());
            }))
            .unwrap();
        result.recv().unwrap()
    }

    /// A TCP connection to `addr`, made inside the namespace.
    pub fn dial(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.within(move || TcpStream::connect(addr))
    }

    /// A listener on `addr`, inside the namespace.
    pub fn listen(&self, addr: SocketAddr) -> TcpListener {
        self.within(move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("listen on {addr} in the namespace: {e}"))
    }
}

/// Where a relay dials: an address in a namespace, or (`None`) in the test's own.
pub type Target = (Option<Arc<Netns>>, SocketAddr);

/// A connection to `target`, made where it lives.
pub async fn dial(target: &Target) -> io::Result<tokio::net::TcpStream> {
    let (ns, addr) = (target.0.clone(), target.1);
    let std = tokio::task::spawn_blocking(move || match ns {
        Some(ns) => ns.dial(addr),
        None => TcpStream::connect(addr),
    })
    .await
    .unwrap()?;
    std.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std)
}

/// Relays every connection `listener` accepts to the next of `targets` in turn (one target:
/// a plain forwarder; several: a round-robin TCP balancer). Runs on the current runtime
/// until the runtime ends.
pub fn relay(listener: TcpListener, targets: Vec<Target>) {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let targets = Arc::new(targets);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let i = next.fetch_add(1, Ordering::Relaxed) % targets.len();
            let targets = Arc::clone(&targets);
            tokio::spawn(async move {
                if let Ok(mut server) = dial(&targets[i]).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
}
