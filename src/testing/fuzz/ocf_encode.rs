//! The check behind the `ocf_encode` fuzz target (and its corpus replay in tests/fuzz_corpus.rs).
//!
//! [`check`] takes already-built field values ([`OcfCase`]) and encodes them with every encoder
//! of `wire::ocf`: [`Doxm::encode`] (both views), [`write_response`] around it, [`encode_links`],
//! [`encode_res_baseline`] and [`DeviceInfo::encode`] (both views). For each:
//!
//! - into a buffer large enough, it returns `Ok`; the bytes decode with ciborium (an independent
//!   decoder) to exactly the value built here from the inputs, with nothing left over, and every
//!   CBOR head is in its shortest form (RFC 8949 section 4.2.1);
//! - into a buffer of any smaller size it returns `BufferTooSmall` (and never panics), and into
//!   any size from the full length up it returns the same bytes.
//!
//! [`OcfCase::from_bytes`] turns fuzz input into field values with a small, fixed byte format
//! (below) shared by the fuzz target and the stable corpus replay, so that a corpus file means
//! the same values in both and seed files can be written by hand from the test vectors:
//!
//! ```text
//! cut:u16  flags:u8 (bit 0 owned)  oxms:list(i32)  oxmsel:i32  sct:u32
//! devowneruuid:16  deviceuuid:16  rowneruuid:16
//! device: di:16 piid:16 n:text icv:text dmv:text rt:list(text)
//! links:list(anchor:16 bm:u8 href:text rt:list(text) if:list(text) eps:list(text))
//! ```
//!
//! Integers are big endian; `list(T)` is a count byte (modulo the list's maximum + 1) then the
//! items; `text` is a length byte (0xf0..=0xff: a u16 length follows) then that many bytes, read
//! as lossy UTF-8. A short input reads as zeros and empty strings.

use crate::wire::ocf::{encode_links, encode_res_baseline, write_response};
use crate::wire::ocf::{DeviceInfo, Doxm, Link, View};
use crate::wire::{BufferTooSmall, Code, Message, MessageType};
use ciborium::Value;
use uuid::Uuid;

/// Field values for every OCF encoder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OcfCase {
    /// Picks the size of the short buffer: `cut % (full length + 2)`.
    pub cut: u16,
    /// doxm `oxms`.
    pub oxms: Vec<i32>,
    /// doxm `oxmsel`.
    pub oxmsel: i32,
    /// doxm `sct`.
    pub sct: u32,
    /// doxm `owned`.
    pub owned: bool,
    /// doxm `devowneruuid`, `deviceuuid`, `rowneruuid`.
    pub uuids: [[u8; 16]; 3],
    /// `/oic/d`.
    pub device: DeviceCase,
    /// `/oic/res` links.
    pub links: Vec<LinkCase>,
}

/// Field values of `/oic/d`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceCase {
    /// `di`.
    pub di: [u8; 16],
    /// `piid`.
    pub piid: [u8; 16],
    /// `n`.
    pub n: String,
    /// `icv`.
    pub icv: String,
    /// `dmv`.
    pub dmv: String,
    /// `rt`.
    pub rt: Vec<String>,
}

/// Field values of one `/oic/res` link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkCase {
    /// `anchor` (as `ocf://<uuid>`).
    pub anchor: [u8; 16],
    /// `p.bm`.
    pub bm: u8,
    /// `href`.
    pub href: String,
    /// `rt`.
    pub rt: Vec<String>,
    /// `if`.
    pub interfaces: Vec<String>,
    /// `eps` (each as `{"ep": ...}`).
    pub eps: Vec<String>,
}

impl OcfCase {
    /// Reads field values from fuzz input; see the [module docs](self) for the format.
    pub fn from_bytes(data: &[u8]) -> OcfCase {
        let mut f = Fields(data);
        let cut = f.u16();
        let owned = f.u8() & 1 == 1;
        let oxms = f.list(40, |f| f.i32());
        let (oxmsel, sct) = (f.i32(), f.u32());
        let uuids = [f.array(), f.array(), f.array()];
        let (di, piid) = (f.array(), f.array());
        let (n, icv, dmv) = (f.text(), f.text(), f.text());
        let device = DeviceCase { di, piid, n, icv, dmv, rt: f.list(30, Fields::text) };
        let links = f.list(4, |f| LinkCase {
            anchor: f.array(),
            bm: f.u8(),
            href: f.text(),
            rt: f.list(30, Fields::text),
            interfaces: f.list(30, Fields::text),
            eps: f.list(30, Fields::text),
        });
        OcfCase { cut, oxms, oxmsel, sct, owned, uuids, device, links }
    }
}

