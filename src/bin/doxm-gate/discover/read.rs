//! Reading what devices send back: the doxm answer, the `/oic/res` links and `/oic/d`, with the
//! checks an OBT makes (SPEC sections 4 and 5).
//!
//! Every response must be a 2.05 with Content-Format 10000 (`application/vnd.ocf+cbor`); the
//! payload is decoded with the strict CBOR reader, [`super::cbor`]. Unknown properties are
//! ignored, as an OBT ignores them; a missing or mistyped property the OBT needs is an error
//! that names it.

use doxm_gate::wire::ocf::{CONTENT_FORMAT_OCF_CBOR, RT_DOXM};
use doxm_gate::wire::{Code, Message};
use uuid::Uuid;

use super::cbor::{self, Value};

/// What a doxm answer says (the properties the probe prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoxmAnswer {
    /// `deviceuuid`.
    pub deviceuuid: Uuid,
    /// `owned`.
    pub owned: bool,
    /// `oxms`.
    pub oxms: Vec<i64>,
    /// `sct`.
    pub sct: u64,
}

/// What the `/oic/res` link of the doxm resource gives: the device's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoxmLink {
    /// The `ep` of every entry of `eps`, in order.
    pub eps: Vec<String>,
}

/// Checks that `msg` is a 2.05 carrying an OCF CBOR payload, and decodes it.
///
/// # Errors
/// A message naming the code, the content format or the CBOR error.
pub fn ocf_payload(msg: &Message<'_>) -> Result<Value, String> {
    if msg.code() != Code::CONTENT {
        return Err(format!("{} instead of 2.05", msg.code()));
    }
    match msg.content_format() {
        Some(CONTENT_FORMAT_OCF_CBOR) => {}
        Some(other) => {
            return Err(format!("content-format {other}, not {CONTENT_FORMAT_OCF_CBOR}"))
        }
        None => return Err(format!("no content-format (want {CONTENT_FORMAT_OCF_CBOR})")),
    }
    cbor::decode(msg.payload()).map_err(|e| e.to_string())
}

/// Reads a doxm answer.
///
/// # Errors
/// See [`ocf_payload`]; or the property that is missing or of the wrong type.
pub fn doxm(msg: &Message<'_>) -> Result<DoxmAnswer, String> {
    let doxm = ocf_payload(msg)?;
    if !matches!(doxm, Value::Map(_)) {
        return Err("doxm payload is not a map".to_owned());
    }
    let deviceuuid = uuid_property(&doxm, "deviceuuid")?;
    let owned = doxm.get("owned").and_then(Value::as_bool).ok_or("doxm has no boolean owned")?;
    let oxms = doxm
        .get("oxms")
        .and_then(Value::as_array)
        .and_then(|items| items.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>())
        .ok_or("doxm has no integer array oxms")?;
    let sct = doxm.get("sct").and_then(Value::as_u64).ok_or("doxm has no unsigned sct")?;
    Ok(DoxmAnswer { deviceuuid, owned, oxms, sct })
}

/// Reads `/oic/res` (links list) and checks the doxm link against `deviceuuid`.
///
/// The link is the one whose `href` is `/oic/sec/doxm`, else the one whose `rt` has
/// `oic.r.doxm`. Its `anchor` must be `ocf://<deviceuuid>` and it must list endpoints.
///
/// # Errors
/// See [`ocf_payload`]; no doxm link; an anchor naming another device; no `eps`.
pub fn doxm_link(msg: &Message<'_>, deviceuuid: &Uuid) -> Result<DoxmLink, String> {
    let payload = ocf_payload(msg)?;
    let links = payload.as_array().ok_or("payload is not an array of links")?;
    let is_doxm_rt = |link: &&Value| {
        link.get("rt")
            .and_then(Value::as_array)
            .is_some_and(|rts| rts.iter().any(|rt| rt.as_text() == Some(RT_DOXM)))
    };
    let link = links
        .iter()
        .find(|link| link.get("href").and_then(Value::as_text) == Some("/oic/sec/doxm"))
        .or_else(|| links.iter().find(is_doxm_rt))
        .ok_or("no /oic/sec/doxm link")?;
    let anchor = link.get("anchor").and_then(Value::as_text).ok_or("doxm link has no anchor")?;
    let anchored = anchor
        .strip_prefix("ocf://")
        .and_then(|uuid| Uuid::try_parse(uuid).ok())
        .is_some_and(|uuid| uuid == *deviceuuid);
    if !anchored {
        return Err(format!("anchor {anchor} is not ocf://{deviceuuid}"));
    }
    let eps = link
        .get("eps")
        .and_then(Value::as_array)
        .and_then(|eps| {
            eps.iter().map(|ep| ep.get("ep").and_then(Value::as_text).map(str::to_owned)).collect()
        })
        .ok_or("doxm link has no eps list of {ep: text}")?;
    let eps: Vec<String> = eps;
    if eps.is_empty() {
        return Err("doxm link has an empty eps".to_owned());
    }
    Ok(DoxmLink { eps })
}

/// Reads `/oic/d`, checks that `di` is `deviceuuid`, and returns the name `n`.
///
/// # Errors
/// See [`ocf_payload`]; a missing or different `di`; no `n`.
pub fn device_name(msg: &Message<'_>, deviceuuid: &Uuid) -> Result<String, String> {
    let device = ocf_payload(msg)?;
    let di = uuid_property(&device, "di")?;
    if di != *deviceuuid {
        return Err(format!("di {di} is not {deviceuuid}"));
    }
    let name = device.get("n").and_then(Value::as_text).ok_or("no text n")?;
    Ok(name.to_owned())
}

