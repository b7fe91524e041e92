//! The probe's network side: interfaces, the groups, where each copy of the discovery goes, and
//! the one UDP socket everything is sent and received on.
//!
//! One socket, bound to an ephemeral port on `[::]` with `IPV6_V6ONLY` off, sends every copy
//! (IPv4 groups and addresses as v4-mapped IPv6) and receives every answer and follow-up response.
//! Before each multicast copy it selects the outgoing interface (`IPV6_MULTICAST_IF` with the
//! interface index, `IP_MULTICAST_IF` with the interface's IPv4 address) and the hop limit, so
//! that one token and Message ID go out on every interface, like the IoTivity-Lite OBT. Where
//! the host has no IPv6 at all, an IPv4 socket on `0.0.0.0` serves IPv4-only plans.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// The OCF multicast groups (OCF Core): all-OCF-nodes at link, realm and site scope, and IPv4.
pub const GROUPS: [IpAddr; 4] = [
    IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x158)),
    IpAddr::V6(Ipv6Addr::new(0xff03, 0, 0, 0, 0, 0, 0, 0x158)),
    IpAddr::V6(Ipv6Addr::new(0xff05, 0, 0, 0, 0, 0, 0, 0x158)),
    IpAddr::V4(Ipv4Addr::new(224, 0, 1, 187)),
];

/// What `--group all` sends to: what the IoTivity-Lite OBT sends to (SPEC section 1.1).
pub const ALL: [IpAddr; 2] = [GROUPS[0], GROUPS[3]];

/// The receive buffer asked for, so that a burst of answers (leisure 0) is not dropped by the
/// kernel; it caps the value at `net.core.rmem_max`.
const RECV_BUFFER: usize = 4 << 20;

/// `--group`: one OCF group or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// [`ALL`].
    All,
    /// One of [`GROUPS`].
    One(IpAddr),
}

impl Group {
    /// The group addresses, in sending order.
    pub fn addresses(self) -> Vec<IpAddr> {
        match self {
            Group::All => ALL.to_vec(),
            Group::One(addr) => vec![addr],
        }
    }
}

/// Parses `--group` (clap value parser).
pub fn parse_group(input: &str) -> Result<Group, String> {
    if input.eq_ignore_ascii_case("all") {
        return Ok(Group::All);
    }
    match input.parse::<IpAddr>() {
        Ok(addr) if GROUPS.contains(&addr) => Ok(Group::One(addr)),
        _ => Err(format!(
            "not an OCF group: expected ff02::158, ff03::158, ff05::158, 224.0.1.187 or all, \
             got {input:?}"
        )),
    }
}

/// The hop limit (IPv6) or TTL (IPv4) of a copy to `group`.
///
/// ff02::158 is link-local, and 224.0.1.187 is used by OCF as a link-local discovery address:
/// 1, so that the request never leaves the link. ff03::158 (realm-local, e.g. a Thread mesh) and
/// ff05::158 (site-local) exist to reach nodes beyond the first router: 8, enough for a site,
/// small enough that a misconfigured multicast route does not carry it far.
pub fn hop_limit(group: IpAddr) -> u32 {
    match group {
        IpAddr::V6(g) if g.segments()[0] & 0x000f > 2 => 8,
        _ => 1,
    }
}

/// One network interface, merged from all its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The name, e.g. `eth0`.
    pub name: String,
    /// The index (what `IPV6_MULTICAST_IF` and IPv6 zones use).
    pub index: u32,
    /// Its first IPv4 address (what `IP_MULTICAST_IF` takes), if any.
    pub v4: Option<Ipv4Addr>,
    /// Whether it has an IPv6 address (a link-local one at least, to send to ff02::158).
    pub v6: bool,
    /// IFF_UP.
    pub up: bool,
    /// IFF_MULTICAST.
    pub multicast: bool,
    /// IFF_LOOPBACK.
    pub loopback: bool,
}

