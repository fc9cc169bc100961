//! The device allow list (issue 13, row 10): which device nodes processes
//! in a container may open, whatever nodes they manage to make or mount.
//! cgroup v1: `devices.deny` `a`, then `devices.allow` per rule, as LXC
//! writes them. cgroup v2 has no devices file: a `BPF_PROG_TYPE_CGROUP_DEVICE`
//! program, generated here from the same rules (as crun and runc do), is
//! attached to the container's cgroup with `BPF_F_ALLOW_MULTI`, so an init
//! inside (systemd) may narrow it further but never widen it.
#![forbid(unsafe_code)]

use std::fmt;
use std::os::fd::AsFd;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys;

/// Block or character device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `b`
    Block,
    /// `c`
    Char,
}

/// One allow rule: kind, major and minor (`None` is `*`), and access
/// (`r`, `w`, `m` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Device kind.
    pub kind: Kind,
    /// Major number, or any.
    pub major: Option<u32>,
    /// Minor number, or any.
    pub minor: Option<u32>,
    /// `MKNOD | READ | WRITE` bits.
    pub access: u32,
}

/// Access bits, as `BPF_DEVCG_ACC_*`.
pub const MKNOD: u32 = 1;
/// Read.
pub const READ: u32 = 2;
/// Write.
pub const WRITE: u32 = 4;
const RWM: u32 = MKNOD | READ | WRITE;

const fn node(major: u32, minor: u32) -> Rule {
    Rule {
        kind: Kind::Char,
        major: Some(major),
        minor: Some(minor),
        access: RWM,
    }
}

/// The default list, LXC's: any node may be made (`mknod`), and only these
/// opened: null, zero, full, random, urandom, tty, console, ptmx, the
/// container's own ptys (136:*) and fuse. A node for the host's disks or
/// `/dev/kmsg`, made with mknod or found in a devtmpfs, cannot be opened.
pub const DEFAULT_RULES: [Rule; 12] = [
    Rule {
        kind: Kind::Char,
        major: None,
        minor: None,
        access: MKNOD,
    },
    Rule {
        kind: Kind::Block,
        major: None,
        minor: None,
        access: MKNOD,
    },
    node(1, 3),
    node(1, 5),
    node(1, 7),
    node(1, 8),
    node(1, 9),
    node(5, 0),
    node(5, 1),
    node(5, 2),
    Rule {
        kind: Kind::Char,
        major: Some(136),
        minor: None,
        access: RWM,
    },
    node(10, 229),
];

impl fmt::Display for Rule {
    /// The v1 `devices.allow` line: `c 1:3 rwm`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = |n: Option<u32>| n.map_or("*".to_owned(), |n| n.to_string());
        let mut acc = String::new();
        for (bit, ch) in [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(ch);
            }
        }
        let k = match self.kind {
            Kind::Block => 'b',
            Kind::Char => 'c',
        };
        write!(f, "{k} {}:{} {acc}", num(self.major), num(self.minor))
    }
}

/// v1: deny everything, then allow each rule, in the container's
/// `devices` directory.
///
/// # Errors
/// [`Error::Cgroup`] naming the file.
pub fn apply_v1(dir: &Path, rules: &[Rule]) -> Result<()> {
    let write = |file: &str, line: &str| {
        let p = dir.join(file);
        std::fs::write(&p, line).map_err(|source| Error::Cgroup {
            op: format!("write {line:?} to"),
            path: p,
            source,
        })
    };
    write("devices.deny", "a")?;
    for r in rules {
        write("devices.allow", &r.to_string())?;
    }
    Ok(())
}

/// v2: load the rules as a cgroup device program and attach it to `dir`.
///
/// # Errors
/// [`Error::Read`] opening the directory, [`Error::Syscall`] for `bpf(2)`
/// (the kernel's verifier log is in the message).
pub fn apply_v2(dir: &Path, rules: &[Rule]) -> Result<()> {
    let cg = std::fs::File::open(dir).map_err(|source| Error::Read {
        path: dir.to_owned(),
        source,
    })?;
    let prog = program(rules);
    let code: Vec<[u8; 8]> = prog.iter().map(Insn::encode).collect();
    let (fd, log) = sys::bpf_prog_load_cgroup_device(&code, "GPL");
    let fd = fd.map_err(|e| {
        Error::sys(
            format!(
                "bpf(BPF_PROG_LOAD, BPF_PROG_TYPE_CGROUP_DEVICE){}",
                if log.is_empty() {
                    String::new()
                } else {
                    format!(": {log}")
                }
            ),
            e,
        )
    })?;
    sys::bpf_prog_attach_cgroup_device(cg.as_fd(), fd.as_fd()).map_err(|e| {
        Error::sys(
            format!(
                "bpf(BPF_PROG_ATTACH, {}, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)",
                dir.display()
            ),
            e,
        )
    })
}

/// eBPF opcodes used below (linux/bpf_common.h, linux/bpf.h).
mod op {
    /// `r_dst = *(u32 *)(r_src + off)`
    pub const LDX_W: u8 = 0x61;
    /// `r_dst &= imm`
    pub const AND_K: u8 = 0x57;
    /// `r_dst >>= imm`
    pub const RSH_K: u8 = 0x77;
    /// `r_dst = imm`
    pub const MOV_K: u8 = 0xb7;
    /// `r_dst = r_src`
    pub const MOV_X: u8 = 0xbf;
    /// `if r_dst != imm goto pc + off`
    pub const JNE_K: u8 = 0x55;
    /// `return r0`
    pub const EXIT: u8 = 0x95;
}

