//! The descriptive record of one device: what its answers say about it.
//!
//! Records change rarely (registration, owner transfer) and are replaced whole, RCU-style, so a
//! reader holds either the old record or the new one. The hot onboarding state lives apart, in
//! the device's [`StateWord`](super::state::StateWord).
//!
//! # Layout
//!
//! A million records must fit in about 150 bytes each (issue 13: 256 B per device in all), so a
//! record is two allocations: the `Arc`'d head (the UUID, read by every UUID-index probe, the
//! shared lists, and the tail; 40 bytes, 64 from the allocator with the `Arc` counts) and one
//! byte tail with everything else, where only what differs from the default takes room:
//!
//! ```text
//!  0..4    oxmsel, i32 little-endian
//!  4..8    sct, u32 little-endian
//!  8       flags: which UUIDs follow (PIID, BRIDGE, DEVOWNER, ROWNER) and ROWNER_IS_DEVOWNER
//!  9       the name's length (1..=64)
//!  10..    the UUIDs the flags name, 16 bytes each, in that order
//!  ..      the name (UTF-8)
//!  ..      the endpoints, in order, to the end: a tag byte, then
//!            TAG_TEXT     a LEB128 length and the URI as given
//!            TAG_V6/V4    the address (16 or 4 bytes) and the port (u16 little-endian)
//!            TAG_*_SAME   the port only: the address of the previous packed endpoint
//!          (bit 7 of the tag: coaps)
//! ```
//!
//! A `piid` equal to the UUID, a nil owner, a resource owner equal to the owner, and an absent
//! bridge take no bytes. An endpoint is packed as address and port only when it reads back
//! byte for byte as given (`coap://[fd00::1]:5683`, lower-case, shortest form, with a port);
//! any other is kept as text, so what the API returns is always what it was given.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use uuid::Uuid;

use crate::wire::ocf::{Doxm, Link, DOXM_INTERFACES, RT_DOXM};

/// Why a record is refused. The control plane reports these with the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// An endpoint that is not a `coap://` or `coaps://` URI with a host.
    #[error("eps: {0:?} is not a coap:// or coaps:// endpoint URI")]
    BadEndpoint(String),
    /// `coaps://` endpoints listed before a `coap://` one (SPEC section 5 wants coap first).
    #[error("eps: coap:// endpoints must come before coaps:// ones")]
    EndpointOrder,
    /// An empty or over-long name (`n`), or one with a line break.
    #[error("n: a device name is 1 to 64 bytes, on one line")]
    BadName,
    /// No owner-transfer method.
    #[error("oxms: at least one owner-transfer method is needed")]
    NoOxm,
    /// Whitespace inside an endpoint (an OBT would split the URI there).
    #[error("eps: an endpoint URI cannot contain whitespace")]
    WhitespaceInEndpoint,
}

/// A device's type list and owner-transfer methods: devices of one kind share one copy (the
/// fleet interns them, whoever built the record), so a record points at them with one thin
/// pointer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lists {
    types: Arc<[Box<str>]>,
    oxms: Arc<[i32]>,
}

impl Lists {
    /// The pair.
    pub fn new(types: Arc<[Box<str>]>, oxms: Arc<[i32]>) -> Lists {
        Lists { types, oxms }
    }

    /// Device types (`/oic/d` `rt`).
    pub fn types(&self) -> &Arc<[Box<str>]> {
        &self.types
    }

    /// Supported owner-transfer methods.
    pub fn oxms(&self) -> &Arc<[i32]> {
        &self.oxms
    }
}

/// Byte offsets of the tail's fixed part (see the [module docs](self)).
mod field {
    use std::ops::Range;

    pub const OXMSEL: Range<usize> = 0..4;
    pub const SCT: Range<usize> = 4..8;
    pub const FLAGS: usize = 8;
    pub const NAME_LEN: usize = 9;
    pub const UUIDS: usize = 10;
}

/// The tail's flags: which UUIDs are stored, in this order.
mod flag {
    pub const PIID: u8 = 1 << 0;
    pub const BRIDGE: u8 = 1 << 1;
    pub const DEVOWNER: u8 = 1 << 2;
    pub const ROWNER: u8 = 1 << 3;
    /// The four above: the stored UUIDs.
    pub const STORED: u8 = 0x0f;
    /// `rowneruuid` equals `devowneruuid` (and is not stored).
    pub const ROWNER_IS_DEVOWNER: u8 = 1 << 4;
}

