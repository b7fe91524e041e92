//! Changes to the fleet, as the API receives them and as the journal stores them.
//!
//! A change is first *checked* against the fleet as it is (and the earlier changes of the same
//! batch), then *applied*. A batch is applied only when every change in it checks out, so a
//! batch is all-or-nothing; a change that fails names the field and the reason.
//!
//! # Revisions and conditions (RFC 9110 s13)
//!
//! A device's revision counts its changes, and its ETag is the revision as a strong entity-tag
//! (`"7"`, [`etag`]). A device that is created, or created again after a delete, starts one
//! above the highest revision any deleted device had reached (the store's *revision floor*,
//! raised by every delete and kept in snapshots), so a revision never repeats for a UUID: an
//! ETag read before a delete never matches the device created after it.
//!
//! Each change may carry [`Preconditions`]: `If-Match` (`*`: the device exists; a list of
//! entity-tags: one of them is the current ETag, strong comparison, so `W/"7"` never matches)
//! and `If-None-Match` (`*`: the device does not exist, for create-only; a list: none of them
//! is the current ETag, weak comparison). A condition that is false refuses the change with 412
//! and the whole batch with it. They are checked under the store's lock, together with the
//! change, so two clients holding the same ETag cannot both win. Following RFC 9110 s13.2.1,
//! a PATCH or DELETE of a device that does not exist is 404 whatever its conditions say (the
//! request would fail without them); a PUT with `If-Match` of a device that does not exist is
//! 412. Within a batch, a condition is evaluated against the device as the batch's earlier
//! changes leave it: `*` sees a device created earlier in the batch, and no entity-tag matches
//! a device an earlier change touched (its revision is not known until the batch commits).

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

/// An entity-tag (RFC 9110 s8.8.3): an opaque string in double quotes, weak with `W/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    /// `W/"..."`.
    pub weak: bool,
    /// The text between the quotes.
    pub opaque: String,
}

/// The value of an `If-Match` or `If-None-Match` field: `*` or a list of entity-tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagCondition {
    /// `*`: any current representation.
    Any,
    /// `"7", W/"8"`: these entity-tags.
    Tags(Vec<EntityTag>),
}

/// The ETag of `revision`: a strong entity-tag, `"7"`.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

impl TagCondition {
    /// Parses a field value: `*`, or a comma-separated list of `"opaque"` / `W/"opaque"`
    /// (RFC 9110 s8.8.3 and s13.1.1; several field lines joined with `, `). Strict: an
    /// unquoted `7` is refused, not read as `"7"`.
    ///
    /// # Errors
    /// Why the value is not one.
    pub fn parse(value: &str) -> Result<TagCondition, String> {
        let value = value.trim_matches([' ', '\t']);
        if value == "*" {
            return Ok(TagCondition::Any);
        }
        let bad = || format!("{value:?} is not * or a list of entity-tags (\"7\", W/\"7\")");
        let mut tags = Vec::new();
        let mut rest = value;
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            // Empty list elements are allowed (RFC 9110 s5.6.1): `"1", , "2"`.
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
                continue;
            }
            if rest.is_empty() {
                break;
            }
            let (weak, quoted) = match rest.strip_prefix("W/") {
                Some(after) => (true, after),
                None => (false, rest),
            };
            let body = quoted.strip_prefix('"').ok_or_else(bad)?;
            let end = body.find('"').ok_or_else(bad)?;
            let opaque = &body[..end];
            // etagc: %x21 / %x23-7E / obs-text.
            if !opaque.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
                return Err(bad());
            }
            tags.push(EntityTag { weak, opaque: opaque.to_owned() });
            rest = body[end + 1..].trim_start_matches([' ', '\t']);
            match rest.strip_prefix(',') {
                Some(after) => rest = after,
                None if rest.is_empty() => break,
                None => return Err(bad()),
            }
        }
        if tags.is_empty() {
            return Err(bad());
        }
        Ok(TagCondition::Tags(tags))
    }

    /// The condition that the current ETag is `"revision"` (a batch item's `"if_match": 7`).
    pub fn revision(revision: u64) -> TagCondition {
        TagCondition::Tags(vec![EntityTag { weak: false, opaque: revision.to_string() }])
    }

    /// Whether a device at `current` (`None`: absent; `Some(None)`: present but changed earlier
    /// in the batch, with no ETag yet) matches: strong comparison for `If-Match`, weak for
    /// `If-None-Match` (RFC 9110 s8.8.3.2).
    pub fn matches(&self, current: Option<Option<u64>>, strong: bool) -> bool {
        match (self, current) {
            (_, None) => false,
            (TagCondition::Any, Some(_)) => true,
            (TagCondition::Tags(_), Some(None)) => false,
            (TagCondition::Tags(tags), Some(Some(revision))) => {
                let current = revision.to_string();
                tags.iter().any(|t| t.opaque == current && !(strong && t.weak))
            }
        }
    }
}