/// One instruction, as the kernel's `struct bpf_insn` (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register.
    pub dst: u8,
    /// Source register.
    pub src: u8,
    /// Jump or memory offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// The kernel's encoding.
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

/// The program for `rules`: the context (`struct bpf_cgroup_dev_ctx`:
/// `access_type = access << 16 | type`, `major`, `minor`) is unpacked into
/// r2 (type), r3 (access), r4 (major) and r5 (minor); each rule is a block
/// that jumps to the next on any mismatch and returns 1 (allow) at its
/// end; falling off the last returns 0 (deny).
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        Insn::new(op::LDX_W, 2, 1, 0, 0),
        Insn::new(op::AND_K, 2, 0, 0, 0xffff),
        Insn::new(op::LDX_W, 3, 1, 0, 0),
        Insn::new(op::RSH_K, 3, 0, 0, 16),
        Insn::new(op::LDX_W, 4, 1, 4, 0),
        Insn::new(op::LDX_W, 5, 1, 8, 0),
    ];
    for r in rules {
        // Jumps are written with off = -1 and fixed to skip the rest of
        // the block once its length is known.
        let mut b = Vec::new();
        let ty = match r.kind {
            Kind::Block => 1,
            Kind::Char => 2,
        };
        b.push(Insn::new(op::JNE_K, 2, 0, -1, ty));
        if r.access != RWM {
            // Any requested bit outside the rule's: no match.
            b.push(Insn::new(op::MOV_X, 0, 3, 0, 0));
            b.push(Insn::new(op::AND_K, 0, 0, 0, (!r.access & RWM) as i32));
            b.push(Insn::new(op::JNE_K, 0, 0, -1, 0));
        }
        if let Some(m) = r.major {
            b.push(Insn::new(op::JNE_K, 4, 0, -1, m as i32));
        }
        if let Some(m) = r.minor {
            b.push(Insn::new(op::JNE_K, 5, 0, -1, m as i32));
        }
        b.push(Insn::new(op::MOV_K, 0, 0, 0, 1));
        b.push(Insn::new(op::EXIT, 0, 0, 0, 0));
        let len = b.len();
        for (i, insn) in b.iter_mut().enumerate() {
            if insn.code == op::JNE_K && insn.off == -1 {
                insn.off = (len - i - 1) as i16;
            }
        }
        p.extend(b);
    }
    p.push(Insn::new(op::MOV_K, 0, 0, 0, 0));
    p.push(Insn::new(op::EXIT, 0, 0, 0, 0));
    p
}

/// What the program decides, computed on the rules directly: the model the
/// unit tests check the generated code against.
pub fn allows(rules: &[Rule], kind: Kind, major: u32, minor: u32, access: u32) -> bool {
    rules.iter().any(|r| {
        r.kind == kind
            && access & !r.access == 0
            && r.major.is_none_or(|m| m == major)
            && r.minor.is_none_or(|m| m == minor)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the few opcodes `program` emits.
    fn run(prog: &[Insn], ty: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | ty, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                op::LDX_W => {
                    assert_eq!(i.src, 1);
                    r[i.dst as usize] = u64::from(ctx[i.off as usize / 4]);
                }
                op::AND_K => r[i.dst as usize] &= i.imm as i64 as u64,
                op::RSH_K => r[i.dst as usize] >>= i.imm,
                op::MOV_K => r[i.dst as usize] = i.imm as i64 as u64,
                op::MOV_X => r[i.dst as usize] = r[i.src as usize],
                op::JNE_K => {
                    if r[i.dst as usize] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                op::EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn the_program_decides_as_the_rules_do() {
        let p = program(&DEFAULT_RULES);
        for (kind, ty) in [(Kind::Char, 2), (Kind::Block, 1)] {
            for (major, minor) in [(1, 3), (1, 11), (5, 2), (136, 7), (8, 0), (10, 229), (4, 1)] {
                for access in [MKNOD, READ, WRITE, READ | WRITE, RWM] {
                    let want = allows(&DEFAULT_RULES, kind, major, minor, access);
                    assert_eq!(
                        run(&p, ty, access, major, minor) == 1,
                        want,
                        "{kind:?} {major}:{minor} access {access}"
                    );
                }
            }
        }
        // The decisions that matter.
        assert!(allows(&DEFAULT_RULES, Kind::Char, 1, 3, READ | WRITE));
        assert!(allows(&DEFAULT_RULES, Kind::Block, 8, 0, MKNOD));
        assert!(!allows(&DEFAULT_RULES, Kind::Block, 8, 0, READ));
        assert!(!allows(&DEFAULT_RULES, Kind::Char, 1, 11, READ));
        assert_eq!(DEFAULT_RULES[2].to_string(), "c 1:3 rwm");
        assert_eq!(DEFAULT_RULES[1].to_string(), "b *:* m");
        assert_eq!(
            Insn::new(op::LDX_W, 4, 1, 4, 0).encode(),
            [0x61, 0x14, 4, 0, 0, 0, 0, 0]
        );
    }
}
