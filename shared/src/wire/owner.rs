//! Who is behind a flow (issue 22; docs/owners.md): for the box's own flows the process that
//! created the socket and its service (systemd unit, container, or cgroup path), for
//! forwarded ones the LAN devices at both ends as seen on the watched interface.
//!
//! Strings travel once per message in [`super::Summary::names`] and devices (MAC, vendor,
//! DHCP host name and client id) once in [`super::Summary::devices`]; a flow record's
//! [`Owner`] holds indices into them. On the wire `Option<Owner>` is one varint header (0:
//! none) and the values its bits name: 1 byte for a flow without an owner, about 8 for a
//! local flow with process, service and both MACs.

use serde::{Deserialize, Serialize};

/// A flow's owner: indices into its message's (or window's) names and devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The process that created the flow's socket (local flows the agent saw created).
    pub process: Option<Process>,
    /// The socket's service: index into the names of a systemd unit (`nginx.service`), a
    /// container (`container:<12 hex>`), or else the cgroup path (`/machine/lab`).
    pub service: Option<u32>,
    /// The initiator's MAC (the first frame's source or destination, as its direction says):
    /// index into the devices.
    pub initiator: Option<u32>,
    /// The responder's MAC, likewise (for a flow to the Internet: the next hop's).
    pub responder: Option<u32>,
}

/// A process by its id and command name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// The process id (thread group id), as the initial pid namespace numbers it.
    pub pid: u32,
    /// The command name (at most 15 bytes, as the kernel keeps it): index into the names.
    pub comm: u32,
}

/// A LAN device as one message names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub mac: [u8; 6],
    /// The IEEE registry's organization for the MAC's OUI: index into the names.
    pub vendor: Option<u32>,
    /// The host name its DHCP requests gave (option 12): index into the names.
    pub host_name: Option<u32>,
    /// Its DHCP client identifier (option 61) as hex bytes: index into the names.
    pub client_id: Option<u32>,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(m: &[u8; 6]) -> heapless::String<17> {
    let mut s = heapless::String::new();
    for (i, b) in m.iter().enumerate() {
        if i > 0 {
            let _ = s.push(':');
        }
        for n in [b >> 4, b & 0xf] {
            let _ = s.push(char::from_digit(n as u32, 16).unwrap_or('0'));
        }
    }
    s
}

impl Owner {
    /// The name and device indices it holds, for bound checks.
    pub fn names(&self) -> impl Iterator<Item = u32> {
        let p = self.process.map(|p| p.comm);
        p.into_iter().chain(self.service)
    }

    pub fn devices(&self) -> impl Iterator<Item = u32> {
        self.initiator.into_iter().chain(self.responder)
    }

    /// The same owner with its indices mapped (into another message's tables).
    pub fn map(&self, mut name: impl FnMut(u32) -> u32, mut dev: impl FnMut(u32) -> u32) -> Owner {
        Owner {
            process: self.process.map(|p| Process {
                pid: p.pid,
                comm: name(p.comm),
            }),
            service: self.service.map(&mut name),
            initiator: self.initiator.map(&mut dev),
            responder: self.responder.map(&mut dev),
        }
    }
}

/// The compact wire form of `Option<Owner>` (`#[serde(with = "...")]` on
/// [`super::FlowRecord::owner`]): one varint `h`, 0 for none, else 1 + bits saying which
/// values follow, in this order: (0) process: pid and comm, (1) service, (2) initiator,
/// (3) responder.
/// The owner rules of a summary: names bounded, every index in range.
pub(super) fn validate(s: &super::Summary) -> Result<(), super::DecodeError> {
    use super::{DecodeError, MAX_NAMES_PER_MESSAGE, MAX_NAME_LEN};
    let (names, devices) = (s.names.len(), s.devices.len());
    if names > MAX_NAMES_PER_MESSAGE || devices > MAX_NAMES_PER_MESSAGE {
        return Err(DecodeError::Invalid("too many names or devices"));
    }
    if s.names.iter().any(|n| n.len() > MAX_NAME_LEN) {
        return Err(DecodeError::Invalid("name too long"));
    }
    let name_ok = |i: u32| (i as usize) < names;
    if s.devices.iter().any(|d| {
        [d.vendor, d.host_name, d.client_id]
            .into_iter()
            .flatten()
            .any(|i| !name_ok(i))
    }) {
        return Err(DecodeError::Invalid("device name index out of range"));
    }
    for o in s.flows.iter().filter_map(|f| f.owner.as_ref()) {
        if !o.names().all(name_ok) || !o.devices().all(|i| (i as usize) < devices) {
            return Err(DecodeError::Invalid("owner index out of range"));
        }
    }
    Ok(())
}