impl Interface {
    /// Whether discovery goes out on it when no `--iface` is given.
    fn default_choice(&self) -> bool {
        self.up && self.multicast && !self.loopback
    }
}

/// The host's interfaces, by name order. Flags come from `/sys/class/net/<name>/flags` (Linux);
/// where that is not readable every interface with an address counts as up and multicast.
pub fn interfaces() -> io::Result<Vec<Interface>> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for addr in if_addrs::get_if_addrs()? {
        let Some(index) = addr.index.or_else(|| sys_index(&addr.name)) else { continue };
        let flags = sys_flags(&addr.name);
        let entry = by_name.entry(addr.name.clone()).or_insert_with(|| Interface {
            name: addr.name.clone(),
            index,
            v4: None,
            v6: false,
            up: flags.map_or(addr.oper_status != if_addrs::IfOperStatus::Down, |f| f & 0x1 != 0),
            multicast: flags.is_none_or(|f| f & 0x1000 != 0),
            loopback: flags.map_or(addr.is_loopback(), |f| f & 0x8 != 0),
        });
        match addr.ip() {
            IpAddr::V4(ip) => {
                entry.v4.get_or_insert(ip);
            }
            IpAddr::V6(_) => entry.v6 = true,
        }
    }
    Ok(by_name.into_values().collect())
}

/// Finds `--iface NAME`: among the interfaces with addresses, else (Linux) one without any.
pub fn find_interface(all: &[Interface], name: &str) -> Option<Interface> {
    if let Some(found) = all.iter().find(|i| i.name == name) {
        return Some(found.clone());
    }
    let index = sys_index(name)?;
    let flags = sys_flags(name).unwrap_or(0);
    Some(Interface {
        name: name.to_owned(),
        index,
        v4: None,
        v6: false,
        up: flags & 0x1 != 0,
        multicast: flags & 0x1000 != 0,
        loopback: flags & 0x8 != 0,
    })
}

fn sys_flags(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/flags")).ok()?;
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

fn sys_index(name: &str) -> Option<u32> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).ok()?.trim().parse().ok()
}

/// How a copy leaves the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `IPV6_MULTICAST_IF` with this interface index.
    V6Index(u32),
    /// `IP_MULTICAST_IF` with this interface address.
    V4Address(Ipv4Addr),
    /// Unicast: the routing table decides.
    Route,
}

/// One copy of the discovery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Where to (a link-local destination carries its scope).
    pub destination: SocketAddr,
    /// Through which interface.
    pub via: Via,
    /// The multicast hop limit or TTL.
    pub hops: u32,
    /// How to name it in messages, e.g. `ff02::158 on eth0`.
    pub label: String,
}

/// The copies to send to `groups`, on `iface` or on every default interface with the family.
///
/// Returns the copies and warnings (a family skipped on an interface). An empty plan is an
/// error, explained.
pub fn plan_groups(
    groups: &[IpAddr],
    port: u16,
    iface: Option<&Interface>,
    all: &[Interface],
) -> Result<(Vec<Copy>, Vec<String>), String> {
    let candidates: Vec<&Interface> = match iface {
        Some(chosen) => vec![chosen],
        None => all.iter().filter(|i| i.default_choice()).collect(),
    };
    let mut copies = Vec::new();
    let mut warnings = Vec::new();
    for &group in groups {
        let before = copies.len();
        for interface in &candidates {
            let copy = match group {
                IpAddr::V6(g) if interface.v6 => Copy {
                    destination: SocketAddr::V6(SocketAddrV6::new(g, port, 0, interface.index)),
                    via: Via::V6Index(interface.index),
                    hops: hop_limit(group),
                    label: format!("{group} on {}", interface.name),
                },
                IpAddr::V4(g) => match interface.v4 {
                    Some(address) => Copy {
                        destination: SocketAddr::V4(SocketAddrV4::new(g, port)),
                        via: Via::V4Address(address),
                        hops: hop_limit(group),
                        label: format!("{group} on {}", interface.name),
                    },
                    None => continue,
                },
                IpAddr::V6(_) => continue,
            };
            copies.push(copy);
        }
        if copies.len() == before {
            let family = if group.is_ipv4() { "IPv4" } else { "IPv6" };
            let why = match iface {
                Some(chosen) => format!("interface {} has no {family} address", chosen.name),
                None => format!(
                    "no up, multicast-capable, non-loopback interface has an {family} address"
                ),
            };
            if groups.len() == 1 {
                return Err(format!("cannot send to {group}: {why}"));
            }
            warnings.push(format!("not sending to {group}: {why}"));
        }
    }
    if copies.is_empty() {
        return Err("no interface to send the discovery on; name one with --iface".to_owned());
    }
    Ok((copies, warnings))
}

