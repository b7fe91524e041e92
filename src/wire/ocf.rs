//! The OCF representations the gate serves, encoded as `application/vnd.ocf+cbor` (10000).
//!
//! - [`Doxm`]: `/oic/sec/doxm` (OCF Security), the answer to discovery (SPEC section 4). Field
//!   order and encoding match what IoTivity-Lite devices send, byte for byte: an
//!   indefinite-length map of `oxms`, `oxmsel`, `sct`, `owned`, `devowneruuid`, `deviceuuid`,
//!   `rowneruuid`, preceded by `rt` and `if` on the baseline interface.
//! - [`Link`]: one `/oic/res` link (OCF Core), the shape the IoTivity-Lite OBT reads after a doxm
//!   answer to find the device's endpoints (SPEC section 5).
//! - [`DeviceInfo`]: `/oic/d` (OCF Core), which the OBT reads next for `di` and `n`.
//!
//! [`write_response`] wraps a representation in a CoAP response with the two options every OCF
//! 1.x payload carries: Content-Format 10000 and OCF-Content-Format-Version 2048.

use uuid::Uuid;

use super::cbor::Encoder;
use super::coap::{Code, MessageType};
use super::option;
use super::writer::{WriteError, Writer};
use super::BufferTooSmall;

/// `application/vnd.ocf+cbor`.
pub const CONTENT_FORMAT_OCF_CBOR: u16 = 10_000;
/// OCF-Content-Format-Version for OCF 1.0.0: `major << 11 | minor << 6 | sub`.
pub const OCF_VERSION_1_0_0: u16 = 1 << 11;

/// Resource type of `/oic/sec/doxm`.
pub const RT_DOXM: &str = "oic.r.doxm";
/// Resource type of `/oic/res`.
pub const RT_RES: &str = "oic.wk.res";
/// Resource type of `/oic/d`.
pub const RT_DEVICE: &str = "oic.wk.d";
/// The baseline interface: every property, including `rt` and `if`.
pub const IF_BASELINE: &str = "oic.if.baseline";
/// The read-write interface (the default of doxm).
pub const IF_RW: &str = "oic.if.rw";
/// The read-only interface (the default of `/oic/d`).
pub const IF_R: &str = "oic.if.r";
/// The links-list interface (the default of `/oic/res`).
pub const IF_LL: &str = "oic.if.ll";
/// The interfaces of doxm, in the order devices list them.
pub const DOXM_INTERFACES: [&str; 2] = [IF_RW, IF_BASELINE];
/// The interfaces of `/oic/d`.
pub const DEVICE_INTERFACES: [&str; 2] = [IF_R, IF_BASELINE];

/// Which view of a resource to encode: its default interface or `oic.if.baseline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// The resource's default interface (`oic.if.rw` for doxm, `oic.if.r` for `/oic/d`).
    Default,
    /// `oic.if.baseline`: adds the common properties `rt` and `if` first.
    Baseline,
}

/// Owner-transfer methods (`oxms`, `oxmsel`) from OCF Security.
pub mod oxm {
    /// Just Works.
    pub const JUST_WORKS: i32 = 0;
    /// Random PIN.
    pub const RANDOM_PIN: i32 = 1;
    /// Manufacturer certificate.
    pub const MANUFACTURER_CERTIFICATE: i32 = 2;
    /// "Self" owner transfer: the RESET default of `oxmsel`.
    pub const SELF: i32 = 4;
}

/// Supported credential types (`sct` bits) from OCF Security.
pub mod sct {
    /// Pair-wise symmetric key.
    pub const PAIRWISE_PSK: u32 = 1;
    /// Group symmetric key.
    pub const GROUP_KEY: u32 = 2;
    /// Asymmetric signing key.
    pub const SIGNING_KEY: u32 = 4;
    /// Asymmetric signing key with certificate.
    pub const CERTIFICATE: u32 = 8;
    /// PIN or password.
    pub const PIN: u32 = 16;
    /// Asymmetric encryption key.
    pub const ENCRYPTION_KEY: u32 = 32;
    /// OSCORE.
    pub const OSCORE: u32 = 64;
    /// OSCORE group client.
    pub const OSCORE_GROUP_CLIENT: u32 = 128;
    /// OSCORE group server.
    pub const OSCORE_GROUP_SERVER: u32 = 256;
}

