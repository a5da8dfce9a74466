//! Who is behind a flow (issue 22), as the programs record it: the process that created a
//! local flow's socket and the socket's cgroup, and the MAC addresses a flow's first packet
//! carried on the watched interface.
//!
//! - Two cgroup socket programs attached on the cgroup v2 root run in the process's context:
//!   `sock_create` records the new socket's cookie → [`SockOwner`] (pid, thread, command name,
//!   cgroup) in [`SOCKETS_MAP`], a bounded hash map; `sock_release` removes the entry when
//!   the socket goes (Linux 5.9). A socket that finds the map full is counted
//!   ([`OwnerStat::SocketsFull`]) and its flows carry only their cgroup.
//! - Per flow-table slot, a [`FlowOwner`] in [`OWNERS_MAP`] (an array beside the table, so
//!   the 256-byte slot does not grow): written when a program claims the slot (the frame's
//!   MACs), and completed by the first TC egress packet of the flow (`bpf_skb_cgroup_id`, and
//!   the socket cookie looked up once in [`SOCKETS_MAP`]). A known flow's egress packet reads
//!   one word of it ([`FlowOwner::state`]); ingress and XDP packets do not touch it.
//! - Off (`--no-owner`), the loader sets [`OWNER_ON_GLOBAL`] to 0: the verifier sees a
//!   constant and drops the code, the cgroup programs are not attached and both maps have one
//!   entry.

/// Map name of the per-slot owners (an array of [`FlowOwner`], as many as table slots).
pub const OWNERS_MAP: &str = "OWNERS";
/// Map name of the socket cookie → [`SockOwner`] hash map.
pub const SOCKETS_MAP: &str = "OWNER_SOCKS";
/// Map name of the bound ports → [`PortOwner`] hash map: the process behind a listening
/// (or explicitly bound) socket, for the connections `accept` hands out, whose sockets the
/// kernel makes without `sock_create`.
pub const PORTS_MAP: &str = "OWNER_PORTS";
/// Map name of the bound socket's cookie → its port key (`sock_release` cannot read ports).
pub const BOUND_MAP: &str = "OWNER_BOUND";
/// Bound ports the map holds by default.
pub const DEFAULT_MAX_PORTS: u32 = 1024;

/// Map name of the per-CPU [`OwnerStat`] counters.
pub const OWNER_STATS_MAP: &str = "OWNER_STATS";
/// The programs' `.rodata` switch: 1 records owners, 0 (the object's default) does not.
pub const OWNER_ON_GLOBAL: &str = "OWNER_ON";
/// Sockets the map holds by default (`[owner] max_sockets`).
pub const DEFAULT_MAX_SOCKETS: u32 = 8192;

/// [`FlowOwner::state`]: claimed at ingress (XDP or TC), no egress packet seen yet.
pub const PENDING: u32 = 0;
/// [`FlowOwner::state`]: an egress packet looked for the socket (found or not): never again.
pub const RESOLVED: u32 = 1;

/// The length of a task's command name (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// What `sock_create` knows of a socket's creator.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOwner {
    /// The process (thread group) id, as `ps` shows it, in the initial pid namespace.
    pub pid: u32,
    /// The thread that created the socket.
    pub tid: u32,
    /// The creator's cgroup v2 id (the inode of its cgroup directory).
    pub cgroup: u64,
    /// The command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

impl SockOwner {
    /// The command name up to its first NUL.
    pub fn comm(&self) -> &[u8] {
        let n = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.comm[..n]
    }
}

/// A bound port's key in [`PORTS_MAP`]: the IP protocol in bits 16..24, the port (host
/// order) in the low 16.
#[inline(always)]
pub fn port_key(proto: u8, port: u16) -> u32 {
    (proto as u32) << 16 | port as u32
}

/// The socket that bound a port, and its creator: the entry goes when that socket does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortOwner {
    pub cookie: u64,
    pub owner: SockOwner,
}

