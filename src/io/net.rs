//! Sockets and interfaces: the groups the gate joins, and the endpoints it listens on.
//!
//! - Group sockets: one IPv6 socket on `[::]:5683` and one IPv4 socket on `0.0.0.0:5683`,
//!   joined to the configured groups on every configured interface. In address mode they also
//!   receive the unicast requests sent to the devices' addresses (routed to the host as local),
//!   because they are bound to the wildcard address; packet info tells the two apart.
//! - Device sockets (port mode): one dual-stack socket per device on `[::]:base+id`.
//!
//! The group sockets share their port with other gates on the host (`SO_REUSEADDR`: every gate
//! must receive the discovery); the device sockets do not, so that two gates never serve one
//! device endpoint (see [`super::claim`]).
//!
//! Every socket is non-blocking, has packet info enabled (see [`super::sys`]) and generous
//! buffers, so that a burst of thousands of answers does not hit `ENOBUFS` at once.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use super::sys;

/// The OCF groups (OCF Core): link-, realm- and site-local IPv6, and IPv4.
pub const DEFAULT_GROUPS: [IpAddr; 4] = [
    IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x158)),
    IpAddr::V6(Ipv6Addr::new(0xff03, 0, 0, 0, 0, 0, 0, 0x158)),
    IpAddr::V6(Ipv6Addr::new(0xff05, 0, 0, 0, 0, 0, 0, 0x158)),
    IpAddr::V4(Ipv4Addr::new(224, 0, 1, 187)),
];

/// Socket buffer size asked for (the kernel caps it at `net.core.[rw]mem_max`).
const BUFFER_BYTES: usize = 4 << 20;

/// A multicast-capable interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Interface {
    /// Its name, e.g. `eth0`.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its first IPv4 address, needed to join IPv4 groups on it.
    pub ipv4: Option<Ipv4Addr>,
    /// Whether it has an IPv6 address (a link-local `fe80::` one is enough).
    pub ipv6: bool,
}

/// The interfaces that are up and not loopback, or only those named in `only` (loopback allowed
/// when named). Sorted by name.
pub fn interfaces(only: &[String]) -> io::Result<Vec<Interface>> {
    let mut found: Vec<Interface> = Vec::new();
    for ifa in if_addrs::get_if_addrs()? {
        if !only.is_empty() && !only.iter().any(|n| n == &ifa.name) {
            continue;
        }
        if only.is_empty() && ifa.is_loopback() {
            continue;
        }
        let Some(index) = ifa.index else { continue };
        let entry = match found.iter_mut().position(|i| i.index == index) {
            Some(at) => &mut found[at],
            None => {
                found.push(Interface { name: ifa.name.clone(), index, ipv4: None, ipv6: false });
                let last = found.len() - 1;
                &mut found[last]
            }
        };
        match ifa.ip() {
            IpAddr::V4(ip) => {
                entry.ipv4.get_or_insert(ip);
            }
            IpAddr::V6(_) => entry.ipv6 = true,
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// A non-blocking UDP socket; `shared`: with `SO_REUSEADDR`, so other gates can bind the port.
fn udp(domain: Domain, shared: bool) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_address(shared)?;
    // Best effort: the kernel may cap these.
    let _ = socket.set_recv_buffer_size(BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(BUFFER_BYTES);
    Ok(socket)
}

/// The IPv6 group socket on `[::]:port` (v6-only, so IPv4 goes to its own socket).
///
/// # Errors
/// Socket creation or binding errors (e.g. the port is in use).
pub fn group_socket_v6(port: u16, freebind: bool) -> io::Result<Socket> {
    let socket = udp(Domain::IPV6, true)?;
    socket.set_only_v6(true)?;
    socket.set_multicast_loop_v6(true)?;
    sys::enable_packet_info(&socket, true)?;
    if freebind {
        sys::enable_freebind(&socket, true)?;
    }
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    Ok(socket)
}

/// The IPv4 group socket on `0.0.0.0:port`.
///
/// # Errors
/// Socket creation or binding errors.
pub fn group_socket_v4(port: u16, freebind: bool) -> io::Result<Socket> {
    let socket = udp(Domain::IPV4, true)?;
    socket.set_multicast_loop_v4(true)?;
    sys::enable_packet_info(&socket, false)?;
    if freebind {
        sys::enable_freebind(&socket, false)?;
    }
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    Ok(socket)
}

/// A device's own dual-stack socket on `[::]:port` (port mode), bound exclusively.
///
/// # Errors
/// Socket creation or binding errors; a port another process holds is
/// [`InUse`](super::claim::InUse), naming that process where `/proc` tells.
pub fn device_socket(port: u16) -> io::Result<Socket> {
    let socket = udp(Domain::IPV6, false)?;
    socket.set_only_v6(false)?;
    sys::enable_packet_info(&socket, true)?;
    match socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into()) {
        Ok(()) => Ok(socket),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            Err(super::claim::port_in_use(port).into())
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("device port {port}: {e}"))),
    }
}

/// Joins `group` on `interface` through `socket` (of the group's family). Joining a group that
/// is already joined is not an error.
///
/// # Errors
/// The join error, e.g. the interface has no address of the family.
pub fn join(socket: &Socket, group: IpAddr, interface: &Interface) -> io::Result<()> {
    let result = match group {
        IpAddr::V6(g) => socket.join_multicast_v6(&g, interface.index),
        IpAddr::V4(g) => {
            let local = interface.ipv4.ok_or_else(|| {
                io::Error::new(io::ErrorKind::AddrNotAvailable, "no IPv4 address on the interface")
            })?;
            socket.join_multicast_v4(&g, &local)
        }
    };
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok(()),
        other => other,
    }
}