/// The doxm resource of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doxm<'a> {
    /// Supported owner-transfer methods.
    pub oxms: &'a [i32],
    /// The selected owner-transfer method.
    pub oxmsel: i32,
    /// Supported credential types (bit set, see [`sct`]).
    pub sct: u32,
    /// Whether the device is owned.
    pub owned: bool,
    /// The owner's UUID (nil while unowned).
    pub devowneruuid: Uuid,
    /// The device's UUID.
    pub deviceuuid: Uuid,
    /// The resource owner's UUID.
    pub rowneruuid: Uuid,
}

impl Doxm<'_> {
    /// Encodes the representation; see the [module docs](self) for the layout.
    ///
    /// # Errors
    /// [`BufferTooSmall`] when `out` cannot hold it; [`Doxm::MAX_LEN`] bytes are always enough.
    pub fn encode(&self, view: View, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut e = Encoder::new(out);
        e.begin_map()?;
        if view == View::Baseline {
            e.text("rt")?.text_array(&[RT_DOXM])?;
            e.text("if")?.text_array(&DOXM_INTERFACES)?;
        }
        e.text("oxms")?.array(self.oxms.len() as u64)?;
        for &oxm in self.oxms {
            e.i64(i64::from(oxm))?;
        }
        e.text("oxmsel")?.i64(i64::from(self.oxmsel))?;
        e.text("sct")?.u64(u64::from(self.sct))?;
        e.text("owned")?.bool(self.owned)?;
        uuid_field(&mut e, "devowneruuid", &self.devowneruuid)?;
        uuid_field(&mut e, "deviceuuid", &self.deviceuuid)?;
        uuid_field(&mut e, "rowneruuid", &self.rowneruuid)?;
        e.end()?;
        Ok(e.len())
    }

    /// An upper bound of the encoded size of either view with up to 8 oxms, whatever the
    /// values (the baseline view with 8 extreme oxms takes 270 bytes).
    pub const MAX_LEN: usize = 300;
}

/// One link of `/oic/res` (OCF Core), as the IoTivity-Lite OBT expects it after a doxm answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link<'a> {
    /// The device the resource belongs to; encoded as `anchor: "ocf://<uuid>"`.
    pub anchor: Uuid,
    /// The resource path, e.g. `/oic/sec/doxm`.
    pub href: &'a str,
    /// Resource types.
    pub rt: &'a [&'a str],
    /// Interfaces.
    pub interfaces: &'a [&'a str],
    /// Policy bitmap `p.bm` (1 = discoverable, 2 = observable).
    pub bm: u8,
    /// The endpoints, as `coap://...` / `coaps://...` URIs, in the order to advertise them.
    pub eps: &'a [&'a str],
}

impl Link<'_> {
    fn encode_into(&self, e: &mut Encoder<'_>) -> Result<(), BufferTooSmall> {
        let mut anchor = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let anchor = self.anchor.hyphenated().encode_lower(&mut anchor);
        e.begin_map()?;
        e.text("anchor")?.text_parts(&["ocf://", anchor])?;
        e.text("href")?.text(self.href)?;
        e.text("rt")?.text_array(self.rt)?;
        e.text("if")?.text_array(self.interfaces)?;
        e.text("p")?.begin_map()?.text("bm")?.u64(u64::from(self.bm))?.end()?;
        e.text("eps")?.array(self.eps.len() as u64)?;
        for ep in self.eps {
            e.begin_map()?.text("ep")?.text(ep)?.end()?;
        }
        e.end()?;
        Ok(())
    }
}

