//! seccomp: compiling `linux.seccomp` to a classic BPF filter ourselves.
//!
//! Why not libseccomp: it is a C library the shim would have to link and
//! ship, for a job that is a linear list of comparisons. This compiler
//! emits, for the native architecture:
//!
//! ```text
//! arch != native            -> default action
//! nr has the x32 bit        -> default action
//! for each rule, in order:  nr == N && conditions -> rule action
//! otherwise                 -> default action
//! ```
//!
//! Conditions on 64-bit arguments are compared as two 32-bit halves.
//! Several conditions on one argument make one rule each (OR), the others
//! are ANDed, as runc does with libseccomp. Names this kernel table does not
//! know are skipped, as libseccomp-based runtimes do. Unit tests run the
//! output through a BPF interpreter; the conformance tests load containerd's
//! default profile into the kernel.

use std::str::FromStr;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp action {0:?} is not supported (no seccomp notify listener)")]
    Unsupported(LinuxSeccompAction),
    #[error("seccomp rule for {name}: argument index {index} is out of range 0..6")]
    ArgIndex { name: String, index: usize },
    #[error("seccomp filter has {0} instructions, more than the kernel's 4096")]
    TooLong(usize),
    #[error("load seccomp filter: {0}")]
    Load(nix::errno::Errno),
}

/// struct sock_filter.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_lo(i: usize) -> u32 {
    16 + 8 * i as u32
}
const fn off_hi(i: usize) -> u32 {
    20 + 8 * i as u32
}

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

pub const RET_KILL_THREAD: u32 = 0x0000_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

fn ret_value(action: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        // EPERM when the profile names no errno, as libseccomp-based runtimes do.
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | (errno.unwrap_or(libc::EPERM as u32) & 0xffff),
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | (errno.unwrap_or(libc::EPERM as u32) & 0xffff),
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        a @ LinuxSeccompAction::ScmpActNotify => return Err(SeccompError::Unsupported(a)),
    })
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn { code, jt: 0, jf: 0, k }
}

/// A jump target inside one rule's block, resolved once the block is laid out.
#[derive(Clone, Copy)]
enum To {
    Next,
    Fail,
    Skip(u8),
}

struct Jump {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

enum Op {
    Stmt(Insn),
    Jump(Jump),
}

fn jump(code: u16, k: u32, jt: To, jf: To) -> Op {
    Op::Jump(Jump { code, k, jt, jf })
}

/// Code that falls through when the condition holds and jumps to Fail
/// otherwise.
fn condition(a: &LinuxSeccompArg) -> Vec<Op> {
    let i = a.index();
    let (vhi, vlo) = ((a.value() >> 32) as u32, a.value() as u32);
    let ld_hi = Op::Stmt(stmt(LD_W_ABS, off_hi(i)));
    let ld_lo = Op::Stmt(stmt(LD_W_ABS, off_lo(i)));
    match a.op() {
        LinuxSeccompOperator::ScmpCmpEq => vec![ld_hi, jump(JEQ_K, vhi, To::Next, To::Fail), ld_lo, jump(JEQ_K, vlo, To::Next, To::Fail)],
        LinuxSeccompOperator::ScmpCmpNe => vec![ld_hi, jump(JEQ_K, vhi, To::Next, To::Skip(2)), ld_lo, jump(JEQ_K, vlo, To::Fail, To::Next)],
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            // OCI: value is the mask, valueTwo the datum.
            let want = a.value_two().unwrap_or(0);
            let (whi, wlo) = ((want >> 32) as u32, want as u32);
            vec![
                ld_hi,
                Op::Stmt(stmt(AND_K, vhi)),
                jump(JEQ_K, whi, To::Next, To::Fail),
                ld_lo,
                Op::Stmt(stmt(AND_K, vlo)),
                jump(JEQ_K, wlo, To::Next, To::Fail),
            ]
        }
        LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe => {
            let last = if a.op() == LinuxSeccompOperator::ScmpCmpGt { JGT_K } else { JGE_K };
            vec![ld_hi, jump(JGT_K, vhi, To::Skip(3), To::Next), jump(JEQ_K, vhi, To::Next, To::Fail), ld_lo, jump(last, vlo, To::Next, To::Fail)]
        }
        LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe => {
            // arg < v is !(arg >= v); arg <= v is !(arg > v).
            let last = if a.op() == LinuxSeccompOperator::ScmpCmpLt { JGE_K } else { JGT_K };
            vec![ld_hi, jump(JGT_K, vhi, To::Fail, To::Next), jump(JEQ_K, vhi, To::Next, To::Skip(2)), ld_lo, jump(last, vlo, To::Fail, To::Next)]
        }
    }
}

