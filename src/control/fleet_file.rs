//! Fleet files: bridges and devices of a static fleet, in TOML or JSON. [`DeviceEntry`] is also
//! the control API's schema of a device (an upsert body, an export line), so the file and the API
//! cannot disagree. It lives in `control`, with the rest of the API's schema, so that the core
//! (`fleet` included) has no serde.
//!
//! ```toml
//! [[device]]
//! uuid = "0d0c0000-0000-4000-8000-000000000000"
//! name = "bridge"
//! types = ["oic.wk.d", "oic.d.bridge"]
//! dos = 3                      # RFNOP; `owned` follows from dos unless given
//!
//! [[device]]
//! uuid = "0d0c0000-0000-4000-8000-000000000001"
//! name = "lamp 1"
//! types = ["oic.wk.d", "oic.d.light", "oic.d.virtual"]
//! bridge = "0d0c0000-0000-4000-8000-000000000000"
//! dos = 1                      # RFOTM: answers discovery
//! eps = ["coap://[fd00::b]:50001", "coaps://[fd00::b]:50002"]
//! ```
//!
//! Unknown keys are rejected with the key's name, and two entries of one UUID with both their
//! indices (`device[1] and device[7] have the same uuid ..`, counted from 0 in file order). A
//! VOD whose `bridge` is not in the fleet is accepted but answers nothing until the bridge is
//! added and owned (`run` warns of it). A device without `dos` has an unknown state
//! and answers nothing until the bridge reports it (fail closed). The demo fleet
//! ([`demo_fleet`]) is just a built-in fleet file.
//!
//! # Every answer fits in one datagram
//!
//! The gate sends each answer as one CoAP message of at most [`MAX_MESSAGE_LEN`] = 1,152 bytes,
//! RFC 7252 s4.6's bound when the path MTU is not known (an IPv6 minimum MTU of 1,280 bytes less
//! the IP and UDP headers, with room to spare). A device whose doxm answer, `/oic/res` links or
//! `/oic/d` cannot fit (measured with the engine's own encoders, with an 8-byte token, the
//! baseline interface and the largest `oxmsel` a later PATCH may set) would never answer, so
//! [`DeviceEntry::validate`] refuses it, naming the field: `oxms`, `types` or `eps`. So do more
//! than [`MAX_LISTED`] `types`, or endpoints of one IP family in `eps`: the gate lists no more.
//! This is checked at the door (the API, a fleet file), not when a journal is replayed: a
//! device an older gate accepted still loads.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::unicast::{self, Body, LinkSelection, MAX_LISTED};
use crate::engine::Config as EngineConfig;
use crate::fleet::{
    check_consistent, DeviceRecord, Fleet, FleetError, OnboardingState, RecordError, StateWord,
};
use crate::policy::Dos;
use crate::wire::coap::{Code, MessageType, MAX_TOKEN_LEN};
use crate::wire::ocf::{self, oxm, sct, View};

/// The largest CoAP message the gate sends: RFC 7252 s4.6 (see the [module docs](self)).
pub const MAX_MESSAGE_LEN: usize = 1_152;

/// A fleet file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// The devices, bridges included.
    #[serde(default)]
    pub device: Vec<DeviceEntry>,
}

/// One device of a fleet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// Device UUID.
    pub uuid: Uuid,
    /// Name `n`.
    pub name: String,
    /// Device types; default `["oic.wk.d"]`.
    #[serde(default = "default_types")]
    pub types: Vec<String>,
    /// The bridge of a VOD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Uuid>,
    /// Protocol-independent ID; default: the device UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub piid: Option<Uuid>,
    /// `dos.s` (0..=4); absent: state unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dos: Option<u8>,
    /// `owned`; default: follows from `dos` (RESET and RFOTM unowned, others owned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned: Option<bool>,
    /// Whether a DOC is open.
    #[serde(default)]
    pub doc_open: bool,
    /// Owner-transfer methods; default `[0]` (Just Works).
    #[serde(default = "default_oxms")]
    pub oxms: Vec<i32>,
    /// Selected method; default 4 ("self", the RESET default).
    #[serde(default = "default_oxmsel")]
    pub oxmsel: i32,
    /// Supported credential types; default 9 (PSK and certificates).
    #[serde(default = "default_sct")]
    pub sct: u32,
    /// Owner; default nil.
    #[serde(default)]
    pub devowneruuid: Uuid,
    /// Resource owner; default nil.
    #[serde(default)]
    pub rowneruuid: Uuid,
    /// Endpoints at the bridge, `coap://` before `coaps://`.
    #[serde(default)]
    pub eps: Vec<String>,
}

