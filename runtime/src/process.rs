//! The last steps before execve: limits, identity, capabilities,
//! no_new_privs, working directory and the program itself.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use oci_spec::runtime::{PosixRlimitType, Process};

use crate::caps::{self, CapSets, CapsError};
use crate::syscall::Syscall;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("set rlimit {name}: {errno}")]
    Rlimit { name: String, errno: Errno },
    #[error("{step} {id}: {errno}")]
    Identity { step: &'static str, id: String, errno: Errno },
    #[error("capabilities: {0}")]
    Caps(#[from] CapsError),
    #[error("set no_new_privs: {0}")]
    NoNewPrivs(Errno),
    #[error("working directory {path}: {errno}")]
    Cwd { path: PathBuf, errno: Errno },
    #[error("working directory {path} resolves outside the container ({resolved})")]
    CwdOutside { path: PathBuf, resolved: PathBuf },
    #[error("executable file not found in $PATH: {name:?}")]
    NotFound { name: String },
    #[error("exec {path}: {reason}")]
    NotExecutable { path: PathBuf, reason: String },
    #[error("invalid argument or environment string: {0}")]
    Nul(String),
    #[error("{0}")]
    Scheduling(String),
}

fn rlimit_resource(t: PosixRlimitType) -> u32 {
    use PosixRlimitType::*;
    (match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }) as u32
}

pub fn set_rlimits(sys: &dyn Syscall, process: &Process) -> Result<(), ProcessError> {
    for r in process.rlimits().iter().flatten() {
        sys.setrlimit(rlimit_resource(r.typ()), r.soft(), r.hard())
            .map_err(|errno| ProcessError::Rlimit { name: r.typ().to_string(), errno })?;
    }
    Ok(())
}

/// `process.scheduler` (sched_setattr(2)) and `process.ioPriority`
/// (ioprio_set(2)). Real-time classes need CAP_SYS_NICE or CAP_SYS_ADMIN,
/// so this runs before the capabilities are dropped.
pub fn set_scheduling(process: &Process) -> Result<(), ProcessError> {
    use oci_spec::runtime::{IOPriorityClass, LinuxSchedulerFlag, LinuxSchedulerPolicy};
    if let Some(s) = process.scheduler() {
        let policy = match s.policy() {
            LinuxSchedulerPolicy::SchedOther => 0,
            LinuxSchedulerPolicy::SchedFifo => 1,
            LinuxSchedulerPolicy::SchedRr => 2,
            LinuxSchedulerPolicy::SchedBatch => 3,
            LinuxSchedulerPolicy::SchedIdle => 5,
            LinuxSchedulerPolicy::SchedDeadline => 6,
            LinuxSchedulerPolicy::SchedIso => return Err(ProcessError::Scheduling("SCHED_ISO is not a Linux policy".into())),
        };
        let flags = s.flags().iter().flatten().fold(0u64, |f, flag| {
            f | match flag {
                LinuxSchedulerFlag::SchedResetOnFork => 0x01,
                LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
                LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
                LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
                LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
                LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
                LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
            }
        });
        #[repr(C)]
        struct SchedAttr {
            size: u32,
            policy: u32,
            flags: u64,
            nice: i32,
            priority: u32,
            runtime: u64,
            deadline: u64,
            period: u64,
        }
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy,
            flags,
            nice: s.nice().unwrap_or(0),
            priority: s.priority().unwrap_or(0) as u32,
            runtime: s.runtime().unwrap_or(0),
            deadline: s.deadline().unwrap_or(0),
            period: s.period().unwrap_or(0),
        };
        // SAFETY: attr is a valid sched_attr for the call.
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        Errno::result(r).map_err(|e| ProcessError::Scheduling(format!("sched_setattr {:?}: {e}", s.policy())))?;
    }
    if let Some(io) = process.io_priority() {
        let class: i64 = match io.class() {
            IOPriorityClass::IoprioClassRt => 1,
            IOPriorityClass::IoprioClassBe => 2,
            IOPriorityClass::IoprioClassIdle => 3,
        };
        const IOPRIO_WHO_PROCESS: i64 = 1;
        // SAFETY: ioprio_set with integer arguments.
        let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, (class << 13) | io.priority()) };
        Errno::result(r).map_err(|e| ProcessError::Scheduling(format!("ioprio_set {:?} {}: {e}", io.class(), io.priority())))?;
    }
    Ok(())
}

/// `linux.personality`: LINUX or LINUX32 (what `uname -m` reports in the
/// container). runc ignores the flags too.
pub fn set_personality(personality: Option<&oci_spec::runtime::LinuxPersonality>) -> Result<(), ProcessError> {
    use oci_spec::runtime::LinuxPersonalityDomain;
    let Some(p) = personality else { return Ok(()) };
    let domain: libc::c_ulong = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality(2) with a plain domain.
    let r = unsafe { libc::personality(domain) };
    Errno::result(r).map(drop).map_err(|e| ProcessError::Scheduling(format!("personality {:?}: {e}", p.domain())))
}

