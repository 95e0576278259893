//! The cgroup v2 device filter: a BPF_PROG_TYPE_CGROUP_DEVICE program built
//! from `linux.resources.devices`, as crun's ebpf.c and runc's devicefilter
//! do. cgroup v2 has no devices.allow/deny files: this program is the only
//! thing standing between a container and mknod/open of host block devices.
//!
//! OCI rules are evaluated in order and the last matching rule wins, so the
//! program tests them in reverse and returns at the first match; nothing
//! matching means deny.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::CgroupError;

/// One BPF instruction, as the kernel lays it out (struct bpf_insn).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// bpf_cgroup_dev_ctx.access_type: device type in the low 16 bits.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
/// ... and the access in the high 16 bits.
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |a, c| match c {
        'm' => a | ACC_MKNOD,
        'r' => a | ACC_READ,
        'w' => a | ACC_WRITE,
        _ => a,
    })
}

/// Registers: r2 = type, r3 = access, r4 = major, r5 = minor.
pub fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let mut checks: Vec<Insn> = Vec::new();
        let typ = match rule.typ() {
            Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
            // A FIFO can always be created; the kernel never asks about it.
            Some(LinuxDeviceType::P) => continue,
            _ => None,
        };
        if let Some(t) = typ {
            checks.push(insn(JNE_K, 2, 0, 0, t));
        }
        let access = access_bits(rule.access().as_deref().unwrap_or("rwm"));
        if access != ACC_MKNOD | ACC_READ | ACC_WRITE {
            // Every requested access must be in the rule: r1 = r3 & ~rule.
            checks.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
            checks.push(insn(ALU32_AND_K, 1, 0, 0, !access & 0x7));
            checks.push(insn(JNE_K, 1, 0, 0, 0));
        }
        if let Some(major) = rule.major().filter(|m| *m >= 0) {
            checks.push(insn(JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor().filter(|m| *m >= 0) {
            checks.push(insn(JNE_K, 5, 0, 0, minor as i32));
        }
        // Each JNE jumps past the rest of this rule: the remaining checks
        // plus the two instructions of the verdict.
        let n = checks.len();
        for (i, c) in checks.iter_mut().enumerate() {
            if c.code == JNE_K {
                c.off = (n - i - 1 + 2) as i16;
            }
        }
        p.extend(checks);
        p.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow())));
        p.push(insn(EXIT, 0, 0, 0, 0));
        // A rule that matches everything decides every case: the verifier
        // rejects the unreachable code that would follow it.
        if n == 0 {
            return p;
        }
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the
    // size we pass.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads the filter for `rules` and attaches it to the cgroup at `dir`,
/// then detaches `previous` (the filter of an earlier Update), so there is
/// no moment without a filter. Returns the new program's fd.
pub fn attach(dir: &Path, rules: &[LinuxDeviceCgroup], previous: Option<&OwnedFd>) -> Result<OwnedFd, CgroupError> {
    let err = |action| move |source| CgroupError::Io { path: dir.to_path_buf(), action, source };
    let insns = program(rules);
    let license = b"Apache\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    let prog = match bpf(BPF_PROG_LOAD, &mut load) {
        // SAFETY: the kernel returned a new fd.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as i32) },
        Err(e) => {
            let verifier = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)]).trim().to_string();
            return Err(CgroupError::DeviceFilter { path: dir.to_path_buf(), message: format!("{e}; verifier: {verifier}") });
        }
    };
    let cgroup = std::fs::File::open(dir).map_err(err("open"))?;
    let mut attach = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attach).map_err(err("attach device filter"))?;
    if let Some(old) = previous {
        let mut detach = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: old.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        bpf(BPF_PROG_DETACH, &mut detach).map_err(err("detach old device filter"))?;
    }
    Ok(prog)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    /// Runs the subset of eBPF the generator emits, as the kernel would.
    fn run(p: &[Insn], typ: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access as u32) << 16) | typ as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = ctx[(i.off / 4) as usize] as u64,
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                ALU32_MOV_X => r[dst] = r[src] as u32 as u64,
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn rule(allow: bool, typ: Option<LinuxDeviceType>, major: Option<i64>, minor: Option<i64>, access: &str) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).access(access);
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    #[test]
    fn containerd_default_rules() {
        // ctr's default: deny everything, then allow the usual char devices.
        let c = Some(LinuxDeviceType::C);
        let rules = vec![
            rule(false, None, None, None, "rwm"),
            rule(true, c, Some(1), Some(3), "rwm"),
            rule(true, c, Some(136), None, "rwm"),
            rule(true, c, Some(5), Some(0), "rw"),
        ];
        let p = program(&rules);
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(run(&p, DEV_CHAR, rw, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 1, 3), 1, "mknod /dev/null");
        assert_eq!(run(&p, DEV_CHAR, rw, 136, 7), 1, "any pty");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 5, 0), 1, "read /dev/tty");
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 5, 0), 0, "mknod /dev/tty is not in rw");
        assert_eq!(run(&p, DEV_BLOCK, ACC_MKNOD, 8, 0), 0, "mknod a host disk");
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 0, "open a host disk");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 1), 0, "/dev/mem");
    }

    #[test]
    fn last_match_wins_and_empty_denies() {
        let rules = vec![rule(true, None, None, None, "rwm"), rule(false, Some(LinuxDeviceType::B), Some(8), None, "rwm")];
        let p = program(&rules);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 1), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 9, 1), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 4, 1), 1);
        assert_eq!(run(&program(&[]), DEV_CHAR, ACC_READ, 1, 3), 0);
    }
}