/// The copy for `--to ADDR`: `IP`, `IP:PORT`, `[IPv6]:PORT` or `[IPv6%ZONE]:PORT` (also
/// `IPv6%ZONE`), the port defaulting to `port`. A link-local IPv6 address takes its zone from
/// `%ZONE` (a name or an index) or from `iface`.
pub fn plan_to(
    input: &str,
    port: u16,
    iface: Option<&Interface>,
    all: &[Interface],
) -> Result<Copy, String> {
    let bad = || format!("--to: not an address or address:port: {input:?}");
    let (host, port) = if let Some(rest) = input.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => port,
            _ => after.strip_prefix(':').and_then(|p| p.parse().ok()).ok_or_else(bad)?,
        };
        (host, port)
    } else if input.matches(':').count() == 1 {
        let (host, p) = input.split_once(':').ok_or_else(bad)?;
        (host, p.parse().map_err(|_| bad())?)
    } else {
        (input, port)
    };
    let (ip, zone) = match host.split_once('%') {
        Some((ip, zone)) => (ip, Some(zone)),
        None => (host, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    if ip.is_multicast() {
        return Err(format!("--to takes a unicast address, not {ip}; use --group for groups"));
    }
    let destination = match ip {
        IpAddr::V4(v4) if zone.is_none() => SocketAddr::V4(SocketAddrV4::new(v4, port)),
        IpAddr::V4(_) => return Err(format!("--to: an IPv4 address has no zone: {input:?}")),
        IpAddr::V6(v6) => {
            let scope = match (zone, iface) {
                (Some(zone), _) => match zone.parse::<u32>() {
                    Ok(index) => index,
                    Err(_) => {
                        find_interface(all, zone)
                            .ok_or_else(|| format!("--to: no such interface: {zone}"))?
                            .index
                    }
                },
                (None, Some(chosen)) if is_link_local(&v6) => chosen.index,
                (None, None) if is_link_local(&v6) => {
                    return Err(format!(
                        "--to {v6} is link-local: give its zone ([{v6}%eth0]:{port}) or --iface"
                    ))
                }
                (None, _) => 0,
            };
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope))
        }
    };
    Ok(Copy { destination, via: Via::Route, hops: 1, label: format!("{destination}") })
}

fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// The probe's socket; see the [module docs](self).
#[derive(Debug)]
pub struct Probe {
    socket: UdpSocket,
    dual: bool,
}

