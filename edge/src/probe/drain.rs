//! Each interval: read the table, turn cumulative counters into deltas, expire what is done.
//!
//! The drain reads the kernel through [`Source`]: [`Maps`] in the agent, memory in the unit
//! tests below, so its bookkeeping (deltas, expiry, conservation) is tested on the host; the
//! kernel tests (`tests/table_read.rs`) drain the real table.

use crate::{
    owner::{Resolver, SnoopStats, Tables},
    probe::{
        clock::ClockPair,
        maps::{Maps, RttHist, Stats},
        owner::OwnerStats,
        table::{Slots, TableError},
        ticks::TickNow,
    },
    report::window::{self, Counts, Window},
};
use shared::owner::{FlowOwner, OwnerStat};
use shared::{
    conn,
    dns::{self, DnsState},
    flow::tcp,
    parse::{IPPROTO_TCP, IPPROTO_UDP},
    rtt::RTT_BUCKETS,
    table::{reclaimable, under_pressure},
    wire::Flow,
    Count, Direction, FlowCounters, FlowKey, Stat,
};
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

/// When entries leave the kernel table.
#[derive(Clone, Copy, Debug)]
pub struct Expiry {
    /// A flow with no packet for this long is removed.
    pub inactive: Duration,
    /// A TCP flow that saw FIN both ways, or RST, is removed once idle this long.
    pub finished: Duration,
    /// A timestamp whose echo has not come for this long is dropped from the pending map.
    pub rtt_pending: Duration,
}

impl Default for Expiry {
    fn default() -> Expiry {
        Expiry {
            inactive: Duration::from_secs(60),
            finished: Duration::from_secs(5),
            rtt_pending: Duration::from_secs(10),
        }
    }
}

/// What a drain reads, where the kernel ends.
pub trait Source {
    /// The flow table's slots.
    fn slots(&self) -> Slots<'_>;
    /// The programs' counters, summed over CPUs (cumulative).
    fn stats(&self) -> Result<Stats, TableError>;
    /// The RTT histogram, summed over CPUs (cumulative).
    fn rtt_hist(&self) -> Result<RttHist, TableError>;
    /// The tick counter and the monotonic clock now.
    fn ticks(&self) -> Result<TickNow, TableError>;
    /// Drops RTT timestamps still waiting for their echo that left before `before_ns`.
    fn sweep_pending(&mut self, before_ns: u64) -> Result<u32, TableError>;
    /// The clocks now (a seam: the host tests step the wall clock).
    fn clock(&self) -> ClockPair {
        ClockPair::now()
    }
    /// Slot `i`'s owner record, when the programs record owners.
    fn owner(&self, _i: u32) -> Option<FlowOwner> {
        None
    }
    /// The programs' owner counters (cumulative), when they record owners.
    fn owner_stats(&self) -> Result<Option<OwnerStats>, TableError> {
        Ok(None)
    }
    /// The DNS flows' state (cumulative); none where the kernel keeps none.
    fn dns_flows(&self) -> Result<HashMap<FlowKey, DnsState>, TableError> {
        Ok(HashMap::new())
    }
    /// The DNS latency histogram, summed over CPUs (cumulative).
    fn dns_hist(&self) -> Result<RttHist, TableError> {
        Ok([0; RTT_BUCKETS])
    }
    /// Drops the DNS state of a flow that left the table.
    fn dns_forget(&mut self, _key: &FlowKey) -> Result<(), TableError> {
        Ok(())
    }
}

impl Source for Maps {
    fn slots(&self) -> Slots<'_> {
        self.table.slots()
    }
    fn stats(&self) -> Result<Stats, TableError> {
        self.stats.read()
    }
    fn rtt_hist(&self) -> Result<RttHist, TableError> {
        self.rtt.hist()
    }
    fn ticks(&self) -> Result<TickNow, TableError> {
        Ok(self.ticks.now()?)
    }
    fn sweep_pending(&mut self, before_ns: u64) -> Result<u32, TableError> {
        self.rtt.sweep_pending(before_ns)
    }
    fn owner(&self, i: u32) -> Option<FlowOwner> {
        self.owner.as_ref()?.get(i)
    }
    fn owner_stats(&self) -> Result<Option<OwnerStats>, TableError> {
        self.owner.as_ref().map(|o| o.stats()).transpose()
    }
    fn dns_flows(&self) -> Result<HashMap<FlowKey, DnsState>, TableError> {
        self.dns.flows()
    }
    fn dns_hist(&self) -> Result<RttHist, TableError> {
        self.dns.hist()
    }
    fn dns_forget(&mut self, key: &FlowKey) -> Result<(), TableError> {
        self.dns.forget(key)
    }
}

