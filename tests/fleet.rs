//! The fleet table: eligibility follows every change, the bridge cascade, revisions, bad input
//! changes nothing, and readers racing a writer never see a torn device.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use doxm_gate::fleet::{
    DeviceId, DeviceRecord, Fleet, FleetError, OnboardingState, StatePatch, StateWord,
};
use doxm_gate::policy::{Dos, Reason};
use uuid::Uuid;

fn record(n: u128, bridge: Option<u128>) -> DeviceRecord {
    DeviceRecord::new(
        Uuid::from_u128(n),
        Uuid::from_u128(n << 64),
        &format!("device {n}"),
        Arc::from(vec![Box::from("oic.wk.d"), Box::from("oic.d.virtual")]),
        bridge.map(Uuid::from_u128),
        Arc::from(vec![0]),
        4,
        9,
        Uuid::nil(),
        Uuid::nil(),
        &["coap://[fd00::1]:40001", "coaps://[fd00::1]:40002"],
    )
    .unwrap()
}

const RFOTM: OnboardingState = OnboardingState { dos: Dos::Rfotm, owned: false, doc_open: false };
const RFNOP: OnboardingState = OnboardingState { dos: Dos::Rfnop, owned: true, doc_open: false };

fn eligible(fleet: &Fleet) -> Vec<u128> {
    let mut uuids: Vec<u128> = fleet
        .eligible()
        .filter(|&id| fleet.word(id).is_eligible())
        .map(|id| fleet.uuid_of(id).unwrap().as_u128())
        .collect();
    uuids.sort_unstable();
    uuids
}

#[test]
fn eligibility_follows_state_changes() {
    let fleet = Fleet::with_capacity(10_000);
    fleet.upsert(record(1, None), Some(RFOTM)).unwrap();
    fleet.upsert(record(2, None), Some(RFNOP)).unwrap();
    fleet.upsert(record(3, None), None).unwrap();
    assert_eq!(eligible(&fleet), [1], "unknown state and RFNOP never answer");
    assert_eq!(fleet.eligible_count(), 1);

    let u1 = Uuid::from_u128(1);
    fleet.patch(&u1, &StatePatch { doc_open: Some(true), ..Default::default() }, None).unwrap();
    assert_eq!(eligible(&fleet), [] as [u128; 0], "an open DOC silences the device");
    fleet.patch(&u1, &StatePatch { doc_open: Some(false), ..Default::default() }, None).unwrap();
    assert_eq!(eligible(&fleet), [1]);

    // Owner transfer: RFOTM -> RFPRO, owned.
    let owner = Uuid::from_u128(0xabc);
    let transfer = StatePatch {
        dos: Some(Dos::Rfpro),
        owned: Some(true),
        devowneruuid: Some(owner),
        ..Default::default()
    };
    fleet.patch(&u1, &transfer, None).unwrap();
    assert_eq!(eligible(&fleet), [] as [u128; 0]);
    let id = fleet.lookup(&u1).unwrap();
    assert_eq!(fleet.record(id).unwrap().devowneruuid(), owner);

    // Unknown device becomes known with a complete patch only.
    let u3 = Uuid::from_u128(3);
    let partial = StatePatch { dos: Some(Dos::Rfotm), ..Default::default() };
    assert_eq!(fleet.patch(&u3, &partial, None), Err(FleetError::IncompleteState));
    let full = StatePatch {
        dos: Some(Dos::Rfotm),
        owned: Some(false),
        doc_open: Some(false),
        ..Default::default()
    };
    fleet.patch(&u3, &full, None).unwrap();
    assert_eq!(eligible(&fleet), [3]);
}

