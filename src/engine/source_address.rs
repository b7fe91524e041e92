//! Source sanity checks (SPEC section 7): no answer to a source that cannot be genuine.
//!
//! An answer goes to the request's source address and port (SPEC section 4), and the request is
//! an unsecured UDP datagram, so its source may be forged: the fleet would then be a reflector
//! aimed at whoever the source names, at up to thousands of answers per 45-byte request.
//! [`check_source`] rejects the sources that no genuine client can have, before anything else
//! is spent on the datagram:
//!
//! - `source-family-mismatch`: an IPv4 source on an IPv6 destination or the reverse, or an
//!   IPv4-mapped source (`::ffff:a.b.c.d`) on a native IPv6 destination. A datagram has one
//!   family; mapped addresses represent IPv4 peers of dual-stack sockets in the API and are
//!   never valid on the IPv6 wire (RFC 4291 s2.5.5.2; RFC 6890 s2.2.3: not a source).
//! - `source-unspecified`: `::` or `0.0.0.0/8`, "no address yet" or "this network" (RFC 4291
//!   s2.5.2, RFC 1122 s3.2.1.3 (a), (b)): not a destination an answer can reach.
//! - `source-multicast`: `ff00::/8` or `224.0.0.0/4`, a group, never a sender (RFC 4291 s2.7,
//!   RFC 1112).
//! - `source-broadcast`: `255.255.255.255`, never a source (RFC 1122 s3.2.1.3 (c)).
//! - `source-port-zero`: port 0, which says the sender expects no reply (RFC 768).
//! - `source-scope-mismatch`: a source that is neither link-local (`fe80::/10`) nor loopback,
//!   sent to a group of link or interface scope (`ff02::158`, any `ffx2::` or `ffx1::`).
//!   Routers never forward those groups, so the sender is on the link, and source address
//!   selection (RFC 6724 rule 2) picks its link-local address, which every IPv6 interface has
//!   (RFC 4291 s2.1). A global or ULA source there is forged (naming an off-link victim) or an
//!   unusual binding; answering link-local sources only keeps the answers on the link.
//!
//! Checks run in this order and the first failure is reported, so each datagram is counted
//! under one label. IPv4-mapped addresses in the source or destination are first
//! replaced by the IPv4 address they carry (so a dual-stack driver's `::ffff:224.0.0.1` is a
//! multicast source like `224.0.0.1`).
//!
//! Not checked, and why:
//!
//! - **Subnet-directed broadcast** (e.g. `192.168.1.255` on a /24) is also never a genuine
//!   source, but recognising it needs the receiving interface's prefix length, which this
//!   function does not have; a driver that knows it can reject such sources as
//!   [`SourceReject::Broadcast`].
//! - **Loopback sources** (`127.0.0.0/8`, `::1`) are accepted, for groups too (`::1` on
//!   `ff02::158` passes the scope rule). The kernel drops loopback-sourced packets arriving
//!   from a network interface (martian sources: RFC 1122 s3.2.1.3 (g), RFC 4291 s2.5.3), so a
//!   remote sender cannot forge one, and an answer to one stays on this host: there is no one
//!   to reflect onto. Rejecting them would only break an OBT running on the bridge host and
//!   tests over `lo`. This relies on the kernel's filtering: a kernel-bypass receive path
//!   (raw sockets, AF_XDP) must drop martians itself.
//! - **Scope of larger groups**: a link-local source on `ff03::158` or `ff05::158` is normal
//!   (plgd sends to all three groups from one socket), and so is a global one; IPv4
//!   `224.0.1.187` has no scope to check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a datagram's source cannot belong to a genuine client, so that the gate sends it
/// nothing. A closed set; each variant maps one to one to a metric label
/// ([`SourceReject::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
#[error("{}", self.as_str())]
pub enum SourceReject {
    /// Source and destination are of different IP families, or the source is IPv4-mapped on a
    /// native IPv6 destination.
    FamilyMismatch,
    /// The unspecified address (`::`, `0.0.0.0`) or IPv4 "this network" (`0.0.0.0/8`).
    Unspecified,
    /// A multicast source address.
    Multicast,
    /// The IPv4 limited broadcast address `255.255.255.255`.
    Broadcast,
    /// Source port 0: the sender expects no reply (RFC 768).
    PortZero,
    /// A source that is neither link-local nor loopback, sent to a link-local (or narrower)
    /// group such as `ff02::158`.
    ScopeMismatch,
}

impl SourceReject {
    /// Every variant, in check order.
    pub const ALL: [SourceReject; 6] = [
        SourceReject::FamilyMismatch,
        SourceReject::Unspecified,
        SourceReject::Multicast,
        SourceReject::Broadcast,
        SourceReject::PortZero,
        SourceReject::ScopeMismatch,
    ];

