//! The storm simulator's summary table as a snapshot, and its invariants as assertions.
//!
//! A change to pacing, dedup, limits or the rule shows up here as a diff of the table: review it,
//! and update the snapshot only when the new numbers are the intended ones.

use std::time::Duration;

use doxm_gate::engine::endpoint::EndpointPlan;
use doxm_gate::engine::{typical_answer_size, Config};
use doxm_gate::testing::sim::{self, Client, ClientKind, Flip, Scenario};
use doxm_gate::wire::ocf::View;

fn scenario() -> Scenario {
    let ms = Duration::from_millis;
    Scenario {
        devices: 5_000,
        eligible_every: 50,
        clients: vec![
            Client { kind: ClientKind::IotivityLite, first: ms(0), count: 2, every: ms(5_000) },
            Client { kind: ClientKind::Plgd, first: ms(700), count: 1, every: ms(1) },
            Client { kind: ClientKind::Repeater, first: ms(100), count: 40, every: ms(50) },
            Client { kind: ClientKind::Junk, first: ms(0), count: 200, every: ms(10) },
            // Asks device 100 (eligible: 100 % 50 == 0) by deviceuuid, every 500 ms.
            Client { kind: ClientKind::Targeted(100), first: ms(200), count: 8, every: ms(500) },
        ],
        flips: vec![
            Flip { at: ms(300), device: 0, doc_open: true },
            Flip { at: ms(300), device: 50, doc_open: true },
            Flip { at: ms(4_000), device: 50, doc_open: false },
        ],
        config: Config {
            endpoints: EndpointPlan::Ports { base: 40_000, count: 10_000 },
            answer_rate_bytes: 50_000,
            ..Config::default()
        },
        seed: 2640,
    }
}

#[test]
fn storm_invariants() {
    let report = sim::run(&scenario());
    for (kind, c) in &report.clients {
        assert_eq!(c.duplicate_answers, 0, "{kind:?} got two answers from one device");
        assert_eq!(c.ineligible_answers, 0, "{kind:?} got an answer from an ineligible device");
    }
    let (_, obt) = &report.clients[0];
    // 100 eligible; devices 0 and 50 open a DOC at 300 ms, 50 closes it at 4 s, so the second
    // discovery (at 5 s) gets 99.
    assert!(obt.devices >= 99 && obt.devices <= 100, "{obt:?}");
    let (_, junk) = &report.clients[3];
    assert_eq!(junk.answers, 0, "nothing is ever sent in reply to an error on multicast");
    let (_, repeater) = &report.clients[2];
    // 40 requests over 2 s at 1/s with a burst of 5: at most 5 + 2 are answered.
    assert!(repeater.answers <= 7 * 100, "the per-source bucket bounds the repeater");
    // deviceuuid: of its 8 discoveries, 4 name device 100 (alone, or with di), and
    // only it answers them, once each; 2 name nobody (`deviceuuid=`: both copies of each are
    // dropped by the policy, before dedup, under their own reason); 2 name device 101, which is
    // not eligible (the v4 copy is a duplicate).
    let (kind, targeted) = &report.clients[4];
    assert_eq!(*kind, ClientKind::Targeted(100));
    assert_eq!((targeted.answers, targeted.devices), (4, 1), "{targeted:?}");
    assert_eq!(report.verdicts.get("policy/deviceuuid-invalid"), Some(&4), "{report}");
    assert_eq!(report.verdicts.get("engine/no-eligible"), Some(&2), "{report}");
    // The pacer's strict bound (SPEC 7): no sliding second above the rate plus one answer.
    assert!(report.peak_bytes_per_second <= 50_000 + 250, "{}", report.peak_bytes_per_second);
    // Nothing leaves late: what the windows could not fit expired, counted (SPEC 4).
    let [scheduled, sent, cancelled, shed, expired, _] = report.answers;
    assert_eq!(scheduled, sent + cancelled + shed + expired, "{report}");
}

