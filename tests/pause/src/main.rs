//! The pause process: PID 1 of a pod sandbox. It holds the pod's namespaces,
//! reaps orphans the pod's containers leave it, and exits on SIGINT or
//! SIGTERM. Built statically (`-C target-feature=+crt-static`) so the pause
//! image needs nothing but this file.

extern "C" fn terminate(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) };
}

extern "C" fn reap(_: libc::c_int) {
    // SAFETY: waitpid is async-signal-safe.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

fn on(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: installing a handler that only calls async-signal-safe
    // functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(signal, &sa, std::ptr::null_mut());
    }
}

fn main() {
    if std::process::id() != 1 {
        eprintln!("pause: warning: not running as PID 1");
    }
    on(libc::SIGINT, terminate);
    on(libc::SIGTERM, terminate);
    on(libc::SIGCHLD, reap);
    loop {
        // SAFETY: pause(2) only waits for a signal.
        unsafe { libc::pause() };
    }
}