/// One flow-table slot's owner: valid while the slot holds the flow it was written for.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowOwner {
    /// [`PENDING`] or [`RESOLVED`].
    pub state: u32,
    /// 1 when [`FlowOwner::sock`] holds the socket's creator.
    pub has_sock: u32,
    /// The socket's cgroup v2 id at the first egress packet (0: no socket, or not yet).
    pub cgroup: u64,
    pub sock: SockOwner,
    /// The first frame's Ethernet source and destination.
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The first frame's direction relative to the key (`Direction` as u8): its source is
    /// endpoint a when 0, endpoint b when 1.
    pub dir: u8,
    /// 1 when the MACs were read (a frame too short for them has none).
    pub has_mac: u8,
    pub _pad: [u8; 2],
}

impl FlowOwner {
    /// The MAC addresses of endpoint a and endpoint b, if the first frame had them.
    pub fn macs_ab(&self) -> Option<([u8; 6], [u8; 6])> {
        if self.has_mac == 0 {
            return None;
        }
        Some(if self.dir == 0 {
            (self.src_mac, self.dst_mac)
        } else {
            (self.dst_mac, self.src_mac)
        })
    }
}

macro_rules! owner_stats {
    ($($(#[$doc:meta])* $name:ident = $idx:literal, $label:literal;)*) => {
        /// Index into [`OWNER_STATS_MAP`].
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum OwnerStat { $($(#[$doc])* $name = $idx,)* }

        impl OwnerStat {
            pub const ALL: &'static [OwnerStat] = &[$(OwnerStat::$name,)*];
            pub const fn label(self) -> &'static str {
                match self { $(OwnerStat::$name => $label,)* }
            }
        }
    };
}

owner_stats! {
    /// Sockets recorded by `sock_create`.
    Sockets = 0, "owner_sockets";
    /// Sockets not recorded: the map was full. Their flows carry their cgroup only.
    SocketsFull = 1, "owner_sockets_full";
    /// Sockets released (`sock_release`) and removed from the map.
    Released = 2, "owner_released";
    /// Flows whose first egress packet had a socket the map knew.
    FlowsOwned = 3, "owner_flows_owned";
    /// Flows whose first egress packet had a socket the map did not know (created before the
    /// agent started, or not recorded because the map was full), nor its source port.
    FlowsUnknownSocket = 4, "owner_flows_unknown_socket";
    /// Flows whose socket the map did not know, named by the process that bound their source
    /// port (connections accepted from a listener).
    FlowsByPort = 5, "owner_flows_by_port";
    /// Binds not recorded: the ports map was full.
    PortsFull = 6, "owner_ports_full";
}

/// Counters in [`OWNER_STATS_MAP`].
pub const OWNER_STATS_LEN: u32 = 7;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, explicit padding, plain integers: any bit pattern is valid.
    unsafe impl aya::Pod for super::SockOwner {}
    unsafe impl aya::Pod for super::FlowOwner {}
    unsafe impl aya::Pod for super::PortOwner {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<SockOwner>(), 4 + 4 + 8 + COMM_LEN);
        assert_eq!(size_of::<FlowOwner>(), 4 + 4 + 8 + 32 + 6 + 6 + 1 + 1 + 2);
    }

    #[test]
    fn stat_indexes_are_dense() {
        assert_eq!(OwnerStat::ALL.len() as u32, OWNER_STATS_LEN);
        for (i, s) in OwnerStat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }

    #[test]
    fn macs_follow_the_first_frames_direction() {
        let mut o = FlowOwner {
            src_mac: [1; 6],
            dst_mac: [2; 6],
            has_mac: 1,
            ..FlowOwner::default()
        };
        assert_eq!(o.macs_ab(), Some(([1; 6], [2; 6])));
        o.dir = 1;
        assert_eq!(o.macs_ab(), Some(([2; 6], [1; 6])));
        o.has_mac = 0;
        assert_eq!(o.macs_ab(), None);
        let s = SockOwner {
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            ..SockOwner::default()
        };
        assert_eq!(s.comm(), b"curl");
    }
}