fn default_types() -> Vec<String> {
    vec!["oic.wk.d".to_owned()]
}
fn default_oxms() -> Vec<i32> {
    vec![oxm::JUST_WORKS]
}
fn default_oxmsel() -> i32 {
    oxm::SELF
}
fn default_sct() -> u32 {
    sct::PAIRWISE_PSK | sct::CERTIFICATE
}

/// Why a fleet file was refused; nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum FleetFileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not valid TOML or JSON of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The path.
        path: String,
        /// The parser's message (names the key or line).
        message: String,
    },
    /// Two entries describe one device: which one is meant?
    #[error("{path}: device[{first}] and device[{second}] have the same uuid {uuid}")]
    DuplicateUuid {
        /// The file.
        path: String,
        /// The UUID.
        uuid: Uuid,
        /// The first entry's index (from 0, in file order).
        first: usize,
        /// The later entry's index.
        second: usize,
    },
    /// A device entry of a fleet file is invalid.
    #[error("{path}: device[{index}] ({uuid}): {reason}")]
    Entry {
        /// The file.
        path: String,
        /// The entry's index (from 0, in file order).
        index: usize,
        /// The device.
        uuid: Uuid,
        /// Why, starting with the field (`oxms: ...`).
        reason: String,
    },
    /// A device entry is invalid.
    #[error("device {uuid}: {reason}")]
    Device {
        /// The device.
        uuid: Uuid,
        /// Why.
        reason: String,
    },
}

impl DeviceEntry {
    /// The entry describing `record` in `state` (what exports and snapshots write).
    pub fn from_record(record: &DeviceRecord, state: Option<OnboardingState>) -> DeviceEntry {
        DeviceEntry {
            uuid: record.uuid(),
            name: record.name().to_owned(),
            types: record.device_types().iter().map(|t| t.to_string()).collect(),
            bridge: record.bridge(),
            piid: (record.piid() != record.uuid()).then_some(record.piid()),
            dos: state.map(|s| s.dos as u8),
            owned: state.map(|s| s.owned),
            doc_open: state.is_some_and(|s| s.doc_open),
            oxms: record.oxms().to_vec(),
            oxmsel: record.oxmsel(),
            sct: record.sct(),
            devowneruuid: record.devowneruuid(),
            rowneruuid: record.rowneruuid(),
            eps: record.eps().map(|e| e.to_string()).collect(),
        }
    }

    /// The record and state this entry describes.
    ///
    /// # Errors
    /// The field that is wrong.
    pub fn to_record(&self) -> Result<(DeviceRecord, Option<OnboardingState>), FleetFileError> {
        let bad = |reason: String| FleetFileError::Device { uuid: self.uuid, reason };
        let state = match self.dos {
            None => None,
            Some(value) => {
                let dos =
                    Dos::from_u8(value).ok_or_else(|| bad(format!("dos: {value} is not 0..=4")))?;
                let owned = self.owned.unwrap_or(!matches!(dos, Dos::Reset | Dos::Rfotm));
                let state = OnboardingState { dos, owned, doc_open: self.doc_open };
                check_consistent(&state).map_err(|e: FleetError| bad(e.to_string()))?;
                Some(state)
            }
        };
        let eps: Vec<&str> = self.eps.iter().map(String::as_str).collect();
        let types: Arc<[Box<str>]> = self.types.iter().map(|t| Box::from(t.as_str())).collect();
        let record = DeviceRecord::new(
            self.uuid,
            self.piid.unwrap_or(self.uuid),
            &self.name,
            types,
            self.bridge,
            Arc::from(self.oxms.as_slice()),
            self.oxmsel,
            self.sct,
            self.devowneruuid,
            self.rowneruuid,
            &eps,
        )
        .map_err(|e: RecordError| bad(e.to_string()))?;
        Ok((record, state))
    }
}

impl DeviceEntry {
    /// [`DeviceEntry::to_record`], and the door's checks: every response the gate may send for
    /// the device fits in one datagram (see the [module docs](self)).
    ///
    /// # Errors
    /// The field that is wrong (`oxms: ...`, `types: ...`, `eps: ...`).
    pub fn validate(&self) -> Result<(DeviceRecord, Option<OnboardingState>), FleetFileError> {
        let (record, state) = self.to_record()?;
        check_fits(&record).map_err(|reason| FleetFileError::Device { uuid: self.uuid, reason })?;
        Ok((record, state))
    }
}