const TAG_TEXT: u8 = 0;
const TAG_V6: u8 = 1;
const TAG_V4: u8 = 2;
const TAG_V6_SAME: u8 = 3;
const TAG_V4_SAME: u8 = 4;
const TAG_SECURE: u8 = 0x80;

/// One device's descriptive fields (SPEC section 6), packed (see the [module docs](self)).
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Held here rather than in the tail: every UUID-index probe reads it.
    uuid: Uuid,
    lists: Arc<Lists>,
    tail: Box<[u8]>,
}

/// The fields of a record that have a fixed size.
#[derive(Debug, Clone, Copy)]
struct Fixed {
    piid: Uuid,
    bridge: Option<Uuid>,
    oxmsel: i32,
    sct: u32,
    devowneruuid: Uuid,
    rowneruuid: Uuid,
}

impl DeviceRecord {
    /// A record; `eps` are validated (`coap://` and `coaps://` URIs, `coap://` first).
    ///
    /// # Errors
    /// [`RecordError`] naming the bad field.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        uuid: Uuid,
        piid: Uuid,
        name: &str,
        device_types: Arc<[Box<str>]>,
        bridge: Option<Uuid>,
        oxms: Arc<[i32]>,
        oxmsel: i32,
        sct: u32,
        devowneruuid: Uuid,
        rowneruuid: Uuid,
        eps: &[&str],
    ) -> Result<DeviceRecord, RecordError> {
        if name.is_empty() || name.len() > 64 || name.contains('\n') {
            return Err(RecordError::BadName);
        }
        if oxms.is_empty() {
            return Err(RecordError::NoOxm);
        }
        let mut seen_secure = false;
        for ep in eps {
            if ep.contains(char::is_whitespace) {
                return Err(RecordError::WhitespaceInEndpoint);
            }
            let secure = match (ep.strip_prefix("coap://"), ep.strip_prefix("coaps://")) {
                (Some(host), _) if !host.is_empty() => false,
                (_, Some(host)) if !host.is_empty() => true,
                _ => return Err(RecordError::BadEndpoint((*ep).to_owned())),
            };
            if seen_secure && !secure {
                return Err(RecordError::EndpointOrder);
            }
            seen_secure |= secure;
        }
        let mut packed_eps = Vec::new();
        encode_eps(eps, &mut packed_eps);
        let fixed = Fixed { piid, bridge, oxmsel, sct, devowneruuid, rowneruuid };
        let lists = Arc::new(Lists::new(device_types, oxms));
        Ok(DeviceRecord { uuid, lists, tail: tail(uuid, &fixed, name, &packed_eps) })
    }

    /// The same record with new owner fields (an owner transfer, a PATCH).
    pub fn with_owners(&self, devowneruuid: Uuid, rowneruuid: Uuid, oxmsel: i32) -> DeviceRecord {
        let fixed = Fixed { devowneruuid, rowneruuid, oxmsel, ..self.fixed() };
        DeviceRecord {
            uuid: self.uuid,
            lists: self.lists.clone(),
            tail: tail(self.uuid, &fixed, self.name(), self.eps_bytes()),
        }
    }

    /// The device UUID (`di`, `deviceuuid`).
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The protocol-independent ID (`/oic/d` `piid`).
    pub fn piid(&self) -> Uuid {
        self.stored(flag::PIID).unwrap_or(self.uuid)
    }

    /// The bridge that created this device, for a VOD.
    pub fn bridge(&self) -> Option<Uuid> {
        self.stored(flag::BRIDGE)
    }

    /// The owner's UUID (nil while unowned).
    pub fn devowneruuid(&self) -> Uuid {
        self.stored(flag::DEVOWNER).unwrap_or_default()
    }

    /// The resource owner's UUID.
    pub fn rowneruuid(&self) -> Uuid {
        if self.flags() & flag::ROWNER_IS_DEVOWNER != 0 {
            return self.devowneruuid();
        }
        self.stored(flag::ROWNER).unwrap_or_default()
    }

    /// The selected owner-transfer method.
    pub fn oxmsel(&self) -> i32 {
        i32::from_le_bytes(self.array(field::OXMSEL))
    }

    /// Supported credential types.
    pub fn sct(&self) -> u32 {
        u32::from_le_bytes(self.array(field::SCT))
    }

    /// Device types (`/oic/d` `rt`), shared between devices of the same kind.
    pub fn device_types(&self) -> &Arc<[Box<str>]> {
        &self.lists.types
    }

    /// Supported owner-transfer methods, shared between devices of the same kind.
    pub fn oxms(&self) -> &Arc<[i32]> {
        &self.lists.oxms
    }

    /// Both lists, as one shared pair.
    pub fn lists(&self) -> &Arc<Lists> {
        &self.lists
    }

    /// Points the record at an equal pair of lists (the fleet's shared copy).
    pub(super) fn share_lists(&mut self, lists: Arc<Lists>) {
        debug_assert_eq!(*lists, *self.lists);
        self.lists = lists;
    }

    /// The name `n`.
    pub fn name(&self) -> &str {
        let (at, len) = self.name_span();
        self.tail.get(at..at + len).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or_default()
    }

    /// The advertised endpoints at the bridge, in the registered order.
    pub fn eps(&self) -> Endpoints<'_> {
        Endpoints { bytes: self.eps_bytes(), last: None }
    }

    /// The advertised endpoints of one IP family, in order: an OBT connects over the family it
    /// discovered on (SPEC section 5). IPv6 endpoints are the ones with a bracketed host.
    pub fn eps_for(&self, v6: bool) -> impl Iterator<Item = Endpoint<'_>> + '_ {
        self.eps().filter(move |ep| ep.is_v6() == v6)
    }

    /// The doxm representation; `owned` comes from the state word the decision was made on.
    pub fn doxm(&self, owned: bool) -> Doxm<'_> {
        Doxm {
            oxms: &self.lists.oxms,
            oxmsel: self.oxmsel(),
            sct: self.sct(),
            owned,
            devowneruuid: self.devowneruuid(),
            deviceuuid: self.uuid,
            rowneruuid: self.rowneruuid(),
        }
    }

    /// The `/oic/res` link to this device's doxm, with `eps` the given endpoints.
    pub fn doxm_link<'a>(&self, eps: &'a [&'a str]) -> Link<'a> {
        Link {
            anchor: self.uuid,
            href: "/oic/sec/doxm",
            rt: &[RT_DOXM],
            interfaces: &DOXM_INTERFACES,
            bm: 1,
            eps,
        }
    }

    fn fixed(&self) -> Fixed {
        Fixed {
            piid: self.piid(),
            bridge: self.bridge(),
            oxmsel: self.oxmsel(),
            sct: self.sct(),
            devowneruuid: self.devowneruuid(),
            rowneruuid: self.rowneruuid(),
        }
    }

    fn flags(&self) -> u8 {
        self.tail.get(field::FLAGS).copied().unwrap_or_default()
    }

    fn array<const N: usize>(&self, at: std::ops::Range<usize>) -> [u8; N] {
        self.tail.get(at).and_then(|b| b.try_into().ok()).unwrap_or([0; N])
    }

    /// The stored UUID of `which` (one of the stored flags), if the flags say it is stored.
    fn stored(&self, which: u8) -> Option<Uuid> {
        let flags = self.flags();
        if flags & which == 0 {
            return None;
        }
        let at = field::UUIDS + 16 * (flags & flag::STORED & (which - 1)).count_ones() as usize;
        self.tail.get(at..at + 16).and_then(|b| Uuid::from_slice(b).ok())
    }

    /// Where the name starts, and its length.
    fn name_span(&self) -> (usize, usize) {
        let stored = (self.flags() & flag::STORED).count_ones() as usize;
        let len = self.tail.get(field::NAME_LEN).copied().unwrap_or_default();
        (field::UUIDS + 16 * stored, usize::from(len))
    }

    fn eps_bytes(&self) -> &[u8] {
        let (at, len) = self.name_span();
        self.tail.get(at + len..).unwrap_or_default()
    }
}

