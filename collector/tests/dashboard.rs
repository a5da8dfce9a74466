//! The dashboard in headless Chromium (Debian's `chromium`): loaded with a bearer token, it
//! must show the device, its throughput and a known flow from live data; a screenshot is
//! saved under `<target>/test-output/`.

use shared::wire::{Count, Dns, DnsName, Latency as DnsLatency, Outcome, Rtt, Tcp};
use std::process::{Command, Stdio};
use testkit::mosquitto::Mosquitto;
use testkit::{collector::*, output_dir, publisher::*, summary::*};

/// Runs headless Chromium on `url` with a fresh profile; returns stdout.
fn chromium(url: &str, extra: &[&str]) -> String {
    let profile = std::env::temp_dir().join(testkit::unique("efchrome"));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1440,1900",
            // Virtual time runs the page's polling and fetches until the budget is spent.
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("running chromium (apt-get install chromium; scripts/setup.sh does)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dashboard_shows_device_throughput_and_flows_live() {
    let broker = Mosquitto::start();
    let c = Collector::with_args(&["--broker", &broker.url(), "--token", "s3cret"]);
    c.wait_subscribed();
    assert_eq!(
        c.get("/api/devices").0,
        200,
        "the test client sends the token"
    );
    assert_eq!(
        http_get(c.http, "/api/devices", None).0,
        401,
        "no token, no data"
    );
    assert_eq!(
        http_get(c.http, "/", None).0,
        200,
        "the page itself is open"
    );
    // A wrong token, a prefix of it, a longer one: refused; the metrics too.
    for wrong in ["wrong!", "s3cre", "s3cret0", ""] {
        for path in ["/api/devices", "/api/ingest", "/metrics"] {
            assert_eq!(
                http_get(c.http, path, Some(wrong)).0,
                401,
                "{path} with token {wrong:?}"
            );
        }
    }
    assert_eq!(
        http_get(c.http, "/metrics", None).0,
        401,
        "no token, no metrics"
    );
    assert_eq!(c.get("/metrics").0, 200, "metrics with the token");

    // Twelve 10 s windows ending now, for two devices; the last window of lab-gw-1 carries
    // 123,450 bytes: 12,345 B/s.
    let now = now_ms();
    let mut msgs = Vec::new();
    for seq in 0..12u64 {
        let start = now - (12 - seq) * WINDOW_MS as u64;
        let k = seq + 1;
        let mut s = summary(
            "lab",
            "lab-gw-1",
            42,
            seq,
            start,
            &[
                F {
                    proto: 6,
                    src: [10, 199, 0, 1],
                    src_port: 40_001,
                    dst: [192, 0, 2, 10],
                    dst_port: 443,
                    fwd: (20, 3_450 + 100 * (11 - seq)),
                    rev: (80, 100_000),
                },
                F {
                    proto: 17,
                    src: [10, 199, 0, 1],
                    src_port: 5353,
                    dst: [224, 0, 0, 251],
                    dst_port: 5353,
                    fwd: (10, 20_000),
                    rev: (0, 0),
                },
            ],
            (0, 0),
        );
        s.flows[0].rtt = Some(Rtt {
            min_us: 800,
            avg_us: 1_200,
            max_us: 4_000,
            samples: 10,
        });
        s.rtt_hist = [0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 5, 2, 1]
            .into_iter()
            .collect();
        s.health.active_flows = 9_000 + k as u32;
        // Owners: the HTTPS flow is curl's (pid 4242, backup.service); the mDNS one was
        // started by a Raspberry Pi on the LAN that gave its name over DHCP.
        s.names = [
            "curl",
            "backup.service",
            "Raspberry Pi Trading Ltd",
            "kitchen-pi",
        ]
        .map(String::from)
        .to_vec();
        s.devices = vec![shared::wire::Device {
            mac: [0xb8, 0x27, 0xeb, 0x11, 0x22, 0x33],
            vendor: Some(2),
            host_name: Some(3),
            client_id: None,
        }];
        s.flows[0].owner = Some(shared::wire::Owner {
            process: Some(shared::wire::Process { pid: 4242, comm: 0 }),
            service: Some(1),
            ..Default::default()
        });
        s.flows[1].owner = Some(shared::wire::Owner {
            initiator: Some(0),
            ..Default::default()
        });
        // TCP health: the HTTPS connection came up in window 0 and retransmits one 100-byte
        // segment a window; windows 8-10 each hold a connect refused by 192.0.2.99:8443, and
        // window 10 one to 198.51.100.7:22 left unanswered after 2 SYN retries.
        s.tcp_health = true;
        s.flows[0].tcp = Some(Tcp {
            outcome: Outcome::Established,
            decided: seq == 0,
            fwd: shared::wire::TcpDir {
                retrans: Count {
                    packets: 1,
                    bytes: 100,
                },
                ..Default::default()
            },
            ..Tcp::default()
        });
        if (8..=10).contains(&seq) {
            let mut failed = vec![F {
                proto: 6,
                src: [10, 199, 0, 1],
                src_port: 41_000 + seq as u16,
                dst: [192, 0, 2, 99],
                dst_port: 8443,
                fwd: (1, 60),
                rev: (1, 40),
            }];
            if seq == 10 {
                failed.push(F {
                    proto: 6,
                    src: [10, 199, 0, 1],
                    src_port: 42_000,
                    dst: [198, 51, 100, 7],
                    dst_port: 22,
                    fwd: (3, 180),
                    rev: (0, 0),
                });
            }
            let more = summary("lab", "lab-gw-1", 42, seq, start, &failed, (0, 0));
            let first = s.flows.len();
            for (i, mut f) in more.flows.into_iter().enumerate() {
                let ip = more.addrs[f.dst as usize];
                f.src = 0;
                f.dst = s.addrs.iter().position(|a| *a == ip).unwrap_or_else(|| {
                    s.addrs.push(ip);
                    s.addrs.len() - 1
                }) as u32;
                f.tcp = Some(if i == 0 {
                    Tcp {
                        outcome: Outcome::Refused,
                        decided: true,
                        rev: shared::wire::TcpDir {
                            rst: 1,
                            ..Default::default()
                        },
                        ..Tcp::default()
                    }
                } else {
                    Tcp {
                        outcome: Outcome::Unanswered,
                        decided: true,
                        syn_retries: 2,
                        ..Tcp::default()
                    }
                });
                s.totals.add(&f.fwd);
                s.totals.add(&f.rev);
                s.flows.push(f);
            }
            assert!(s.flows.len() > first);
        }
        msgs.push(Msg::summary(&s));
        let other = summary(
            "branch",
            "branch-7",
            43,
            seq,
            start,
            &[F {
                proto: 17,
                src: [10, 77, 0, 2],
                src_port: 51_000,
                dst: [203, 0, 113, 5],
                dst_port: 4789,
                fwd: (100 * k, 60_000 * k),
                rev: (40 * k, 20_000 * k),
            }],
            (0, 0),
        );
        // branch-7 looks at DNS: every window two lookups of updates.example.com answered in
        // 12 ms on average by 192.0.2.53; windows 9-11 one of missing.example, NXDOMAIN in
        // 3 ms.
        let mut other = other;
        let mut lookups = vec![(53_000 + seq as u16, "updates.example.com", 1, 2, 0, 12_000)];
        if seq >= 9 {
            lookups.push((54_000 + seq as u16, "missing.example", 28, 1, 1, 3_000));
        }
        other.dns = true;
        let mut hist = [0u32; 14];
        for (port, name, qtype, queries, nxdomain, avg_us) in lookups {
            let ip = shared::wire::Addr::V4([192, 0, 2, 53]);
            let dst = other
                .addrs
                .iter()
                .position(|a| *a == ip)
                .unwrap_or_else(|| {
                    other.addrs.push(ip);
                    other.addrs.len() - 1
                }) as u32;
            let f = shared::wire::FlowRecord {
                proto: 17,
                src: 0,
                dst,
                src_port: port,
                dst_port: 53,
                fwd: Count {
                    packets: u64::from(queries),
                    bytes: 70 * u64::from(queries),
                },
                rev: Count {
                    packets: u64::from(queries),
                    bytes: 150 * u64::from(queries),
                },
                dns: Some(Dns {
                    queries,
                    responses: queries,
                    noerror: queries - nxdomain,
                    nxdomain,
                    qtype,
                    latency: Some(DnsLatency {
                        min_us: avg_us / 2,
                        avg_us,
                        max_us: avg_us * 2,
                        samples: queries,
                    }),
                    name: DnsName::new(name).unwrap(),
                    ..Dns::default()
                }),
                ..Default::default()
            };
            hist[shared::wire::rtt_bucket(avg_us)] += queries;
            other.totals.add(&f.fwd);
            other.totals.add(&f.rev);
            other.flows.push(f);
        }
        other.dns_hist = hist.into_iter().collect();
        // branch-7's window 5 never arrives: a gap the devices table shows.
        if seq != 5 {
            msgs.push(Msg::summary(&other));
        }
    }
    // edge/gw-9 has a bad day (issue 24) in its latest of three windows: a flood (40 packets of
    // reclaimed flows, in its 50-packet overflow), its spool file not writable, its clock set
    // back 2 s, 7 packets with lying headers. A bucket of the panel may hold several windows:
    // the latest bucket's values are these whatever the step.
    for seq in 0..3u64 {
        let start = now - (3 - seq) * WINDOW_MS as u64;
        let latest = seq == 2;
        let overflow = if latest { (50, 5_000) } else { (0, 0) };
        let flow = F {
            proto: 17,
            src: [10, 9, 0, 1],
            src_port: 41_000,
            dst: [198, 51, 100, 9],
            dst_port: 53,
            fwd: (10, 1_000),
            rev: (10, 1_000),
        };
        let mut s = summary("edge", "gw-9", 44, seq, start, &[flow], overflow);
        s.health.spool_write_errors = 3 * seq as u32;
        if latest {
            s.health.header_excess = 7;
            s.health.reclaimed = 40;
            s.health.spool_fallback = true;
            s.health.clock_step_ms = -2_000;
            s.health.clock_steps = 1;
        }
        msgs.push(Msg::summary(&s));
    }
    msgs.push(Msg {
        retain: true,
        ..Msg::raw("edgeflow/v1/lab/lab-gw-1/status", b"online")
    });
    msgs.push(Msg::raw("edgeflow/v1/lab/lab-gw-1/flows", b"\x07garbage"));
    publish_all(broker.port, &msgs);
    let n = msgs.len() as u64;
    c.wait_for("/api/ingest", std::time::Duration::from_secs(20), |v| {
        v["messages"] == n
    });

    let url = format!("{}/#token=s3cret", c.base_url());
    let dom = chromium(&url, &["--dump-dom"]);
    let dir = output_dir();
    std::fs::write(dir.join("dashboard.html"), &dom).unwrap();
    for want in [
        "data-device=\"lab/lab-gw-1\"",
        "data-device=\"branch/branch-7\"",
        "data-gaps=\"1\"",
        "1 windows missing",
        // Throughput of the latest window, raw and formatted.
        "data-bps=\"12345\"",
        "12.3 kB/s",
        // The known flow, and its RTT.
        "data-flow=\"6 10.199.0.1:40001 192.0.2.10:443\"",
        "800 µs / 1.2 ms / 4.0 ms",
        // Live data arrived through the token-protected API.
        "live ·",
        "class=\"state online\"",
        "unknown_version 1",
        // TCP health: failed connects by destination, their sum, the retransmit rate
        // (1,200 of 1,248,480 bytes).
        "data-dest=\"192.0.2.99:8443\" data-failed=\"3\"",
        "data-dest=\"198.51.100.7:22\" data-failed=\"1\"",
        "3 refused · 1 unanswered · 2 SYN retries",
        "0.10 %",
        "1.20 kB of 1.25 MB · 12 segments",
        // DNS (branch-7, 11 windows stored): the names, the resolver, the rcode mix
        // (3 NXDOMAIN of 25 responses), the mean latency ((22 x 12 + 3 x 3) / 25 ms).
        "data-name=\"updates.example.com A\" data-queries=\"22\" data-errors=\"0\"",
        "data-name=\"missing.example AAAA\" data-queries=\"3\" data-errors=\"3\"",
        "data-resolver=\"192.0.2.53:53\" data-queries=\"25\" data-errors=\"3\"",
        "3 NXDOMAIN · 0 SERVFAIL · 0 REFUSED · 0 other",
        "12.00 %",
        "mean · 25 samples",
        // Who sent it: the process and its service, the LAN device with its vendor, DHCP name
        // and destination.
        "data-process=\"curl\" data-service=\"backup.service\"",
        "data-service=\"backup.service\" data-bytes=",
        "data-mac=\"b8:27:eb:11:22:33\" data-vendor=\"Raspberry Pi Trading Ltd\" data-name=\"kitchen-pi\"",
        "data-dest=\"224.0.0.251:5353\"",
        // The fleet list gives gw-9's bad day as reasons, most severe first.
        "data-device=\"edge/gw-9\" data-attention=\"flooded table_full spool_fallback clock_stepped\"",
        "<span class=\"why flooded\">flooded</span><span class=\"why table_full\">table full</span><span class=\"why spool_fallback\">spool in memory</span><span class=\"why clock_stepped\">clock stepped</span>",
        "1 flooded",
        "1 spool in memory",
        "1 clock stepped",
        // The flow table names the HTTPS flow's owner.
        "<b>curl</b> <span class=\"dim\">(4242)</span> <span class=\"dim\">· backup.service</span>",
    ] {
        assert!(
            dom.contains(want),
            "dashboard lacks {want:?}; DOM saved in {}",
            dir.join("dashboard.html").display()
        );
    }

    // The TCP panel on a device's page is that device's: lab-gw-1's failed connects, and for
    // branch-7 (no TCP health) a note saying so.
    let page = |device: &str| {
        chromium(
            &format!("{}/#/device/{device}?token=s3cret", c.base_url()),
            &["--dump-dom"],
        )
    };
    let lab = page("lab/lab-gw-1");
    for want in [
        "data-dest=\"192.0.2.99:8443\" data-failed=\"3\"",
        "3 refused · 1 unanswered · 2 SYN retries",
        "0.10 %",
    ] {
        assert!(lab.contains(want), "lab-gw-1's page lacks {want:?}");
    }
    assert!(
        lab.contains("no agent in this range looks at DNS") && !lab.contains("data-resolver="),
        "lab-gw-1's page shows another device's DNS figures"
    );
    // gw-9's health panel: the new fields over its three windows, the latest value shown.
    let gw9 = page("edge/gw-9");
    std::fs::write(dir.join("dashboard-gw-9.html"), &gw9).unwrap();
    for want in [
        "<div class=\"mini-head\"><label>Packets of reclaimed flows (flood)</label><b>40</b>",
        "<div class=\"mini-head\"><label>Spool file not writable</label><b>in memory</b>",
        "<div class=\"mini-head\"><label>Clock steps</label><b>-2.0 s</b>",
        "<div class=\"mini-head\"><label>Spool write errors</label><b>6</b>",
        "<div class=\"mini-head\"><label>Packets with lying headers</label><b>7</b>",
        "file not writable, in memory",
        "<span class=\"why spool_fallback\">spool in memory</span>",
    ] {
        assert!(
            gw9.contains(want),
            "gw-9's page lacks {want:?}; DOM saved in {}",
            dir.join("dashboard-gw-9.html").display()
        );
    }
    let branch = page("branch/branch-7");
    assert!(
        branch.contains("no agent in this range measures TCP") && !branch.contains("data-dest="),
        "branch-7's page shows another device's TCP figures"
    );
    assert!(
        branch.contains("no agent in this range reports owners") && !branch.contains("data-mac="),
        "branch-7's page shows another device's owners"
    );
    for want in [
        "data-resolver=\"192.0.2.53:53\" data-queries=\"25\"",
        "3 NXDOMAIN · 0 SERVFAIL · 0 REFUSED · 0 other",
    ] {
        assert!(branch.contains(want), "branch-7's page lacks {want:?}");
    }
    // The latency histogram (buckets 2^11 and 2^13 µs) and the error rates over time are
    // drawn.
    for want in [
        "data-lo=\"2048\" data-count=\"3\"",
        "data-lo=\"8192\" data-count=\"22\"",
    ] {
        assert!(
            branch.contains(want),
            "branch-7's DNS histogram lacks {want:?}"
        );
    }
    let rates = branch
        .split("id=\"dns-rate-chart\"")
        .nth(1)
        .expect("the DNS rate chart");
    let rates = &rates[..rates.find("</div>").unwrap_or(rates.len())];
    assert!(
        rates.contains("<polyline") || rates.contains("<circle"),
        "the error rates over time are drawn: {rates}"
    );

    let shot = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&url, &[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real picture"
    );
}
