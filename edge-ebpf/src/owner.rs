//! Who is behind a flow (`shared::owner` has the layout and the why): the cgroup socket
//! programs that record each socket's creator, and what the packet programs add to a flow
//! once — at the claim (the frame's MACs) and at its first TC egress packet (the socket's
//! cgroup and creator).

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_socket_cookie,
        bpf_skb_cgroup_id, generated as gen,
    },
    macros::{cgroup_sock, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::{SockContext, TcContext, XdpContext},
    EbpfContext,
};
use shared::owner::{
    port_key, FlowOwner, OwnerStat, PortOwner, SockOwner, COMM_LEN, DEFAULT_MAX_PORTS,
    DEFAULT_MAX_SOCKETS, OWNER_STATS_LEN, PENDING, RESOLVED,
};
use shared::{flow::DEFAULT_MAX_FLOWS, Direction};

/// Set to 1 by the loader when owners are on. In `.rodata`, which the loader freezes: the
/// verifier reads it as a constant and, when it is 0, removes the code behind it.
#[unsafe(no_mangle)]
static OWNER_ON: u8 = 0;

/// Per flow-table slot: its flow's owner. Sized like the table by the loader (1 when off).
#[map(name = "OWNERS")]
static OWNERS: Array<FlowOwner> =
    Array::with_max_entries(2 * DEFAULT_MAX_FLOWS, aya_ebpf::bindings::BPF_F_MMAPABLE);

/// Socket cookie → its creator, written by `sock_create`, removed by `sock_release`.
#[map(name = "OWNER_SOCKS")]
static OWNER_SOCKS: HashMap<u64, SockOwner> = HashMap::with_max_entries(DEFAULT_MAX_SOCKETS, 0);

/// Bound port → the socket that bound it and its creator (`post_bind4`/`post_bind6`).
#[map(name = "OWNER_PORTS")]
static OWNER_PORTS: HashMap<u32, PortOwner> = HashMap::with_max_entries(DEFAULT_MAX_PORTS, 0);

/// A bound socket's cookie → its port key: `sock_release` cannot read the port.
#[map(name = "OWNER_BOUND")]
static OWNER_BOUND: HashMap<u64, u32> = HashMap::with_max_entries(DEFAULT_MAX_PORTS, 0);

#[map(name = "OWNER_STATS")]
static OWNER_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(OWNER_STATS_LEN, 0);

/// Whether owners are recorded (a constant to the verifier).
#[inline(always)]
pub fn on() -> bool {
    // SAFETY: reading a static; volatile so the compiler does not fold the object's 0.
    unsafe { core::ptr::read_volatile(&OWNER_ON) != 0 }
}

#[inline(always)]
fn count(s: OwnerStat) {
    if let Some(c) = OWNER_STATS.get_ptr_mut(s as u32) {
        // SAFETY: this CPU's slot.
        unsafe { *c += 1 };
    }
}

/// What a packet program's context offers for owners.
pub trait Hook: EbpfContext {
    /// The frame's Ethernet destination and source (its first 12 bytes).
    fn macs(&self) -> Option<[u8; 12]>;
    /// The packet's socket: cookie (0: none) and cgroup v2 id. Only TC has an skb.
    fn socket(&self) -> (u64, u64);
}

#[inline(always)]
fn first_12(data: usize, end: usize) -> Option<[u8; 12]> {
    if data + 12 > end {
        return None;
    }
    // SAFETY: [data, data + 12) was just checked to lie inside the packet.
    Some(unsafe { core::ptr::read_unaligned(data as *const [u8; 12]) })
}

impl Hook for XdpContext {
    #[inline(always)]
    fn macs(&self) -> Option<[u8; 12]> {
        first_12(self.data(), self.data_end())
    }
    #[inline(always)]
    fn socket(&self) -> (u64, u64) {
        (0, 0)
    }
}

impl Hook for TcContext {
    #[inline(always)]
    fn macs(&self) -> Option<[u8; 12]> {
        first_12(self.data(), self.data_end())
    }
    #[inline(always)]
    fn socket(&self) -> (u64, u64) {
        let skb = self.skb.skb;
        // SAFETY: helpers on the program's own skb; both return 0 when it has no socket.
        unsafe { (bpf_get_socket_cookie(skb.cast()), bpf_skb_cgroup_id(skb)) }
    }
}

/// A program claimed slot `at` for a flow whose first packet went direction `d`: writes the
/// slot's owner before the slot is published, and the socket's owner at once on egress.
#[inline(always)]
pub fn claimed<C: Hook>(ctx: &C, at: u32, d: usize, egress: bool, port: u32) {
    let Some(o) = OWNERS.get_ptr_mut(at) else {
        return;
    };
    // SAFETY: the slot is claimed by this CPU and not yet published: ours alone.
    unsafe {
        (*o).state = PENDING;
        (*o).has_sock = 0;
        (*o).cgroup = 0;
        match ctx.macs() {
            Some(m) => {
                (*o).dst_mac = [m[0], m[1], m[2], m[3], m[4], m[5]];
                (*o).src_mac = [m[6], m[7], m[8], m[9], m[10], m[11]];
                (*o).has_mac = 1;
            }
            None => (*o).has_mac = 0,
        }
        (*o).dir = if d == Direction::BToA as usize { 1 } else { 0 };
    }
    if egress {
        resolve(ctx, o, port);
    }
}

