//! Each device's discovery endpoint, derived from its id (SPEC section 5).
//!
//! The OBT follows a doxm answer up at the answer's source address and port, so every device
//! needs an endpoint of its own that doxm-gate owns. The endpoint is a pure function of the
//! device id, in both directions, so no table is needed to route a unicast datagram to its
//! device or to choose an answer's source:
//!
//! - **port mode**: device `id` has port `base + id` on the gate's own address (the driver
//!   picks the interface address the request came in on). For fleets up to tens of thousands.
//! - **address mode** ("AnyIP"): device `id` has address `prefix + id + 1` on one shared port,
//!   in an IPv6 (and optionally an IPv4) prefix routed to the host. Scales to millions. When
//!   the two prefixes differ in size, the devices beyond the smaller one have an endpoint in
//!   the larger family only, and answer discoveries in that family alone: a million devices
//!   in a /64 behind a /16 IPv4 prefix are all discoverable over IPv6, the first 65,534 over
//!   IPv4 too. (Capping the fleet at the smaller prefix was the alternative; it would turn
//!   away devices an IPv6 OBT can onboard.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::fleet::DeviceId;

/// How device ids map to discovery endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointPlan {
    /// One UDP port per device: `base + id`, for `count` devices.
    Ports {
        /// The port of device 0.
        base: u16,
        /// How many ports the range holds.
        count: u16,
    },
    /// One address per device inside prefixes routed to the host, on one shared port.
    Addresses {
        /// The IPv6 prefix and its length; device `id` gets `prefix + id + 1`.
        v6: Option<(Ipv6Addr, u8)>,
        /// The IPv4 prefix and its length; device `id` gets `prefix + id + 1`.
        v4: Option<(Ipv4Addr, u8)>,
        /// The shared port.
        port: u16,
    },
}

/// The local side of a device's endpoint for one IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalEndpoint {
    /// The source address; `None` in port mode, where the driver uses the address of the
    /// interface the request arrived on.
    pub ip: Option<IpAddr>,
    /// The source port.
    pub port: u16,
}

impl EndpointPlan {
    /// The endpoint of device `id` for answers in the family of `peer`; `None` when the plan has
    /// no endpoint for that id or family.
    pub fn local(&self, id: DeviceId, peer: &SocketAddr) -> Option<LocalEndpoint> {
        match *self {
            EndpointPlan::Ports { base, count } => {
                let offset = u16::try_from(id.0).ok().filter(|&o| o < count)?;
                Some(LocalEndpoint { ip: None, port: base.checked_add(offset)? })
            }
            EndpointPlan::Addresses { v6, v4, port } => {
                let ip = match peer {
                    SocketAddr::V6(_) => IpAddr::V6(v6_address(v6?, id)?),
                    SocketAddr::V4(_) => IpAddr::V4(v4_address(v4?, id)?),
                };
                Some(LocalEndpoint { ip: Some(ip), port })
            }
        }
    }

    /// The device whose endpoint is `destination` (the inverse of [`EndpointPlan::local`]).
    pub fn device_at(&self, destination: &SocketAddr) -> Option<DeviceId> {
        match *self {
            EndpointPlan::Ports { base, count } => {
                let offset = destination.port().checked_sub(base)?;
                (offset < count).then_some(DeviceId(u32::from(offset)))
            }
            EndpointPlan::Addresses { v6, v4, port } => {
                if destination.port() != port {
                    return None;
                }
                let offset = match destination.ip() {
                    IpAddr::V6(ip) => offset_in(v6?, u128::from(ip), 128)?,
                    IpAddr::V4(ip) => {
                        let (prefix, len) = v4?;
                        offset_in(
                            (u128::from(u32::from(prefix)), len),
                            u128::from(u32::from(ip)),
                            32,
                        )?
                    }
                };
                Some(DeviceId(u32::try_from(offset.checked_sub(1)?).ok()?))
            }
        }
    }

    /// How many devices the plan can give an endpoint to, in at least one family.
    pub fn capacity(&self) -> usize {
        self.capacity_in(true).max(self.capacity_in(false))
    }

    /// How many devices have an endpoint in one family (IPv6 when `ipv6`): devices `0..n`.
    pub fn capacity_in(&self, ipv6: bool) -> usize {
        match *self {
            EndpointPlan::Ports { count, .. } => usize::from(count),
            EndpointPlan::Addresses { v6, v4, .. } => {
                // Host offsets from 1 (not the prefix itself) to the all-ones address, which
                // IPv4 keeps for broadcast; ids are u32.
                let room = |bits: u32, reserved: usize| {
                    if bits >= 32 {
                        u32::MAX as usize
                    } else {
                        (1usize << bits).saturating_sub(reserved)
                    }
                };
                if ipv6 {
                    v6.map_or(0, |(_, len)| room(128 - u32::from(len), 1))
                } else {
                    v4.map_or(0, |(_, len)| room(32 - u32::from(len), 2))
                }
            }
        }
    }
}

fn v6_address((prefix, len): (Ipv6Addr, u8), id: DeviceId) -> Option<Ipv6Addr> {
    let host_bits = 128 - u32::from(len);
    let offset = u128::from(id.0) + 1;
    if host_bits < 128 && offset >> host_bits != 0 {
        return None;
    }
    Some(Ipv6Addr::from(u128::from(prefix) | offset))
}

fn v4_address((prefix, len): (Ipv4Addr, u8), id: DeviceId) -> Option<Ipv4Addr> {
    let host_bits = 32 - u32::from(len);
    let offset = u64::from(id.0) + 1;
    // Keep the all-ones host address (broadcast) out of the range.
    if host_bits >= 32 || offset >= (1u64 << host_bits) - 1 {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(prefix) | offset as u32))
}