/// One rule: `nr == N && conds -> ret`, as a self-contained block that
/// leaves the syscall number in A when it does not return.
fn rule_block(nr: u32, conds: &[LinuxSeccompArg], ret: u32) -> Vec<Insn> {
    if conds.is_empty() {
        return vec![Insn { code: JEQ_K, jt: 0, jf: 1, k: nr }, stmt(RET_K, ret)];
    }
    let mut body: Vec<Op> = conds.iter().flat_map(condition).collect();
    body.push(Op::Stmt(stmt(RET_K, ret)));
    // Fail lands on the reload of the syscall number, the last instruction.
    body.push(Op::Stmt(stmt(LD_W_ABS, OFF_NR)));
    let fail = body.len() - 1;
    let resolve = |to: To, at: usize| -> u8 {
        match to {
            To::Next => 0,
            To::Skip(n) => n,
            To::Fail => (fail - at - 1) as u8,
        }
    };
    let mut out = vec![Insn { code: JEQ_K, jt: 0, jf: body.len() as u8, k: nr }];
    for (at, op) in body.iter().enumerate() {
        out.push(match op {
            Op::Stmt(i) => *i,
            Op::Jump(j) => Insn { code: j.code, jt: resolve(j.jt, at), jf: resolve(j.jf, at), k: j.k },
        });
    }
    out
}

/// Compiles a profile for the native architecture.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<Insn>, SeccompError> {
    let default = ret_value(profile.default_action(), profile.default_errno_ret())?;
    let mut p = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        Insn { code: JEQ_K, jt: 1, jf: 0, k: NATIVE_ARCH },
        stmt(RET_K, default),
        stmt(LD_W_ABS, OFF_NR),
        Insn { code: JGE_K, jt: 0, jf: 1, k: X32_SYSCALL_BIT },
        stmt(RET_K, default),
    ];
    for rule in profile.syscalls().iter().flatten() {
        let ret = ret_value(rule.action(), rule.errno_ret())?;
        // A rule with the default action changes nothing.
        if ret == default {
            continue;
        }
        let args = rule.args().clone().unwrap_or_default();
        for name in rule.names() {
            let Ok(sysno) = syscalls::Sysno::from_str(name) else {
                log::debug!("seccomp: skip unknown syscall {name}");
                continue;
            };
            if let Some(a) = args.iter().find(|a| a.index() >= 6) {
                return Err(SeccompError::ArgIndex { name: name.clone(), index: a.index() });
            }
            let nr = sysno.id() as u32;
            let shared_index = args.iter().enumerate().any(|(i, a)| args[..i].iter().any(|b| b.index() == a.index()));
            if shared_index {
                for a in &args {
                    p.extend(rule_block(nr, std::slice::from_ref(a), ret));
                }
            } else {
                p.extend(rule_block(nr, &args, ret));
            }
        }
    }
    p.push(stmt(RET_K, default));
    if p.len() > 4096 {
        return Err(SeccompError::TooLong(p.len()));
    }
    Ok(p)
}

