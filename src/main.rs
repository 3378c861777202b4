//! The `pgt-proxy` binary; everything it does is in [`pgt_proxy::daemon`].

fn main() -> std::process::ExitCode {
    pgt_proxy::daemon::main()
}