/// Switches to the container's user and capability sets, in the order the
/// kernel requires:
/// 1. drop the bounding set while we still hold CAP_SETPCAP;
/// 2. keep capabilities across setuid (PR_SET_KEEPCAPS), or a non-root
///    user would lose the permitted set the spec grants;
/// 3. groups, then gid, then uid: after setuid, setgid is no longer allowed;
/// 4. set effective, permitted and inheritable, then raise ambient.
pub fn switch_identity(sys: &dyn Syscall, process: &Process, setgroups_allowed: bool) -> Result<(), ProcessError> {
    let sets = CapSets::from_spec(process.capabilities().as_ref())?;
    caps::drop_bounding(sys, &sets)?;
    let user = process.user();
    let id_err = |step, id: u32| move |errno| ProcessError::Identity { step, id: id.to_string(), errno };
    sys.prctl(libc::PR_SET_KEEPCAPS, 1, 0).map_err(id_err("keep capabilities for", user.uid()))?;
    if setgroups_allowed {
        let gids = user.additional_gids().clone().unwrap_or_default();
        sys.setgroups(&gids).map_err(|errno| ProcessError::Identity { step: "set additional groups", id: format!("{gids:?}"), errno })?;
    }
    sys.setresgid(user.gid()).map_err(id_err("set gid", user.gid()))?;
    sys.setresuid(user.uid()).map_err(id_err("set uid", user.uid()))?;
    sys.prctl(libc::PR_SET_KEEPCAPS, 0, 0).map_err(id_err("clear keep capabilities for", user.uid()))?;
    caps::apply(sys, &sets)?;
    Ok(())
}

pub fn set_no_new_privs(sys: &dyn Syscall, process: &Process) -> Result<(), ProcessError> {
    if process.no_new_privileges().unwrap_or(false) {
        sys.prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(ProcessError::NoNewPrivs)?;
    }
    Ok(())
}

/// Enters the working directory, creating it as runc does when the image
/// lacks it.
pub fn enter_cwd(sys: &dyn Syscall, process: &Process) -> Result<(), ProcessError> {
    let cwd = process.cwd();
    let err = |errno| ProcessError::Cwd { path: cwd.clone(), errno };
    match sys.chdir(cwd) {
        Err(Errno::ENOENT) => {
            std::fs::create_dir_all(cwd).map_err(|e| err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
            sys.chdir(cwd).map_err(err)?;
        }
        r => r.map_err(err)?,
    }
    // CVE-2024-21626: a cwd such as /proc/self/fd/N could resolve to a
    // directory outside the container's root through an fd that leaked in.
    // getcwd(2) marks such a directory "(unreachable)"; refuse it.
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() => Ok(()),
        Ok(p) => Err(ProcessError::CwdOutside { path: cwd.clone(), resolved: p }),
        Err(errno) => Err(err(errno)),
    }
}

/// The container's PATH. Without one, a bare name is not found, as under
/// runc (Go's LookPath on an empty PATH).
fn env_path(env: &[String]) -> &str {
    env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("")
}

