//! The benchmark report: the real gate over a veth pair, fleets of 1,000 to 1,000,000 devices
//! loaded through the control API, written up as Markdown with SVG plots.
//!
//! Run: `cargo bench --bench report` (as root: it creates two network namespaces joined by a
//! veth pair; not root: prints `SKIP` and exits 0, fails under `DOXM_GATE_REQUIRE_ALL=1`). It writes
//! `benches/reports/<YYYY-MM-DD>-<host>.md` and its plots `benches/reports/<date>-<host>-*.svg`
//! (or into `$DOXM_BENCH_REPORT_DIR`). Under `cargo test --benches` (no `--bench` argument) a
//! bounded quick version runs (fleets of 1,000 and 10,000, E = 1 and 100, 1 s blasts) and
//! writes its report under Cargo's temporary directory (`target/tmp/report-quick/`), never into
//! the repository.
//!
//! `DOXM_BENCH_UPDATES_AT=1000000 cargo bench --bench report` runs only the journaled updates
//! under discovery load, at a fleet of that size loaded through the API, for
//! `DOXM_BENCH_UPDATES_SECS` (default 20) seconds, and prints the PATCH percentiles (p50, p99,
//! p99.9, max) and the gate's snapshot timings instead of writing a report.
//!
//! Workloads, each against the release gate (`env!("CARGO_BIN_EXE_doxm-gate")`) in address mode
//! (one IPv6 address per device in fd00:d0c::/64), leisure 0 and every budget out of the way:
//! 1. drop throughput: malformed, `owned=TRUE` and no-eligible discoveries blasted with
//!    `sendmmsg` (3 blasts of 2 s each, the median shown); processed datagrams/s and gate CPU
//!    per datagram from the gate's `/v1/stats` and /proc, against a trivial `recvmmsg` sink
//!    measured in the same run (the floor: before the gate runs and after each fleet);
//! 2. discovery with E eligible of N devices: the fleet is loaded through
//!    `POST /v1/devices:batch` in batches of 100,000 (timed), the no-eligible blast is repeated
//!    at each N, then E devices are made eligible (one batch of patches) and the probe times
//!    each discovery's first and last answer (and the gate's CPU for it) and checks that
//!    exactly the E devices answered, once each;
//! 3. control updates under discovery load: a steady discovery sender while clients `PATCH`
//!    devices (a DOC opens, then closes) through the API; updates/s, and the API's own
//!    update-to-visible percentiles from `/v1/stats`;
//! 4. (report section 5) the answer scheduler: gate CPU per answer at the default leisure and
//!    at leisure 0 against the kernel's send floor, port and address mode, E = 1,000 and
//!    10,000 (its own gates, every limit but the leisure out of the way); and the fairness
//!    scenario of `doxm_gate::testing::lab::fairness` (many sources, then an OBT). With
//!    `DOXM_BENCH_ONLY=scheduler` the bench runs this section alone and writes
//!    `<date>-<host>-scheduler.md`.
//!
//! The lab and the roles `sink`, `blast` and `probe` are shared with `benches/daemon.rs`
//! (`doxm_gate::testing::lab::load`). This bench adds four roles run in the OBT namespace (the
//! API listens on the gate's veth address, so every control call crosses the link): `api` (one
//! HTTP call), `load` (a fleet in batches of upserts), `steady` (discoveries at a fixed rate,
//! every answer checked) and `patcher` (concurrent `PATCH` clients); and three for section 5:
//! `floor-send` (gate namespace, the gate stopped), `floor-recv` and `fairness` (OBT namespace).

use doxm_gate::testing::lab::fairness;
use doxm_gate::testing::lab::load as lab;

/// The gate under test (cargo builds it for benches; the lab finds the same file).
const BIN: &str = env!("CARGO_BIN_EXE_doxm-gate");

mod calls;
mod drops;
mod fleet;
mod machine;
mod markdown;
mod plots;
mod roles;
mod scheduler;
mod updates;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use doxm_gate::control::fleet_file::{DeviceEntry, FleetFile};
use doxm_gate::io::sys::BATCH;
use doxm_gate::wire::{Code, Message};
use hdrhistogram::Histogram;
use lab::{
    common_role, cpu_seconds, device_uuid, discovery, env, fields, interface, median, min, number,
    remove_stale_labs, sender_socket, snmp6, stopped_fields, thousands, BatchReader, Blast, Kernel,
    Kind, Lab, Rep, DRAIN, ELIGIBLE, GATE_V4, GROUP, LOW, PORT, ROLE,
};
use plotters::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

use calls::*;
use drops::*;
use fleet::*;
use machine::*;
use markdown::*;
use plots::*;
use roles::*;
use scheduler::*;
use updates::*;

/// Upserts per `POST /v1/devices:batch` when loading a fleet.
const UPSERT_BATCH: usize = 100_000;
/// The gate publishes its counters every 500 ms: wait a little longer before reading them.
const PUBLISHED: Duration = Duration::from_millis(700);
/// The owner of the devices that are not eligible (RFNOP).
const OWNER: Uuid = Uuid::from_u128(0x0b7e_0000_0000_4000_8000_0000_0000_0001);

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let code = common_role(&role).or_else(|| report_role(&role)).unwrap_or_else(|| {
            eprintln!("unknown {ROLE} {role}");
            2
        });
        std::process::exit(code);
    }
    let full = std::env::args().any(|a| a == "--bench");
    if let Some(reason) = lab::lab_unavailable() {
        lab::skip(&format!("{reason}; run `sudo cargo bench --bench report`"));
        return;
    }
    remove_stale_labs();
    let plan = if full { Plan::full() } else { Plan::quick() };
    if let Some(n) = std::env::var("DOXM_BENCH_UPDATES_AT").ok().and_then(|n| n.parse().ok()) {
        focused(n, &plan);
        return;
    }
    let dir = match std::env::var_os("DOXM_BENCH_REPORT_DIR") {
        Some(d) => PathBuf::from(d),
        None if full => Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reports"),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-quick"),
    };
    std::fs::create_dir_all(&dir).expect("report directory");
    let results = run(&plan);
    let written = write_report(&plan, &results, &dir);
    println!("report: {}", written.display());
}