/// The offset of `ip` inside `prefix/len` (an address of `width` bits), if it is inside.
fn offset_in<P: Into<u128>>((prefix, len): (P, u8), ip: u128, width: u32) -> Option<u128> {
    let prefix: u128 = prefix.into();
    let host_bits = width.checked_sub(u32::from(len))?;
    let mask = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    (ip & !mask == prefix & !mask).then_some(ip & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_port_mode_roundtrip() {
        let plan = EndpointPlan::Ports { base: 40_000, count: 1_000 };
        let peer: SocketAddr = "[fe80::1]:5683".parse().unwrap();
        let ep = plan.local(DeviceId(7), &peer).unwrap();
        assert_eq!(ep, LocalEndpoint { ip: None, port: 40_007 });
        assert_eq!(plan.device_at(&"[fe80::9]:40007".parse().unwrap()), Some(DeviceId(7)));
        assert_eq!(plan.device_at(&"10.0.0.1:41000".parse().unwrap()), None);
        assert_eq!(plan.local(DeviceId(1_000), &peer), None);
        assert_eq!(plan.capacity(), 1_000);
    }

    #[test]
    fn test_address_mode_roundtrip() {
        let plan = EndpointPlan::Addresses {
            v6: Some(("fd00:d0c::".parse().unwrap(), 64)),
            v4: Some(("10.77.0.0".parse().unwrap(), 16)),
            port: 5683,
        };
        let v6_peer: SocketAddr = "[fe80::1]:5683".parse().unwrap();
        let v4_peer: SocketAddr = "192.0.2.1:5683".parse().unwrap();
        for id in [0u32, 1, 999_999, 65_532] {
            let v6 = plan.local(DeviceId(id), &v6_peer).unwrap();
            assert_eq!(plan.device_at(&SocketAddr::new(v6.ip.unwrap(), 5683)), Some(DeviceId(id)));
            let v4 = plan.local(DeviceId(id), &v4_peer);
            assert_eq!(v4.is_some(), id < 65_534, "a /16 holds 65,534 devices");
            if let Some(v4) = v4 {
                assert_eq!(
                    plan.device_at(&SocketAddr::new(v4.ip.unwrap(), 5683)),
                    Some(DeviceId(id))
                );
            }
        }
        assert_eq!(
            plan.local(DeviceId(0), &v6_peer).unwrap().ip,
            Some("fd00:d0c::1".parse().unwrap())
        );
        assert_eq!(plan.local(DeviceId(65_534), &v4_peer), None, "no broadcast address");
        assert_eq!(plan.device_at(&"[fd00:d0c::]:5683".parse().unwrap()), None);
        assert_eq!(plan.device_at(&"[fd00:d0d::1]:5683".parse().unwrap()), None);
        assert_eq!(plan.device_at(&"[fd00:d0c::1]:5684".parse().unwrap()), None);
        // Devices beyond the /16 have an IPv6 endpoint only; the plan holds as many as the /64.
        assert_eq!(plan.capacity_in(false), 65_534);
        assert_eq!(plan.capacity_in(true), u32::MAX as usize);
        assert_eq!(plan.capacity(), u32::MAX as usize);
    }

    #[test]
    fn test_address_mode_capacity_per_family() {
        let v6 = Some(("fd00:d0c::".parse().unwrap(), 120));
        let v4 = Some(("10.77.0.0".parse().unwrap(), 24));
        let both = EndpointPlan::Addresses { v6, v4, port: 5683 };
        // A /120 holds 255 devices (IPv6 has no broadcast address), a /24 254.
        assert_eq!(
            (both.capacity_in(true), both.capacity_in(false), both.capacity()),
            (255, 254, 255)
        );
        let small_v6 = EndpointPlan::Addresses {
            v6: Some(("fd00:d0c::".parse().unwrap(), 126)),
            v4,
            port: 5683,
        };
        assert_eq!(small_v6.capacity(), 254, "the IPv4 prefix may be the larger one");
        let v6_peer: SocketAddr = "[fe80::1]:5683".parse().unwrap();
        assert_eq!(small_v6.capacity_in(true), 3);
        assert!(small_v6.local(DeviceId(2), &v6_peer).is_some());
        assert!(small_v6.local(DeviceId(3), &v6_peer).is_none(), "a /126 holds 3");
        // Every id below the capacity has an endpoint, in both families.
        let v4_peer: SocketAddr = "192.0.2.1:5683".parse().unwrap();
        for id in 0..300u32 {
            assert_eq!(both.local(DeviceId(id), &v6_peer).is_some(), (id as usize) < 255);
            assert_eq!(both.local(DeviceId(id), &v4_peer).is_some(), (id as usize) < 254);
        }
        let v6_only = EndpointPlan::Addresses { v6, v4: None, port: 5683 };
        assert_eq!((v6_only.capacity_in(false), v6_only.capacity()), (0, 255));
        // Host prefixes hold no device (and do not underflow the count).
        let hosts = EndpointPlan::Addresses {
            v6: Some(("fd00:d0c::".parse().unwrap(), 128)),
            v4: Some(("10.77.0.0".parse().unwrap(), 32)),
            port: 5683,
        };
        assert_eq!((hosts.capacity_in(true), hosts.capacity_in(false)), (0, 0));
        assert!(hosts.local(DeviceId(0), &v6_peer).is_none());
        assert!(hosts.local(DeviceId(0), &v4_peer).is_none());
    }
}
