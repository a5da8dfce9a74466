//! The benchmark's UDP receiver: drains its socket with recvmmsg, counts datagrams, stops after
//! a set time (or SIGINT/SIGTERM) and prints `{"packets":N,"bytes":B}`.
//!
//! By default it polls: it empties the socket without blocking, then sleeps `--poll-us`. Nobody
//! waits on the socket, so the receive softirq never has to wake the sink with an IPI (costly
//! on this VM); the baseline is higher and steadier. `--poll-us 0` blocks like a normal app.
//!
//! udpsink --port P --seconds S [--poll-us N]

use argh::FromArgs;
use std::{
    mem::zeroed,
    net::UdpSocket,
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};

/// UDP sink: counts datagrams for a bounded time.
#[derive(FromArgs)]
struct Args {
    /// UDP port to bind (all addresses of this namespace)
    #[argh(option)]
    port: u16,
    /// stop after this many seconds
    #[argh(option)]
    seconds: f64,
    /// sleep this many microseconds when the socket is empty; 0 blocks instead (default 500)
    #[argh(option, default = "500")]
    poll_us: u64,
}

const BATCH: usize = 64;
const SLOT: usize = 2048;
/// 64 MiB: at 200 kpps a 500 µs nap must never overflow the socket.
const RCVBUF: libc::c_int = 64 << 20;

fn main() -> anyhow::Result<()> {
    let args: Args = argh::from_env();
    let stop = Arc::new(AtomicBool::new(false));
    for s in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(s, stop.clone())?;
    }
    let sock = UdpSocket::bind(("0.0.0.0", args.port))?;
    let fd = sock.as_raw_fd();
    // SO_RCVBUFFORCE (root): rmem_max cannot be raised inside a child netns on this kernel.
    // SAFETY: valid fd and option pointer of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &RCVBUF as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as u32,
        );
    }
    // A blocking sink still wakes up now and then to look at the clock and the flag.
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut bufs = vec![[0u8; SLOT]; BATCH];
    // SAFETY: all-zero iovec/mmsghdr are valid; the pointers are set right below.
    let mut iov: Vec<libc::iovec> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    for i in 0..BATCH {
        iov[i].iov_base = bufs[i].as_mut_ptr().cast();
        iov[i].iov_len = SLOT;
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    let flags = if args.poll_us > 0 {
        libc::MSG_DONTWAIT
    } else {
        0
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let (mut packets, mut bytes) = (0u64, 0u64);
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs points at BATCH valid headers whose buffers outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            packets += n as u64;
            bytes += msgs[..n as usize]
                .iter()
                .map(|m| m.msg_len as u64)
                .sum::<u64>();
            continue;
        }
        if args.poll_us > 0 {
            std::thread::sleep(Duration::from_micros(args.poll_us));
        }
    }
    println!(
        "{}",
        serde_json::json!({ "packets": packets, "bytes": bytes })
    );
    Ok(())
}