/// Installs the filter on the calling thread's process. Needs
/// no_new_privs or CAP_SYS_ADMIN (seccomp(2)).
pub fn load(profile: &LinuxSeccomp, program: &[Insn]) -> Result<(), SeccompError> {
    let mut flags: libc::c_ulong = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    #[repr(C)]
    struct Fprog {
        len: u16,
        filter: *const Insn,
    }
    let prog = Fprog { len: program.len() as u16, filter: program.as_ptr() };
    // SAFETY: prog points at `program`, which outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, flags, &prog as *const Fprog) };
    nix::errno::Errno::result(r).map(drop).map_err(SeccompError::Load)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

    /// Runs a classic BPF seccomp program over a seccomp_data.
    fn run(p: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = vec![0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let word = |off: u32| u32::from_le_bytes(data[off as usize..off as usize + 4].try_into().unwrap());
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => a = word(i.k),
                AND_K => a &= i.k,
                RET_K => return i.k,
                JEQ_K | JGT_K | JGE_K => {
                    let hit = match i.code {
                        JEQ_K => a == i.k,
                        JGT_K => a > i.k,
                        _ => a >= i.k,
                    };
                    pc += if hit { i.jt } else { i.jf } as usize;
                }
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn nr(name: &str) -> u32 {
        syscalls::Sysno::from_str(name).unwrap().id() as u32
    }

    fn arg(index: usize, op: LinuxSeccompOperator, value: u64, two: Option<u64>) -> LinuxSeccompArg {
        let mut b = LinuxSeccompArgBuilder::default().index(index).op(op).value(value);
        if let Some(t) = two {
            b = b.value_two(t);
        }
        b.build().unwrap()
    }

    fn profile(rules: Vec<oci_spec::runtime::LinuxSyscall>) -> LinuxSeccomp {
        LinuxSeccompBuilder::default().default_action(LinuxSeccompAction::ScmpActErrno).syscalls(rules).build().unwrap()
    }

    fn syscall(names: &[&str], action: LinuxSeccompAction, args: Vec<LinuxSeccompArg>) -> oci_spec::runtime::LinuxSyscall {
        LinuxSyscallBuilder::default().names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).action(action).args(args).build().unwrap()
    }

    const EPERM: u32 = RET_ERRNO | 1;

    #[test]
    fn allow_list_with_default_errno() {
        let p = compile(&profile(vec![syscall(&["read", "write", "no_such_syscall"], LinuxSeccompAction::ScmpActAllow, vec![])])).unwrap();
        assert_eq!(run(&p, NATIVE_ARCH, nr("read"), [0; 6]), RET_ALLOW);
        assert_eq!(run(&p, NATIVE_ARCH, nr("write"), [0; 6]), RET_ALLOW);
        assert_eq!(run(&p, NATIVE_ARCH, nr("mount"), [0; 6]), EPERM);
        assert_eq!(run(&p, 0x4000_0003, nr("read"), [0; 6]), EPERM, "another architecture");
        assert_eq!(run(&p, NATIVE_ARCH, X32_SYSCALL_BIT | nr("read"), [0; 6]), EPERM, "x32 syscall");
    }

    #[test]
    fn argument_conditions_compare_all_64_bits() {
        use LinuxSeccompOperator::*;
        let big = 0x1_0000_0005u64;
        let allow = LinuxSeccompAction::ScmpActAllow;
        let p = compile(&profile(vec![
            syscall(&["personality"], allow, vec![arg(0, ScmpCmpEq, 0x0, None)]),
            syscall(&["personality"], allow, vec![arg(0, ScmpCmpEq, big, None)]),
            syscall(&["setns"], allow, vec![arg(1, ScmpCmpMaskedEq, 0x7e02_0000, Some(0))]),
            syscall(&["lseek"], allow, vec![arg(2, ScmpCmpGt, big, None)]),
            syscall(&["pread64"], allow, vec![arg(3, ScmpCmpLe, big, None)]),
            syscall(&["pwrite64"], allow, vec![arg(0, ScmpCmpNe, 7, None), arg(1, ScmpCmpGe, 10, None)]),
        ]))
        .unwrap();
        let at = |name, args| run(&p, NATIVE_ARCH, nr(name), args);
        assert_eq!(at("personality", [0, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(at("personality", [big, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(at("personality", [5, 0, 0, 0, 0, 0]), EPERM, "low half alone must not match");
        assert_eq!(at("setns", [0, 0x0000_0100, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(at("setns", [0, 0x0002_0000, 0, 0, 0, 0]), EPERM, "a namespace flag in the mask");
        assert_eq!(at("lseek", [0, 0, big + 1, 0, 0, 0]), RET_ALLOW);
        assert_eq!(at("lseek", [0, 0, big, 0, 0, 0]), EPERM);
        assert_eq!(at("lseek", [0, 0, 0xffff_ffff, 0, 0, 0]), EPERM, "greater low half, smaller high half");
        assert_eq!(at("pread64", [0, 0, 0, big, 0, 0]), RET_ALLOW);
        assert_eq!(at("pread64", [0, 0, 0, 3, 0, 0]), RET_ALLOW);
        assert_eq!(at("pread64", [0, 0, 0, big + 1, 0, 0]), EPERM);
        assert_eq!(at("pwrite64", [8, 10, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(at("pwrite64", [7, 10, 0, 0, 0, 0]), EPERM);
        assert_eq!(at("pwrite64", [8, 9, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn same_argument_twice_is_either() {
        use LinuxSeccompOperator::*;
        let p = compile(&profile(vec![syscall(
            &["kill"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(1, ScmpCmpEq, 9, None), arg(1, ScmpCmpEq, 15, None)],
        )]))
        .unwrap();
        assert_eq!(run(&p, NATIVE_ARCH, nr("kill"), [0, 9, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, NATIVE_ARCH, nr("kill"), [0, 15, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, NATIVE_ARCH, nr("kill"), [0, 2, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn errno_ret_and_kill_actions() {
        let mut p = profile(vec![
            LinuxSyscallBuilder::default().names(vec!["clone3".to_string()]).action(LinuxSeccompAction::ScmpActErrno).errno_ret(38u32).build().unwrap(),
            syscall(&["getpid"], LinuxSeccompAction::ScmpActAllow, vec![]),
        ]);
        p.set_default_action(LinuxSeccompAction::ScmpActKillProcess);
        let prog = compile(&p).unwrap();
        assert_eq!(run(&prog, NATIVE_ARCH, nr("clone3"), [0; 6]), RET_ERRNO | 38);
        assert_eq!(run(&prog, NATIVE_ARCH, nr("mount"), [0; 6]), RET_KILL_PROCESS);
    }
}