fn uuid_property(map: &Value, key: &str) -> Result<Uuid, String> {
    let text = map.get(key).and_then(Value::as_text).ok_or(format!("no text {key}"))?;
    Uuid::try_parse(text).map_err(|_| format!("{key} {text:?} is not a UUID"))
}

#[cfg(test)]
mod tests {
    use doxm_gate::wire::ocf::{self, DeviceInfo, Doxm, Link, View};
    use doxm_gate::wire::{MessageType, Writer};

    use super::*;

    const UUID: &str = "50e1a3ae-6a0c-4ac0-7b4f-d1d818ae3403";

    fn uuid() -> Uuid {
        Uuid::parse_str(UUID).unwrap()
    }

    fn respond(
        buf: &mut [u8],
        encode: impl FnOnce(&mut [u8]) -> Result<usize, doxm_gate::wire::BufferTooSmall>,
    ) -> Message<'_> {
        let len =
            ocf::write_response(buf, MessageType::NonConfirmable, Code::CONTENT, 1, b"t", encode)
                .unwrap();
        Message::parse(&buf[..len]).unwrap()
    }

    fn sample_doxm() -> Doxm<'static> {
        Doxm {
            oxms: &[0, 2],
            oxmsel: 4,
            sct: 9,
            owned: false,
            devowneruuid: Uuid::nil(),
            deviceuuid: uuid(),
            rowneruuid: Uuid::nil(),
        }
    }

    #[test]
    fn test_doxm_both_views() {
        for view in [View::Default, View::Baseline] {
            let mut buf = [0u8; 512];
            let msg = respond(&mut buf, |out| sample_doxm().encode(view, out));
            assert_eq!(
                doxm(&msg).unwrap(),
                DoxmAnswer { deviceuuid: uuid(), owned: false, oxms: vec![0, 2], sct: 9 }
            );
        }
    }

    #[test]
    fn test_doxm_rejects() {
        let mut buf = [0u8; 64];
        let mut w =
            Writer::new(&mut buf, MessageType::NonConfirmable, Code::CONTENT, 1, b"t").unwrap();
        w.uint_option(doxm_gate::wire::option::CONTENT_FORMAT, 60).unwrap();
        let len = w.payload(&[0xa0]).unwrap();
        let msg = Message::parse(&buf[..len]).unwrap();
        assert_eq!(doxm(&msg).unwrap_err(), "content-format 60, not 10000");

        let mut buf = [0u8; 64];
        let len = Writer::new(&mut buf, MessageType::NonConfirmable, Code::NOT_FOUND, 1, b"t")
            .unwrap()
            .finish();
        assert_eq!(
            doxm(&Message::parse(&buf[..len]).unwrap()).unwrap_err(),
            "4.04 instead of 2.05"
        );

        let mut buf = [0u8; 64];
        let msg = respond(&mut buf, |out| {
            out[..2].copy_from_slice(&[0xa0, 0x00]);
            Ok(2)
        });
        assert_eq!(doxm(&msg).unwrap_err(), "bytes after the CBOR item");

        let mut buf = [0u8; 64];
        let msg = respond(&mut buf, |out| {
            out[0] = 0xa0;
            Ok(1)
        });
        assert_eq!(doxm(&msg).unwrap_err(), "no text deviceuuid");
    }

    fn links_msg<'b>(buf: &'b mut [u8], anchor: Uuid, eps: &[&str]) -> Message<'b> {
        let doxm_link = Link {
            anchor,
            href: "/oic/sec/doxm",
            rt: &[RT_DOXM],
            interfaces: &ocf::DOXM_INTERFACES,
            bm: 1,
            eps,
        };
        let device_link = Link { href: "/oic/d", rt: &[ocf::RT_DEVICE], ..doxm_link };
        respond(buf, move |out| ocf::encode_links(&[device_link, doxm_link], out))
    }

    #[test]
    fn test_doxm_link() {
        let mut buf = [0u8; 1024];
        let eps = ["coap://[fd00::9]:5683", "coaps://[fd00::9]:5684"];
        let msg = links_msg(&mut buf, uuid(), &eps);
        assert_eq!(doxm_link(&msg, &uuid()).unwrap().eps, eps);

        let other = Uuid::from_u128(7);
        let msg = links_msg(&mut buf, other, &eps);
        assert_eq!(
            doxm_link(&msg, &uuid()).unwrap_err(),
            format!("anchor ocf://{other} is not ocf://{UUID}")
        );

        let msg = links_msg(&mut buf, uuid(), &[]);
        assert_eq!(doxm_link(&msg, &uuid()).unwrap_err(), "doxm link has an empty eps");

        let msg = respond(&mut buf, |out| ocf::encode_links(&[], out));
        assert_eq!(doxm_link(&msg, &uuid()).unwrap_err(), "no /oic/sec/doxm link");
    }

    #[test]
    fn test_device_name() {
        let info = |di| DeviceInfo {
            di,
            n: "Lamp 7",
            rt: &[ocf::RT_DEVICE, "oic.d.virtual"],
            icv: "ocf.2.0.5",
            dmv: "ocf.res.1.3.0",
            piid: Uuid::nil(),
        };
        let mut buf = [0u8; 512];
        let msg = respond(&mut buf, |out| info(uuid()).encode(View::Default, out));
        assert_eq!(device_name(&msg, &uuid()).unwrap(), "Lamp 7");
        let msg = respond(&mut buf, |out| info(Uuid::nil()).encode(View::Baseline, out));
        assert_eq!(
            device_name(&msg, &uuid()).unwrap_err(),
            format!("di {} is not {UUID}", Uuid::nil())
        );
    }
}
