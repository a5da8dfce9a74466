//! What becomes of the watched interfaces while the agent runs: down, up again, or deleted.
//!
//! Looked at once per window, in the interfaces' namespace, by index (a renamed interface is
//! still ours). XDP and TCX links stay attached while an interface is down and count again
//! when it is back up, so down and up are only reported. A deleted interface takes its links
//! with it; one made later under the same name is another interface (a new index) and is not
//! watched. When every watched interface is gone there is nothing left to count, and the
//! agent stops with an error (exit 1) instead of publishing empty windows forever.

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
}

/// Every watched interface was deleted.
#[derive(Debug, thiserror::Error)]
#[error("every watched interface is gone ({0}); nothing left to count")]
pub struct NoneLeft(String);

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
        };
        // Quietly take the state they are in now: only changes are news.
        if let Some(now) = look_all(&s.list, s.netns.as_deref()) {
            for (w, now) in s.list.iter_mut().zip(now) {
                w.state = now;
            }
        }
        s
    }

    /// Looks again, reports every change on stderr, and fails when none is left.
    pub fn check(&mut self) -> Result<(), NoneLeft> {
        let Some(now) = look_all(&self.list, self.netns.as_deref()) else {
            return Ok(());
        };
        for (w, now) in self.list.iter_mut().zip(now) {
            if w.state == now || w.state == State::Gone {
                continue;
            }
            match now {
                State::Down => eprintln!("edgeflow: {} is down (no traffic to count)", w.name),
                State::Up => eprintln!("edgeflow: {} is up again", w.name),
                State::Gone => eprintln!(
                    "edgeflow: {} was deleted; its programs went with it, no longer watched",
                    w.name
                ),
            }
            w.state = now;
        }
        let left = self.list.iter().filter(|w| w.state != State::Gone).count();
        if left == 0 {
            let names: Vec<&str> = self.list.iter().map(|w| w.name.as_str()).collect();
            return Err(NoneLeft(names.join(", ")));
        }
        Ok(())
    }
}

/// What each interface is now; `None` when no look could be taken (no thread to enter the
/// namespace with): the states stay as they were, the next check looks again.
fn look_all(list: &[Watched], netns: Option<&str>) -> Option<Vec<State>> {
    let look = || {
        list.iter()
            .map(|w| match netdev::ifname(w.ifindex) {
                None => State::Gone,
                Some(name) => match netdev::is_up(&name) {
                    Ok(true) => State::Up,
                    Ok(false) => State::Down,
                    // Gone between the two calls.
                    Err(_) => State::Gone,
                },
            })
            .collect()
    };
    match netdev::in_netns(netns, look) {
        Ok(states) => Some(states),
        // The namespace itself can only go away with its interfaces.
        Err(e) if e.downcast_ref::<UsageError>().is_some() => Some(vec![State::Gone; list.len()]),
        Err(e) => {
            eprintln!("edgeflow: looking at the interfaces: {e:#}");
            None
        }
    }
}