fn check_executable(path: &Path) -> Result<(), ProcessError> {
    let meta = std::fs::metadata(path).map_err(|e| ProcessError::NotExecutable { path: path.into(), reason: e.to_string() })?;
    if meta.is_dir() {
        return Err(ProcessError::NotExecutable { path: path.into(), reason: "is a directory".into() });
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
        .map_err(|e| ProcessError::NotExecutable { path: path.into(), reason: e.desc().to_lowercase() })
}

/// Resolves `args[0]` in the container, through the container's PATH, so a
/// missing binary fails Create rather than the exec after Start.
pub fn resolve_program(process: &Process) -> Result<PathBuf, ProcessError> {
    let arg0 = process.args().as_ref().and_then(|a| a.first()).cloned().unwrap_or_default();
    if arg0.contains('/') {
        let p = PathBuf::from(&arg0);
        check_executable(&p)?;
        return Ok(p);
    }
    let env = process.env().clone().unwrap_or_default();
    for dir in env_path(&env).split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(&arg0);
        if check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(ProcessError::NotFound { name: arg0 })
}

fn cstrings(v: &[String]) -> Result<Vec<CString>, ProcessError> {
    v.iter().map(|s| CString::new(s.as_bytes()).map_err(|_| ProcessError::Nul(s.clone()))).collect()
}

/// Arguments for execve, prepared before anything is dropped so the final
/// step allocates nothing.
pub struct ExecArgs {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

/// The home directory of `uid` in the container's /etc/passwd, or `/`.
fn home_of(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() > 5 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| "/".into())
}

impl ExecArgs {
    /// Built after pivot_root, so `HOME` comes from the container's
    /// /etc/passwd when the spec does not set it, as runc does.
    pub fn new(program: &Path, process: &Process) -> Result<ExecArgs, ProcessError> {
        let mut env = process.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", home_of(process.user().uid())));
        }
        Ok(ExecArgs {
            path: CString::new(program.as_os_str().as_bytes()).map_err(|_| ProcessError::Nul(program.display().to_string()))?,
            argv: cstrings(process.args().as_deref().unwrap_or_default())?,
            envp: cstrings(&env)?,
        })
    }

    /// Marks every fd above stderr close-on-exec. The very last step before
    /// execve (and before a no_new_privs seccomp filter, which might deny
    /// close_range): CVE-2024-21626, no fd of ours (the bundle, the host
    /// root, the sync socket) may survive into the container.
    pub fn close_fds() {
        // SAFETY: plain syscall on integer arguments.
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    }

    /// Executes the program. Returns only on failure.
    pub fn exec(&self) -> Errno {
        match nix::unistd::execve(&self.path, &self.argv, &self.envp) {
            Err(e) => e,
            Ok(never) => match never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::Recorder;
    use oci_spec::runtime::{LinuxCapabilitiesBuilder, ProcessBuilder, UserBuilder};

    #[test]
    fn identity_order_drops_bounding_before_setuid_and_capset_after() {
        let caps: oci_spec::runtime::Capabilities = [oci_spec::runtime::Capability::Kill].into_iter().collect();
        let process = ProcessBuilder::default()
            .user(UserBuilder::default().uid(1000u32).gid(1000u32).additional_gids(vec![5u32]).build().unwrap())
            .capabilities(
                LinuxCapabilitiesBuilder::default()
                    .bounding(caps.clone())
                    .effective(caps.clone())
                    .permitted(caps.clone())
                    .inheritable(caps.clone())
                    .ambient(caps)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let rec = Recorder::default();
        switch_identity(&rec, &process, true).unwrap();
        let calls = rec.calls();
        let pos = |needle: &str| calls.iter().position(|c| c.starts_with(needle)).unwrap_or_else(|| panic!("{needle} missing: {calls:#?}"));
        let last_drop = calls.iter().rposition(|c| c.starts_with(&format!("prctl {} ", libc::PR_CAPBSET_DROP))).unwrap();
        assert!(last_drop < pos("setresuid"));
        assert!(pos(&format!("prctl {} 1", libc::PR_SET_KEEPCAPS)) < pos("setresuid"));
        assert!(pos("setgroups [5]") < pos("setresgid 1000"));
        assert!(pos("setresgid 1000") < pos("setresuid 1000"));
        assert!(pos("setresuid 1000") < pos("capset e=0x20 p=0x20 i=0x20"));
        // PR_CAP_AMBIENT_RAISE takes the capability as the third argument.
        assert!(pos("capset") < pos(&format!("prctl {} {} 5", libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE)));
        // CAP_KILL (5) stays in the bounding set.
        assert!(!calls.contains(&format!("prctl {} 5", libc::PR_CAPBSET_DROP)));
    }

    /// Applies a scheduler and an io priority in a forked child (they are
    /// per-process) and reads them back there. Needs nothing but Linux:
    /// SCHED_BATCH, a higher nice and the best-effort class are unprivileged.
    #[test]
    fn scheduler_and_io_priority_are_applied() {
        use oci_spec::runtime::{IOPriorityClass, LinuxIOPriorityBuilder, LinuxSchedulerPolicy, SchedulerBuilder};
        let process = ProcessBuilder::default()
            .scheduler(SchedulerBuilder::default().policy(LinuxSchedulerPolicy::SchedBatch).nice(7).build().unwrap())
            .io_priority(LinuxIOPriorityBuilder::default().class(IOPriorityClass::IoprioClassBe).priority(5).build().unwrap())
            .build()
            .unwrap();
        // SAFETY: the child only makes syscalls and exits with _exit.
        match unsafe { libc::fork() } {
            0 => {
                let ok = set_scheduling(&process).is_ok()
                    && unsafe { libc::sched_getscheduler(0) } == libc::SCHED_BATCH
                    && unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } == 7
                    && unsafe { libc::syscall(libc::SYS_ioprio_get, 1, 0) } == (2 << 13) | 5;
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            pid => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child saw other settings");
            }
        }
    }

    #[test]
    fn missing_program_is_named() {
        let process = ProcessBuilder::default().args(vec!["no-such-program-xyz".to_string()]).env(vec!["PATH=/nonexistent".to_string()]).build().unwrap();
        let err = resolve_program(&process).unwrap_err().to_string();
        assert!(err.contains("no-such-program-xyz"), "{err}");
        let process = ProcessBuilder::default().args(vec!["/no/such/binary".to_string()]).build().unwrap();
        let err = resolve_program(&process).unwrap_err().to_string();
        assert!(err.contains("/no/such/binary"), "{err}");
    }
}