/// Encodes `case` with every OCF encoder; panics on any violated invariant.
pub fn check(case: &OcfCase) {
    let doxm = Doxm {
        oxms: &case.oxms,
        oxmsel: case.oxmsel,
        sct: case.sct,
        owned: case.owned,
        devowneruuid: Uuid::from_bytes(case.uuids[0]),
        deviceuuid: Uuid::from_bytes(case.uuids[1]),
        rowneruuid: Uuid::from_bytes(case.uuids[2]),
    };
    for view in [View::Default, View::Baseline] {
        let want = doxm_value(case, view);
        let bytes = check_encoder("doxm", case.cut, |out| doxm.encode(view, out), &want);
        assert_eq!((bytes[0], bytes[bytes.len() - 1]), (0xbf, 0xff), "indefinite-length map");
        if case.oxms.len() <= 8 {
            assert!(
                bytes.len() <= Doxm::MAX_LEN,
                "Doxm::MAX_LEN {} < {}",
                Doxm::MAX_LEN,
                bytes.len()
            );
        }
        check_response(case.cut, |out| doxm.encode(view, out), &bytes);
    }

    let link_strs: Vec<_> =
        case.links.iter().map(|l| (strs(&l.rt), strs(&l.interfaces), strs(&l.eps))).collect();
    let links: Vec<Link<'_>> = case
        .links
        .iter()
        .zip(&link_strs)
        .map(|(l, (rt, interfaces, eps))| Link {
            anchor: Uuid::from_bytes(l.anchor),
            href: &l.href,
            rt,
            interfaces,
            bm: l.bm,
            eps,
        })
        .collect();
    let want: Vec<Value> = case.links.iter().map(link_value).collect();
    check_encoder("links", case.cut, |out| encode_links(&links, out), &Value::Array(want.clone()));
    let baseline = Value::Array(vec![map(vec![
        ("rt", texts(&["oic.wk.res"])),
        ("if", texts(&["oic.if.ll", "oic.if.baseline"])),
        ("links", Value::Array(want)),
    ])]);
    check_encoder("res baseline", case.cut, |out| encode_res_baseline(&links, out), &baseline);

    let d = &case.device;
    let rt = strs(&d.rt);
    let device = DeviceInfo {
        di: Uuid::from_bytes(d.di),
        n: &d.n,
        rt: &rt,
        icv: &d.icv,
        dmv: &d.dmv,
        piid: Uuid::from_bytes(d.piid),
    };
    for view in [View::Default, View::Baseline] {
        let mut want = vec![("rt", texts(&d.rt))];
        if view == View::Baseline {
            want.push(("if", texts(&["oic.if.r", "oic.if.baseline"])));
        }
        want.extend([
            ("n", text(&d.n)),
            ("di", text(&uuid_text(&d.di))),
            ("icv", text(&d.icv)),
            ("dmv", text(&d.dmv)),
            ("piid", text(&uuid_text(&d.piid))),
        ]);
        check_encoder("device", case.cut, |out| device.encode(view, out), &map(want));
    }
}

/// Encodes into a large enough buffer, checks the decoded value and the heads, then encodes into
/// the short buffer picked by `cut`. Returns the full encoding.
fn check_encoder(
    what: &str,
    cut: u16,
    encode: impl Fn(&mut [u8]) -> Result<usize, BufferTooSmall>,
    want: &Value,
) -> Vec<u8> {
    let full = encode_full(|out| encode(out));
    let mut rest = &full[..];
    let got: Value = ciborium::from_reader(&mut rest)
        .unwrap_or_else(|e| panic!("{what}: ciborium rejects {}: {e}", hex(&full)));
    assert!(rest.is_empty(), "{what}: {} trailing bytes", rest.len());
    assert_eq!(&got, want, "{what}: decoded value");
    let mut at = 0;
    assert_preferred(&full, &mut at);
    assert_eq!(at, full.len(), "{what}: one item");

    let size = usize::from(cut) % (full.len() + 2);
    let mut buf = vec![0u8; size];
    match encode(&mut buf) {
        Ok(len) => assert_eq!(&buf[..len], &full[..], "{what}: into {size} bytes"),
        Err(BufferTooSmall) => assert!(size < full.len(), "{what}: {size} bytes are enough"),
    }
    full
}

/// The doxm answer as a CoAP response: CF 10000, OCF version 2048, the payload unchanged.
fn check_response(
    cut: u16,
    encode: impl Fn(&mut [u8]) -> Result<usize, BufferTooSmall>,
    payload: &[u8],
) {
    let respond = |out: &mut [u8]| {
        write_response(out, MessageType::NonConfirmable, Code::CONTENT, cut, b"tk", &encode)
            .map_err(|_| BufferTooSmall)
    };
    let full = encode_full(respond);
    let msg = Message::parse(&full).expect("the response parses");
    assert_eq!(
        (msg.content_format(), msg.ocf_content_format_version()),
        (Some(10_000), Some(2048))
    );
    assert_eq!((msg.message_id(), msg.token(), msg.payload()), (cut, &b"tk"[..], payload));
    let size = usize::from(cut) % (full.len() + 2);
    let mut buf = vec![0u8; size];
    match respond(&mut buf) {
        Ok(len) => assert_eq!(&buf[..len], &full[..], "response into {size} bytes"),
        Err(BufferTooSmall) => assert!(size < full.len(), "response: {size} bytes are enough"),
    }
}

