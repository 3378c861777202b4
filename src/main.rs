//! The `pgt-proxy` binary; everything it does is in [`pgt_proxy::app`].

fn main() -> std::process::ExitCode {
    pgt_proxy::app::main()
}
