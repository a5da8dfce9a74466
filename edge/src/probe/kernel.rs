//! What this kernel can do for the programs, found by trying: each feature is probed by
//! loading a tiny program or map (or asking for a link the kernel then refuses for a reason
//! that shows it knows the kind), never by the version number alone — distributions
//! backport. A missing feature the programs cannot do without stops the agent with one line
//! naming it and the Linux version that brought it (exit 2), before a verifier log could.

use crate::{probe::bpf::sys_bpf, UsageError};
use std::os::fd::{FromRawFd, OwnedFd};

/// What the kernel offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// BTF objects (Linux 4.18).
    pub btf: bool,
    /// Arrays userspace can mmap (BPF_F_MMAPABLE, 5.5): the agent reads the table as memory.
    pub mmapable_arrays: bool,
    /// BPF_ATOMIC or/xchg/compare-and-exchange (5.12): how programs claim a table slot.
    pub atomics: bool,
    /// Programs with those atomics load with the JIT as it is set: false where the JIT cannot
    /// compile them and the kernel does not fall back to the interpreter (32-bit ARM's JIT
    /// has no atomics; Debian's 6.1 armmp refuses such a program with ENOTSUPP when
    /// `net.core.bpf_jit_enable=1`).
    pub atomics_jit: bool,
    /// TCX links (6.6); without, TC programs are clsact filters set through netlink.
    pub tcx: bool,
    /// XDP links (5.9); without, the XDP program is set through netlink.
    pub xdp_link: bool,
}

/// A feature the programs need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needed {
    Btf,
    MmapableArrays,
    Atomics,
    /// The JIT is on and cannot compile the atomics: not a kernel version but a setting.
    AtomicsJit,
}

impl Needed {
    /// What the feature is and what the agent needs it for.
    pub fn what(self) -> &'static str {
        match self {
            Needed::Btf => "BTF (the programs' type information)",
            Needed::MmapableArrays => {
                "mmapable BPF arrays (BPF_F_MMAPABLE: the agent reads the flow table as memory)"
            }
            Needed::Atomics | Needed::AtomicsJit => {
                "BPF atomic instructions with compare-and-exchange (BPF_ATOMIC: the programs \
                 claim flow table slots with them)"
            }
        }
    }

    /// The first Linux version that has it.
    pub fn since(self) -> &'static str {
        match self {
            Needed::Btf => "4.18",
            Needed::MmapableArrays => "5.5",
            Needed::Atomics | Needed::AtomicsJit => "5.12",
        }
    }

    /// The one line the agent stops with.
    pub fn message(self, release: &str) -> String {
        if self == Needed::AtomicsJit {
            return format!(
                "this kernel's BPF JIT ({release}, {}) cannot compile BPF atomic instructions \
                 (BPF_ATOMIC: the programs count and claim flow table slots with them) and does \
                 not fall back to the interpreter while it is on: set net.core.bpf_jit_enable=0 \
                 (sysctl -w net.core.bpf_jit_enable=0; the interpreter runs them)",
                std::env::consts::ARCH
            );
        }
        format!(
            "this kernel ({release}) has no {}; edgeflow needs Linux {} or later",
            self.what(),
            self.since()
        )
    }
}

impl Kernel {
    /// The first feature the programs need that is missing.
    pub fn missing(&self) -> Option<Needed> {
        [
            (self.btf, Needed::Btf),
            (self.mmapable_arrays, Needed::MmapableArrays),
            (self.atomics, Needed::Atomics),
            (self.atomics_jit, Needed::AtomicsJit),
        ]
        .into_iter()
        .find(|(has, _)| !has)
        .map(|(_, n)| n)
    }

    /// How the programs hook in here, said in a line when it is not the newest way.
    pub fn fallbacks(&self) -> Option<String> {
        let mut v = Vec::new();
        if !self.tcx {
            v.push("no TCX links (Linux 6.6): TC programs attach as clsact filters");
        }
        if !self.xdp_link {
            v.push("no XDP links (Linux 5.9): XDP attaches through netlink");
        }
        (!v.is_empty()).then(|| v.join("; "))
    }
}

/// Probes the running kernel.
pub fn probe() -> Kernel {
    let atomics = load(PROG_SCHED_CLS, &atomics_prog());
    // ENOTSUPP (524): verified, then refused by the JIT step; an older verifier says EINVAL.
    let jit_refused = matches!(&atomics, Err(e) if e.raw_os_error() == Some(ENOTSUPP));
    Kernel {
        btf: probe_btf(),
        mmapable_arrays: probe_mmapable(),
        atomics: atomics.is_ok() || jit_refused,
        atomics_jit: !jit_refused,
        tcx: probe_link(PROG_SCHED_CLS, BPF_TCX_INGRESS, 0, 0, libc::ENODEV),
        // On loopback, which has no native XDP: a kernel with XDP links looks the device up
        // and refuses the driver mode (nothing is attached); one without refuses the link.
        xdp_link: probe_link(PROG_XDP, BPF_XDP, 1, XDP_FLAGS_DRV_MODE, libc::EOPNOTSUPP),
    }
}

