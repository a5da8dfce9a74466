//! What becomes of the watched interfaces while the agent runs: down, up again, deleted, and
//! made again under the same name.
//!
//! Looked at once per window, in the interfaces' namespace, by index (a renamed interface is
//! still ours). XDP and TCX links stay attached while an interface is down and count again
//! when it is back up, so down and up are only reported. A deleted interface takes its links
//! with it; interfaces are watched by name, so when one of a watched name appears again (a
//! new index: `ppp0` after a modem reconnect, `wg0` after a VPN restart) the programs are
//! attached to it within a window, the operator is told, and the re-attachments are counted
//! (health). With re-attaching off (`reattach = false`) a deleted interface stays unwatched.
//! When every watched interface is gone there is nothing left to count: the agent waits
//! `gone_wait` for one to come back, then stops with an error (exit 1) instead of publishing
//! empty windows forever.

use crate::{
    probe::{attach::Attachment, netdev},
    UsageError,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    Gone,
}

#[derive(Debug)]
struct Watched {
    name: String,
    ifindex: u32,
    state: State,
}

/// The watched interfaces and what they were last seen as.
#[derive(Debug)]
pub struct IfaceStates {
    list: Vec<Watched>,
    netns: Option<String>,
    /// Re-attachments to interfaces made again under a watched name, since start.
    reattached: u64,
    /// Since when every watched interface is gone.
    none_since: Option<std::time::Instant>,
}

/// Every watched interface was deleted (and none came back in time).
#[derive(Debug, thiserror::Error)]
#[error("every watched interface is gone ({0}); nothing left to count")]
pub struct NoneLeft(String);

/// What to do about a watched name that disappears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reattach {
    /// Attach again to an interface made under a watched name.
    pub on: bool,
    /// How long to wait for one to come back when none is left (zero: stop at once).
    pub gone_wait: std::time::Duration,
}

impl Default for Reattach {
    fn default() -> Reattach {
        Reattach {
            on: true,
            gone_wait: std::time::Duration::ZERO,
        }
    }
}

impl IfaceStates {
    pub fn new(attached: &[Attachment], netns: Option<&str>) -> IfaceStates {
        let mut s = IfaceStates {
            list: attached
                .iter()
                .map(|a| Watched {
                    name: a.iface.clone(),
                    ifindex: a.ifindex,
                    state: State::Up,
                })
                .collect(),
            netns: netns.map(str::to_string),
            reattached: 0,
            none_since: None,
        };
        // Quietly take the state they are in now: only changes are news.
        if let Some(now) = look_all(&s.list, s.netns.as_deref()) {
            for (w, (now, _)) in s.list.iter_mut().zip(now) {
                w.state = now;
            }
        }
        s
    }

    /// Re-attachments since start.
    pub fn reattached(&self) -> u64 {
        self.reattached
    }

    /// Looks again, reports every change on stderr, attaches with `attach` (which returns
    /// the new index) to an interface made again under a watched name, and fails when none
    /// has been left for longer than `how.gone_wait`.
    pub fn check(
        &mut self,
        how: Reattach,
        mut attach: impl FnMut(&str, u32) -> anyhow::Result<u32>,
    ) -> Result<(), NoneLeft> {
        let Some(now) = look_all(&self.list, self.netns.as_deref()) else {
            return Ok(());
        };
        for (w, (now, by_name)) in self.list.iter_mut().zip(now) {
            if now == State::Gone && how.on {
                if let Some(new) = by_name.filter(|i| *i != w.ifindex) {
                    match attach(&w.name, w.ifindex) {
                        Ok(ifindex) => {
                            self.reattached += 1;
                            eprintln!(
                                "edgeflow: {} is back (index {} -> {ifindex}): attached again \
                                 ({} re-attachments since start)",
                                w.name, w.ifindex, self.reattached
                            );
                            w.ifindex = ifindex;
                            w.state = State::Up;
                        }
                        Err(e) => {
                            w.state = State::Gone;
                            eprintln!(
                                "edgeflow: {} is back (index {new}) but attaching failed: {e:#}; \
                                 trying again next window",
                                w.name
                            );
                        }
                    }
                    continue;
                }
            }
            if w.state == now || w.state == State::Gone {
                continue;
            }
            match now {
                State::Down => eprintln!("edgeflow: {} is down (no traffic to count)", w.name),
                State::Up => eprintln!("edgeflow: {} is up again", w.name),
                State::Gone if how.on => eprintln!(
                    "edgeflow: {} was deleted; its programs went with it; attaching again \
                     when an interface of that name appears",
                    w.name
                ),
                State::Gone => eprintln!(
                    "edgeflow: {} was deleted; its programs went with it, no longer watched",
                    w.name
                ),
            }
            w.state = now;
        }
        let left = self.list.iter().filter(|w| w.state != State::Gone).count();
        if left > 0 {
            self.none_since = None;
            return Ok(());
        }
        let since = *self.none_since.get_or_insert_with(std::time::Instant::now);
        if !how.on || since.elapsed() >= how.gone_wait {
            let names: Vec<&str> = self.list.iter().map(|w| w.name.as_str()).collect();
            return Err(NoneLeft(names.join(", ")));
        }
        Ok(())
    }
}

/// What each interface is now, and the index its name has now (if any); `None` when no look
/// could be taken (no thread to enter the namespace with): the states stay as they were, the
/// next check looks again.
fn look_all(list: &[Watched], netns: Option<&str>) -> Option<Vec<(State, Option<u32>)>> {
    let look = || {
        list.iter()
            .map(|w| {
                let state = match netdev::ifname(w.ifindex) {
                    None => State::Gone,
                    Some(name) => match netdev::is_up(&name) {
                        Ok(true) => State::Up,
                        Ok(false) => State::Down,
                        // Gone between the two calls.
                        Err(_) => State::Gone,
                    },
                };
                (state, netdev::ifindex(&w.name).ok())
            })
            .collect()
    };
    match netdev::in_netns(netns, look) {
        Ok(states) => Some(states),
        // The namespace itself can only go away with its interfaces.
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            Some(vec![(State::Gone, None); list.len()])
        }
        Err(e) => {
            eprintln!("edgeflow: looking at the interfaces: {e:#}");
            None
        }
    }
}