impl std::fmt::Display for TagCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TagCondition::Any => f.write_str("*"),
            TagCondition::Tags(tags) => {
                for (i, t) in tags.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    let weak = if t.weak { "W/" } else { "" };
                    write!(f, "{sep}{weak}\"{}\"", t.opaque)?;
                }
                Ok(())
            }
        }
    }
}

/// The conditions of one change (see the [module docs](self)); none by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match` (a batch item's `if_match`).
    pub if_match: Option<TagCondition>,
    /// `If-None-Match` (a batch item's `if_none_match`).
    pub if_none_match: Option<TagCondition>,
}

impl Preconditions {
    /// Whether there is no condition at all.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Evaluates the conditions against a device at `current` (see [`TagCondition::matches`]),
    /// `If-Match` first (RFC 9110 s13.2.2); 412 naming `If-Match` or `If-None-Match` when one
    /// is false.
    ///
    /// # Errors
    /// The false condition.
    pub fn check(&self, current: Option<Option<u64>>) -> Result<(), Rejection> {
        let now = match current {
            None => "the device does not exist".to_owned(),
            Some(None) => "the device is changed by an earlier change of this batch".to_owned(),
            Some(Some(revision)) => format!("the device's ETag is {}", etag(revision)),
        };
        if let Some(condition) = &self.if_match {
            if !condition.matches(current, true) {
                return Err(Rejection::new(
                    412,
                    "If-Match",
                    format!("{condition} does not match: {now}"),
                ));
            }
        }
        if let Some(condition) = &self.if_none_match {
            if condition.matches(current, false) {
                return Err(Rejection::new(
                    412,
                    "If-None-Match",
                    format!("{condition} matches: {now}"),
                ));
            }
        }
        Ok(())
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
    /// Changed by an earlier change of the batch: present, with this state.
    Present(Option<OnboardingState>),
    /// Deleted by an earlier change of the batch.
    Deleted,
}

/// Checks `batch` against `fleet` without changing anything. `conditions[i]`, when there is
/// one, holds the conditions of change `i` (see the [module docs](self)).
///
/// Two upserts of one UUID in a batch are refused (which one should win?), naming both.
///
/// # Errors
/// The first refused change, with its place in the batch ([`Rejection::change`]).
pub fn check(
    fleet: &Fleet,
    batch: &[Mutation],
    conditions: &[Preconditions],
) -> Result<(), Rejection> {
    // Sized once: a table that grows by doubling holds both sizes while it rehashes.
    let mut planned: HashMap<Uuid, Planned> = HashMap::with_capacity(batch.len());
    let mut upserted: HashMap<Uuid, usize> = HashMap::new();
    upserted.reserve(batch.iter().filter(|m| matches!(m, Mutation::Upsert { .. })).count());
    let mut added = 0usize;
    let none = Preconditions::default();
    for (i, m) in batch.iter().enumerate() {
        let at = |mut r: Rejection| {
            r.change = Some(label(batch, i));
            r
        };
        // The device as the earlier changes leave it: absent, or present with its state and
        // (when no earlier change touched it) its revision.
        let current = |uuid: &Uuid| -> Option<(Option<OnboardingState>, Option<u64>)> {
            match planned.get(uuid) {
                Some(Planned::Present(state)) => Some((*state, None)),
                Some(Planned::Deleted) => None,
                None => {
                    let id = fleet.lookup(uuid)?;
                    Some((fleet.word(id).state(), Some(fleet.revision(id))))
                }
            }
        };
        let conditions = conditions.get(i).unwrap_or(&none);
        match m {
            Mutation::Upsert { device } => {
                if let Some(&first) = upserted.get(&device.uuid) {
                    let (first, this) = (label(batch, first), label(batch, i));
                    let reason = format!("{first} and {this} have the same uuid {}", device.uuid);
                    return Err(at(Rejection::new(400, "uuid", reason)));
                }
                upserted.insert(device.uuid, i);
                let now = current(&device.uuid);
                conditions.check(now.map(|(_, rev)| rev)).map_err(at)?;
                let (_, state) = device.validate().map_err(|e| at(entry_rejection(&e)))?;
                if device.bridge == Some(device.uuid) {
                    return Err(at(fleet_rejection(FleetError::SelfBridge)));
                }
                if now.is_none() {
                    added += 1;
                }
                planned.insert(device.uuid, Planned::Present(state));
            }
            Mutation::Patch { uuid, patch } => {
                let state_patch = patch.to_state_patch().map_err(at)?;
                let Some((old, revision)) = current(uuid) else {
                    return Err(at(fleet_rejection(FleetError::NotFound(*uuid))));
                };
                conditions.check(Some(revision)).map_err(at)?;
                let new = patched_state(old, &state_patch).map_err(|e| at(fleet_rejection(e)))?;
                planned.insert(*uuid, Planned::Present(new));
            }
            Mutation::Delete { uuid } => {
                let Some((_, revision)) = current(uuid) else {
                    return Err(at(fleet_rejection(FleetError::NotFound(*uuid))));
                };
                conditions.check(Some(revision)).map_err(at)?;
                planned.insert(*uuid, Planned::Deleted);
            }
        }
    }
    if fleet.len() + added > fleet.capacity() {
        return Err(fleet_rejection(FleetError::Full(fleet.capacity())));
    }
    Ok(())
}

/// Applies a checked batch; returns each touched device's new revision (0 for a deletion):
/// [`plan`], then [`apply_planned`].
///
/// # Errors
/// Only if the fleet changed between [`check`] and this call (the store's lock prevents that)
/// or on replay of a journal that does not match the fleet.
pub fn apply(
    fleet: &Fleet,
    batch: &[Mutation],
    floor: &mut u64,
) -> Result<Vec<(Uuid, u64)>, Rejection> {
    let revisions = plan(fleet, batch, floor);
    let applied = apply_planned(fleet, batch, &revisions, floor)?;
    if applied.skipped > 0 {
        return Err(Rejection::new(500, "journal", "a planned change did not apply"));
    }
    Ok(applied.revisions)
}

/// The revision each change of a checked batch gives its device, decided before the batch is
/// journaled so that the journal can hold it (see [`apply_planned`]): one above the device's
/// revision as the batch's earlier changes leave it; `floor + 1` for a device that does not
/// exist (created, or created again after a delete); for a delete, the revision the device had,
/// which raises `floor`. So a UUID's revisions only ever grow, across deletes and re-creates
/// (see the [module docs](self)).
///
/// The store calls it under its lock with no queued change touching the batch's devices, and
/// with the floor raised by every queued delete, so the plan is what applying will find.
pub fn plan(fleet: &Fleet, batch: &[Mutation], floor: &mut u64) -> Vec<u64> {
    // The batch's earlier changes: `None` deleted, `Some(r)` present at revision r.
    let mut planned: HashMap<Uuid, Option<u64>> = HashMap::new();
    let current = |planned: &HashMap<Uuid, Option<u64>>, uuid: &Uuid| match planned.get(uuid) {
        Some(&now) => now,
        None => fleet.lookup(uuid).map(|id| fleet.revision(id)),
    };
    batch
        .iter()
        .map(|m| match m {
            Mutation::Upsert { device: DeviceEntry { uuid, .. } }
            | Mutation::Patch { uuid, .. } => {
                let revision = match current(&planned, uuid) {
                    Some(r) => r + 1,
                    None => *floor + 1,
                };
                planned.insert(*uuid, Some(revision));
                revision
            }
            Mutation::Delete { uuid } => {
                let revision = current(&planned, uuid).unwrap_or(0);
                *floor = (*floor).max(revision);
                planned.insert(*uuid, None);
                revision
            }
        })
        .collect()
}

/// What [`apply_planned`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Each change's device and its revision (0 for a delete), as acknowledged.
    pub revisions: Vec<(Uuid, u64)>,
    /// Changes skipped because the device already holds them or a later state.
    pub skipped: usize,
}

