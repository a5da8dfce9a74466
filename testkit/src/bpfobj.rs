//! The BPF programs and links a process holds, from its fdinfo: what it attached, to check
//! afterwards that none of it is left in the kernel.

/// One BPF link a process holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub id: u32,
    /// `tcx`, `xdp`, ...
    pub link_type: String,
    pub prog_id: u32,
    pub ifindex: Option<u32>,
    /// As the kernel prints it, e.g. `46 (ingress)`.
    pub attach_type: Option<String>,
}

/// Program ids and links held by process `pid`.
pub fn held_by(pid: u32) -> (Vec<u32>, Vec<Link>) {
    let mut progs = Vec::new();
    let mut links = Vec::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let Ok(info) = std::fs::read_to_string(e.unwrap().path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let num = |name: &str| field(name).and_then(|v| v.parse::<u32>().ok());
        match (field("link_type"), num("link_id"), num("prog_id")) {
            (Some(link_type), Some(id), Some(prog_id)) => links.push(Link {
                id,
                link_type,
                prog_id,
                ifindex: num("ifindex"),
                attach_type: field("attach_type"),
            }),
            (None, _, Some(prog_id)) if field("prog_type").is_some() => progs.push(prog_id),
            _ => {}
        }
    }
    (progs, links)
}

/// Whether the kernel still has a program with this id (`bpftool prog show id`).
pub fn prog_exists(id: u32) -> bool {
    bpftool_ok(&["prog", "show", "id", &id.to_string()])
}

/// Whether the kernel still has a link with this id (`bpftool link show id`).
pub fn link_exists(id: u32) -> bool {
    bpftool_ok(&["link", "show", "id", &id.to_string()])
}

fn bpftool_ok(args: &[&str]) -> bool {
    std::process::Command::new("bpftool")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running bpftool")
        .success()
}
