//! Cgroup v2 ids to paths and services: the kernel gives a socket's cgroup as the id of its
//! cgroup directory (the directory's inode number on the cgroup2 file system); the agent
//! finds the directory by walking the unified hierarchy, and names the service from the
//! path: the systemd unit (`nginx.service`, `session-3.scope`) or the container
//! (`container:<12 hex>` for docker, containerd, CRI-O and podman scopes) it lies in.
//!
//! The hierarchy is found in /proc/self/mountinfo (`cgroup2`): /sys/fs/cgroup on a unified
//! system, /sys/fs/cgroup/unified on a hybrid one.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Directories a walk visits at most (a box with more cgroups than this is not an edge box;
/// the ones beyond are not named).
const MAX_WALK: usize = 65_536;
/// Deepest nesting walked.
const MAX_DEPTH: usize = 32;

/// The cgroup v2 mount point, from a mountinfo text: the first `cgroup2` mount.
pub fn unified_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape(mount)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The service a cgroup path belongs to: the deepest container or systemd unit (not a
/// slice) in it, followed by what lies below it; the path itself when it names neither.
pub fn service_of(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, p) in parts.iter().enumerate().rev() {
        let name = if let Some(id) = container_id(p) {
            format!("container:{}", &id[..12])
        } else if is_unit(p) {
            (*p).to_string()
        } else {
            continue;
        };
        let rest = &parts[i + 1..];
        return if rest.is_empty() {
            name
        } else {
            format!("{name}/{}", rest.join("/"))
        };
    }
    if parts.is_empty() {
        "/".into()
    } else {
        format!("/{}", parts.join("/"))
    }
}

fn is_unit(p: &str) -> bool {
    p.ends_with(".service") || p.ends_with(".scope")
}

/// A container id in a cgroup directory name: 64 hex digits, alone or as
/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`.
fn container_id(p: &str) -> Option<&str> {
    let p = p.strip_suffix(".scope").unwrap_or(p);
    let id = p.rsplit('-').next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Cgroup ids seen so far, with their paths (relative to the mount, `/` for the root).
pub struct Cgroups {
    root: PathBuf,
    paths: HashMap<u64, String>,
    /// Ids a walk did not find (gone, or beyond [`MAX_WALK`]); looked for again at the next
    /// walk that another id asks for.
    missing: HashMap<u64, ()>,
}

impl Cgroups {
    pub fn new(root: PathBuf) -> Cgroups {
        Cgroups {
            root,
            paths: HashMap::new(),
            missing: HashMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of cgroup `id`: from what was seen, or from a new walk of the hierarchy
    /// when the id is new.
    pub fn path(&mut self, id: u64) -> Option<&str> {
        if !self.paths.contains_key(&id) && !self.missing.contains_key(&id) {
            self.walk();
            if !self.paths.contains_key(&id) {
                self.missing.insert(id, ());
            }
        }
        self.paths.get(&id).map(String::as_str)
    }

    /// Every directory's inode → path. Cgroups keep their id for life, so what was found
    /// stays valid; the map is rebuilt so that removed cgroups do not pile up.
    fn walk(&mut self) {
        let mut found = HashMap::new();
        let mut stack = vec![(self.root.clone(), String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            if found.len() >= MAX_WALK {
                break;
            }
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            found.insert(
                meta.ino(),
                if rel.is_empty() {
                    "/".into()
                } else {
                    rel.clone()
                },
            );
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    stack.push((e.path(), format!("{rel}/{name}"), depth + 1));
                }
            }
        }
        self.paths = found;
        self.missing.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_mount_on_hybrid_and_unified_systems() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            unified_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            unified_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        assert_eq!(unified_mount(v1), None);
        let spaced = "41 31 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(unified_mount(spaced), Some(PathBuf::from("/mnt/cg two")));
    }

    #[test]
    fn services_are_units_and_containers() {
        assert_eq!(service_of("/system.slice/nginx.service"), "nginx.service");
        assert_eq!(
            service_of("/user.slice/user-1000.slice/session-3.scope"),
            "session-3.scope"
        );
        let id = "4f3c2b1a".repeat(8);
        assert_eq!(
            service_of(&format!("/system.slice/docker-{id}.scope")),
            "container:4f3c2b1a4f3c"
        );
        assert_eq!(
            service_of(&format!("/kubepods/burstable/pod1/{id}")),
            "container:4f3c2b1a4f3c"
        );
        assert_eq!(
            service_of("/system.slice/edge.service/worker"),
            "edge.service/worker"
        );
        assert_eq!(service_of("/edgeflow-test-1-a"), "/edgeflow-test-1-a");
        assert_eq!(service_of("/"), "/");
        assert_eq!(service_of("/system.slice"), "/system.slice");
    }

    #[test]
    fn a_walk_finds_directories_by_inode() {
        let dir = std::env::temp_dir().join(format!("edgeflow-cg-walk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a.slice/b.service")).unwrap();
        let ino = std::fs::metadata(dir.join("a.slice/b.service"))
            .unwrap()
            .ino();
        let mut cg = Cgroups::new(dir.clone());
        assert_eq!(cg.path(ino), Some("/a.slice/b.service"));
        assert_eq!(cg.path(u64::MAX), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