/// Whether every response the gate may send for `record` fits in [`MAX_MESSAGE_LEN`]; the
/// reason names the field when not.
fn check_fits(record: &DeviceRecord) -> Result<(), String> {
    let types = record.device_types().len();
    if types > MAX_LISTED {
        return Err(format!(
            "types: {types} device types; the gate lists at most {MAX_LISTED} in /oic/d and /oic/res"
        ));
    }
    for (v6, family) in [(true, "IPv6"), (false, "IPv4")] {
        let eps = record.eps_for(v6).count();
        if eps > MAX_LISTED {
            return Err(format!(
                "eps: {eps} {family} endpoints; the gate lists at most {MAX_LISTED} of one family"
            ));
        }
    }
    let fit =
        format!("does not fit in one datagram ({MAX_MESSAGE_LEN} bytes of CoAP, RFC 7252 s4.6)");
    // A PATCH may set any oxmsel: measure with the longest one.
    let worst = record.with_owners(record.devowneruuid(), record.rowneruuid(), i32::MIN);
    if !fits(&worst, Body::Doxm(View::Baseline), true) {
        let n = record.oxms().len();
        return Err(format!("oxms: with {n} owner-transfer methods the doxm answer {fit}"));
    }
    if !fits(record, Body::Device(View::Baseline), true) {
        return Err(format!("types: the /oic/d answer {fit}"));
    }
    let links = Body::Links { baseline: true, links: LinkSelection { doxm: true, device: true } };
    for v6 in [true, false] {
        if !fits(record, links, v6) {
            // Both links list the endpoints; the device link lists the types too.
            let eps: usize = record.eps_for(v6).map(|e| 2 * e.to_string().len()).sum();
            let types: usize = record.device_types().iter().map(|t| t.len()).sum();
            let field = if eps >= types { "eps" } else { "types" };
            return Err(format!("{field}: the /oic/res answer {fit}"));
        }
    }
    Ok(())
}

/// Whether `body` for `record`, as a piggybacked response with the longest token, fits.
fn fits(record: &DeviceRecord, body: Body, v6: bool) -> bool {
    thread_local! {
        static CONFIG: EngineConfig = EngineConfig::default();
    }
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    let token = [0u8; MAX_TOKEN_LEN];
    let word = StateWord::EMPTY;
    CONFIG.with(|config| {
        ocf::write_response(
            &mut buf,
            MessageType::Acknowledgement,
            Code::CONTENT,
            0,
            &token,
            |out| unicast::encode_body(body, record, word, v6, config, out),
        )
        .is_ok()
    })
}

impl FleetFile {
    /// Reads a fleet file: JSON when the name ends in `.json`, TOML otherwise.
    ///
    /// # Errors
    /// [`FleetFileError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<FleetFile, FleetFileError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| FleetFileError::Read { path: name.clone(), source })?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        };
        let file: FleetFile =
            parsed.map_err(|message| FleetFileError::Parse { path: name.clone(), message })?;
        file.check_unique(&name)?;
        for (index, entry) in file.device.iter().enumerate() {
            if let Err(e) = entry.validate() {
                let reason = match e {
                    FleetFileError::Device { reason, .. } => reason,
                    other => other.to_string(),
                };
                return Err(FleetFileError::Entry { path: name, index, uuid: entry.uuid, reason });
            }
        }
        Ok(file)
    }

    /// Refuses two entries of one UUID, naming both (`device[3] and device[7]`).
    fn check_unique(&self, path: &str) -> Result<(), FleetFileError> {
        let mut seen = std::collections::HashMap::with_capacity(self.device.len());
        for (second, entry) in self.device.iter().enumerate() {
            if let Some(first) = seen.insert(entry.uuid, second) {
                let path = path.to_owned();
                return Err(FleetFileError::DuplicateUuid {
                    path,
                    uuid: entry.uuid,
                    first,
                    second,
                });
            }
        }
        Ok(())
    }

    /// Validates every entry, then adds them all to `fleet`; returns how many were added. When
    /// any entry is invalid nothing is added.
    ///
    /// # Errors
    /// Two entries of one UUID, the first invalid entry, or a full fleet.
    pub fn apply(&self, fleet: &Fleet) -> Result<usize, FleetFileError> {
        self.check_unique("fleet file")?;
        let mut records = Vec::with_capacity(self.device.len());
        for entry in &self.device {
            records.push(entry.validate()?);
        }
        for (record, state) in records {
            let uuid = record.uuid();
            fleet
                .upsert(record, state)
                .map_err(|e| FleetFileError::Device { uuid, reason: e.to_string() })?;
        }
        Ok(self.device.len())
    }
}

