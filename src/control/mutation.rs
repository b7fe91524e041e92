//! Changes to the fleet, as the API receives them and as the journal stores them.
//!
//! A change is first *checked* against the fleet as it is (and the earlier changes of the same
//! batch), then *applied*. A batch is applied only when every change in it checks out, so a
//! batch is all-or-nothing; a change that fails names the field and the reason.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::control::fleet_file::{DeviceEntry, FleetFileError};
use crate::fleet::{patched_state, Fleet, FleetError, OnboardingState, StatePatch};
use crate::policy::Dos;

/// The fields of a state change (`PATCH /v1/devices/{uuid}`); absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    /// `dos.s`, 0..=4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dos: Option<u8>,
    /// `owned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned: Option<bool>,
    /// Whether a DOC is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_open: Option<bool>,
    /// `devowneruuid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devowneruuid: Option<Uuid>,
    /// `rowneruuid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rowneruuid: Option<Uuid>,
    /// `oxmsel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oxmsel: Option<i32>,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Mutation {
    /// Create or replace a device.
    Upsert {
        /// The device.
        device: DeviceEntry,
    },
    /// Change a device's state.
    Patch {
        /// The device.
        uuid: Uuid,
        /// The change.
        patch: PatchBody,
    },
    /// Remove a device.
    Delete {
        /// The device.
        uuid: Uuid,
    },
}

/// Why a change was refused: the field and the reason, and the HTTP status that says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", self.path())]
pub struct Rejection {
    /// 400, 404, 409, 412, 413, 503, ...
    pub status: u16,
    /// The offending field of the change (`dos`, `uuid`, `body`, `If-Match`, ...).
    pub field: String,
    /// Why.
    pub reason: String,
    /// The refused change's place in its batch ([`label`]: `upserts[3]`), when one change of a
    /// batch was refused rather than the call as a whole.
    pub change: Option<String>,
}

impl Rejection {
    /// A rejection with `status`.
    pub fn new(status: u16, field: impl Into<String>, reason: impl Into<String>) -> Rejection {
        Rejection { status, field: field.into(), reason: reason.into(), change: None }
    }

    /// The field's path in a batch body: `upserts[3].dos`, `patches[1].owned`, `deletes[0]`
    /// (a delete is just its UUID); without a change, the field alone (`dos`, `body`).
    pub fn path(&self) -> String {
        match &self.change {
            None => self.field.clone(),
            Some(label) if label.starts_with("deletes[") && self.field == "uuid" => label.clone(),
            Some(label) => format!("{label}.{}", self.field),
        }
    }
}

/// Where change `index` of `batch` stands in a batch body (`POST /v1/devices:batch`), which
/// lists upserts, then patches, then deletes, each counted from 0: `upserts[3]`, `patches[0]`,
/// `deletes[1]`.
pub fn label(batch: &[Mutation], index: usize) -> String {
    let kind = |m: &Mutation| match m {
        Mutation::Upsert { .. } => "upserts",
        Mutation::Patch { .. } => "patches",
        Mutation::Delete { .. } => "deletes",
    };
    let Some(this) = batch.get(index).map(kind) else { return format!("[{index}]") };
    let before = batch[..index].iter().filter(|m| kind(m) == this).count();
    format!("{this}[{before}]")
}

impl PatchBody {
    /// The fleet's form of the patch.
    ///
    /// # Errors
    /// `dos` out of range.
    pub fn to_state_patch(&self) -> Result<StatePatch, Rejection> {
        let dos = match self.dos {
            None => None,
            Some(v) => Some(
                Dos::from_u8(v)
                    .ok_or_else(|| Rejection::new(400, "dos", format!("{v} is not 0..=4")))?,
            ),
        };
        Ok(StatePatch {
            dos,
            owned: self.owned,
            doc_open: self.doc_open,
            devowneruuid: self.devowneruuid,
            rowneruuid: self.rowneruuid,
            oxmsel: self.oxmsel,
        })
    }
}

