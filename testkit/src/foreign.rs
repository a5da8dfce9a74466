//! Another tool's BPF programs: tiny pass-through XDP and TC programs under names that are
//! not edgeflow's, pinned in a bpffs of the test's own, so a test can attach them with
//! iproute2 (`tc ... bpf da object-pinned`, `ip link set ... xdpdrv pinned`) beside the
//! agent's and check that the agent leaves them alone. The bpffs is unmounted on drop; the
//! programs go when their interface (in the test's namespace) does.

use std::path::PathBuf;

/// A bpffs mounted by the test, holding `tc` and `xdp` pins.
pub struct Foreign {
    pub dir: PathBuf,
    /// Ids of the two programs.
    pub tc_id: u32,
    pub xdp_id: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const PROG_TYPE_SCHED_CLS: u32 = 3;
const PROG_TYPE_XDP: u32 = 6;

pub const TC_NAME: &str = "foreign_tc";
pub const XDP_NAME: &str = "foreign_xdp";

impl Foreign {
    pub fn new() -> Foreign {
        let dir = std::env::temp_dir().join(crate::unique("efbpffs"));
        std::fs::create_dir(&dir).unwrap();
        crate::sh(&["mount", "-t", "bpf", "bpf", dir.to_str().unwrap()]);
        let mut f = Foreign {
            dir,
            tc_id: 0,
            xdp_id: 0,
        };
        // TC_ACT_UNSPEC (-1): pass on to the next filter; XDP_PASS (2).
        f.tc_id = f.load_and_pin(PROG_TYPE_SCHED_CLS, -1, TC_NAME, "tc");
        f.xdp_id = f.load_and_pin(PROG_TYPE_XDP, 2, XDP_NAME, "xdp");
        f
    }

    pub fn path(&self, which: &str) -> String {
        self.dir.join(which).to_str().unwrap().to_string()
    }

    /// Loads `r0 = ret; exit` as `name`, pins it as `file`; its id.
    fn load_and_pin(&self, prog_type: u32, ret: i32, name: &str, file: &str) -> u32 {
        let mut insns = [0u8; 16];
        insns[0] = 0xb7; // mov64 r0, imm
        insns[4..8].copy_from_slice(&ret.to_ne_bytes());
        insns[8] = 0x95; // exit
        let license = b"GPL\0";
        let mut attr = [0u8; 72];
        attr[0..4].copy_from_slice(&prog_type.to_ne_bytes());
        attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        attr[48..48 + name.len()].copy_from_slice(name.as_bytes());
        let fd = sys_bpf(BPF_PROG_LOAD, &mut attr);
        assert!(
            fd >= 0,
            "loading {name}: {}",
            std::io::Error::last_os_error()
        );
        let path = std::ffi::CString::new(self.path(file)).unwrap();
        let mut pin = [0u8; 16];
        pin[0..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
        pin[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
        let rc = sys_bpf(BPF_OBJ_PIN, &mut pin);
        assert_eq!(rc, 0, "pinning {name}: {}", std::io::Error::last_os_error());
        // struct bpf_prog_info starts with type and id.
        let mut info = [0u8; 256];
        let mut get = [0u8; 16];
        get[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
        get[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
        get[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
        assert_eq!(sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut get), 0);
        // SAFETY: our fd.
        unsafe { libc::close(fd as i32) };
        u32::from_ne_bytes(info[4..8].try_into().unwrap())
    }
}

impl Default for Foreign {
    fn default() -> Self {
        Foreign::new()
    }
}

fn sys_bpf<const N: usize>(cmd: libc::c_long, attr: &mut [u8; N]) -> libc::c_long {
    // SAFETY: `attr` is laid out as the command's part of union bpf_attr; pointers in it
    // point at live buffers.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), N) }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
