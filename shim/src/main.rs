//! containerd-shim-rust-v2: see lib.rs for the process roles.

fn main() {
    containerd_shim_rust_v2::main()
}
