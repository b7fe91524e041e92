//! The real datagrams of the specification (SPEC sections 4 and 5), defined once.
//!
//! Unit tests, integration tests, benches, fuzz seeds and the `explain --request` presets all
//! take their bytes from here, so that a fixture cannot drift between copies. The hex text below
//! is the SPEC's, decoded at compile time (a typo is a build error, not a wrong test).

use uuid::Uuid;

use super::ocf::{oxm, sct, Doxm};

/// SPEC section 4: a real NON GET from the IoTivity-Lite OBT to 224.0.1.187:5683, 45 bytes.
///
/// ```text
/// 58                         Ver 1, T 1 (NON), TKL 8
/// 01                         0.01 GET
/// f1cd                       Message ID 61901
/// 61387b7099602b0b           token
/// b3 6f6963                  Uri-Path (11) "oic"
/// 03 736563                  Uri-Path (11) "sec"
/// 04 646f786d                Uri-Path (11) "doxm"
/// 4b 6f776e65643d46414c5345  Uri-Query (15) "owned=FALSE"
/// 22 2710                    Accept (17) 10000
/// e2 06e3 0800               2049 (17 + 1763 + 269) = 0x0800 (OCF 1.0.0)
/// ```
pub const OBT_REQUEST: [u8; 45] = hex(concat!(
    "5801f1cd61387b7099602b0bb36f69630373656304646f786d4b6f776e65643d46414c5345222710e206e3",
    "0800"
));

/// The token of [`OBT_REQUEST`], which its answers carry.
pub const OBT_TOKEN: [u8; 8] = hex("61387b7099602b0b");

/// The plgd client's discovery of unowned devices: NON GET `/oic/sec/doxm?Owned=FALSE` (its
/// spelling of the key), Message ID 0x1a2b, an 8-byte token, no Accept. The client sends one
/// copy to each of ff02::158, ff03::158 and ff05::158 with this Message ID and a fresh token
/// per group (SPEC section 1.1).
///
/// ```text
/// 58 01 1a2b 0102030405060708         NON GET, Message ID 0x1a2b, 8-byte token
/// b3 6f6963 03 736563 04 646f786d     Uri-Path "oic" / "sec" / "doxm"
/// 4b 4f776e65643d46414c5345           Uri-Query (15) "Owned=FALSE"
/// ```
pub const PLGD_REQUEST: [u8; 37] =
    hex("58011a2b0102030405060708b36f69630373656304646f786d4b4f776e65643d46414c5345");

/// The OBT's follow-up after an answer (SPEC section 5): CON GET `/oic/res?rt=oic.r.doxm` to
/// the answer's source, with Accept 10000 and OCF-Accept-Content-Format-Version 2048.
///
/// ```text
/// 54 01 0009 01020304        CON GET, Message ID 9, 4-byte token
/// b3 6f6963 03 726573        Uri-Path "oic" / "res"
/// 4d 00 72743d6f69632e722e646f786d   Uri-Query (15) "rt=oic.r.doxm" (13 + 0 bytes)
/// 22 2710 e2 06e3 0800       Accept 10000, 2049 = 0x0800
/// ```
pub const OBT_RES_REQUEST: [u8; 39] =
    hex("5401000901020304b36f6963037265734d0072743d6f69632e722e646f786d222710e206e30800");

/// SPEC section 4: the CBOR payload of a real doxm answer (180 bytes), sent with the token of
/// [`OBT_REQUEST`], Content-Format 10000 and OCF-Content-Format-Version 0x0800. It is
/// [`real_doxm`] encoded in the default view.
pub const REAL_DOXM_PAYLOAD: [u8; 180] = hex(concat!(
    "bf646f786d738100666f786d73656c0463736374190149656f776e6564f46c6465766f776e6572757569647824",
    "30303030303030302d303030302d303030302d303030302d3030303030303030303030306a6465766963657575",
    "6964782435306531613361652d366130632d346163302d376234662d6431643831386165333430336a726f776e",
    "657275756964782430303030303030302d303030302d303030302d303030302d303030303030303030303030ff",
));

/// The device that sent [`REAL_DOXM_PAYLOAD`].
pub const REAL_DEVICE_UUID: Uuid = Uuid::from_u128(0x50e1a3ae_6a0c_4ac0_7b4f_d1d818ae3403);

/// The doxm of the device that sent [`REAL_DOXM_PAYLOAD`]: Just Works, `oxmsel` 4, `sct` 329
/// (pair-wise PSK, certificate, OSCORE, OSCORE group server), unowned, nil owner UUIDs.
pub const fn real_doxm() -> Doxm<'static> {
    Doxm {
        oxms: &[oxm::JUST_WORKS],
        oxmsel: oxm::SELF,
        sct: sct::PAIRWISE_PSK | sct::CERTIFICATE | sct::OSCORE | sct::OSCORE_GROUP_SERVER,
        owned: false,
        devowneruuid: Uuid::nil(),
        deviceuuid: REAL_DEVICE_UUID,
        rowneruuid: Uuid::nil(),
    }
}

/// Decodes hex text at compile time; `N` must be half its length.
const fn hex<const N: usize>(text: &str) -> [u8; N] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("fixture hex must be lower-case hex digits"),
        }
    }
    let text = text.as_bytes();
    assert!(text.len() == 2 * N, "fixture hex length does not match its array");
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = nibble(text[2 * i]) << 4 | nibble(text[2 * i + 1]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ocf::View;
    use crate::wire::Message;

    #[test]
    fn test_token_is_the_requests() {
        assert_eq!(Message::parse(&OBT_REQUEST).unwrap().token(), OBT_TOKEN);
    }

    #[test]
    fn test_payload_is_real_doxm_encoded() {
        let mut buf = [0; 256];
        let len = real_doxm().encode(View::Default, &mut buf).unwrap();
        assert_eq!(buf[..len], REAL_DOXM_PAYLOAD);
    }

    #[test]
    fn test_res_request_parses() {
        let msg = Message::parse(&OBT_RES_REQUEST).unwrap();
        assert!(msg.path_is(&[b"oic", b"res"]));
        assert_eq!(msg.uri_query().collect::<Vec<_>>(), [&b"rt=oic.r.doxm"[..]]);
    }
}
