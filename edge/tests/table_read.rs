//! Reading the kernel flow table: the batch read (one BPF_MAP_LOOKUP_BATCH) returns exactly
//! what the entry-by-entry iterator returns, on a table with thousands of real flows.

use edge::{
    attach::{self, AttachMode},
    bpf::{self, LoadOptions},
    table::FlowTable,
};
use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
};
use testkit::{TestNet, A4, B4};

#[test]
fn batch_read_matches_the_iterator() {
    let net = TestNet::new();
    net.static_neighbours();
    let mut loaded = bpf::load(LoadOptions {
        max_flows: 4096,
        sample_every: 1,
        rtt: None,
    })
    .unwrap();
    let table = FlowTable::take(&mut loaded.ebpf).unwrap();
    let mut attached = Vec::new();
    attach::attach_all(
        &mut loaded.ebpf,
        std::slice::from_ref(&net.veth_b),
        Some(&net.ns_b),
        AttachMode::Tc,
        &mut attached,
    )
    .unwrap();
    // 3000 flows: one socket, 3000 destination ports.
    net.in_ns(&net.ns_a, || {
        let s = UdpSocket::bind(SocketAddr::new(A4.into(), 0)).unwrap();
        for port in 20_000..23_000u16 {
            s.send_to(b"x", SocketAddr::new(B4.into(), port)).unwrap();
        }
    });
    // veth delivers asynchronously: let the last packets (and B's ICMP errors) land first, so
    // both reads see the same table.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut batch = Vec::new();
    table.read_flows(&mut batch).unwrap();
    let mut one = Vec::new();
    table.read_flows_one_by_one(&mut one).unwrap();
    let batch: BTreeMap<_, _> = batch.into_iter().collect();
    let one: BTreeMap<_, _> = one.into_iter().collect();
    assert!(
        table.reads_in_batches(),
        "the kernel refused the batch read"
    );
    assert!(batch.len() >= 3000, "{} entries", batch.len());
    assert_eq!(batch, one);
    drop(loaded);
    attach::cleanup_all(&attached, Some(&net.ns_b));
}