/// Encodes `/oic/res` on its default interface `oic.if.ll`: an array of links.
///
/// # Errors
/// [`BufferTooSmall`] when `out` cannot hold it.
pub fn encode_links(links: &[Link<'_>], out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let mut e = Encoder::new(out);
    e.array(links.len() as u64)?;
    for link in links {
        link.encode_into(&mut e)?;
    }
    Ok(e.len())
}

/// Encodes `/oic/res` on `oic.if.baseline`: a one-element array holding a map with `rt`, `if`
/// and the `links` array (OCF Core).
///
/// # Errors
/// [`BufferTooSmall`] when `out` cannot hold it.
pub fn encode_res_baseline(links: &[Link<'_>], out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let mut e = Encoder::new(out);
    e.array(1)?.begin_map()?;
    e.text("rt")?.text_array(&[RT_RES])?;
    e.text("if")?.text_array(&[IF_LL, IF_BASELINE])?;
    e.text("links")?.array(links.len() as u64)?;
    for link in links {
        link.encode_into(&mut e)?;
    }
    e.end()?;
    Ok(e.len())
}

/// `/oic/d` (OCF Core): what the OBT reads for a device's `di` and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo<'a> {
    /// The device UUID.
    pub di: Uuid,
    /// The human-friendly name.
    pub n: &'a str,
    /// Device types: `oic.wk.d` first, then e.g. `oic.d.virtual` or the vertical's type.
    pub rt: &'a [&'a str],
    /// The OCF Core version the device implements, e.g. `ocf.2.0.5`.
    pub icv: &'a str,
    /// Data model versions, e.g. `ocf.res.1.3.0,ocf.sh.1.3.0`.
    pub dmv: &'a str,
    /// Protocol-independent ID.
    pub piid: Uuid,
}

impl DeviceInfo<'_> {
    /// Encodes the representation; the baseline view adds `if`.
    ///
    /// # Errors
    /// [`BufferTooSmall`] when `out` cannot hold it.
    pub fn encode(&self, view: View, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut e = Encoder::new(out);
        e.begin_map()?;
        e.text("rt")?.text_array(self.rt)?;
        if view == View::Baseline {
            e.text("if")?.text_array(&DEVICE_INTERFACES)?;
        }
        e.text("n")?.text(self.n)?;
        uuid_field(&mut e, "di", &self.di)?;
        e.text("icv")?.text(self.icv)?;
        e.text("dmv")?.text(self.dmv)?;
        uuid_field(&mut e, "piid", &self.piid)?;
        e.end()?;
        Ok(e.len())
    }
}

/// Writes a CoAP response carrying an OCF representation: Content-Format 10000 and
/// OCF-Content-Format-Version 2048, then the payload that `encode` writes in place.
///
/// # Errors
/// [`WriteError`] from the writer, or [`WriteError::BufferTooSmall`] from `encode`.
pub fn write_response(
    buf: &mut [u8],
    ty: MessageType,
    code: Code,
    message_id: u16,
    token: &[u8],
    encode: impl FnOnce(&mut [u8]) -> Result<usize, BufferTooSmall>,
) -> Result<usize, WriteError> {
    let mut w = Writer::new(buf, ty, code, message_id, token)?;
    w.uint_option(option::CONTENT_FORMAT, u32::from(CONTENT_FORMAT_OCF_CBOR))?;
    w.uint_option(option::OCF_CONTENT_FORMAT_VERSION, u32::from(OCF_VERSION_1_0_0))?;
    w.payload_with(|out| encode(out).map_err(WriteError::from))
}

fn uuid_field(e: &mut Encoder<'_>, key: &str, value: &Uuid) -> Result<(), BufferTooSmall> {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    e.text(key)?.text(value.hyphenated().encode_lower(&mut text))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fixtures::{real_doxm, REAL_DOXM_PAYLOAD};

    #[test]
    fn test_emit_real_doxm_payload() {
        let mut buf = [0u8; Doxm::MAX_LEN];
        let len = real_doxm().encode(View::Default, &mut buf).unwrap();
        assert_eq!(buf[..len], REAL_DOXM_PAYLOAD);
    }

    #[test]
    fn test_doxm_max_len_holds() {
        let doxm = Doxm { oxms: &[i32::MIN; 8], oxmsel: i32::MIN, sct: u32::MAX, ..real_doxm() };
        let mut buf = [0u8; Doxm::MAX_LEN];
        assert!(doxm.encode(View::Baseline, &mut buf).is_ok());
    }

    #[test]
    fn test_doxm_buffer_too_small() {
        let mut buf = [0u8; 179];
        assert_eq!(real_doxm().encode(View::Default, &mut buf), Err(BufferTooSmall));
    }
}