impl Probe {
    /// Opens the socket: dual-stack on `[::]`, or IPv4 when the host has no IPv6 and
    /// `need_v6` is false.
    pub fn open(need_v6: bool) -> io::Result<Probe> {
        let (socket, dual) = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
            Ok(socket) => {
                socket.set_only_v6(false)?;
                socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
                socket.set_multicast_loop_v6(true)?;
                (socket, true)
            }
            Err(_) if !need_v6 => {
                let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
                socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
                (socket, false)
            }
            Err(err) => return Err(err),
        };
        // IPv4 options on an IPv6 socket apply to its v4-mapped traffic (Linux); where the OS
        // refuses them the defaults (loop on, TTL 1) are what we want anyway.
        let _ = socket.set_multicast_loop_v4(true);
        let _ = socket.set_recv_buffer_size(RECV_BUFFER);
        Ok(Probe { socket: socket.into(), dual })
    }

    /// Sends one copy of the discovery.
    pub fn send_copy(&self, copy: &Copy, datagram: &[u8]) -> io::Result<()> {
        let sock = SockRef::from(&self.socket);
        match copy.via {
            Via::V6Index(index) => {
                sock.set_multicast_if_v6(index)?;
                sock.set_multicast_hops_v6(copy.hops)?;
            }
            Via::V4Address(address) => {
                sock.set_multicast_if_v4(&address)?;
                sock.set_multicast_ttl_v4(copy.hops)?;
            }
            Via::Route => {}
        }
        self.send_to(datagram, copy.destination)
    }

    /// Sends one datagram to `destination` (as received from [`Probe::recv`], or planned).
    pub fn send_to(&self, datagram: &[u8], destination: SocketAddr) -> io::Result<()> {
        let destination = match destination {
            SocketAddr::V4(v4) if self.dual => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        };
        self.socket.send_to(datagram, destination).map(drop)
    }

    /// Receives one datagram, waiting at most `timeout`; `Ok(None)` when none came. The source
    /// of an IPv4 datagram is returned as IPv4, not v4-mapped.
    pub fn recv(
        &self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        self.socket.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        match self.socket.recv_from(buf) {
            Ok((len, source)) => Ok(Some((len, unmap(source)))),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }
}

/// A v4-mapped IPv6 address as the IPv4 address it carries.
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

/// Prints endpoints as the probe reports them: `192.0.2.1:5683`, `[fd00::2]:5683`, and a
/// link-local one with its zone as a name, `[fe80::1%eth0]:40001` (the index when unnamed).
#[derive(Debug, Clone, Default)]
pub struct Names {
    by_index: BTreeMap<u32, String>,
}

impl Names {
    /// Names for `interfaces`.
    pub fn new(interfaces: &[Interface]) -> Names {
        Names { by_index: interfaces.iter().map(|i| (i.index, i.name.clone())).collect() }
    }

    /// `addr`, printed.
    pub fn endpoint(&self, addr: SocketAddr) -> Endpoint<'_> {
        Endpoint { names: self, addr: unmap(addr) }
    }
}