/// Applies a batch with the revisions [`plan`] gave it (`revisions[i]` is change `i`'s),
/// idempotently: a change is applied only if the device is not already at its revision or a
/// later one, so replaying records over a state that already holds some of them (a *fuzzy*
/// snapshot, taken in chunks while changes went on) ends where the live fleet ended.
///
/// The rule, per change with revision `r` on a device now at `c` (`None`: absent):
/// - upsert: applied unless `c >= r` (the whole device is replaced, so it is right from any
///   earlier state);
/// - patch: applied when `c < r`; skipped when absent (a later delete, still to be replayed or
///   already in the state, removes the device anyway) or `c >= r`;
/// - delete (`r` is the revision the device had when deleted): applied when `c <= r` (this
///   incarnation, or an older one the replay recreated); skipped when absent or `c > r` (a
///   later incarnation, created above the floor, so above `r`); always raises `floor` to `r`.
///
/// A UUID's revisions strictly grow over its whole history, so `c` tells which changes a state
/// holds; `control::store` proves the replay correct from that. Live, on the state the plan was
/// made from, nothing is skipped.
///
/// # Errors
/// A change that the fleet refuses (a journal that does not match the fleet).
pub fn apply_planned(
    fleet: &Fleet,
    batch: &[Mutation],
    revisions: &[u64],
    floor: &mut u64,
) -> Result<Applied, Rejection> {
    if revisions.len() != batch.len() {
        return Err(Rejection::new(
            500,
            "journal",
            format!("{} revisions for {} changes", revisions.len(), batch.len()),
        ));
    }
    let mut applied = Applied { revisions: Vec::with_capacity(batch.len()), skipped: 0 };
    for (m, &revision) in batch.iter().zip(revisions) {
        let (uuid, current) = match m {
            Mutation::Upsert { device } => (device.uuid, fleet.lookup(&device.uuid)),
            Mutation::Patch { uuid, .. } | Mutation::Delete { uuid } => (*uuid, fleet.lookup(uuid)),
        };
        let current = current.map(|id| fleet.revision(id));
        let done = match m {
            Mutation::Upsert { device } => {
                if current.is_some_and(|c| c >= revision) {
                    false
                } else {
                    let (record, state) = device.to_record().map_err(|e| entry_rejection(&e))?;
                    let (_, now) = fleet.upsert(record, state).map_err(fleet_rejection)?;
                    if now != revision {
                        // A new device starts at 1 in the fleet; a concurrent GET may read that
                        // for a moment: an ETag this device never has again.
                        fleet.restore_revision(&uuid, revision).map_err(fleet_rejection)?;
                    }
                    true
                }
            }
            Mutation::Patch { patch, .. } => match current {
                Some(c) if c < revision => {
                    let now = fleet
                        .patch(&uuid, &patch.to_state_patch()?, None)
                        .map_err(fleet_rejection)?;
                    if now != revision {
                        fleet.restore_revision(&uuid, revision).map_err(fleet_rejection)?;
                    }
                    true
                }
                _ => false,
            },
            Mutation::Delete { .. } => {
                *floor = (*floor).max(revision);
                match current {
                    Some(c) if c <= revision => {
                        fleet.remove(&uuid).map_err(fleet_rejection)?;
                        true
                    }
                    _ => false,
                }
            }
        };
        applied.skipped += usize::from(!done);
        let acknowledged = if matches!(m, Mutation::Delete { .. }) { 0 } else { revision };
        applied.revisions.push((uuid, acknowledged));
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fleet_file::demo_fleet;

    fn upsert(device: &DeviceEntry) -> Mutation {
        Mutation::Upsert { device: device.clone() }
    }

    #[test]
    fn test_parse_entity_tags() {
        let tag = |weak, opaque: &str| EntityTag { weak, opaque: opaque.to_owned() };
        assert_eq!(TagCondition::parse("*"), Ok(TagCondition::Any));
        assert_eq!(TagCondition::parse(" * "), Ok(TagCondition::Any));
        for (text, tags) in [
            ("\"7\"", vec![tag(false, "7")]),
            ("W/\"7\"", vec![tag(true, "7")]),
            ("\"1\", W/\"2\",\"\"", vec![tag(false, "1"), tag(true, "2"), tag(false, "")]),
            (" \"a,b\" , , \"c\" ", vec![tag(false, "a,b"), tag(false, "c")]),
        ] {
            assert_eq!(TagCondition::parse(text), Ok(TagCondition::Tags(tags.clone())), "{text}");
            // Display gives it back in canonical form, which parses to the same tags.
            let shown = TagCondition::Tags(tags.clone()).to_string();
            assert_eq!(TagCondition::parse(&shown), Ok(TagCondition::Tags(tags)), "{shown}");
        }
        for bad in
            ["", "7", "\"7", "W/7", "w/\"7\"", "\"7\" \"8\"", "*, \"7\"", "**", ",", "\"a b\""]
        {
            assert!(TagCondition::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn test_if_match_compares_strongly_if_none_match_weakly() {
        let weak = TagCondition::parse("W/\"3\"").unwrap();
        let strong = TagCondition::parse("\"3\"").unwrap();
        assert!(!weak.matches(Some(Some(3)), true));
        assert!(weak.matches(Some(Some(3)), false));
        assert!(strong.matches(Some(Some(3)), true));
        assert!(!strong.matches(Some(Some(4)), true));
        assert!(!strong.matches(None, true) && !strong.matches(Some(None), true));
        assert!(TagCondition::Any.matches(Some(None), true));
        assert!(!TagCondition::Any.matches(None, false));
        assert_eq!(etag(7), "\"7\"");
    }

    #[test]
    fn test_batch_conditions_see_earlier_changes() {
        let devices = demo_fleet(2).device;
        let fleet = Fleet::with_capacity(16);
        let (a, b) = (devices[1].clone(), devices[2].clone());
        apply(&fleet, &[upsert(&a)], &mut 0).unwrap();
        let any = Preconditions { if_match: Some(TagCondition::Any), if_none_match: None };
        let rev1 = Preconditions { if_match: Some(TagCondition::revision(1)), ..any.clone() };
        let patch = |u: Uuid| Mutation::Patch { uuid: u, patch: PatchBody::default() };
        // `*` sees a device created earlier in the batch; a tag never matches a device an
        // earlier change touched.
        let batch = [upsert(&b), patch(b.uuid)];
        assert_eq!(check(&fleet, &batch, &[Preconditions::default(), any.clone()]), Ok(()));
        let batch = [patch(a.uuid), patch(a.uuid)];
        let r = check(&fleet, &batch, &[rev1.clone(), rev1.clone()]).unwrap_err();
        assert_eq!((r.status, r.path()), (412, "patches[1].If-Match".to_owned()), "{r}");
        // Untouched, `"1"` matches; a device deleted earlier in the batch does not exist for `*`.
        let batch = [upsert(&b), Mutation::Delete { uuid: a.uuid }];
        assert_eq!(check(&fleet, &batch, &[Preconditions::default(), rev1]), Ok(()));
        let batch = [Mutation::Delete { uuid: a.uuid }, upsert(&a)];
        let r = check(&fleet, &batch, &[Preconditions::default(), any]).unwrap_err();
        assert_eq!((r.status, r.path()), (412, "upserts[0].If-Match".to_owned()), "{r}");
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
        let r = check(&fleet, &batch, &[]).unwrap_err();
        assert_eq!(r.status, 400);
        assert_eq!(r.path(), "upserts[3].uuid");
        let want = format!("upserts[1] and upserts[3] have the same uuid {}", devices[1].uuid);
        assert_eq!(r.reason, want);
        // An upsert and then a patch of the same device is a sequence, not a duplicate.
        let patch = PatchBody { doc_open: Some(true), ..PatchBody::default() };
        let batch = [upsert(&devices[1]), Mutation::Patch { uuid: devices[1].uuid, patch }];
        assert_eq!(check(&fleet, &batch, &[]), Ok(()));
    }
}