impl fmt::Debug for DeviceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceRecord")
            .field("uuid", &self.uuid)
            .field("piid", &self.piid())
            .field("name", &self.name())
            .field("device_types", self.device_types())
            .field("bridge", &self.bridge())
            .field("oxms", self.oxms())
            .field("oxmsel", &self.oxmsel())
            .field("sct", &self.sct())
            .field("devowneruuid", &self.devowneruuid())
            .field("rowneruuid", &self.rowneruuid())
            .field("eps", &self.eps().map(|e| e.to_string()).collect::<Vec<_>>())
            .finish()
    }
}

/// The tail of a record (see the [module docs](self)); `eps` already encoded.
fn tail(uuid: Uuid, fixed: &Fixed, name: &str, eps: &[u8]) -> Box<[u8]> {
    let piid = (fixed.piid != uuid).then_some(fixed.piid);
    let devowner = (!fixed.devowneruuid.is_nil()).then_some(fixed.devowneruuid);
    let same_owner = fixed.rowneruuid == fixed.devowneruuid;
    let rowner = (!same_owner && !fixed.rowneruuid.is_nil()).then_some(fixed.rowneruuid);
    let stored = [(flag::PIID, piid), (flag::BRIDGE, fixed.bridge), (flag::DEVOWNER, devowner)];
    let stored = stored.into_iter().chain([(flag::ROWNER, rowner)]);
    let mut flags = if same_owner { flag::ROWNER_IS_DEVOWNER } else { 0 };
    let mut uuids = Vec::with_capacity(64);
    for (bit, value) in stored {
        if let Some(value) = value {
            flags |= bit;
            uuids.extend_from_slice(value.as_bytes());
        }
    }
    let mut out = Vec::with_capacity(field::UUIDS + uuids.len() + name.len() + eps.len());
    out.extend_from_slice(&fixed.oxmsel.to_le_bytes());
    out.extend_from_slice(&fixed.sct.to_le_bytes());
    // Names are 1..=64 bytes (checked by `new`, kept by `with_owners`).
    out.extend_from_slice(&[flags, name.len().min(255) as u8]);
    out.extend_from_slice(&uuids);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(eps);
    out.into_boxed_slice()
}

