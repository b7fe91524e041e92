//! The answer scheduler's fairness on a real link (SPEC 7: the answer budget is shared equally
//! among the sources that have answers pending; a new source's first answer leaves within its
//! leisure window however full the budget is; output never stalls while answers are pending;
//! the bytes sent per second stay within the budget).
//!
//! The scenario is `doxm_gate::testing::lab::fairness` (the report bench's section 5 runs the
//! same one): 999 eligible devices, `--answer-rate-bytes 200000`, 200 source addresses each send
//! one discovery within about a second, then a legitimate OBT from another address. Asserted,
//! as the scheduler's specification states them:
//! - the OBT's first answer within 2 s of its request (its leisure window);
//! - at least half its fair share of answers over the 15 s after its request (the share: the
//!   budget divided among the sources pending in each second, in answers; see the scenario's
//!   docs);
//! - no second without output while answers are pending;
//! - no sliding second above the budget plus one answer. Arrival times are the kernel's receive
//!   timestamps, taken on the veth in the gate's own send call, so the receiver's scheduling
//!   does not bunch them; the one tolerance is 2 ms of budget (400 B, two answers) because the
//!   datagrams of one batched send are stamped up to that call's duration apart
//!   (`fairness::STAMP_SLACK`; 10 ms if the kernel gave no stamps).
//!
//! The OBT side is this test binary re-executed in the OBT namespace with `DOXM_FAIRNESS_ROLE`
//! set ([`fairness_role`]). Needs root (network namespaces); skips with a message otherwise.

use doxm_gate::testing::lab;

use std::process::Command;

use lab::fairness::{self, Scenario};
use lab::Lab;

/// Selects the OBT-side role in a re-executed copy of this binary.
const ROLE: &str = "DOXM_FAIRNESS_ROLE";
/// The control API, on the gate's veth address (reachable from the OBT namespace).
const CONTROL: &str = "10.200.0.1:8683";

/// Not a test: the OBT side of [`a_late_obt_gets_its_fair_share_under_200_sources`], run in
/// the OBT namespace. Does nothing unless `DOXM_FAIRNESS_ROLE` is set.
#[test]
fn fairness_role() {
    if std::env::var(ROLE).is_ok() {
        assert_eq!(fairness::role(), 0);
    }
}

fn role_command(lab: &Lab) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.obt_ns])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "fairness_role", "--nocapture", "--test-threads", "1"])
        .env(ROLE, "1");
    cmd
}

#[test]
fn a_late_obt_gets_its_fair_share_under_200_sources() {
    let Some(lab) = Lab::new("q") else { return };
    let scenario = Scenario::ISSUE;
    fairness::add_sources(&lab, scenario.attackers);
    let fleet = scenario.write_fleet(&lab);
    let args = scenario.gate_args(&fleet, CONTROL);
    let gate = lab.gate(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let outcome = fairness::run(&lab, role_command(&lab), &scenario, CONTROL);
    let figures = outcome.figures();
    println!("{figures}");
    assert!(figures.requests == scenario.attackers + 1, "not every discovery was sent");
    assert!(!gate.log().contains("panicked"), "{}", gate.log());
    let failures = figures.failures();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
