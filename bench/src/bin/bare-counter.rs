//! Attaches the reference floor (`bench/ebpf/src/counter.rs`: a 5-tuple and one hash-map update
//! per packet) to one hook of one interface, waits for SIGINT/SIGTERM, then prints what it
//! counted as one JSON line and detaches. Run by bench/ inside the namespace of the interface.
//!
//! bare-counter --iface IF --hook xdpdrv|xdpgeneric|tc

use anyhow::{bail, Context};
use argh::FromArgs;
use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode},
    Ebpf, Pod,
};
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bare.bpf.o"));

/// The bare counter: one hash-map update per packet in one hook.
#[derive(FromArgs)]
struct Args {
    /// interface to attach to
    #[argh(option)]
    iface: String,
    /// xdpdrv (native XDP), xdpgeneric (SKB-mode XDP) or tc (TC ingress)
    #[argh(option)]
    hook: String,
}

// Mirrors of the program's map types (bench/ebpf/src/counter.rs).
#[repr(C)]
#[derive(Clone, Copy)]
struct Key {
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    _pad: [u8; 3],
}
#[repr(C)]
#[derive(Clone, Copy)]
struct Count {
    packets: u64,
    bytes: u64,
}
// SAFETY: repr(C), no implicit padding, any bit pattern valid.
unsafe impl Pod for Key {}
// SAFETY: as above.
unsafe impl Pod for Count {}

fn main() -> anyhow::Result<()> {
    let args: Args = argh::from_env();
    if OBJECT.is_empty() {
        bail!("built with EDGEFLOW_SKIP_BPF: no program embedded");
    }
    let (prog, mode) = match args.hook.as_str() {
        "xdpdrv" => ("bare_xdp", Some(XdpMode::Driver)),
        "xdpgeneric" => ("bare_xdp", Some(XdpMode::Skb)),
        "tc" => ("bare_tc", None),
        h => bail!("unknown hook {h:?} (xdpdrv, xdpgeneric or tc)"),
    };
    // Signals are noted before anything is attached, so none is missed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for s in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(s, stop.clone())?;
    }
    let mut ebpf = Ebpf::load(OBJECT).context("loading the bare object")?;
    match mode {
        Some(mode) => {
            let p: &mut Xdp = ebpf.program_mut(prog).unwrap().try_into()?;
            p.load()?;
            p.attach(&args.iface, mode)
                .with_context(|| format!("attaching XDP ({}) to {}", args.hook, args.iface))?;
        }
        None => {
            let p: &mut SchedClassifier = ebpf.program_mut(prog).unwrap().try_into()?;
            p.load()?;
            p.attach(&args.iface, TcAttachType::Ingress)
                .with_context(|| format!("attaching TC ingress to {}", args.iface))?;
        }
    }
    eprintln!(
        "bare-counter: {prog} attached to {} ({})",
        args.iface, args.hook
    );
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!("{}", report(&mut ebpf)?);
    Ok(())
}

/// Flows, packets and bytes counted, and packets lost to a full map.
fn report(ebpf: &mut Ebpf) -> anyhow::Result<serde_json::Value> {
    let flows: HashMap<&MapData, Key, Count> = HashMap::try_from(ebpf.map("BARE_FLOWS").unwrap())?;
    let (mut n, mut packets, mut bytes) = (0u64, 0u64, 0u64);
    for e in flows.iter() {
        let (_, c) = e?;
        n += 1;
        packets += c.packets;
        bytes += c.bytes;
    }
    let full: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(ebpf.map("BARE_FULL").unwrap())?;
    let full: u64 = full.get(&0, 0)?.iter().sum();
    Ok(serde_json::json!({
        "flows": n, "packets": packets, "bytes": bytes, "full": full,
    }))
}