/// A flow to free: slot, packets when read, and the record to report if the freed flow's SYN
/// was never answered (with whether the flow has a record in the window already).
type Leaving = (u32, [u64; 2], Option<(Flow, bool)>);

/// Keeps the last counters of every slot, to report deltas.
pub struct Drainer<S = Maps> {
    source: S,
    expiry: Expiry,
    /// Per slot: its flow's counts at the last drain (zero for a slot freed since).
    baseline: Vec<Counts>,
    /// Flows in the table at the last drain.
    active: usize,
    prev_stats: Stats,
    prev_hist: RttHist,
    last: ClockPair,
    /// Flows to free.
    expired: Vec<Leaving>,
    /// Whether the programs count TCP health (`shared::conn`): flows then carry it.
    tcp_health: bool,
    /// Kernel `parsed` minus reported totals, summed since the start (see `Window::unsettled`).
    unsettled: Count,
    /// Names the flows' owners, when the programs record them.
    owners: Option<Box<Resolver>>,
    prev_owner_stats: (OwnerStats, SnoopStats),
    /// Whether the programs read DNS (`shared::dns`): port-53 flows then carry it.
    dns: bool,
    /// Per DNS flow: its state at the last drain.
    dns_base: HashMap<FlowKey, DnsState>,
    prev_dns_hist: RttHist,
    /// DNS flows among the flows to free: slot → key.
    dns_leaving: HashMap<u32, FlowKey>,
}

impl<S: Source> Drainer<S> {
    /// Starts the first window now; what the table already holds counts as the baseline. Make
    /// it before the programs are attached: the baseline reads the flows and then the
    /// counters, and a packet counted between the two would stay in one and not the other.
    /// `tcp_health`: the programs were loaded counting it.
    pub fn new(source: S, expiry: Expiry, tcp_health: bool) -> Result<Drainer<S>, TableError> {
        let slots = source.slots();
        let mut baseline = vec![Counts::default(); slots.shape().slots as usize];
        let mut active = 0;
        slots.for_each_flow(&mut |i, _, v| {
            baseline[i as usize] = Counts::of(v);
            active += 1;
        });
        let prev_stats = source.stats()?;
        let prev_hist = source.rtt_hist()?;
        let last = source.clock();
        Ok(Drainer {
            baseline,
            active,
            source,
            expiry,
            prev_stats,
            prev_hist,
            last,
            expired: Vec::new(),
            unsettled: Count::default(),
            tcp_health,
            owners: None,
            prev_owner_stats: Default::default(),
            dns: false,
            dns_base: HashMap::new(),
            prev_dns_hist: [0; RTT_BUCKETS],
            dns_leaving: HashMap::new(),
        })
    }

    /// Gives the flows their owners from now on (the programs were loaded recording them).
    pub fn set_owners(&mut self, r: Resolver) -> Result<(), TableError> {
        let kernel = self.source.owner_stats()?.unwrap_or_default();
        self.prev_owner_stats = (kernel, r.snoop_stats());
        self.owners = Some(Box::new(r));
        Ok(())
    }

    /// The programs were loaded reading DNS: port-53 flows carry a DNS block. Like
    /// [`Drainer::new`], before the programs are attached.
    pub fn with_dns(mut self, on: bool) -> Result<Drainer<S>, TableError> {
        self.dns = on;
        if on {
            self.prev_dns_hist = self.source.dns_hist()?;
            self.dns_base = self.source.dns_flows()?;
        }
        Ok(self)
    }