/// See [`Names::endpoint`].
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'n> {
    names: &'n Names,
    addr: SocketAddr,
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            SocketAddr::V6(v6) if v6.scope_id() != 0 => {
                match self.names.by_index.get(&v6.scope_id()) {
                    Some(name) => write!(f, "[{}%{name}]:{}", v6.ip(), v6.port()),
                    None => write!(f, "[{}%{}]:{}", v6.ip(), v6.scope_id(), v6.port()),
                }
            }
            SocketAddr::V6(v6) => write!(f, "[{}]:{}", v6.ip(), v6.port()),
            SocketAddr::V4(v4) => write!(f, "{v4}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, v4: Option<[u8; 4]>, v6: bool) -> Interface {
        Interface {
            name: name.to_owned(),
            index,
            v4: v4.map(Ipv4Addr::from),
            v6,
            up: true,
            multicast: true,
            loopback: false,
        }
    }

    fn host() -> Vec<Interface> {
        let lo = Interface {
            loopback: true,
            multicast: false,
            ..iface("lo", 1, Some([127, 0, 0, 1]), true)
        };
        let down = Interface { up: false, ..iface("eth9", 9, Some([10, 9, 9, 9]), true) };
        vec![lo, iface("eth0", 2, Some([192, 0, 2, 2]), true), iface("wg0", 3, None, true), down]
    }

    #[test]
    fn test_parse_group() {
        assert_eq!(parse_group("all"), Ok(Group::All));
        assert_eq!(parse_group("ALL"), Ok(Group::All));
        assert_eq!(parse_group("FF05::158"), Ok(Group::One(GROUPS[2])));
        assert_eq!(parse_group("224.0.1.187"), Ok(Group::One(GROUPS[3])));
        assert!(parse_group("ff02::1").is_err());
        assert!(parse_group("224.0.0.251").is_err());
        assert!(parse_group("eth0").is_err());
    }

    #[test]
    fn test_hop_limits() {
        assert_eq!(GROUPS.map(hop_limit), [1, 8, 8, 1]);
    }

    #[test]
    fn test_plan_all_on_default_interfaces() {
        let (copies, warnings) = plan_groups(&ALL, 5683, None, &host()).unwrap();
        let labels: Vec<&str> = copies.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["ff02::158 on eth0", "ff02::158 on wg0", "224.0.1.187 on eth0"]);
        assert!(warnings.is_empty());
        assert_eq!(copies[0].via, Via::V6Index(2));
        assert_eq!(copies[0].destination.to_string(), "[ff02::158%2]:5683");
        assert_eq!(copies[2].via, Via::V4Address(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(copies[2].destination.to_string(), "224.0.1.187:5683");
    }

    #[test]
    fn test_plan_named_interface_lacking_a_family() {
        let all = host();
        let wg0 = find_interface(&all, "wg0").unwrap();
        let (copies, warnings) = plan_groups(&ALL, 5683, Some(&wg0), &all).unwrap();
        assert_eq!(copies.len(), 1);
        assert_eq!(warnings, ["not sending to 224.0.1.187: interface wg0 has no IPv4 address"]);
        let err = plan_groups(&[GROUPS[3]], 5683, Some(&wg0), &all).unwrap_err();
        assert_eq!(err, "cannot send to 224.0.1.187: interface wg0 has no IPv4 address");
        let lo = find_interface(&all, "lo").unwrap();
        assert_eq!(plan_groups(&ALL, 5683, Some(&lo), &all).unwrap().0.len(), 2);
    }

    #[test]
    fn test_plan_no_interface() {
        let all = vec![host().remove(0)];
        assert!(plan_groups(&ALL, 5683, None, &all).unwrap_err().contains("--iface"));
    }

    #[test]
    fn test_plan_to() {
        let all = host();
        let to = |s: &str, iface: Option<&Interface>| {
            plan_to(s, 5683, iface, &all).map(|c| c.destination.to_string())
        };
        assert_eq!(to("192.0.2.9", None).unwrap(), "192.0.2.9:5683");
        assert_eq!(to("192.0.2.9:40001", None).unwrap(), "192.0.2.9:40001");
        assert_eq!(to("::1", None).unwrap(), "[::1]:5683");
        assert_eq!(to("[::1]:7", None).unwrap(), "[::1]:7");
        assert_eq!(to("[fe80::1%eth0]:7", None).unwrap(), "[fe80::1%2]:7");
        assert_eq!(to("fe80::1%3", None).unwrap(), "[fe80::1%3]:5683");
        assert_eq!(to("fe80::1", all.get(1)).unwrap(), "[fe80::1%2]:5683");
        assert!(to("fe80::1", None).unwrap_err().contains("link-local"));
        assert!(to("[fe80::1%nope0]:7", None).unwrap_err().contains("no such interface"));
        assert!(to("ff02::158", None).unwrap_err().contains("--group"));
        assert!(to("[::1]:x", None).is_err());
        assert!(to("host:1", None).is_err());
        assert!(to("[::1", None).is_err());
    }

    #[test]
    fn test_endpoint_display() {
        let names = Names::new(&host());
        let show = |s: &str| names.endpoint(s.parse().unwrap()).to_string();
        assert_eq!(show("[fe80::1%2]:40001"), "[fe80::1%eth0]:40001");
        assert_eq!(show("[fe80::1%42]:40001"), "[fe80::1%42]:40001");
        assert_eq!(show("[::ffff:192.0.2.7]:5683"), "192.0.2.7:5683");
        assert_eq!(show("[fd00::2]:5683"), "[fd00::2]:5683");
        assert_eq!(show("192.0.2.7:5683"), "192.0.2.7:5683");
    }
}