/// Encodes validated endpoints (see the [module docs](self)).
fn encode_eps(eps: &[&str], out: &mut Vec<u8>) {
    let mut last: Option<IpAddr> = None;
    for ep in eps {
        let Some((secure, addr)) = packable(ep) else {
            out.push(TAG_TEXT);
            let mut len = ep.len();
            loop {
                let more = len >= 0x80;
                out.push((len & 0x7f) as u8 | if more { 0x80 } else { 0 });
                len >>= 7;
                if !more {
                    break;
                }
            }
            out.extend_from_slice(ep.as_bytes());
            continue;
        };
        let secure = if secure { TAG_SECURE } else { 0 };
        let same = last == Some(addr.ip());
        match addr.ip() {
            IpAddr::V6(_) if same => out.push(TAG_V6_SAME | secure),
            IpAddr::V4(_) if same => out.push(TAG_V4_SAME | secure),
            IpAddr::V6(ip) => {
                out.push(TAG_V6 | secure);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V4(ip) => {
                out.push(TAG_V4 | secure);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&addr.port().to_le_bytes());
        last = Some(addr.ip());
    }
}

/// `ep` as scheme and socket address, if it reads back exactly as given.
fn packable(ep: &str) -> Option<(bool, SocketAddr)> {
    let (secure, rest) = match ep.strip_prefix("coaps://") {
        Some(rest) => (true, rest),
        None => (false, ep.strip_prefix("coap://")?),
    };
    let addr: SocketAddr = rest.parse().ok()?;
    if matches!(addr, SocketAddr::V6(a) if a.scope_id() != 0 || a.flowinfo() != 0) {
        return None;
    }
    let mut buf = EndpointBuf::default();
    (Endpoint::Packed { secure, addr }.as_str(&mut buf) == ep).then_some((secure, addr))
}

/// One advertised endpoint of a record: a URI kept as given, or a packed one that formats as
/// `coap://[addr]:port` (no allocation: [`Endpoint::as_str`] writes into a buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// A URI kept as text.
    Text(&'a str),
    /// A `coap://` (or, `secure`, `coaps://`) URI of an IP address and port.
    Packed {
        /// `coaps://`.
        secure: bool,
        /// The host and port.
        addr: SocketAddr,
    },
}

impl<'a> Endpoint<'a> {
    /// Whether the endpoint is an IPv6 one (a bracketed host).
    pub fn is_v6(&self) -> bool {
        match self {
            Endpoint::Text(ep) => {
                ep.split_once("://").map_or(*ep, |(_, rest)| rest).starts_with('[')
            }
            Endpoint::Packed { addr, .. } => addr.is_ipv6(),
        }
    }

    /// The URI, written into `buf` when packed.
    pub fn as_str<'b>(&self, buf: &'b mut EndpointBuf) -> &'b str
    where
        'a: 'b,
    {
        match self {
            Endpoint::Text(ep) => ep,
            Endpoint::Packed { .. } => {
                buf.len = 0;
                // A packed URI is at most 55 bytes ("coaps://[" + 39 + "]:65535"): it fits.
                let _ = write!(buf, "{self}");
                buf.as_str()
            }
        }
    }
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Text(ep) => f.write_str(ep),
            Endpoint::Packed { secure: true, addr } => write!(f, "coaps://{addr}"),
            Endpoint::Packed { secure: false, addr } => write!(f, "coap://{addr}"),
        }
    }
}