    /// What the drain reads (the agent: the programs' maps).
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Ends the current window and starts the next. The table is read once, as memory,
    /// straight into the deltas: no copy of the whole table is held.
    pub fn drain(&mut self) -> Result<Window, TableError> {
        let now = self.source.clock();
        let ticks = self.source.ticks()?;
        // Tick stamps to wall-clock ms, through the monotonic clock.
        let to_ms = |t: u64| now.to_unix_ms(ticks.to_mono_ns(t));
        let expiry = self.expiry;
        // Sized once from the last drain: growing by doubling would briefly hold 3x as much.
        let mut flows = Vec::with_capacity(self.active);
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        let mut in_flows = Count::default();
        let mut active = 0;
        let baseline = &mut self.baseline;
        let tcp_health = self.tcp_health;
        let mut owners = self.owners.as_deref_mut();
        if let Some(r) = owners.as_deref_mut() {
            // DHCP names that came since the last window, before devices are named.
            r.refresh();
        }
        let dns_on = self.dns;
        // Before the flows: a message counted between the two reads is in the flow's packets
        // now and in its DNS counts next window.
        let dns_now = if dns_on {
            self.source.dns_flows()?
        } else {
            HashMap::new()
        };
        let dns_base = &mut self.dns_base;
        let dns_leaving = &mut self.dns_leaving;
        dns_leaving.clear();
        let source = &self.source;
        let slots = self.source.slots();
        // Past half full (more flows than the table is sized for), flows not worth a slot
        // (`shared::table::reclaimable`) are freed at once, reported in this window: the
        // programs may reclaim only flows the agent has not read (docs/design.md, "Floods").
        let pressure = under_pressure(slots.held() as u64, slots.shape().slots as u64);
        // Flows first, then the counters: a packet counted between the two reads is in the
        // kernel's `parsed` but not yet in a flow delta. Totals are taken from the flows (so
        // every window conserves exactly) and the kernel counter checks them through
        // `unsettled`, which such packets raise for one window only.
        slots.for_each_flow(&mut |i, key, cur| {
            active += 1;
            let now = Counts::of(cur);
            let delta = now.since(&std::mem::replace(&mut baseline[i as usize], now));
            let had = delta.any_packets();
            let dns_key = dns_on && is_dns(key);
            let dns_state = dns_key.then(|| dns_now.get(key).copied().unwrap_or_default());
            if had {
                in_flows.add(&delta.total());
                let mut f = window::flow(key, cur, &delta, to_ms, tcp_health);
                if let (Some(r), Some(o)) = (owners.as_deref_mut(), source.owner(i)) {
                    f.owner = r.resolve(&o, cur.initiator());
                }
                if let Some(st) = &dns_state {
                    let before = dns_base.insert(*key, *st).unwrap_or_default();
                    f.dns = Some(window::dns(st, &before));
                }
                flows.push(f);
            }
            let idle = Duration::from_nanos(
                ticks
                    .mono_ns
                    .saturating_sub(ticks.to_mono_ns(cur.last_seen())),
            );
            if pressure && reclaimable(cur.packets()) {
                // Freed under pressure: a DNS flow's waiting queries are unanswered as when it
                // leaves idle (a SYN's outcome is not decided here: a scan's would be noise).
                let mut unanswered = None;
                if let Some(st) = &dns_state {
                    dns_leaving.insert(i, *key);
                    let n = st.outstanding();
                    if n > 0 {
                        unanswered = Some((window::dns_unanswered(key, cur, st, n, to_ms), had));
                    }
                }
                expired.push((i, cur.packets(), unanswered));
            } else if idle >= expiry.inactive || (finished(cur) && idle >= expiry.finished) {
                // A SYN nobody answered is decided only now, when the flow leaves.
                let mut unanswered =
                    (tcp_health && key.proto == IPPROTO_TCP && conn::unanswered(cur))
                        .then(|| (window::unanswered(key, cur, to_ms), had));
                if let Some(st) = &dns_state {
                    // Queries still waiting when the flow leaves are unanswered.
                    dns_leaving.insert(i, *key);
                    let n = st.outstanding();
                    if n > 0 {
                        unanswered = Some((window::dns_unanswered(key, cur, st, n, to_ms), had));
                    }
                }
                expired.push((i, cur.packets(), unanswered));
            }
        });
        let stats = self.source.stats()?;
        let hist = self.source.rtt_hist()?;
        let mut removed = 0u32;
        let mut forget = Vec::new();
        for (i, packets, unanswered) in expired.drain(..) {
            // A packet that came since the read keeps the flow for the next window. Compared
            // by count, not by last_seen: that has tick resolution.
            if slots.free(i, Some(packets)) {
                // A flow that comes back counts from zero.
                baseline[i as usize] = Counts::default();
                removed += 1;
                slots.tidy_from(i);
                if let Some((u, had)) = unanswered {
                    report_unanswered(&mut flows, u, had);
                }
                if let Some(key) = self.dns_leaving.get(&i) {
                    forget.push(*key);
                }
            }
        }
        self.expired = expired;
        for key in &forget {
            self.dns_base.remove(key);
            self.source.dns_forget(key)?;
        }
        let dns_hist = if self.dns {
            let h = self.source.dns_hist()?;
            let d = hist_delta(&h, &self.prev_dns_hist);
            self.prev_dns_hist = h;
            d
        } else {
            Vec::new()
        };

        let delta: Stats = std::array::from_fn(|i| stats[i].delta_since(&self.prev_stats[i]));
        self.prev_stats = stats;
        let rtt_hist = hist_delta(&hist, &self.prev_hist);
        self.prev_hist = hist;
        self.source.sweep_pending(
            now.mono_ns
                .saturating_sub(self.expiry.rtt_pending.as_nanos() as u64),
        )?;
        let (tables, owner_stats) = match self.owners.as_deref_mut() {
            Some(r) => {
                let kernel = self.source.owner_stats()?.unwrap_or_default();
                let snoop = r.snoop_stats();
                let (pk, ps) = std::mem::replace(&mut self.prev_owner_stats, (kernel, snoop));
                (
                    r.take_tables(),
                    Some(owner_deltas(&kernel, &pk, &snoop, &ps)),
                )
            }
            None => (Tables::default(), None),
        };
        // Flows the programs reclaimed were never read: their counts are reported here.
        let overflow = delta[Stat::Overflow as usize].plus(&delta[Stat::Reclaimed as usize]);
        let mut totals = in_flows;
        totals.add(&overflow);
        self.unsettled.add(&delta[Stat::Parsed as usize]);
        self.unsettled = self.unsettled.delta_since(&totals);
        // The length by CLOCK_BOOTTIME: a wall-clock step is reported, never measured.
        let w = Window {
            window_start_ms: self.last.unix_ms,
            window_end_ms: self.last.unix_ms + now.ms_since(&self.last),
            clock_step_ms: now.step_ms_since(&self.last),
            totals,
            overflow,
            unsettled: self.unsettled,
            stats: delta,
            active_flows: (active as u32).saturating_sub(removed),
            expired_flows: removed,
            flows,
            rtt_hist,
            tcp_health: self.tcp_health,
            names: tables.names,
            devices: tables.devices,
            owner_stats,
            dns_hist,
            dns: self.dns,
        };
        self.last = now;
        self.active = active;
        Ok(w)
    }
}

