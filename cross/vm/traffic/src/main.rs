//! `eftraffic`: the VM tests' traffic, with nothing but std so it builds static for every
//! guest (busybox's `nc` has no UDP). Each side prints one `ready` line before it waits, so
//! the guest script starts the sender only once the receiver is bound (a datagram or SYN to a
//! closed port would add an ICMP or RST flow the test does not expect).
//!
//! ```text
//! eftraffic udp-echo ADDR PORT COUNT        echo COUNT datagrams back to their sender
//! eftraffic udp-send ADDR PORT COUNT SIZE   send COUNT datagrams of SIZE bytes, each waiting for its echo
//! eftraffic tcp-serve ADDR PORT REPLY       accept one connection, read to EOF, send REPLY bytes, close
//! eftraffic tcp-send ADDR PORT SEND         connect, send SEND bytes, shut down, read to EOF
//! ```
//! Exit 0 when every byte went both ways, 1 otherwise (with the reason), 2 on bad arguments.

use std::{
    io::{Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    time::Duration,
};

/// Longest wait for any one step: a hung exchange fails the check instead of the VM's timeout.
const STEP: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(Error::Usage(e)) => {
            eprintln!("eftraffic: {e}\nusage: eftraffic udp-echo|udp-send|tcp-serve|tcp-send ADDR PORT ...");
            ExitCode::from(2)
        }
        Err(Error::Io(e)) => {
            eprintln!("eftraffic: {e}");
            ExitCode::from(1)
        }
    }
}

enum Error {
    Usage(String),
    Io(String),
}

fn io<T>(what: &str, r: std::io::Result<T>) -> Result<T, Error> {
    r.map_err(|e| Error::Io(format!("{what}: {e}")))
}

fn num(args: &[String], i: usize, what: &str) -> Result<usize, Error> {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Usage(format!("{what} missing or not a number")))
}

fn run(args: &[String]) -> Result<String, Error> {
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let ip: IpAddr = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Usage("ADDR missing or not an IP address".into()))?;
    let port = num(args, 2, "PORT")?;
    let at = SocketAddr::new(
        ip,
        u16::try_from(port).map_err(|_| Error::Usage("PORT".into()))?,
    );
    match cmd {
        "udp-echo" => udp_echo(at, num(args, 3, "COUNT")?),
        "udp-send" => udp_send(at, num(args, 3, "COUNT")?, num(args, 4, "SIZE")?),
        "tcp-serve" => tcp_serve(at, num(args, 3, "REPLY")?),
        "tcp-send" => tcp_send(at, num(args, 3, "SEND")?),
        other => Err(Error::Usage(format!("unknown command {other:?}"))),
    }
}

fn ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

fn udp_echo(at: SocketAddr, count: usize) -> Result<String, Error> {
    let s = io("bind", UdpSocket::bind(at))?;
    io("timeout", s.set_read_timeout(Some(STEP)))?;
    ready();
    let mut buf = vec![0u8; 65536];
    for i in 0..count {
        let (n, from) = io(&format!("datagram {i}"), s.recv_from(&mut buf))?;
        io("echo", s.send_to(&buf[..n], from))?;
    }
    Ok(format!("echoed={count}"))
}

fn udp_send(to: SocketAddr, count: usize, size: usize) -> Result<String, Error> {
    let any: IpAddr = if to.is_ipv4() {
        [0, 0, 0, 0].into()
    } else {
        [0u16; 8].into()
    };
    let s = io("bind", UdpSocket::bind(SocketAddr::new(any, 0)))?;
    io("timeout", s.set_read_timeout(Some(STEP)))?;
    let out = vec![0x5au8; size];
    let mut buf = vec![0u8; 65536];
    for i in 0..count {
        io("send", s.send_to(&out, to))?;
        let n = io(&format!("echo {i}"), s.recv(&mut buf))?;
        if n != size {
            return Err(Error::Io(format!("echo {i} had {n} bytes, sent {size}")));
        }
    }
    let port = io("local address", s.local_addr())?.port();
    Ok(format!("sport={port} sent={count} size={size}"))
}

fn tcp_serve(at: SocketAddr, reply: usize) -> Result<String, Error> {
    let l = io("listen", TcpListener::bind(at))?;
    ready();
    let (mut c, from) = io("accept", l.accept())?;
    io("timeout", c.set_read_timeout(Some(STEP)))?;
    let mut got = Vec::new();
    io("read", c.read_to_end(&mut got))?;
    io("write", c.write_all(&vec![0xa5u8; reply]))?;
    drop(c);
    Ok(format!("peer_port={} received={}", from.port(), got.len()))
}

fn tcp_send(to: SocketAddr, send: usize) -> Result<String, Error> {
    let mut c = io("connect", TcpStream::connect_timeout(&to, STEP))?;
    io("timeout", c.set_read_timeout(Some(STEP)))?;
    let port = io("local address", c.local_addr())?.port();
    io("write", c.write_all(&vec![0x5au8; send]))?;
    io("shutdown", c.shutdown(Shutdown::Write))?;
    let mut got = Vec::new();
    io("read", c.read_to_end(&mut got))?;
    Ok(format!("sport={port} sent={send} received={}", got.len()))
}