#[test]
fn bad_changes_change_nothing() {
    let fleet = Fleet::with_capacity(64);
    let (id, rev) = fleet.upsert(record(1, None), Some(RFOTM)).unwrap();
    let before = fleet.word(id);
    let u1 = Uuid::from_u128(1);
    let owned_in_rfotm = StatePatch { owned: Some(true), ..Default::default() };
    assert!(matches!(fleet.patch(&u1, &owned_in_rfotm, None), Err(FleetError::Inconsistent(_))));
    let stale = StatePatch { doc_open: Some(true), ..Default::default() };
    assert_eq!(
        fleet.patch(&u1, &stale, Some(rev + 5)),
        Err(FleetError::RevisionMismatch { expected: rev + 5, current: rev })
    );
    assert_eq!(fleet.word(id), before);
    assert_eq!(fleet.revision(id), rev);
    assert_eq!(
        fleet.patch(&Uuid::from_u128(99), &stale, None),
        Err(FleetError::NotFound(Uuid::from_u128(99)))
    );
    let bad = OnboardingState { dos: Dos::Rfnop, owned: false, doc_open: false };
    assert!(matches!(fleet.upsert(record(2, None), Some(bad)), Err(FleetError::Inconsistent(_))));
    assert_eq!(fleet.len(), 1);
    assert_eq!(fleet.patch(&u1, &stale, Some(rev)), Ok(rev + 1), "the right revision applies");
}

#[test]
fn bridge_cascade_without_scan() {
    let fleet = Fleet::with_capacity(10_000);
    // VODs registered before their bridge: bridge unknown counts as unowned (fail closed).
    for n in 10..20 {
        fleet.upsert(record(n, Some(1)), Some(RFOTM)).unwrap();
    }
    assert_eq!(fleet.eligible_count(), 0);
    let bridge_rfotm = OnboardingState { dos: Dos::Rfotm, owned: false, doc_open: false };
    fleet.upsert(record(1, None), Some(bridge_rfotm)).unwrap();
    assert_eq!(eligible(&fleet), [1], "VODs of an unowned bridge accept nothing");
    let u1 = Uuid::from_u128(1);
    let own = StatePatch { dos: Some(Dos::Rfnop), owned: Some(true), ..Default::default() };
    fleet.patch(&u1, &own, None).unwrap();
    assert_eq!(eligible(&fleet), (10..20).collect::<Vec<_>>());
    let id = fleet.lookup(&Uuid::from_u128(12)).unwrap();
    let facts = fleet.word(id).facts(Uuid::from_u128(12));
    assert_eq!(doxm_gate::policy::eligibility(&facts), Ok(()));

    // Bridge reset: every VOD goes silent; then the bridge disappears: still silent.
    let reset = StatePatch { dos: Some(Dos::Reset), owned: Some(false), ..Default::default() };
    fleet.patch(&u1, &reset, None).unwrap();
    assert_eq!(eligible(&fleet), [] as [u128; 0]);
    let facts = fleet.word(id).facts(Uuid::from_u128(12));
    assert_eq!(doxm_gate::policy::eligibility(&facts), Err(Reason::BridgeUnowned));
    fleet.patch(&u1, &own, None).unwrap();
    assert_eq!(eligible(&fleet).len(), 10);
    fleet.remove(&u1).unwrap();
    assert_eq!(eligible(&fleet), [] as [u128; 0]);
}

#[test]
fn remove_and_reuse_bumps_incarnation() {
    let fleet = Fleet::with_capacity(64);
    let (id, _) = fleet.upsert(record(1, None), Some(RFOTM)).unwrap();
    let first = fleet.word(id).incarnation();
    fleet.remove(&Uuid::from_u128(1)).unwrap();
    assert_eq!(fleet.lookup(&Uuid::from_u128(1)), None);
    assert!(!fleet.word(id).is_present());
    assert_eq!(fleet.eligible_count(), 0);
    let (reused, _) = fleet.upsert(record(2, None), Some(RFOTM)).unwrap();
    assert_eq!(reused, id, "the freed slot is reused");
    assert_ne!(fleet.word(id).incarnation(), first);
    assert_eq!(fleet.remove(&Uuid::from_u128(1)), Err(FleetError::NotFound(Uuid::from_u128(1))));
}

#[test]
fn full_fleet_is_refused() {
    let fleet = Fleet::with_capacity(3);
    for n in 0..3 {
        fleet.upsert(record(n + 1, None), None).unwrap();
    }
    assert_eq!(fleet.upsert(record(9, None), None), Err(FleetError::Full(3)));
    fleet.upsert(record(2, None), Some(RFOTM)).unwrap();
    assert_eq!(fleet.len(), 3, "replacing an existing device needs no room");
}

#[test]
fn fail_closed_restart_forgets_state() {
    let fleet = Fleet::with_capacity(64);
    fleet.upsert(record(1, None), Some(RFOTM)).unwrap();
    fleet.mark_all_unknown();
    assert_eq!(fleet.eligible_count(), 0);
    assert_eq!(fleet.word(DeviceId(0)).state(), None);
}