/// [`probe`], then the first missing feature as a usage error (exit 2).
pub fn check() -> Result<Kernel, UsageError> {
    let k = probe();
    match k.missing() {
        None => Ok(k),
        Some(n) => Err(UsageError::Kernel(n.message(&release()))),
    }
}

/// `uname -r`.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The kernel's internal "operation not supported" (not in libc: userspace never should see it).
const ENOTSUPP: i32 = 524;
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_BTF_LOAD: libc::c_long = 18;
const BPF_LINK_CREATE: libc::c_long = 28;
const PROG_SCHED_CLS: u32 = 3;
const PROG_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_TCX_INGRESS: u32 = 46;
const XDP_FLAGS_DRV_MODE: u32 = 4;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const MAP_ARRAY: u32 = 2;

/// One instruction: opcode, registers (dst low nibble, src high), offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut i = [0u8; 8];
    i[0] = code;
    i[1] = dst | (src << 4);
    i[2..4].copy_from_slice(&off.to_ne_bytes());
    i[4..8].copy_from_slice(&imm.to_ne_bytes());
    i
}

/// A program doing on its stack each atomic the flow table's programs use: 64-bit add, or
/// (no fetch), exchange and compare-and-exchange, and their 32-bit forms. Returns 0.
fn atomics_prog() -> Vec<u8> {
    const STX_ATOMIC_DW: u8 = 0xdb;
    const STX_ATOMIC_W: u8 = 0xc3;
    const ADD: i32 = 0x00;
    const OR: i32 = 0x40;
    const XCHG: i32 = 0xe1;
    const CMPXCHG: i32 = 0xf1;
    let mut p = Vec::new();
    p.extend(insn(0xb7, 1, 0, 0, 1)); // r1 = 1
    p.extend(insn(0x7b, 10, 1, -8, 0)); // *(u64 *)(r10 - 8) = r1
    p.extend(insn(0x63, 10, 1, -12, 0)); // *(u32 *)(r10 - 12) = r1
    for (code, off) in [(STX_ATOMIC_DW, -8i16), (STX_ATOMIC_W, -12)] {
        for op in [ADD, OR, XCHG] {
            p.extend(insn(0xb7, 1, 0, 0, 1)); // r1 = 1 (xchg overwrites it)
            p.extend(insn(code, 10, 1, off, op));
        }
        p.extend(insn(0xb7, 0, 0, 0, 1)); // r0 = 1: the expected old value
        p.extend(insn(0xb7, 1, 0, 0, 2));
        p.extend(insn(code, 10, 1, off, CMPXCHG));
    }
    p.extend(insn(0xb7, 0, 0, 0, 0)); // r0 = 0
    p.extend(insn(0x95, 0, 0, 0, 0)); // exit
    p
}

/// `r0 = 0; exit`.
fn trivial_prog() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(insn(0xb7, 0, 0, 0, 0));
    p.extend(insn(0x95, 0, 0, 0, 0));
    p
}

/// BPF_PROG_LOAD of `insns` (GPL, named "edgeflow_probe"): the program's fd.
fn load(prog_type: u32, insns: &[u8]) -> std::io::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut attr = [0u8; 72];
    attr[0..4].copy_from_slice(&prog_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&((insns.len() / 8) as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..62].copy_from_slice(b"edgeflow_probe");
    fd_of(&mut attr, BPF_PROG_LOAD)
}

fn fd_of<const N: usize>(attr: &mut [u8; N], cmd: libc::c_long) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is the command's part of union bpf_attr; its pointers are live.
    let fd = unsafe { sys_bpf(cmd, attr) }?;
    // SAFETY: a new fd of ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn probe_mmapable() -> bool {
    let mut attr = [0u8; 20];
    for (i, w) in [MAP_ARRAY, 4, 8, 1, BPF_F_MMAPABLE].into_iter().enumerate() {
        attr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    fd_of(&mut attr, BPF_MAP_CREATE).is_ok()
}