/// The first TC egress packet of a known flow in slot `at` (the caller saw the flow's
/// `OWNER_PENDING` bit, and clears it): the flow's socket is looked up once.
#[inline(always)]
pub fn egress_seen<C: Hook>(ctx: &C, at: u32, port: u32) {
    let Some(o) = OWNERS.get_ptr_mut(at) else {
        return;
    };
    // SAFETY: a live array slot; a word read.
    if unsafe { core::ptr::read_volatile(&raw const (*o).state) } == PENDING {
        resolve(ctx, o, port);
    }
}

/// The [`port_key`] of an egress packet's source (its local end).
#[inline(always)]
pub fn local_port(proto: u8, port_a: u16, port_b: u16, d: usize) -> u32 {
    port_key(
        proto,
        if d == Direction::AToB as usize {
            port_a
        } else {
            port_b
        },
    )
}

#[inline(always)]
fn resolve<C: Hook>(ctx: &C, o: *mut FlowOwner, port: u32) {
    let (cookie, cgroup) = ctx.socket();
    // SAFETY: a live array slot. Two CPUs resolving one flow at once write the same values.
    unsafe {
        (*o).cgroup = cgroup;
        if cookie != 0 {
            match OWNER_SOCKS.get(&cookie) {
                Some(s) => {
                    (*o).sock = *s;
                    (*o).has_sock = 1;
                    count(OwnerStat::FlowsOwned);
                }
                // An accepted connection's socket: named by whoever bound its port, if that
                // socket is in the same cgroup (the accepted one inherits it): ports are
                // keyed without their network namespace, and another namespace's binder of
                // the same port is most likely elsewhere in the hierarchy.
                None => match OWNER_PORTS.get(&port) {
                    Some(p) if p.owner.cgroup == cgroup => {
                        (*o).sock = p.owner;
                        (*o).has_sock = 1;
                        count(OwnerStat::FlowsByPort);
                    }
                    _ => count(OwnerStat::FlowsUnknownSocket),
                },
            }
        }
        core::ptr::write_volatile(&raw mut (*o).state, RESOLVED);
    }
}

/// Runs in the creating process's context for every new inet socket: records its creator.
/// Always allows the socket (returns 1): this program only observes.
#[cgroup_sock(sock_create)]
pub fn edgeflow_sock_create(ctx: SockContext) -> i32 {
    // SAFETY: helpers on the program's own socket and the current task.
    let (cookie, pid_tgid, cgroup) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_current_pid_tgid(),
            bpf_get_current_cgroup_id(),
        )
    };
    let mut owner = SockOwner {
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        cgroup,
        comm: [0; COMM_LEN],
    };
    // Straight into the value: the helper's own array copied in would land at an odd stack
    // offset, which the verifier refuses.
    // SAFETY: a buffer of COMM_LEN bytes; on failure the helper zeroes it.
    unsafe { gen::bpf_get_current_comm(owner.comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    match OWNER_SOCKS.insert(&cookie, &owner, 0) {
        Ok(()) => count(OwnerStat::Sockets),
        Err(_) => count(OwnerStat::SocketsFull),
    }
    1
}

/// The socket goes: its entries with it (its bound port's only if it is still the one that
/// bound it).
#[cgroup_sock(sock_release)]
pub fn edgeflow_sock_release(ctx: SockContext) -> i32 {
    // SAFETY: helper on the program's own socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if OWNER_SOCKS.remove(&cookie).is_ok() {
        count(OwnerStat::Released);
    }
    // SAFETY (both): values copied out before their entries may go.
    if let Some(port) = unsafe { OWNER_BOUND.get(&cookie) }.copied() {
        let _ = OWNER_BOUND.remove(&cookie);
        if unsafe { OWNER_PORTS.get(&port) }.is_some_and(|p| p.cookie == cookie) {
            let _ = OWNER_PORTS.remove(&port);
        }
    }
    1
}

/// After a bind: the port's socket and its creator (from the socket map; the binder when the
/// socket predates the agent), for the connections a listener will accept.
#[inline(always)]
fn bound(ctx: &SockContext) -> i32 {
    // SAFETY: helpers on the program's own socket and the current task; its fields are
    // readable in this hook.
    let (cookie, port) = unsafe {
        let s = &*ctx.sock;
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            port_key(s.protocol as u8, s.src_port as u16),
        )
    };
    let owner = match unsafe { OWNER_SOCKS.get(&cookie) } {
        Some(s) => *s,
        None => {
            // SAFETY: helpers on the current task.
            let (pid_tgid, cgroup) =
                unsafe { (bpf_get_current_pid_tgid(), bpf_get_current_cgroup_id()) };
            let mut o = SockOwner {
                pid: (pid_tgid >> 32) as u32,
                tid: pid_tgid as u32,
                cgroup,
                comm: [0; COMM_LEN],
            };
            // SAFETY: a buffer of COMM_LEN bytes.
            unsafe { gen::bpf_get_current_comm(o.comm.as_mut_ptr().cast(), COMM_LEN as u32) };
            o
        }
    };
    if OWNER_PORTS
        .insert(&port, &PortOwner { cookie, owner }, 0)
        .is_err()
        || OWNER_BOUND.insert(&cookie, &port, 0).is_err()
    {
        count(OwnerStat::PortsFull);
    }
    1
}

#[cgroup_sock(post_bind4)]
pub fn edgeflow_post_bind4(ctx: SockContext) -> i32 {
    bound(&ctx)
}

#[cgroup_sock(post_bind6)]
pub fn edgeflow_post_bind6(ctx: SockContext) -> i32 {
    bound(&ctx)
}