// ---------------------------------------------------------------------------------------------
// The plan and the orchestrator.

struct Plan {
    full: bool,
    /// Seconds per drop-throughput blast, and blasts per workload (the median one is shown).
    blast_secs: f64,
    blast_reps: usize,
    /// Discoveries per (N, E).
    reps: usize,
    fleets: &'static [usize],
    eligible: &'static [usize],
    /// Control updates: the fleet, its eligible devices (the ones whose DOC opens and closes).
    update_fleet: usize,
    update_eligible: usize,
    update_secs: f64,
    /// Discoveries per second sent during the update workload.
    discovery_rate: u32,
    /// Concurrent `PATCH` clients.
    clients: usize,
    /// The answer scheduler's cost (section 5): rounds over every (mode, E, variant), measured
    /// discoveries per gate (after a warm-up one), E values, floor repetitions per round.
    sched_rounds: usize,
    sched_reps: usize,
    sched_eligible: &'static [usize],
    sched_floor_reps: usize,
    /// The answer scheduler's fairness scenario (section 5).
    fairness: fairness::Scenario,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            full: true,
            blast_secs: 2.0,
            blast_reps: 3,
            reps: 5,
            fleets: &[1_000, 10_000, 100_000, 1_000_000],
            eligible: &[1, 100, 10_000],
            update_fleet: 100_000,
            update_eligible: 100,
            update_secs: 5.0,
            discovery_rate: 100,
            clients: 4,
            sched_rounds: 3,
            sched_reps: 2,
            sched_eligible: &[1_000, 10_000],
            sched_floor_reps: 3,
            fairness: fairness::Scenario::ISSUE,
        }
    }

    fn quick() -> Plan {
        Plan {
            full: false,
            blast_secs: 1.0,
            blast_reps: 1,
            reps: 2,
            fleets: &[1_000, 10_000],
            eligible: &[1, 100],
            update_fleet: 1_000,
            update_eligible: 100,
            update_secs: 1.0,
            discovery_rate: 100,
            clients: 4,
            sched_rounds: 1,
            sched_reps: 1,
            sched_eligible: &[1_000],
            sched_floor_reps: 2,
            fairness: fairness::Scenario {
                attackers: 50,
                observe: 5.0,
                ..fairness::Scenario::ISSUE
            },
        }
    }
}

/// Everything measured.
struct Results {
    machine: Machine,
    host: HostLoad,
    started: SystemTime,
    secs: f64,
    floors: Vec<Floor>,
    fleets: Vec<FleetResult>,
    updates: Vec<Updates>,
    /// Section 5.
    scheduler: Option<Scheduler>,
}

fn run(plan: &Plan) -> Results {
    let started = SystemTime::now();
    let t0 = Instant::now();
    let machine = Machine::read();
    eprintln!(
        "report bench ({} mode): gate {BIN}; {} CPUs, load average {}",
        if plan.full { "full" } else { "quick, no --bench argument" },
        machine.cpus,
        machine.loadavg_start
    );
    let monitor = Monitor::start();
    let lab = lab::bench_lab();
    if only_scheduler() {
        eprintln!("section 5 only ({ONLY}=scheduler)");
        let scheduler = Some(scheduler_run(&lab, plan));
        drop(lab);
        return Results {
            machine,
            host: monitor.stop(),
            started,
            secs: t0.elapsed().as_secs_f64(),
            floors: Vec::new(),
            fleets: Vec::new(),
            updates: Vec::new(),
            scheduler,
        };
    }
    let mut floors = vec![floor_run(&lab, plan.blast_secs, "before the gate runs".to_owned())];
    let mut fleets = Vec::new();
    for (i, &n) in plan.fleets.iter().enumerate() {
        let kinds: &[Kind] = if i == 0 {
            &[Kind::Malformed, Kind::OwnedTrue, Kind::NoEligible]
        } else {
            &[Kind::NoEligible]
        };
        eprintln!("fleet of {n}");
        fleets.push(fleet_run(&lab, plan, n, kinds));
        // The floor again after each fleet: the machine is shared, so its figures are medians
        // of runs spread over the whole bench.
        floors.push(floor_run(&lab, plan.blast_secs, format!("after N = {}", short(n))));
    }
    let file = update_fleet(plan.update_fleet, plan.update_eligible);
    let path = std::path::PathBuf::from(lab.write_fleet_as("updates", &file));
    let updates = [(false, false), (true, false), (true, true)]
        .into_iter()
        .map(|(load, durable)| update_run(&lab, plan, &path, load, durable))
        .collect();
    eprintln!("the answer scheduler");
    let scheduler = Some(scheduler_run(&lab, plan));
    drop(lab);
    Results {
        machine,
        host: monitor.stop(),
        started,
        secs: t0.elapsed().as_secs_f64(),
        floors,
        fleets,
        updates,
        scheduler,
    }
}

/// With `DOXM_BENCH_ONLY=scheduler` the bench runs section 5 alone (the answer scheduler's
/// cost and fairness) and writes a report of that section: for iterating on the scheduler.
const ONLY: &str = "DOXM_BENCH_ONLY";

fn only_scheduler() -> bool {
    std::env::var(ONLY).is_ok_and(|v| v == "scheduler")
}