/// Room for one packed endpoint's URI (see [`Endpoint::as_str`]).
#[derive(Debug, Clone, Copy)]
pub struct EndpointBuf {
    bytes: [u8; 64],
    len: usize,
}

impl Default for EndpointBuf {
    fn default() -> EndpointBuf {
        EndpointBuf { bytes: [0; 64], len: 0 }
    }
}

impl EndpointBuf {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for EndpointBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The endpoints of a record, in order; see [`DeviceRecord::eps`].
#[derive(Debug, Clone)]
pub struct Endpoints<'a> {
    bytes: &'a [u8],
    /// The address of the last packed endpoint (for the `*_SAME` tags).
    last: Option<IpAddr>,
}

impl<'a> Iterator for Endpoints<'a> {
    type Item = Endpoint<'a>;

    fn next(&mut self) -> Option<Endpoint<'a>> {
        let (&tag, mut rest) = self.bytes.split_first()?;
        let secure = tag & TAG_SECURE != 0;
        let ip = match tag & !TAG_SECURE {
            TAG_TEXT => {
                let (mut len, mut shift) = (0usize, 0);
                loop {
                    let (&b, more) = rest.split_first()?;
                    rest = more;
                    len |= usize::from(b & 0x7f) << shift;
                    shift += 7;
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                let text = rest.get(..len)?;
                self.bytes = rest.get(len..)?;
                return Some(Endpoint::Text(std::str::from_utf8(text).ok()?));
            }
            TAG_V6 => {
                let octets: [u8; 16] = rest.get(..16)?.try_into().ok()?;
                rest = rest.get(16..)?;
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            TAG_V4 => {
                let octets: [u8; 4] = rest.get(..4)?.try_into().ok()?;
                rest = rest.get(4..)?;
                IpAddr::V4(Ipv4Addr::from(octets))
            }
            TAG_V6_SAME | TAG_V4_SAME => self.last?,
            _ => return None,
        };
        let port = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?);
        self.bytes = rest.get(2..)?;
        self.last = Some(ip);
        Some(Endpoint::Packed { secure, addr: SocketAddr::new(ip, port) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(eps: &[&str]) -> Result<DeviceRecord, RecordError> {
        DeviceRecord::new(
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            "lamp",
            Arc::from(vec![Box::from("oic.wk.d")]),
            None,
            Arc::from(vec![0]),
            4,
            9,
            Uuid::nil(),
            Uuid::nil(),
            eps,
        )
    }

    #[test]
    fn test_eps_validated_and_kept_in_order() {
        let r = record(&["coap://[fe80::1]:5683", "coaps://[fe80::1]:5684"]).unwrap();
        assert_eq!(
            r.eps().map(|e| e.to_string()).collect::<Vec<_>>(),
            ["coap://[fe80::1]:5683", "coaps://[fe80::1]:5684"]
        );
        assert_eq!(record(&[]).unwrap().eps().count(), 0);
        let both =
            record(&["coap://[fd00::1]:1", "coap://10.0.0.1:1", "coaps://[fd00::1]:2"]).unwrap();
        assert_eq!(
            both.eps_for(true).map(|e| e.to_string()).collect::<Vec<_>>(),
            ["coap://[fd00::1]:1", "coaps://[fd00::1]:2"]
        );
        assert_eq!(
            both.eps_for(false).map(|e| e.to_string()).collect::<Vec<_>>(),
            ["coap://10.0.0.1:1"]
        );
        assert_eq!(
            record(&["coaps://[fe80::1]:5684", "coap://[fe80::1]:5683"]),
            Err(RecordError::EndpointOrder)
        );
        assert!(matches!(record(&["http://x"]), Err(RecordError::BadEndpoint(_))));
        assert!(matches!(record(&["coap://"]), Err(RecordError::BadEndpoint(_))));
        assert_eq!(record(&["coap://a\nb"]), Err(RecordError::WhitespaceInEndpoint));
    }

    #[test]
    fn test_endpoints_read_back_exactly_as_given() {
        // Packed (canonical address and a port) or kept as text (anything else): either way the
        // same bytes come back, in order, with the right family.
        let long = format!("coap://{}.example:5683", "a".repeat(300));
        let eps = [
            "coap://[fd00:b:c::1a2b]:5683",
            "coap://10.1.2.3:5683",
            "coap://[FD00::1]:5683",
            "coap://[fd00:0::1]:5683",
            "coap://[fe80::1%eth0]:5683",
            "coap://[fe80::1%2]:5683",
            "coap://host.example",
            "coap://10.1.2.3:05683",
            "coap://[::ffff:1.2.3.4]:1",
            &long,
            "coaps://[fd00:b:c::1a2b]:5684",
            "coaps://10.1.2.3:5684",
            "coaps://[fd00:b:c::1a2b]:0",
            "coaps://[fd00:b:c::1a2c]:65535",
        ];
        let r = record(&eps).unwrap();
        assert_eq!(r.eps().map(|e| e.to_string()).collect::<Vec<_>>(), eps);
        let v6: Vec<String> = r.eps_for(true).map(|e| e.to_string()).collect();
        let want: Vec<&str> = eps.iter().copied().filter(|e| e.contains('[')).collect();
        assert_eq!(v6, want);
        let mut buf = EndpointBuf::default();
        for (ep, want) in r.eps().zip(eps) {
            assert_eq!(ep.as_str(&mut buf), want);
        }
        let packed = r.eps().filter(|e| matches!(e, Endpoint::Packed { .. })).count();
        assert_eq!(packed, 7, "{:?}", r.eps().collect::<Vec<_>>());
        // The longest packed URI fits the buffer.
        let widest = "coaps://[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        let r = record(&[widest]).unwrap();
        assert!(matches!(r.eps().next(), Some(Endpoint::Packed { .. })));
        assert_eq!(r.eps().next().unwrap().as_str(&mut buf), widest);
    }

    #[test]
    fn test_fields_round_trip_in_every_combination() {
        let u = |n: u128| Uuid::from_u128(n);
        let types: Arc<[Box<str>]> = Arc::from(vec![Box::from("oic.wk.d"), Box::from("x")]);
        for bits in 0..32u8 {
            let piid = if bits & 1 != 0 { u(2) } else { u(1) };
            let bridge = (bits & 2 != 0).then(|| u(3));
            let devowner = if bits & 4 != 0 { u(4) } else { Uuid::nil() };
            let rowner = match bits >> 3 {
                0 => Uuid::nil(),
                1 => devowner,
                2 => u(5),
                _ => u(4),
            };
            let name = "n".repeat(usize::from(bits) % 64 + 1);
            let r = DeviceRecord::new(
                u(1),
                piid,
                &name,
                types.clone(),
                bridge,
                Arc::from(vec![0, 1]),
                -7 - i32::from(bits),
                u32::from(bits) << 20,
                devowner,
                rowner,
                &["coap://[fd00::1]:1"],
            )
            .unwrap();
            let got = (r.uuid(), r.piid(), r.bridge(), r.devowneruuid(), r.rowneruuid());
            assert_eq!(got, (u(1), piid, bridge, devowner, rowner), "{bits}");
            assert_eq!(
                (r.name(), r.oxmsel(), r.sct()),
                (&*name, -7 - i32::from(bits), u32::from(bits) << 20)
            );
            assert_eq!(r.eps().map(|e| e.to_string()).collect::<Vec<_>>(), ["coap://[fd00::1]:1"]);
            assert_eq!(&**r.oxms(), &[0, 1]);
            let moved = r.with_owners(u(9), u(9), 3);
            assert_eq!((moved.devowneruuid(), moved.rowneruuid(), moved.oxmsel()), (u(9), u(9), 3));
            assert_eq!((moved.piid(), moved.bridge(), moved.name()), (piid, bridge, &*name));
            assert_eq!(moved.with_owners(devowner, rowner, -7 - i32::from(bits)), r);
        }
    }
}