pub(super) mod compact {
    use super::{Owner, Process};
    use core::fmt;
    use serde::{
        de::{self, SeqAccess, Visitor},
        ser::SerializeTuple,
        Deserializer, Serializer,
    };

    const PROCESS: u32 = 1 << 0;
    const SERVICE: u32 = 1 << 1;
    const INITIATOR: u32 = 1 << 2;
    const RESPONDER: u32 = 1 << 3;
    const ALL: u32 = PROCESS | SERVICE | INITIATOR | RESPONDER;
    /// The header and at most five values.
    const MAX_ELEMENTS: usize = 6;

    pub fn serialize<S: Serializer>(o: &Option<Owner>, s: S) -> Result<S::Ok, S::Error> {
        // postcard writes a tuple's elements and no length, so the tuple can be as long as
        // the header says.
        let mut t = s.serialize_tuple(MAX_ELEMENTS)?;
        let Some(o) = o else {
            t.serialize_element(&0u32)?;
            return t.end();
        };
        let bits = o.process.map_or(0, |_| PROCESS)
            | o.service.map_or(0, |_| SERVICE)
            | o.initiator.map_or(0, |_| INITIATOR)
            | o.responder.map_or(0, |_| RESPONDER);
        t.serialize_element(&(1 + bits))?;
        if let Some(p) = o.process {
            t.serialize_element(&p.pid)?;
            t.serialize_element(&p.comm)?;
        }
        for v in [o.service, o.initiator, o.responder].into_iter().flatten() {
            t.serialize_element(&v)?;
        }
        t.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Owner>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Owner>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an owner block")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Option<Owner>, A::Error> {
                let mut next = |what: &'static str| -> Result<u32, A::Error> {
                    a.next_element::<u32>()?
                        .ok_or_else(|| de::Error::custom(what))
                };
                let h = next("owner header")?;
                if h == 0 {
                    return Ok(None);
                }
                let bits = h - 1;
                if bits & !ALL != 0 {
                    return Err(de::Error::custom("unknown owner bits"));
                }
                let mut o = Owner::default();
                if bits & PROCESS != 0 {
                    o.process = Some(Process {
                        pid: next("pid")?,
                        comm: next("comm")?,
                    });
                }
                if bits & SERVICE != 0 {
                    o.service = Some(next("service")?);
                }
                if bits & INITIATOR != 0 {
                    o.initiator = Some(next("initiator")?);
                }
                if bits & RESPONDER != 0 {
                    o.responder = Some(next("responder")?);
                }
                Ok(Some(o))
            }
        }
        d.deserialize_tuple(MAX_ELEMENTS, V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct R(#[serde(with = "compact")] Option<Owner>, u8);

    fn bytes(o: Option<Owner>) -> Vec<u8> {
        postcard::to_allocvec(&R(o, 7)).unwrap()
    }

    #[test]
    fn none_is_one_byte_and_a_local_flow_about_eight() {
        assert_eq!(bytes(None), [0, 7]);
        let local = Owner {
            process: Some(Process {
                pid: 31_337,
                comm: 2,
            }),
            service: Some(3),
            initiator: Some(0),
            responder: Some(1),
        };
        let b = bytes(Some(local));
        assert_eq!(b.len(), 1 + 3 + 1 + 1 + 1 + 1 + 1);
        assert_eq!(postcard::from_bytes::<R>(&b).unwrap(), R(Some(local), 7));
        let fwd = Owner {
            initiator: Some(4),
            responder: Some(5),
            ..Owner::default()
        };
        let b = bytes(Some(fwd));
        assert_eq!(b.len(), 4);
        assert_eq!(postcard::from_bytes::<R>(&b).unwrap(), R(Some(fwd), 7));
    }

    #[test]
    fn unknown_bits_and_cut_blocks_are_refused() {
        assert!(postcard::from_bytes::<R>(&[17, 7]).is_err());
        assert!(postcard::from_bytes::<R>(&[2, 200]).is_err());
    }

    #[test]
    fn macs_print_as_colon_hex() {
        assert_eq!(
            mac_text(&[0x00, 0x1b, 0x63, 0xaa, 0x0f, 0xff]).as_str(),
            "00:1b:63:aa:0f:ff"
        );
    }
}