/// One writer flips devices between two consistent states that differ in both `dos` and
/// `owned`; readers must only ever see one of the two, never a mix.
#[test]
fn readers_never_see_a_torn_device() {
    let fleet = Arc::new(Fleet::with_capacity(1024));
    for n in 0..256 {
        fleet.upsert(record(n + 1, None), Some(RFOTM)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (fleet, stop) = (fleet.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for id in 0..256 {
                        let word: StateWord = fleet.word(DeviceId(id));
                        let state = word.state().expect("known");
                        assert!(state == RFOTM || state == RFNOP, "torn: {state:?}");
                        assert_eq!(word.is_eligible(), state == RFOTM);
                        seen += 1;
                    }
                }
                seen
            })
        })
        .collect();
    let to_rfnop = StatePatch { dos: Some(Dos::Rfnop), owned: Some(true), ..Default::default() };
    let to_rfotm = StatePatch { dos: Some(Dos::Rfotm), owned: Some(false), ..Default::default() };
    for round in 0..200 {
        for n in 0..256u128 {
            let patch = if round % 2 == 0 { &to_rfnop } else { &to_rfotm };
            fleet.patch(&Uuid::from_u128(n + 1), patch, None).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(fleet.eligible_count(), 256, "200 rounds end on RFOTM");
}

#[test]
fn vods_without_their_bridge_are_listed() {
    let fleet = Fleet::with_capacity(16);
    fleet.upsert(record(10, None), Some(RFNOP)).unwrap();
    fleet.upsert(record(11, Some(10)), Some(RFOTM)).unwrap();
    fleet.upsert(record(12, Some(20)), Some(RFOTM)).unwrap();
    fleet.upsert(record(13, Some(20)), None).unwrap();
    let (u, missing) = (Uuid::from_u128, fleet.missing_bridges());
    assert_eq!(missing, [(u(12), u(20)), (u(13), u(20))]);
    assert_eq!(eligible(&fleet), [11], "a missing bridge counts as unowned (fail closed)");
    fleet.upsert(record(20, None), Some(RFNOP)).unwrap();
    assert_eq!(fleet.missing_bridges(), []);
    assert_eq!(eligible(&fleet), [11, 12]);
    fleet.remove(&u(10)).unwrap();
    assert_eq!(fleet.missing_bridges(), [(u(11), u(10))]);
}

#[test]
fn records_share_equal_type_and_oxm_lists() {
    // Each record comes with its own lists, as the control API builds them; the fleet keeps one.
    let fleet = Fleet::with_capacity(8);
    for n in 1..=3 {
        fleet.upsert(record(n, None), Some(RFOTM)).unwrap();
    }
    let [a, b, c] = [1u128, 2, 3].map(|n| fleet.record(fleet.lookup(&Uuid::from_u128(n)).unwrap()));
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert!(Arc::ptr_eq(a.device_types(), b.device_types()));
    assert!(Arc::ptr_eq(a.device_types(), c.device_types()));
    assert!(Arc::ptr_eq(a.oxms(), c.oxms()));
    assert!(Arc::ptr_eq(a.lists(), c.lists()), "one pair of lists for the kind");
    assert_eq!(&**a.device_types(), &[Box::from("oic.wk.d"), Box::from("oic.d.virtual")]);
    // A different list stays its own.
    let base = record(4, None);
    let other = DeviceRecord::new(
        base.uuid(),
        base.piid(),
        base.name(),
        Arc::from(vec![Box::from("oic.wk.d"), Box::from("oic.d.virtual")]),
        None,
        Arc::from(vec![0, 1]),
        base.oxmsel(),
        base.sct(),
        base.devowneruuid(),
        base.rowneruuid(),
        &["coap://[fd00::1]:40001", "coaps://[fd00::1]:40002"],
    )
    .unwrap();
    fleet.upsert(other, Some(RFOTM)).unwrap();
    let d = fleet.record(fleet.lookup(&Uuid::from_u128(4)).unwrap()).unwrap();
    assert_eq!(&**d.oxms(), &[0, 1]);
    assert!(Arc::ptr_eq(a.device_types(), d.device_types()));
}