/// Reports a flow that left with its SYN unanswered: on its record of this window if it has
/// one (it had packets too), else on a record of its own with no packets.
fn report_unanswered(flows: &mut Vec<Flow>, u: Flow, had: bool) {
    let same = |f: &Flow| {
        (
            f.proto,
            f.src,
            f.src_port,
            f.dst,
            f.dst_port,
            f.vlan,
            f.vlan_inner,
            f.ifindex,
        ) == (
            u.proto,
            u.src,
            u.src_port,
            u.dst,
            u.dst_port,
            u.vlan,
            u.vlan_inner,
            u.ifindex,
        )
    };
    // Searched only in the rare case it is there: idle for the whole inactive timeout yet
    // with packets in the window (a timeout shorter than the interval).
    match flows.iter_mut().rev().find(|f| had && same(f)) {
        Some(f) => {
            if u.tcp.is_some() {
                f.tcp = u.tcp;
            }
            if let (Some(d), Some(ud)) = (&mut f.dns, &u.dns) {
                d.unanswered = d.unanswered.saturating_add(ud.unanswered);
            }
        }
        None => flows.push(u),
    }
}

/// The owner counters' window deltas by label.
fn owner_deltas(
    k: &OwnerStats,
    pk: &OwnerStats,
    s: &SnoopStats,
    ps: &SnoopStats,
) -> BTreeMap<&'static str, u64> {
    let mut m: BTreeMap<&'static str, u64> = OwnerStat::ALL
        .iter()
        .map(|st| {
            let i = *st as usize;
            (st.label(), k[i].wrapping_sub(pk[i]))
        })
        .collect();
    m.insert("dhcp_requests", s.dhcp_requests - ps.dhcp_requests);
    m.insert("dhcp_names_full", s.dhcp_names_full - ps.dhcp_names_full);
    m.insert("dhcp_dropped", s.dhcp_dropped - ps.dhcp_dropped);
    m
}