/// Set `UPDATE_SNAPSHOTS=1` to rewrite `tests/storm.snapshot` after an intended change.
#[test]
fn storm_report_snapshot() {
    let report = sim::run(&scenario()).to_string();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/storm.snapshot");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &report).unwrap();
    }
    let snapshot = std::fs::read_to_string(path).unwrap();
    if report != snapshot {
        panic!("storm report changed; new report:\n{report}\nold snapshot:\n{snapshot}");
    }
}

#[test]
fn same_seed_same_report() {
    assert_eq!(sim::run(&scenario()), sim::run(&scenario()));
}

/// SPEC 7's case (issue 12): 999 eligible devices, a 200,000 B/s budget, 200 sources each
/// sending one discovery within a second, then a legitimate OBT. Without fair sharing (the
/// first-come-first-served budget this replaced) the OBT got nothing for 70 s.
#[test]
fn a_legitimate_obt_gets_its_fair_share_behind_200_spoofed_sources() {
    let ms = Duration::from_millis;
    let budget = 200_000u64;
    let mut clients: Vec<Client> = (0..200u32)
        .map(|i| Client {
            kind: ClientKind::Repeater,
            first: ms(5 * u64::from(i)),
            count: 1,
            every: ms(1),
        })
        .collect();
    clients.push(Client {
        kind: ClientKind::IotivityLite,
        first: ms(1_000),
        count: 1,
        every: ms(1),
    });
    let scenario = Scenario {
        devices: 999,
        eligible_every: 1,
        clients,
        flips: vec![],
        config: Config {
            endpoints: EndpointPlan::Ports { base: 40_000, count: 10_000 },
            answer_rate_bytes: budget,
            ..Config::default()
        },
        seed: 12,
    };
    let report = sim::run(&scenario);
    let (_, obt) = report.clients.last().expect("the OBT");
    let first = obt.answer_times.iter().min().copied().expect("the OBT got no answer at all");
    let within_15s = obt.answer_times.iter().filter(|t| **t <= Duration::from_secs(15)).count();
    // Its fair share over those 15 s: the budget over the 201 sources with answers pending.
    let size = typical_answer_size(View::Default) as u64 + 3;
    let fair = budget * 15 / size / 201;
    let max_answer = report.sent.iter().map(|s| s.1).max().unwrap_or(0);
    let zero_seconds = zero_output_seconds_while_pending(&report);
    println!(
        "fairness: first answer {first:?} after the OBT's request; {within_15s} answers in 15 s \
         (fair share {fair}); {} answers in all; peak {} B in a sliding second (budget {budget} \
         + one answer of {max_answer} B); {zero_seconds} seconds of zero output while pending; \
         expired {}",
        obt.answers, report.peak_bytes_per_second, report.answers[4]
    );
    assert!(first <= Duration::from_secs(2), "first answer after {first:?}");
    assert!(within_15s as u64 * 2 >= fair, "{within_15s} answers in 15 s, fair share {fair}");
    assert_eq!(zero_seconds, 0, "a second with zero output while answers were pending");
    assert!(
        report.peak_bytes_per_second <= budget + max_answer,
        "{}",
        report.peak_bytes_per_second
    );
    assert_eq!(obt.duplicate_answers + obt.ineligible_answers, 0);
}

/// Whole seconds `[k, k + 1)` in which answers were pending at every wake-up and nothing left.
fn zero_output_seconds_while_pending(report: &sim::Report) -> usize {
    let last = report.pending.last().map_or(0, |p| p.0.as_secs());
    (0..last)
        .filter(|&k| {
            let in_second = |t: Duration| t.as_secs() == k;
            let samples: Vec<usize> =
                report.pending.iter().filter(|p| in_second(p.0)).map(|p| p.1).collect();
            let pending_all = !samples.is_empty() && samples.iter().all(|&n| n > 0);
            let bytes: u64 = report.sent.iter().filter(|s| in_second(s.0)).map(|s| s.1).sum();
            pending_all && bytes == 0
        })
        .count()
}