/// The demo fleet: one owned bridge and `vods` virtual devices in a realistic mix of states:
/// one in ten in RFOTM (of those, one in ten with an open DOC), one in fifty in RFPRO, the rest
/// owned and in RFNOP. With 1,000 VODs, 90 answer discovery.
pub fn demo_fleet(vods: u32) -> FleetFile {
    let uuid = |i: u32| Uuid::from_u128(0x0d0c_0000_0000_4000_8000_0000_0000_0000 | u128::from(i));
    let owner = Uuid::from_u128(0x0b70_0000_0000_4000_8000_0000_0000_0001);
    let bridge = DeviceEntry {
        uuid: uuid(0),
        name: "demo bridge".to_owned(),
        types: vec!["oic.wk.d".to_owned(), "oic.d.bridge".to_owned()],
        bridge: None,
        piid: None,
        dos: Some(Dos::Rfnop as u8),
        owned: Some(true),
        doc_open: false,
        oxms: default_oxms(),
        oxmsel: oxm::JUST_WORKS,
        sct: default_sct(),
        devowneruuid: owner,
        rowneruuid: owner,
        eps: vec![
            "coap://[fd00:b::1]:5683".to_owned(),
            "coap://10.0.11.1:5683".to_owned(),
            "coaps://[fd00:b::1]:5684".to_owned(),
            "coaps://10.0.11.1:5684".to_owned(),
        ],
    };
    let mut device = vec![bridge];
    for i in 1..=vods {
        let (dos, doc_open) = match i {
            i if i % 10 == 0 => (Dos::Rfotm, i % 100 == 0),
            i if i % 50 == 5 => (Dos::Rfpro, false),
            _ => (Dos::Rfnop, false),
        };
        let owned = dos != Dos::Rfotm;
        device.push(DeviceEntry {
            uuid: uuid(i),
            name: format!("demo lamp {i}"),
            types: vec![
                "oic.wk.d".to_owned(),
                "oic.d.light".to_owned(),
                "oic.d.virtual".to_owned(),
            ],
            bridge: Some(uuid(0)),
            piid: None,
            dos: Some(dos as u8),
            owned: Some(owned),
            doc_open,
            oxms: vec![oxm::JUST_WORKS, oxm::RANDOM_PIN],
            oxmsel: if owned { oxm::JUST_WORKS } else { oxm::SELF },
            sct: default_sct(),
            devowneruuid: if owned { owner } else { Uuid::nil() },
            rowneruuid: if owned { owner } else { Uuid::nil() },
            // Both families, coap:// first: each answer advertises those of its own family.
            eps: vec![
                format!("coap://[fd00:b::1]:{}", 20_000 + 2 * i),
                format!("coap://10.0.11.1:{}", 20_000 + 2 * i),
                format!("coaps://[fd00:b::1]:{}", 20_001 + 2 * i),
                format!("coaps://10.0.11.1:{}", 20_001 + 2 * i),
            ],
        });
    }
    FleetFile { device }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_demo_fleet_mix() {
        let fleet = Fleet::with_capacity(2_000);
        assert_eq!(demo_fleet(1_000).apply(&fleet).unwrap(), 1_001);
        assert_eq!(fleet.eligible_count(), 90);
    }

    #[test]
    fn test_toml_roundtrip_and_unknown_keys() {
        let text = r#"
            [[device]]
            uuid = "0d0c0000-0000-4000-8000-000000000001"
            name = "lamp"
            dos = 1
        "#;
        let file: FleetFile = toml::from_str(text).unwrap();
        let (record, state) = file.device[0].to_record().unwrap();
        assert_eq!(record.name(), "lamp");
        assert_eq!(state, Some(OnboardingState { dos: Dos::Rfotm, owned: false, doc_open: false }));
        let err = toml::from_str::<FleetFile>(&format!("{text}colour = 1\n")).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn test_entry_record_roundtrip() {
        for entry in demo_fleet(20).device {
            let (record, state) = entry.to_record().unwrap();
            assert_eq!(DeviceEntry::from_record(&record, state), entry);
        }
    }

    #[test]
    fn test_duplicate_uuid_names_both_entries() {
        let mut file = demo_fleet(8);
        file.device[7].uuid = file.device[3].uuid;
        let fleet = Fleet::with_capacity(16);
        let err = file.apply(&fleet).unwrap_err().to_string();
        let uuid = file.device[3].uuid;
        assert_eq!(err, format!("fleet file: device[3] and device[7] have the same uuid {uuid}"));
        assert_eq!(fleet.len(), 0);
    }

    fn field_of(entry: &DeviceEntry) -> String {
        match entry.validate() {
            Ok(_) => "ok".to_owned(),
            Err(FleetFileError::Device { reason, .. }) => {
                reason.split_once(": ").map_or(reason.clone(), |(f, _)| f.to_owned())
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn test_devices_whose_answers_cannot_fit_are_refused_naming_the_field() {
        let lamp = demo_fleet(1).device[1].clone();
        assert_eq!(field_of(&lamp), "ok");
        let with = |f: &dyn Fn(&mut DeviceEntry)| {
            let mut e = lamp.clone();
            f(&mut e);
            field_of(&e)
        };
        assert_eq!(with(&|e| e.oxms = vec![oxm::JUST_WORKS; 2_000]), "oxms");
        assert_eq!(with(&|e| e.oxms = vec![i32::MIN; 250]), "oxms");
        assert_eq!(with(&|e| e.types = vec!["oic.d.light".to_owned(); 10_000]), "types");
        assert_eq!(with(&|e| e.types = vec!["oic.d.light".to_owned(); MAX_LISTED + 1]), "types");
        assert_eq!(with(&|e| e.types = vec!["x".repeat(200); MAX_LISTED]), "types");
        let v6 = |i: usize| format!("coap://[fd00::b]:{}", 50_000 + i);
        let v4 = |i: usize| format!("coap://10.0.0.1:{}", 50_000 + i);
        assert_eq!(with(&|e| e.eps = (0..MAX_LISTED + 1).map(v6).collect()), "eps");
        assert_eq!(with(&|e| e.eps = (0..MAX_LISTED + 1).map(v4).collect()), "eps");
        // Eight of each family is what the gate lists: accepted.
        let both = |e: &mut DeviceEntry| e.eps = (0..8).map(v6).chain((0..8).map(v4)).collect();
        assert_eq!(with(&both), "ok");
        let long = |e: &mut DeviceEntry| {
            e.eps = (0..4).map(|i| format!("coap://{}{i}.example:5683", "h".repeat(150))).collect()
        };
        assert_eq!(with(&long), "eps");
    }

    /// The limit is tight: the most oxms that pass give a doxm answer that the engine's encoder
    /// writes within [`MAX_MESSAGE_LEN`] with an 8-byte token, and one more is refused.
    #[test]
    fn test_the_largest_accepted_device_answers_within_the_limit() {
        let mut e = demo_fleet(1).device[1].clone();
        e.oxms = vec![i32::MIN];
        while field_of(&e) == "ok" {
            e.oxms.push(i32::MIN);
        }
        let refused = e.oxms.len();
        e.oxms.pop();
        let (record, _) = e.validate().unwrap();
        let mut buf = [0u8; 2 * MAX_MESSAGE_LEN];
        let doxm = ocf::Doxm { oxmsel: i32::MIN, ..record.doxm(false) };
        let len = ocf::write_response(
            &mut buf,
            MessageType::NonConfirmable,
            Code::CONTENT,
            0,
            &[7; MAX_TOKEN_LEN],
            |out| doxm.encode(View::Baseline, out),
        )
        .unwrap();
        assert!(len <= MAX_MESSAGE_LEN && len + 5 > MAX_MESSAGE_LEN, "{len} bytes");
        assert!(refused > 100, "{refused}");
    }

    #[test]
    fn test_fleet_file_with_an_oversized_device_is_refused_naming_entry_and_field() {
        let oxms = vec!["0"; 2_000].join(", ");
        let text = format!(
            "[[device]]\nuuid = \"0d0c0000-0000-4000-8000-000000000001\"\nname = \"a\"\n\n\
             [[device]]\nuuid = \"0d0c0000-0000-4000-8000-000000000002\"\nname = \"b\"\n\
             oxms = [{oxms}]\n"
        );
        let path = std::env::temp_dir().join(format!("doxm-oxms-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let err = FleetFile::load(&path).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        let want = "device[1] (0d0c0000-0000-4000-8000-000000000002): oxms: with 2000";
        assert!(err.contains(want), "{err}");
        // The same entries applied to a fleet directly (no state directory): refused too.
        let mut file = demo_fleet(2);
        file.device[2].oxms = vec![0; 2_000];
        let fleet = Fleet::with_capacity(8);
        assert!(file.apply(&fleet).unwrap_err().to_string().contains("oxms: "));
        assert_eq!(fleet.len(), 0);
    }

    #[test]
    fn test_bad_entry_applies_nothing() {
        let mut file = demo_fleet(3);
        file.device[2].dos = Some(9);
        let fleet = Fleet::with_capacity(16);
        let err = file.apply(&fleet).unwrap_err();
        assert!(err.to_string().contains("dos: 9"), "{err}");
        assert_eq!(fleet.len(), 0);
    }
}