/// Loads a BTF blob with one type, `int`.
fn probe_btf() -> bool {
    let mut blob = Vec::new();
    for w in [0x0001_eb9f_u32, 24, 0, 16, 16, 5] {
        // magic 0xeb9f, version 1, flags 0 (as one little-endian word), then hdr_len,
        // type_off, type_len, str_off, str_len
        blob.extend(w.to_ne_bytes());
    }
    // BTF_KIND_INT "int": name_off 1, info kind 1, size 4, 32 bits.
    for w in [1u32, 1 << 24, 4, 32] {
        blob.extend(w.to_ne_bytes());
    }
    blob.extend(b"\0int\0");
    let mut attr = [0u8; 28];
    attr[0..8].copy_from_slice(&(blob.as_ptr() as u64).to_ne_bytes());
    attr[16..20].copy_from_slice(&(blob.len() as u32).to_ne_bytes());
    fd_of(&mut attr, BPF_BTF_LOAD).is_ok()
}

/// Asks for a link of `attach_type` that cannot be made (no such interface, or a mode the
/// interface lacks): a kernel that knows the link kind fails with `knows`, one that does not
/// with EINVAL.
fn probe_link(prog_type: u32, attach_type: u32, ifindex: u32, flags: u32, knows: i32) -> bool {
    let Ok(prog) = load(prog_type, &trivial_prog()) else {
        return false;
    };
    use std::os::fd::AsRawFd;
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    attr[8..12].copy_from_slice(&attach_type.to_ne_bytes());
    attr[12..16].copy_from_slice(&flags.to_ne_bytes());
    match fd_of(&mut attr, BPF_LINK_CREATE) {
        // Made after all: it is dropped (detached) at once.
        Ok(_) => true,
        Err(e) => e.raw_os_error() == Some(knows),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Kernel = Kernel {
        btf: true,
        mmapable_arrays: true,
        atomics: true,
        atomics_jit: true,
        tcx: true,
        xdp_link: true,
    };

    #[test]
    fn this_kernel_has_everything() {
        // The test machine runs 6.18.
        assert_eq!(probe(), ALL);
        assert!(check().is_ok());
    }

    /// The probe's loader tells a refused program from a loaded one: an atomic with an
    /// operation no kernel knows is refused (EINVAL) as 5.10 refuses compare-and-exchange.
    #[test]
    fn an_unknown_atomic_fails_the_probe_load() {
        let mut p = Vec::new();
        p.extend(insn(0xb7, 1, 0, 0, 1));
        p.extend(insn(0x7b, 10, 1, -8, 0));
        p.extend(insn(0xdb, 10, 1, -8, 0x7f));
        p.extend(insn(0xb7, 0, 0, 0, 0));
        p.extend(insn(0x95, 0, 0, 0, 0));
        let e = load(PROG_SCHED_CLS, &p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert!(load(PROG_SCHED_CLS, &atomics_prog()).is_ok());
    }

    #[test]
    fn each_missing_feature_is_one_line_with_its_version() {
        let atomics = Kernel {
            atomics: false,
            tcx: false,
            ..ALL
        };
        assert_eq!(atomics.missing(), Some(Needed::Atomics));
        assert_eq!(
            Needed::Atomics.message("5.10.0-32-cloud-amd64"),
            "this kernel (5.10.0-32-cloud-amd64) has no BPF atomic instructions with \
             compare-and-exchange (BPF_ATOMIC: the programs claim flow table slots with them); \
             edgeflow needs Linux 5.12 or later"
        );
        let mmap = Kernel {
            mmapable_arrays: false,
            atomics: false,
            ..ALL
        };
        assert_eq!(mmap.missing(), Some(Needed::MmapableArrays));
        assert!(Needed::MmapableArrays
            .message("5.4.0")
            .ends_with("edgeflow needs Linux 5.5 or later"));
        let btf = Kernel { btf: false, ..ALL };
        assert_eq!(btf.missing(), Some(Needed::Btf));
        assert!(Needed::Btf.message("4.14").contains("Linux 4.18 or later"));
        let jit = Kernel {
            atomics_jit: false,
            ..ALL
        };
        assert_eq!(jit.missing(), Some(Needed::AtomicsJit));
        let m = Needed::AtomicsJit.message("6.1.0-57-armmp");
        assert!(
            m.starts_with("this kernel's BPF JIT (6.1.0-57-armmp, "),
            "{m}"
        );
        assert!(m.contains("set net.core.bpf_jit_enable=0"), "{m}");
        for n in [
            Needed::Btf,
            Needed::MmapableArrays,
            Needed::Atomics,
            Needed::AtomicsJit,
        ] {
            assert!(!n.message("x").contains('\n'));
        }
        assert_eq!(ALL.missing(), None);
    }

    #[test]
    fn fallbacks_are_named() {
        assert_eq!(ALL.fallbacks(), None);
        let old = Kernel { tcx: false, ..ALL };
        assert_eq!(
            old.fallbacks().unwrap(),
            "no TCX links (Linux 6.6): TC programs attach as clsact filters"
        );
    }
}