    /// The stable, kebab-case metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            SourceReject::FamilyMismatch => "source-family-mismatch",
            SourceReject::Unspecified => "source-unspecified",
            SourceReject::Multicast => "source-multicast",
            SourceReject::Broadcast => "source-broadcast",
            SourceReject::PortZero => "source-port-zero",
            SourceReject::ScopeMismatch => "source-scope-mismatch",
        }
    }
}

/// Accepts `source` only if a genuine client could have sent a datagram from it to
/// `destination` (the group or unicast address the datagram was sent to), so that the gate
/// never answers, and never reflects onto, an address that cannot be the requester (SPEC
/// section 7). Pure and O(1); see the module docs for each rule.
pub fn check_source(source: SocketAddr, destination: IpAddr) -> Result<(), SourceReject> {
    let (src, dst) = (source.ip().to_canonical(), destination.to_canonical());
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(_)) => check_v4(src)?,
        (IpAddr::V6(src), IpAddr::V6(_)) => check_v6(src)?,
        _ => return Err(SourceReject::FamilyMismatch),
    }
    if source.port() == 0 {
        return Err(SourceReject::PortZero);
    }
    match (src, dst) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => check_v6_scope(src, dst),
        _ => Ok(()),
    }
}

/// The address-class checks of an IPv4 source.
fn check_v4(src: Ipv4Addr) -> Result<(), SourceReject> {
    if src.octets()[0] == 0 {
        return Err(SourceReject::Unspecified);
    }
    if src.is_multicast() {
        return Err(SourceReject::Multicast);
    }
    if src.is_broadcast() {
        return Err(SourceReject::Broadcast);
    }
    Ok(())
}

/// The address-class checks of an IPv6 source.
fn check_v6(src: Ipv6Addr) -> Result<(), SourceReject> {
    if src.is_unspecified() {
        return Err(SourceReject::Unspecified);
    }
    if src.is_multicast() {
        return Err(SourceReject::Multicast);
    }
    Ok(())
}