/// A flow DNS is read on: UDP to or from port 53.
fn is_dns(key: &FlowKey) -> bool {
    key.proto == IPPROTO_UDP && (key.port_a == dns::PORT || key.port_b == dns::PORT)
}

/// The window's RTT histogram, trailing empty buckets cut (empty: no samples).
fn hist_delta(now: &RttHist, before: &RttHist) -> Vec<u64> {
    let mut d: Vec<u64> = now
        .iter()
        .zip(before)
        .map(|(n, b)| n.wrapping_sub(*b))
        .collect();
    while d.last() == Some(&0) {
        d.pop();
    }
    d
}

/// A TCP conversation that is over: FIN from both sides, or a RST.
fn finished(c: &FlowCounters) -> bool {
    let a = c.flags(Direction::AToB);
    let b = c.flags(Direction::BToA);
    (a | b) & tcp::RST != 0 || (a & tcp::FIN != 0 && b & tcp::FIN != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{
        conn::Outcome,
        stats::STATS_LEN,
        table::{held_bit, FlowSlot, TableShape, LIVE},
        FlowKey,
    };
    use std::{
        cell::{Cell, UnsafeCell},
        collections::BTreeMap,
    };

    /// Ticks per second of the host source's clock (HZ 1000).
    const HZ: u64 = 1000;

    /// The kernel's side in ordinary memory: a table the test counts packets into as the
    /// programs would (the parsed counter with them), and a tick clock it sets.
    struct Host {
        slots: Box<[UnsafeCell<FlowSlot>]>,
        held: Box<[UnsafeCell<u64>]>,
        shape: TableShape,
        stats: Cell<Stats>,
        now: Cell<TickNow>,
        /// A packet the programs count while the drain reads the counters (after the flows).
        meanwhile: Cell<Option<FlowKey>>,
        swept_before: Cell<Option<u64>>,
        /// The clocks the drain reads, when a test sets them.
        clock: Cell<Option<ClockPair>>,
    }

    impl Host {
        fn new(slots: u32) -> Host {
            let shape = TableShape { slots, key: [3, 4] };
            Host {
                slots: (0..slots).map(|_| Default::default()).collect(),
                held: (0..shape.held_words())
                    .map(|_| Default::default())
                    .collect(),
                shape,
                stats: Cell::new([Count::default(); STATS_LEN as usize]),
                now: Cell::new(TickNow {
                    ticks: 100_000,
                    mono_ns: 5_000_000_000_000,
                    tick_ns: 1_000_000_000 / HZ,
                }),
                meanwhile: Cell::new(None),
                swept_before: Cell::new(None),
                clock: Cell::new(None),
            }
        }

        fn stat(&self, s: Stat, packets: u64) {
            let mut all = self.stats.get();
            all[s as usize].add(&Count {
                packets,
                bytes: packets * 100,
            });
            self.stats.set(all);
        }

        /// `packets` of 100 bytes a→b on `key`, the last `ago` seconds back, with `flags`
        /// (a→b in the low byte, b→a in the next).
        fn count(&self, key: FlowKey, packets: u64, ago: u64, flags: u32) {
            let seq: Vec<u32> = self.shape.probe_sequence(&key).collect();
            // SAFETY: only this test's thread touches the memory, through no live reference.
            let slot = |i: u32| unsafe { &mut *self.slots[i as usize].get() };
            let at = seq
                .iter()
                .copied()
                .find(|&i| slot(i).state == LIVE && slot(i).key == key)
                .or_else(|| seq.iter().copied().find(|&i| slot(i).state != LIVE))
                .expect("a free slot");
            let s = slot(at);
            if s.state != LIVE {
                *s = FlowSlot {
                    state: LIVE,
                    key,
                    ..FlowSlot::default()
                };
                let (w, bit) = held_bit(at);
                // SAFETY: as above.
                unsafe { *self.held[w as usize].get() |= bit };
            }
            let c = &mut s.counters;
            c.dir[0].packets += packets;
            c.dir[0].bytes += packets * 100;
            c.dir[0].last_seen = self.now.get().ticks - ago * HZ;
            c.tcp_flags |= flags;
            self.stat(Stat::Parsed, packets);
        }
    }

    impl Source for Host {
        fn slots(&self) -> Slots<'_> {
            // SAFETY: the boxes hold the shape's slots and words for as long as `self`, and
            // UnsafeCell lets the slots change through them.
            unsafe {
                Slots::new(
                    UnsafeCell::raw_get(self.slots.as_ptr()),
                    UnsafeCell::raw_get(self.held.as_ptr()),
                    self.shape,
                )
            }
        }
        fn stats(&self) -> Result<Stats, TableError> {
            if let Some(k) = self.meanwhile.take() {
                self.count(k, 1, 0, 0);
            }
            Ok(self.stats.get())
        }
        fn rtt_hist(&self) -> Result<RttHist, TableError> {
            Ok([0; shared::rtt::RTT_BUCKETS])
        }
        fn ticks(&self) -> Result<TickNow, TableError> {
            Ok(self.now.get())
        }
        fn sweep_pending(&mut self, before_ns: u64) -> Result<u32, TableError> {
            self.swept_before.set(Some(before_ns));
            Ok(0)
        }
        fn clock(&self) -> ClockPair {
            self.clock.get().unwrap_or_else(ClockPair::now)
        }
    }

    /// The wall clock stepped an hour forward in one window and 30 s back in the next: each
    /// window is as long as the boot clock says (10 s), never 3,610 s or wrapped, and the
    /// steps are reported in the windows they happened in.
    #[test]
    fn window_lengths_ignore_wall_clock_steps_and_report_them() {
        let host = Host::new(64);
        let at = |boot_s: u64, unix_ms: u64| ClockPair {
            mono_ns: boot_s * 1_000_000_000,
            boot_ns: boot_s * 1_000_000_000,
            unix_ms,
        };
        let t0 = 1_700_000_000_000;
        host.clock.set(Some(at(100, t0)));
        let mut d = Drainer::new(host, Expiry::default(), true).unwrap();
        let mut window = |boot_s: u64, unix_ms: u64| {
            d.source.clock.set(Some(at(boot_s, unix_ms)));
            let w = d.drain().unwrap();
            (
                w.window_start_ms,
                w.window_end_ms - w.window_start_ms,
                w.clock_step_ms,
            )
        };
        assert_eq!(window(110, t0 + 10_000), (t0, 10_000, 0));
        assert_eq!(
            window(120, t0 + 3_620_000),
            (t0 + 10_000, 10_000, 3_600_000)
        );
        assert_eq!(
            window(130, t0 + 3_600_000),
            (t0 + 3_620_000, 10_000, -30_000)
        );
        assert_eq!(window(140, t0 + 3_610_000), (t0 + 3_600_000, 10_000, 0));
    }

    fn key(port: u16) -> FlowKey {
        FlowKey {
            port_a: 40_000,
            port_b: port,
            proto: 17,
            ..FlowKey::default()
        }
    }

    /// The window's packets by destination port.
    fn by_port(w: &Window) -> BTreeMap<u16, u64> {
        w.flows
            .iter()
            .map(|f| (f.dst_port, f.total().packets))
            .collect()
    }

    #[test]
    fn each_window_reports_only_its_own_packets() {
        let host = Host::new(64);
        // In the table before the drainer starts: the baseline, not news.
        host.count(key(1), 3, 0, 0);
        host.count(key(2), 2, 0, 0);
        let mut d = Drainer::new(host, Expiry::default(), true).unwrap();
        d.source.count(key(1), 2, 0, 0);
        d.source.count(key(3), 1, 0, 0);
        let w = d.drain().unwrap();
        assert_eq!(by_port(&w), BTreeMap::from([(1, 2), (3, 1)]));
        assert_eq!((w.totals.packets, w.totals.bytes), (3, 300));
        assert!(w.is_conserved());
        assert_eq!(w.stats[Stat::Parsed as usize].packets, 3);
        assert_eq!((w.active_flows, w.expired_flows), (3, 0));
        assert_eq!(w.unsettled, Count::default());
        assert!(d.source.swept_before.get().is_some(), "pending swept");
        // Nothing counted: an empty window, the flows still in the table.
        let w = d.drain().unwrap();
        assert!(w.flows.is_empty() && w.totals == Count::default());
        assert_eq!(w.active_flows, 3);
        // Packets the table had no room for are in the totals as overflow.
        d.source.count(key(2), 4, 0, 0);
        d.source.stat(Stat::Parsed, 5);
        d.source.stat(Stat::Overflow, 5);
        let w = d.drain().unwrap();
        assert_eq!(by_port(&w), BTreeMap::from([(2, 4)]));
        assert_eq!((w.totals.packets, w.overflow.packets), (9, 5));
        assert!(w.is_conserved());
    }

    #[test]
    fn idle_and_finished_flows_expire_and_come_back_from_zero() {
        let expiry = Expiry {
            inactive: Duration::from_secs(10),
            finished: Duration::from_secs(1),
            ..Expiry::default()
        };
        let mut d = Drainer::new(Host::new(64), expiry, true).unwrap();
        let both_fins = (tcp::FIN as u32) | (tcp::FIN as u32) << 8;
        d.source.count(key(1), 1, 0, 0);
        d.source.count(key(2), 1, 11, 0);
        d.source.count(key(3), 1, 2, both_fins);
        d.source.count(key(4), 1, 2, tcp::FIN as u32);
        d.source.count(key(5), 1, 2, (tcp::RST as u32) << 8);
        let w = d.drain().unwrap();
        // Reported in their last window, then gone: idle past 10 s, or over and idle 1 s.
        assert_eq!(by_port(&w).len(), 5);
        assert_eq!((w.active_flows, w.expired_flows), (2, 3));
        let slots = d.source.slots();
        let left: Vec<bool> = (1..=5).map(|p| slots.find(&key(p)).is_some()).collect();
        assert_eq!(left, [true, false, false, true, false]);
        // A flow that comes back counts from zero, not against what it had.
        d.source.count(key(2), 1, 0, 0);
        let w = d.drain().unwrap();
        assert_eq!(by_port(&w), BTreeMap::from([(2, 1)]));
        assert_eq!((w.active_flows, w.expired_flows), (3, 0));
    }

    fn tcp_key(port: u16) -> FlowKey {
        FlowKey {
            proto: 6,
            ..key(port)
        }
    }

    /// A SYN nobody answered is reported unanswered once, when its flow leaves: on its own
    /// record with no packets, or on the window's record if it had packets then too. A refused
    /// SYN, or one with TCP health off, is not.
    #[test]
    fn unanswered_syns_are_decided_when_their_flow_leaves() {
        let expiry = Expiry {
            inactive: Duration::from_secs(10),
            ..Expiry::default()
        };
        let syn = tcp::SYN as u32;
        let refused = syn | ((tcp::RST | tcp::ACK) as u32) << 8;
        let mut d = Drainer::new(Host::new(64), expiry, true).unwrap();
        d.source.count(tcp_key(1), 3, 0, syn);
        d.source.count(tcp_key(2), 1, 11, syn);
        d.source.count(tcp_key(3), 2, 0, refused);
        let w = d.drain().unwrap();
        let tcp_of = |w: &Window, port: u16| {
            let f: Vec<&Flow> = w.flows.iter().filter(|f| f.dst_port == port).collect();
            assert_eq!(f.len(), 1, "one record for port {port}");
            (f[0].total().packets, f[0].tcp.unwrap())
        };
        let (n, t) = tcp_of(&w, 1);
        assert_eq!((n, t.outcome, t.decided), (3, Outcome::Connecting, false));
        // Idle past the timeout in the window it was counted: one record, decided.
        let (n, t) = tcp_of(&w, 2);
        assert_eq!((n, t.outcome, t.decided), (1, Outcome::Unanswered, true));
        let (_, t) = tcp_of(&w, 3);
        assert_eq!((t.outcome, t.decided), (Outcome::Refused, true));
        assert!(w.is_conserved());
        // 20 s later the first leaves too: a record without packets.
        let mut now = d.source.now.get();
        now.ticks += 20 * HZ;
        now.mono_ns += 20_000_000_000;
        d.source.now.set(now);
        let w = d.drain().unwrap();
        assert_eq!(w.flows.len(), 1, "{:?}", w.flows);
        let (n, t) = tcp_of(&w, 1);
        assert_eq!((n, t.outcome, t.decided), (0, Outcome::Unanswered, true));
        assert_eq!(w.totals, Count::default());
        assert!(w.is_conserved());
        assert_eq!(w.expired_flows, 2);

        let mut off = Drainer::new(Host::new(64), expiry, false).unwrap();
        off.source.count(tcp_key(1), 1, 11, syn);
        let w = off.drain().unwrap();
        assert_eq!(w.flows.len(), 1);
        assert!(w.flows[0].tcp.is_none() && !w.tcp_health);
    }

    #[test]
    fn a_packet_during_the_drain_keeps_its_flow_and_is_settled_next_window() {
        let expiry = Expiry {
            inactive: Duration::from_secs(10),
            ..Expiry::default()
        };
        let mut d = Drainer::new(Host::new(64), expiry, true).unwrap();
        d.source.count(key(1), 2, 11, 0);
        d.source.meanwhile.set(Some(key(1)));
        let w = d.drain().unwrap();
        // Read idle, but a packet came before the free: kept. The kernel counted it after
        // the flows were read: in `parsed`, not yet in a flow, so unsettled by one.
        assert_eq!(by_port(&w), BTreeMap::from([(1, 2)]));
        assert_eq!(w.expired_flows, 0);
        assert_eq!(w.stats[Stat::Parsed as usize].packets, 3);
        assert_eq!(w.unsettled.packets, 1);
        assert!(w.is_conserved());
        let w = d.drain().unwrap();
        assert_eq!(by_port(&w), BTreeMap::from([(1, 1)]));
        assert_eq!(w.unsettled, Count::default());
    }

    /// Past half full, flows not worth a slot (one packet, or a few never answered) leave at
    /// the drain that reports them; answered ones and one-way streams stay. Flows the
    /// programs reclaimed are reported in the overflow record: totals stay exact.
    #[test]
    fn under_pressure_unanswered_flows_leave_at_once_and_reclaimed_ones_count() {
        let mut d = Drainer::new(Host::new(64), Expiry::default(), true).unwrap();
        // 30 of 64 slots: not past half full, nothing leaves early.
        for port in 0..30 {
            d.source.count(key(port), 1, 0, 0);
        }
        let w = d.drain().unwrap();
        assert_eq!((w.active_flows, w.expired_flows), (30, 0));
        // 40: past half. Ports 100-104 answered (a packet back), 105 a one-way stream.
        for port in 30..35 {
            d.source.count(key(port), 1, 0, 0);
        }
        let slots = d.source.slots();
        for port in 100..106 {
            d.source
                .count(key(port), if port == 105 { 9 } else { 1 }, 0, 0);
            if port < 105 {
                let i = slots.find(&key(port)).unwrap();
                // SAFETY: the test's memory; nothing else touches it now.
                let c = unsafe { &mut (*d.source.slots[i as usize].get()).counters };
                (c.dir[1].packets, c.dir[1].bytes) = (1, 100);
                d.source.stat(Stat::Parsed, 1);
            }
        }
        // A program reclaimed a flow of 3 packets since the last drain.
        d.source.stat(Stat::Parsed, 3);
        d.source.stat(Stat::Reclaimed, 3);
        let w = d.drain().unwrap();
        assert_eq!(w.expired_flows, 35, "the one-packet flows");
        assert_eq!(w.active_flows, 6);
        assert_eq!(w.overflow.packets, 3, "reclaimed, in the overflow record");
        assert_eq!(w.totals.packets, 5 + 5 * 2 + 9 + 3);
        assert!(w.is_conserved());
        assert_eq!(w.unsettled, Count::default());
        let slots = d.source.slots();
        assert!((100..106).all(|p| slots.find(&key(p)).is_some()));
        assert!((0..35).all(|p| slots.find(&key(p)).is_none()));
    }

    #[test]
    fn histogram_delta_drops_trailing_empty_buckets() {
        let mut now = [0u64; shared::rtt::RTT_BUCKETS];
        let mut before = now;
        assert!(hist_delta(&now, &before).is_empty());
        now[3] = 5;
        now[10] = 7;
        before[3] = 2;
        before[10] = 7;
        assert_eq!(hist_delta(&now, &before), vec![0, 0, 0, 3]);
    }

    #[test]
    fn finished_needs_both_fins_or_a_reset() {
        let mut c = FlowCounters {
            tcp_flags: tcp::FIN as u32,
            ..Default::default()
        };
        assert!(!finished(&c));
        c.tcp_flags |= (tcp::FIN as u32) << 8;
        assert!(finished(&c));
        c.tcp_flags = (tcp::RST as u32) << 8;
        assert!(finished(&c));
    }
}