/// Encodes into ever larger buffers until it fits.
fn encode_full(encode: impl Fn(&mut [u8]) -> Result<usize, BufferTooSmall>) -> Vec<u8> {
    let mut size = 512;
    loop {
        let mut buf = vec![0u8; size];
        if let Ok(len) = encode(&mut buf) {
            assert!(len <= size);
            buf.truncate(len);
            return buf;
        }
        assert!(size < 1 << 24, "no buffer is large enough");
        size *= 4;
    }
}

/// Walks one CBOR item, asserting shortest-form heads; indefinite length only for maps/arrays.
fn assert_preferred(bytes: &[u8], at: &mut usize) {
    let initial = bytes[*at];
    *at += 1;
    let (major, info) = (initial >> 5, initial & 0x1f);
    if info == 31 {
        assert!(major == 4 || major == 5, "indefinite length of major type {major}");
        while bytes[*at] != 0xff {
            assert_preferred(bytes, at);
            if major == 5 {
                assert_preferred(bytes, at);
            }
        }
        *at += 1;
        return;
    }
    let (value, min) = match info {
        0..=23 => (u64::from(info), 0),
        24..=27 => {
            let n = 1usize << (info - 24);
            let v = bytes[*at..*at + n].iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
            *at += n;
            (v, [24, 0x100, 0x1_0000, 0x1_0000_0000][usize::from(info - 24)])
        }
        _ => panic!("reserved additional information {info}"),
    };
    assert!(value >= min, "head 0x{initial:02x} holds {value}: not the shortest form");
    match major {
        0 | 1 => {}
        2 | 3 => *at += usize::try_from(value).expect("length fits"),
        4 => (0..value).for_each(|_| assert_preferred(bytes, at)),
        5 => (0..2 * value).for_each(|_| assert_preferred(bytes, at)),
        7 => assert!(info == 20 || info == 21, "simple value {info}: only booleans"),
        _ => panic!("major type {major} (tags) is not used"),
    }
}

fn doxm_value(case: &OcfCase, view: View) -> Value {
    let mut pairs = Vec::new();
    if view == View::Baseline {
        pairs.push(("rt", texts(&["oic.r.doxm"])));
        pairs.push(("if", texts(&["oic.if.rw", "oic.if.baseline"])));
    }
    let oxms = case.oxms.iter().map(|&o| Value::Integer(o.into())).collect();
    pairs.extend([
        ("oxms", Value::Array(oxms)),
        ("oxmsel", Value::Integer(case.oxmsel.into())),
        ("sct", Value::Integer(case.sct.into())),
        ("owned", Value::Bool(case.owned)),
        ("devowneruuid", text(&uuid_text(&case.uuids[0]))),
        ("deviceuuid", text(&uuid_text(&case.uuids[1]))),
        ("rowneruuid", text(&uuid_text(&case.uuids[2]))),
    ]);
    map(pairs)
}

fn link_value(l: &LinkCase) -> Value {
    let eps = l.eps.iter().map(|ep| map(vec![("ep", text(ep))])).collect();
    map(vec![
        ("anchor", text(&format!("ocf://{}", uuid_text(&l.anchor)))),
        ("href", text(&l.href)),
        ("rt", texts(&l.rt)),
        ("if", texts(&l.interfaces)),
        ("p", map(vec![("bm", Value::Integer(l.bm.into()))])),
        ("eps", Value::Array(eps)),
    ])
}

fn strs(items: &[String]) -> Vec<&str> {
    items.iter().map(String::as_str).collect()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn texts<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(items.iter().map(|s| text(s.as_ref())).collect())
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (text(k), v)).collect())
}

/// `8-4-4-4-12` lowercase hex, written here independently of the uuid crate.
fn uuid_text(bytes: &[u8; 16]) -> String {
    let h = hex(bytes);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cursor over fuzz input; reads past the end give zeros (see the module docs).
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let bytes = self.take(N);
        out[..bytes.len()].copy_from_slice(bytes);
        out
    }

    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.array())
    }

    fn text(&mut self) -> String {
        let len = match self.u8() {
            len @ 0..=0xef => usize::from(len),
            _ => usize::from(self.u16()),
        };
        String::from_utf8_lossy(self.take(len)).into_owned()
    }

    fn list<T>(&mut self, max: u8, mut item: impl FnMut(&mut Self) -> T) -> Vec<T> {
        let count = self.u8() % (max + 1);
        (0..count).map(|_| item(self)).collect()
    }
}
