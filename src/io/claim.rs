//! One gate per endpoint: what a gate claims exclusively, and who holds a claim it cannot get.
//!
//! Gates may share a link and the group port (README "Scaling out"): every gate must receive
//! the multicast discovery, so the group sockets keep `SO_REUSEADDR`. What two gates must never
//! share is a device's endpoint, or every such device answers twice. So:
//!
//! - Port mode: the device sockets are bound *without* `SO_REUSEADDR`; a second gate over the
//!   same ports gets `EADDRINUSE` from the kernel on its first overlapping port.
//! - Address mode: the devices share the group port, so the port cannot be the claim. Each
//!   prefix is claimed by binding an abstract Unix socket named after the port and the prefix
//!   ([`claim_prefix`]). The kernel frees it when the process dies (no stale lock file), and
//!   abstract names are per network namespace, like ports and routes. The interface is not part
//!   of the name: a prefix is routed to the host, not to an interface, and the wildcard group
//!   socket receives its unicast on every interface. Two prefixes that overlap without being
//!   equal (a /64 and a /80 inside it) are not detected.
//!
//! When a claim is refused, [`InUse`] names the endpoint and, where `/proc` tells, the process
//! that holds it: the socket's inode from `/proc/net/{udp,udp6,unix}`, then the process with a
//! descriptor on that inode under `/proc/*/fd`.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

/// An endpoint another process holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InUse {
    /// The endpoint, e.g. `device port 40000` or `address-mode prefix fd00:d0c::/64 on port 5683`.
    pub what: String,
    /// The process holding it, when `/proc` tells.
    pub holder: Option<Holder>,
}

/// A process, as `/proc` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub name: String,
}

impl fmt::Display for InUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is in use", self.what)?;
        match &self.holder {
            Some(h) => write!(f, " by pid {} ({})", h.pid, h.name)?,
            None => write!(f, " by another process")?,
        }
        write!(
            f,
            ": one gate per device endpoint (gates side by side need disjoint port ranges or prefixes)"
        )
    }
}

impl From<InUse> for io::Error {
    fn from(e: InUse) -> io::Error {
        io::Error::new(io::ErrorKind::AddrInUse, e)
    }
}

/// A held address-mode claim; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct Claim(#[allow(dead_code)] UnixDatagram);

/// Claims `prefix/len` on `port` for this process (see the [module docs](self)).
///
/// # Errors
/// [`InUse`] (as `AddrInUse`) when another process holds it; other socket errors as they come.
pub fn claim_prefix(prefix: IpAddr, len: u8, port: u16) -> io::Result<Claim> {
    let name = format!("doxm-gate/address-mode/{port}/{prefix}/{len}");
    let addr = UnixAddr::from_abstract_name(name.as_bytes())?;
    match UnixDatagram::bind_addr(&addr) {
        Ok(socket) => Ok(Claim(socket)),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(InUse {
            what: format!("address-mode prefix {prefix}/{len} on port {port}"),
            holder: unix_inode(&name).and_then(holder_of_inode),
        }
        .into()),
        Err(e) => Err(e),
    }
}

/// The error for a device port whose bind failed with `EADDRINUSE`.
pub fn port_in_use(port: u16) -> InUse {
    InUse { what: format!("device port {port}"), holder: udp_inode(port).and_then(holder_of_inode) }
}

/// The inode of a UDP socket bound to local `port` in this network namespace.
fn udp_inode(port: u16) -> Option<u64> {
    let suffix = format!(":{port:04X}");
    ["/proc/net/udp6", "/proc/net/udp"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            local.ends_with(&suffix).then(|| fields.get(9)?.parse().ok()).flatten()
        })
    })
}

/// The inode of the Unix socket bound to abstract `name` (`@name` in `/proc/net/unix`).
fn unix_inode(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/unix").ok()?;
    let path = format!("@{name}");
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(7) == Some(&path.as_str())).then(|| fields.get(6)?.parse().ok()).flatten()
    })
}

/// The process (other than this one) with a descriptor on socket `inode`.
fn holder_of_inode(inode: u64) -> Option<Holder> {
    let target = format!("socket:[{inode}]");
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(Holder { pid, name: name.trim().to_owned() });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_prefix_claim_is_exclusive_and_released_on_drop() {
        let prefix: IpAddr = "fd00:c1a1::".parse().unwrap();
        let port = 40_000 + (std::process::id() % 20_000) as u16;
        let claim = claim_prefix(prefix, 64, port).unwrap();
        let err = claim_prefix(prefix, 64, port).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let text = err.to_string();
        assert!(text.contains(&format!("fd00:c1a1::/64 on port {port} is in use")), "{text}");
        // Another prefix, or another length, is another claim.
        let _other = claim_prefix(prefix, 80, port).unwrap();
        drop(claim);
        let _again = claim_prefix(prefix, 64, port).unwrap();
    }

    #[test]
    fn test_in_use_names_the_holder() {
        let e = InUse {
            what: "device port 40000".into(),
            holder: Some(Holder { pid: 42, name: "doxm-gate".into() }),
        };
        assert!(e.to_string().starts_with("device port 40000 is in use by pid 42 (doxm-gate): "));
    }
}