/// A group of interface or link scope (RFC 4291 s2.7 scope 1 or 2, whatever the flags) accepts
/// only link-local (`fe80::/10`) or loopback sources.
fn check_v6_scope(src: Ipv6Addr, dst: Ipv6Addr) -> Result<(), SourceReject> {
    let narrow_group = dst.is_multicast() && matches!(dst.segments()[0] & 0x000f, 1 | 2);
    let on_link_source = src.segments()[0] & 0xffc0 == 0xfe80 || src.is_loopback();
    if narrow_group && !on_link_source {
        return Err(SourceReject::ScopeMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_COAP: &str = "ff02::158";
    const ALL_COAP_V4: &str = "224.0.1.187";

    fn check(source: &str, destination: &str) -> Result<(), SourceReject> {
        check_source(source.parse().unwrap(), destination.parse().unwrap())
    }

    #[test]
    fn test_genuine_clients_pass() {
        for (source, destination) in [
            // IoTivity-Lite OBT: both families.
            ("[fe80::a00:27ff:fe4e:66a1]:49152", ALL_COAP),
            ("192.168.1.10:41000", ALL_COAP_V4),
            // plgd: one link-local source to the three IPv6 groups.
            ("[fe80::1]:5683", "ff03::158"),
            ("[fe80::1]:5683", "ff05::158"),
            // Larger groups from global or ULA sources.
            ("[2001:db8::7]:5683", "ff05::158"),
            ("[fd00::7]:5683", "ff03::158"),
            // Unicast to a device's discovery endpoint.
            ("[2001:db8::7]:40000", "2001:db8:1::5"),
            ("[fe80::7]:40000", "fe80::5"),
            ("10.0.0.7:40000", "10.0.0.5"),
        ] {
            assert_eq!(check(source, destination), Ok(()), "{source} -> {destination}");
        }
    }

    #[test]
    fn test_multicast_source() {
        assert_eq!(check("[ff02::1]:5683", ALL_COAP), Err(SourceReject::Multicast));
        assert_eq!(check("[ff05::158]:5683", "2001:db8::1"), Err(SourceReject::Multicast));
        assert_eq!(check("224.0.1.187:5683", ALL_COAP_V4), Err(SourceReject::Multicast));
        assert_eq!(check("239.255.255.250:1900", "10.0.0.5"), Err(SourceReject::Multicast));
    }

    #[test]
    fn test_unspecified_source() {
        assert_eq!(check("[::]:5683", ALL_COAP), Err(SourceReject::Unspecified));
        assert_eq!(check("0.0.0.0:68", ALL_COAP_V4), Err(SourceReject::Unspecified));
        assert_eq!(check("0.1.2.3:5683", ALL_COAP_V4), Err(SourceReject::Unspecified));
    }

    #[test]
    fn test_broadcast_source() {
        assert_eq!(check("255.255.255.255:5683", ALL_COAP_V4), Err(SourceReject::Broadcast));
        // Subnet-directed broadcast cannot be known here (no prefix length): accepted.
        assert_eq!(check("192.168.1.255:5683", ALL_COAP_V4), Ok(()));
    }

    #[test]
    fn test_port_zero() {
        assert_eq!(check("[fe80::1]:0", ALL_COAP), Err(SourceReject::PortZero));
        assert_eq!(check("192.168.1.10:0", ALL_COAP_V4), Err(SourceReject::PortZero));
    }

    #[test]
    fn test_scope_mismatch_on_link_local_group() {
        assert_eq!(check("[2001:db8::7]:5683", ALL_COAP), Err(SourceReject::ScopeMismatch));
        assert_eq!(check("[fd00::7]:5683", ALL_COAP), Err(SourceReject::ScopeMismatch));
        // Any link-scope group, whatever its flags (ff12:: is transient, link scope).
        assert_eq!(check("[2001:db8::7]:5683", "ff12::158"), Err(SourceReject::ScopeMismatch));
        assert_eq!(check("[2001:db8::7]:5683", "ff01::1"), Err(SourceReject::ScopeMismatch));
        // fe80::/10 is link-local, not only fe80::/64.
        assert_eq!(check("[febf::1]:5683", ALL_COAP), Ok(()));
        assert_eq!(check("[fec0::1]:5683", ALL_COAP), Err(SourceReject::ScopeMismatch));
    }

    #[test]
    fn test_loopback_accepted() {
        assert_eq!(check("[::1]:5683", ALL_COAP), Ok(()));
        assert_eq!(check("[::1]:40000", "::1"), Ok(()));
        assert_eq!(check("127.0.0.1:40000", ALL_COAP_V4), Ok(()));
        assert_eq!(check("127.0.0.1:40000", "127.0.0.1"), Ok(()));
    }

    #[test]
    fn test_ipv4_mapped() {
        // A dual-stack driver reports IPv4 peers and destinations as mapped addresses.
        assert_eq!(check("[::ffff:192.168.1.10]:41000", "::ffff:224.0.1.187"), Ok(()));
        assert_eq!(check("[::ffff:192.168.1.10]:41000", ALL_COAP_V4), Ok(()));
        assert_eq!(check("192.168.1.10:41000", "::ffff:224.0.1.187"), Ok(()));
        // Mapped forms of bad IPv4 sources are just as bad.
        assert_eq!(
            check("[::ffff:255.255.255.255]:5683", "::ffff:224.0.1.187"),
            Err(SourceReject::Broadcast)
        );
        assert_eq!(check("[::ffff:224.0.0.1]:5683", ALL_COAP_V4), Err(SourceReject::Multicast));
        assert_eq!(check("[::ffff:0.0.0.0]:5683", ALL_COAP_V4), Err(SourceReject::Unspecified));
        // A mapped source on a real IPv6 datagram: forged or broken.
        assert_eq!(
            check("[::ffff:192.168.1.10]:41000", ALL_COAP),
            Err(SourceReject::FamilyMismatch)
        );
    }

    #[test]
    fn test_family_mismatch() {
        assert_eq!(check("192.168.1.10:41000", ALL_COAP), Err(SourceReject::FamilyMismatch));
        assert_eq!(check("[fe80::1]:41000", ALL_COAP_V4), Err(SourceReject::FamilyMismatch));
    }

    #[test]
    fn test_first_failure_in_table_order() {
        assert_eq!(check("[::]:0", ALL_COAP), Err(SourceReject::Unspecified));
        assert_eq!(check("224.0.0.1:0", ALL_COAP_V4), Err(SourceReject::Multicast));
        assert_eq!(check("[2001:db8::1]:0", ALL_COAP), Err(SourceReject::PortZero));
        assert_eq!(check("0.0.0.0:0", ALL_COAP), Err(SourceReject::FamilyMismatch));
    }

    #[test]
    fn test_labels() {
        for (i, reject) in SourceReject::ALL.iter().enumerate() {
            let label = reject.as_str();
            assert!(label.starts_with("source-"), "{label}");
            assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{label}");
            assert_eq!(reject.to_string(), label);
            for other in &SourceReject::ALL[i + 1..] {
                assert_ne!(label, other.as_str());
            }
        }
        // Adding a variant breaks this match: a reminder to extend `ALL` and the labels.
        for reject in SourceReject::ALL {
            match reject {
                SourceReject::FamilyMismatch
                | SourceReject::Unspecified
                | SourceReject::Multicast
                | SourceReject::Broadcast
                | SourceReject::PortZero
                | SourceReject::ScopeMismatch => {}
            }
        }
    }
}
