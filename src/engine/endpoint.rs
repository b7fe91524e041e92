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
//!   in an IPv6 (and optionally an IPv4) prefix routed to the host. Scales to millions.

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

    /// How many devices the plan can give endpoints to.
    pub fn capacity(&self) -> usize {
        match *self {
            EndpointPlan::Ports { count, .. } => usize::from(count),
            EndpointPlan::Addresses { v6, v4, .. } => {
                let room =
                    |bits: u32| if bits >= 32 { u32::MAX as usize } else { (1usize << bits) - 2 };
                let v6 = v6.map_or(0, |(_, len)| room(128 - u32::from(len)));
                let v4 = v4.map_or(0, |(_, len)| room(32 - u32::from(len)));
                match (v6, v4) {
                    (0, n) | (n, 0) => n,
                    (a, b) => a.min(b),
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
        assert_eq!(plan.capacity(), 65_534);
    }
}