/// A fleet-file entry's error as a rejection naming the field (`dos`, `eps`, `name`, `owned`).
fn entry_rejection(e: &FleetFileError) -> Rejection {
    let text = match e {
        FleetFileError::Device { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    match text.split_once(": ") {
        Some((field, reason)) if !field.contains(' ') => {
            let field = if field == "n" { "name" } else { field };
            Rejection::new(400, field, reason)
        }
        _ => Rejection::new(400, "device", text),
    }
}

fn fleet_rejection(e: FleetError) -> Rejection {
    match e {
        FleetError::NotFound(uuid) => Rejection::new(404, "uuid", format!("no device {uuid}")),
        FleetError::Full(n) => {
            Rejection::new(507, "body", format!("the fleet is full ({n} devices)"))
        }
        FleetError::RevisionMismatch { expected, current } => Rejection::new(
            412,
            "If-Match",
            format!("revision {expected} is stale: the device is at revision {current}"),
        ),
        FleetError::IncompleteState => Rejection::new(400, "dos", e.to_string()),
        FleetError::Inconsistent(reason) => Rejection::new(400, "owned", reason),
        FleetError::SelfBridge => Rejection::new(400, "bridge", e.to_string()),
    }
}

/// What a device looks like to the checks of later changes in the same batch.
#[derive(Debug, Clone, Copy)]
enum Planned {
    Present(Option<OnboardingState>),
    Deleted,
}

/// Checks `batch` against `fleet` without changing anything. `expected_revision` applies to a
/// single-change batch (a conditional PATCH).
///
/// Two upserts of one UUID in a batch are refused (which one should win?), naming both.
///
/// # Errors
/// The first refused change, with its place in the batch ([`Rejection::change`]).
pub fn check(
    fleet: &Fleet,
    batch: &[Mutation],
    expected_revision: Option<u64>,
) -> Result<(), Rejection> {
    let mut planned: HashMap<Uuid, Planned> = HashMap::new();
    let mut upserted: HashMap<Uuid, usize> = HashMap::new();
    let mut added = 0usize;
    for (i, m) in batch.iter().enumerate() {
        let at = |mut r: Rejection| {
            r.change = Some(label(batch, i));
            r
        };
        let current = |uuid: &Uuid| -> Option<Planned> {
            planned.get(uuid).copied().or_else(|| {
                let id = fleet.lookup(uuid)?;
                Some(Planned::Present(fleet.word(id).state()))
            })
        };
        match m {
            Mutation::Upsert { device } => {
                if let Some(&first) = upserted.get(&device.uuid) {
                    let (first, this) = (label(batch, first), label(batch, i));
                    let reason = format!("{first} and {this} have the same uuid {}", device.uuid);
                    return Err(at(Rejection::new(400, "uuid", reason)));
                }
                upserted.insert(device.uuid, i);
                let (_, state) = device.to_record().map_err(|e| at(entry_rejection(&e)))?;
                if device.bridge == Some(device.uuid) {
                    return Err(at(fleet_rejection(FleetError::SelfBridge)));
                }
                if !matches!(current(&device.uuid), Some(Planned::Present(_))) {
                    added += 1;
                }
                planned.insert(device.uuid, Planned::Present(state));
            }
            Mutation::Patch { uuid, patch } => {
                let state_patch = patch.to_state_patch().map_err(at)?;
                let old = match current(uuid) {
                    Some(Planned::Present(state)) => state,
                    _ => return Err(at(fleet_rejection(FleetError::NotFound(*uuid)))),
                };
                if let (Some(expected), Some(id)) = (expected_revision, fleet.lookup(uuid)) {
                    let current = fleet.revision(id);
                    if expected != current {
                        return Err(at(fleet_rejection(FleetError::RevisionMismatch {
                            expected,
                            current,
                        })));
                    }
                }
                let new = patched_state(old, &state_patch).map_err(|e| at(fleet_rejection(e)))?;
                planned.insert(*uuid, Planned::Present(new));
            }
            Mutation::Delete { uuid } => {
                if !matches!(current(uuid), Some(Planned::Present(_))) {
                    return Err(at(fleet_rejection(FleetError::NotFound(*uuid))));
                }
                planned.insert(*uuid, Planned::Deleted);
            }
        }
    }
    if fleet.len() + added > fleet.capacity() {
        return Err(fleet_rejection(FleetError::Full(fleet.capacity())));
    }
    Ok(())
}

/// Applies a checked batch; returns each touched device's new revision (0 for a deletion).
///
/// # Errors
/// Only if the fleet changed between [`check`] and this call (the store's lock prevents that)
/// or on replay of a journal that does not match the fleet.
pub fn apply(fleet: &Fleet, batch: &[Mutation]) -> Result<Vec<(Uuid, u64)>, Rejection> {
    let mut revisions = Vec::with_capacity(batch.len());
    for m in batch {
        match m {
            Mutation::Upsert { device } => {
                let (record, state) = device.to_record().map_err(|e| entry_rejection(&e))?;
                let (_, revision) = fleet.upsert(record, state).map_err(fleet_rejection)?;
                revisions.push((device.uuid, revision));
            }
            Mutation::Patch { uuid, patch } => {
                let revision =
                    fleet.patch(uuid, &patch.to_state_patch()?, None).map_err(fleet_rejection)?;
                revisions.push((*uuid, revision));
            }
            Mutation::Delete { uuid } => {
                fleet.remove(uuid).map_err(fleet_rejection)?;
                revisions.push((*uuid, 0));
            }
        }
    }
    Ok(revisions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fleet_file::demo_fleet;

    fn upsert(device: &DeviceEntry) -> Mutation {
        Mutation::Upsert { device: device.clone() }
    }

    #[test]
    fn test_labels_count_each_kind_from_zero() {
        let devices = demo_fleet(2).device;
        let uuid = devices[0].uuid;
        let batch = [
            upsert(&devices[1]),
            upsert(&devices[2]),
            Mutation::Patch { uuid, patch: PatchBody::default() },
            Mutation::Delete { uuid },
        ];
        let labels: Vec<String> = (0..5).map(|i| label(&batch, i)).collect();
        assert_eq!(labels, ["upserts[0]", "upserts[1]", "patches[0]", "deletes[0]", "[4]"]);
        let mut r = Rejection::new(404, "uuid", "no device");
        assert_eq!(r.path(), "uuid");
        r.change = Some(label(&batch, 3));
        assert_eq!(r.path(), "deletes[0]");
        r.change = Some(label(&batch, 2));
        assert_eq!(r.path(), "patches[0].uuid");
    }

    #[test]
    fn test_two_upserts_of_one_uuid_are_refused_naming_both() {
        let devices = demo_fleet(4).device;
        let fleet = Fleet::with_capacity(16);
        let mut again = devices[1].clone();
        again.name = "the same device again".to_owned();
        let batch: Vec<Mutation> =
            [&devices[0], &devices[1], &devices[2], &again].into_iter().map(upsert).collect();
        let r = check(&fleet, &batch, None).unwrap_err();
        assert_eq!(r.status, 400);
        assert_eq!(r.path(), "upserts[3].uuid");
        let want = format!("upserts[1] and upserts[3] have the same uuid {}", devices[1].uuid);
        assert_eq!(r.reason, want);
        // An upsert and then a patch of the same device is a sequence, not a duplicate.
        let patch = PatchBody { doc_open: Some(true), ..PatchBody::default() };
        let batch = [upsert(&devices[1]), Mutation::Patch { uuid: devices[1].uuid, patch }];
        assert_eq!(check(&fleet, &batch, None), Ok(()));
    }
}
