//! The benchmark report: the real gate over a veth pair, fleets of 1,000 to 1,000,000 devices
//! loaded through the control API, written up as Markdown with SVG plots.
//!
//! Run: `cargo bench --bench report` (as root: it creates two network namespaces joined by a
//! veth pair; not root: prints `SKIP` and exits 0). It writes
//! `benches/reports/<YYYY-MM-DD>-<host>.md` and its plots `benches/reports/<date>-<host>-*.svg`
//! (or into `$DOXM_BENCH_REPORT_DIR`). Under `cargo test --benches` (no `--bench` argument) a
//! bounded quick version runs (fleets of 1,000 and 10,000, E = 1 and 100, 1 s blasts) and
//! writes its report under Cargo's temporary directory (`target/tmp/report-quick/`), never into
//! the repository.
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
//!    update-to-visible percentiles from `/v1/stats`.
//!
//! The lab and the roles `sink`, `blast` and `probe` are shared with `benches/daemon.rs`
//! (`benches/common/lab.rs`). This bench adds four roles, all run in the OBT namespace (the API
//! listens on the gate's veth address, so every control call crosses the link): `api` (one
//! HTTP call), `load` (a fleet in batches of upserts), `steady` (discoveries at a fixed rate,
//! every answer checked) and `patcher` (concurrent `PATCH` clients).

#[path = "common/lab.rs"]
mod lab;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use doxm_gate::fleet::file::{DeviceEntry, FleetFile};
use doxm_gate::io::sys::{self, BATCH};
use doxm_gate::wire::{Code, Message};
use hdrhistogram::Histogram;
use lab::{
    common_role, cpu_seconds, device_uuid, discovery, env, fields, interface, is_root, median, min,
    number, remove_stale_labs, sender_socket, snmp6, stopped_fields, thousands, BatchReader, Blast,
    Kernel, Kind, Lab, BIN, DRAIN, ELIGIBLE, GATE_V4, GROUP, LOW, PORT, ROLE,
};
use plotters::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

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
    if !is_root() {
        println!(
            "SKIP: needs root (it creates network namespaces); run `sudo cargo bench --bench report`"
        );
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        println!("SKIP: the ip command (iproute2) is not installed");
        return;
    }
    remove_stale_labs();
    let plan = if full { Plan::full() } else { Plan::quick() };
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
    let lab = Lab::new();
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
    let path = lab.write_fleet("updates", &file);
    let updates = [(false, false), (true, false), (true, true)]
        .into_iter()
        .map(|(load, durable)| update_run(&lab, plan, &path, load, durable))
        .collect();
    drop(lab);
    Results {
        machine,
        host: monitor.stop(),
        started,
        secs: t0.elapsed().as_secs_f64(),
        floors,
        fleets,
        updates,
    }
}

// ---------------------------------------------------------------------------------------------
// Workload 1: drop throughput, and the floor.

/// The `recvmmsg` sink's run.
struct Floor {
    label: String,
    blast: Blast,
    processed: u64,
    cpu: f64,
    kernel: Kernel,
}

impl Floor {
    fn per_sec(&self) -> f64 {
        self.processed as f64 / self.blast.secs
    }

    fn per_cpu_second(&self) -> f64 {
        self.processed as f64 / self.cpu.max(1e-9)
    }
}

fn floor_run(lab: &Lab, secs: f64, label: String) -> Floor {
    eprintln!("floor: recvmmsg sink");
    let mut sink = lab.sink();
    let cpu0 = cpu_seconds(sink.child.id());
    let k0 = Kernel::read(&lab.gate_ns);
    let blast = lab.blast(Kind::NoEligible, secs);
    std::thread::sleep(DRAIN);
    let cpu1 = cpu_seconds(sink.child.id());
    let kernel = Kernel::read(&lab.gate_ns).since(k0);
    let out = sink.stop();
    Floor { label, blast, processed: number(&fields(&out), "datagrams"), cpu: cpu1 - cpu0, kernel }
}

/// One blast at the gate, read from its `/v1/stats` before and after.
struct DropRow {
    fleet: usize,
    kind: Kind,
    blast: Blast,
    /// The engine's `datagrams` counter.
    processed: u64,
    /// The driver's `received` counter.
    received: u64,
    cpu: f64,
    kernel: Kernel,
    answers: u64,
    /// Datagrams per CPU-second of every blast of this workload (this row is the median one).
    runs: Vec<f64>,
}

impl DropRow {
    fn per_sec(&self) -> f64 {
        self.processed as f64 / self.blast.secs
    }

    fn per_cpu_second(&self) -> f64 {
        self.processed as f64 / self.cpu.max(1e-9)
    }

    fn cpu_us_per_datagram(&self) -> f64 {
        1e6 * self.cpu / self.processed.max(1) as f64
    }

    fn label(&self) -> String {
        let what = match self.kind {
            Kind::Malformed => "malformed mix (4 kinds, 44-46 B)".to_owned(),
            Kind::OwnedTrue => "discovery `owned=TRUE` (44 B)".to_owned(),
            Kind::NoEligible => {
                format!(
                    "discovery `owned=FALSE`, 0 of {} eligible (45 B)",
                    thousands(self.fleet as f64)
                )
            }
        };
        format!("{what}, N = {}", short(self.fleet))
    }

    fn short_label(&self) -> String {
        let kind = match self.kind {
            Kind::Malformed => "malformed",
            Kind::OwnedTrue => "owned=TRUE",
            Kind::NoEligible => "no-eligible",
        };
        format!("{kind} {}", short(self.fleet))
    }
}

/// `plan.blast_reps` blasts of one kind; the one with the median datagrams per CPU-second.
fn drop_runs(lab: &Lab, pid: u32, fleet: usize, kind: Kind, plan: &Plan) -> DropRow {
    let mut rows: Vec<DropRow> =
        (0..plan.blast_reps).map(|_| drop_run(lab, pid, fleet, kind, plan.blast_secs)).collect();
    rows.sort_by(|a, b| a.per_cpu_second().total_cmp(&b.per_cpu_second()));
    let runs = rows.iter().map(DropRow::per_cpu_second).collect();
    let mut row = rows.swap_remove(rows.len() / 2);
    row.runs = runs;
    row
}

fn drop_run(lab: &Lab, pid: u32, fleet: usize, kind: Kind, secs: f64) -> DropRow {
    eprintln!("  blast {} at N={fleet}", kind.name());
    let s0 = stats(lab);
    let cpu0 = cpu_seconds(pid);
    let k0 = Kernel::read(&lab.gate_ns);
    let blast = lab.blast(kind, secs);
    // Let the gate drain its socket buffer before its counters are read.
    std::thread::sleep(DRAIN);
    let cpu1 = cpu_seconds(pid);
    let kernel = Kernel::read(&lab.gate_ns).since(k0);
    std::thread::sleep(PUBLISHED);
    let s1 = stats(lab);
    let delta = |path: &[&str]| counter(&s1, path).saturating_sub(counter(&s0, path));
    DropRow {
        fleet,
        kind,
        blast,
        processed: delta(&["datagrams"]),
        received: delta(&["driver", "received"]),
        cpu: cpu1 - cpu0,
        kernel,
        answers: delta(&["answers", "sent"]) + delta(&["responses_sent"]),
        runs: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Workload 2: a fleet of N loaded through the API, drops at N, discovery with E eligible.

struct FleetResult {
    fleet: usize,
    load: Load,
    drops: Vec<DropRow>,
    discoveries: Vec<Discovery>,
    /// From the gate's `stopped` line.
    send_failed: u64,
}

/// Loading the fleet through `POST /v1/devices:batch`.
struct Load {
    /// (devices, body bytes, seconds, gate RSS after it) per batch, as the client saw them.
    batches: Vec<(usize, usize, f64, u64)>,
    cpu: f64,
    rss_before: u64,
    rss_after: u64,
}

impl Load {
    fn secs(&self) -> f64 {
        self.batches.iter().map(|b| b.2).sum()
    }

    fn devices(&self) -> usize {
        self.batches.iter().map(|b| b.0).sum()
    }

    /// Seconds for the full-size batches (of [`UPSERT_BATCH`]), if there were any.
    fn full_batch_secs(&self) -> Option<f64> {
        let full: Vec<f64> =
            self.batches.iter().filter(|b| b.0 == UPSERT_BATCH).map(|b| b.2).collect();
        (!full.is_empty()).then(|| full.iter().sum::<f64>() / full.len() as f64)
    }

    fn bytes_per_device(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.devices().max(1) as f64
    }

    /// RSS growth per device from the end of the first batch to the end of the last: the
    /// table's cost without the one-time peak of parsing a batch body (the allocator keeps and
    /// reuses that memory). `None` with a single batch.
    fn marginal_bytes_per_device(&self) -> Option<f64> {
        let (first, last) = (self.batches.first()?, self.batches.last()?);
        let devices: usize = self.batches.iter().skip(1).map(|b| b.0).sum();
        (devices > 0).then(|| last.3.saturating_sub(first.3) as f64 / devices as f64)
    }
}

/// The mean seconds of the full-size batches of all fleets.
fn full_batch_secs(r: &Results) -> Option<f64> {
    let full: Vec<f64> = r
        .fleets
        .iter()
        .flat_map(|f| &f.load.batches)
        .filter(|b| b.0 == UPSERT_BATCH)
        .map(|b| b.2)
        .collect();
    (!full.is_empty()).then(|| full.iter().sum::<f64>() / full.len() as f64)
}

/// One (N, E): the probe's repetitions.
struct Discovery {
    eligible: usize,
    /// Seconds for the batch of patches that made devices eligible (as the client timed it).
    patch_secs: f64,
    patched: usize,
    reps: Vec<Rep>,
}

impl Discovery {
    fn exact(&self) -> usize {
        self.reps.iter().filter(|r| r.exact(self.eligible)).count()
    }

    fn median_of(&self, f: impl Fn(&Rep) -> u64) -> u64 {
        median(&self.reps.iter().map(f).collect::<Vec<_>>())
    }

    fn last_ms(&self) -> f64 {
        self.median_of(|r| r.last_us) as f64 / 1e3
    }

    fn first_ms(&self) -> f64 {
        self.median_of(|r| r.first_us) as f64 / 1e3
    }

    fn answers_per_sec(&self) -> f64 {
        self.median_of(|r| (r.answers as f64 / (r.last_us.max(1) as f64 / 1e6)) as u64) as f64
    }

    /// Median gate CPU per discovery.
    fn gate_cpu_ms(&self) -> f64 {
        self.median_of(|r| r.gate_cpu_us) as f64 / 1e3
    }
}

/// One discovery as the probe saw it.
#[derive(Debug, Clone, Default)]
struct Rep {
    answers: u64,
    sources: u64,
    uuids: u64,
    wrong: u64,
    first_us: u64,
    last_us: u64,
    rcvbuf_errors: u64,
    /// The gate's CPU time from the send to the E-th answer's arrival.
    gate_cpu_us: u64,
}

impl Rep {
    fn exact(&self, e: usize) -> bool {
        let e = e as u64;
        self.answers == e && self.sources == e && self.uuids == e && self.wrong == 0
    }
}

fn fleet_run(lab: &Lab, plan: &Plan, n: usize, kinds: &[Kind]) -> FleetResult {
    let control = format!("{GATE_V4}:8683");
    let mut gate = lab.gate(&["--control", &control]);
    let pid = gate.child.id();
    let rss_before = rss(pid);
    let cpu0 = cpu_seconds(pid);
    eprintln!("  load {n} devices through the API");
    let out = role_output(
        lab.role(&lab.obt_ns, "load")
            .env("DOXM_BENCH_API", &control)
            .env("DOXM_BENCH_DEVICES", n.to_string())
            .env("DOXM_BENCH_BATCH", UPSERT_BATCH.to_string())
            .env("DOXM_BENCH_GATE_PID", pid.to_string()),
        "load",
    );
    let cpu = cpu_seconds(pid) - cpu0;
    let rss_after = rss(pid);
    let batches = out
        .lines()
        .filter(|l| l.starts_with("batch "))
        .map(fields)
        .map(|f| {
            let devices = number(&f, "devices") as usize;
            (devices, number(&f, "bytes") as usize, float(&f, "secs"), number(&f, "gate_rss"))
        })
        .collect();
    let load = Load { batches, cpu, rss_before, rss_after };
    let s = stats(lab);
    assert_eq!(counter(&s, &["fleet", "devices"]), n as u64, "fleet size after the load");
    assert_eq!(counter(&s, &["fleet", "eligible"]), 0, "nothing eligible after the load");

    let drops = kinds.iter().map(|&k| drop_runs(lab, pid, n, k, plan)).collect();

    let mut discoveries = Vec::new();
    let mut made = 0;
    for &e in plan.eligible.iter().filter(|&&e| e <= n) {
        let body = lab.dir.join("patches.json");
        std::fs::write(&body, make_eligible(made + 1, e).to_string()).expect("patch body");
        let (status, text, patch_secs) = api(lab, "POST", "/v1/devices:batch", Some(&body));
        assert_eq!(status, 200, "patches: {text}");
        let patched = e - made;
        made = e;
        let s = stats(lab);
        assert_eq!(counter(&s, &["fleet", "eligible"]), e as u64, "eligible after the patches");
        eprintln!("  discover: {e} eligible of {n}");
        let lines = lab.probe_gate(e, plan.reps, Some(pid));
        let reps = lines
            .iter()
            .map(|f| Rep {
                answers: number(f, "answers"),
                sources: number(f, "sources"),
                uuids: number(f, "uuids"),
                wrong: number(f, "wrong"),
                first_us: number(f, "first_us"),
                last_us: number(f, "last_us"),
                rcvbuf_errors: number(f, "rcvbuf_errors"),
                gate_cpu_us: number(f, "gate_cpu_us"),
            })
            .collect();
        discoveries.push(Discovery { eligible: e, patch_secs, patched, reps });
    }
    let log = gate.stop();
    let stopped = stopped_fields(&log);
    FleetResult { fleet: n, load, drops, discoveries, send_failed: number(&stopped, "send_failed") }
}

/// Device `i` (1..=N): `ELIGIBLE | i`, two endpoints at a bridge, RFNOP (owned, not eligible)
/// until patched.
fn device(i: usize, eligible: bool) -> DeviceEntry {
    let port = 10_000 + 2 * (i % 25_000);
    DeviceEntry {
        uuid: Uuid::from_u128(ELIGIBLE | i as u128),
        name: format!("bench lamp {i}"),
        types: vec!["oic.wk.d".to_owned(), "oic.d.light".to_owned()],
        bridge: None,
        piid: None,
        dos: Some(if eligible { 1 } else { 3 }),
        owned: None,
        doc_open: false,
        oxms: vec![0, 1],
        oxmsel: if eligible { 4 } else { 0 },
        sct: 9,
        devowneruuid: if eligible { Uuid::nil() } else { OWNER },
        rowneruuid: if eligible { Uuid::nil() } else { OWNER },
        eps: vec![
            format!("coap://[fd00:b::1]:{port}"),
            format!("coaps://[fd00:b::1]:{}", port + 1),
        ],
    }
}

/// The patches that put devices `from..=to` in RFOTM, unowned (as after a RESET).
fn make_eligible(from: usize, to: usize) -> Value {
    let patches: Vec<Value> = (from..=to)
        .map(|i| {
            json!({
                "uuid": Uuid::from_u128(ELIGIBLE | i as u128),
                "dos": 1,
                "owned": false,
                "devowneruuid": Uuid::nil(),
                "rowneruuid": Uuid::nil(),
                "oxmsel": 4,
            })
        })
        .collect();
    json!({ "patches": patches })
}

/// The update workload's fleet: devices 1..=E eligible, the rest RFNOP.
fn update_fleet(n: usize, eligible: usize) -> FleetFile {
    FleetFile { device: (1..=n).map(|i| device(i, i <= eligible)).collect() }
}

// ---------------------------------------------------------------------------------------------
// Workload 3: control updates, alone and under discovery load, in memory and journaled.

struct Updates {
    load: bool,
    durable: bool,
    eligible: usize,
    /// The patcher's line: updates, failed, secs, p50_us, p99_us, max_us.
    patcher: HashMap<String, String>,
    /// The steady sender's line, under load.
    steady: Option<HashMap<String, String>>,
    /// `/v1/stats` `update_to_visible_us`.
    visible: Value,
    /// `/v1/stats` answers cancelled at send time (the device was no longer eligible).
    cancelled: u64,
    gate_cpu: f64,
    wall: f64,
}

impl Updates {
    fn label(&self) -> &'static str {
        match (self.load, self.durable) {
            (false, _) => "no discovery load, in memory",
            (true, false) => "under discovery load, in memory",
            (true, true) => "under discovery load, journaled (--state-dir)",
        }
    }

    fn updates_per_sec(&self) -> f64 {
        number(&self.patcher, "updates") as f64 / float(&self.patcher, "secs").max(1e-9)
    }
}

fn update_run(lab: &Lab, plan: &Plan, fleet: &Path, load: bool, durable: bool) -> Updates {
    eprintln!("updates: discovery load {load}, journaled {durable}");
    let control = format!("{GATE_V4}:8683");
    let state = lab.dir.join(format!("state-{}", u8::from(load) + 2 * u8::from(durable)));
    let mut args = vec!["--fleet", fleet.to_str().expect("UTF-8 path"), "--control", &control];
    if durable {
        args.extend(["--state-dir", state.to_str().expect("UTF-8 path")]);
    }
    let mut gate = lab.gate(&args);
    let pid = gate.child.id();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let steady = load.then(|| {
        let child = lab
            .role(&lab.obt_ns, "steady")
            .env("DOXM_BENCH_RATE", plan.discovery_rate.to_string())
            .env("DOXM_BENCH_SECS", (plan.update_secs + 1.0).to_string())
            .env("DOXM_BENCH_EXPECT", plan.update_eligible.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the steady sender");
        // Half a second of discoveries before the updates start, half a second after.
        std::thread::sleep(Duration::from_millis(500));
        Running(Some(child))
    });
    let out = role_output(
        lab.role(&lab.obt_ns, "patcher")
            .env("DOXM_BENCH_API", &control)
            .env("DOXM_BENCH_CLIENTS", plan.clients.to_string())
            .env("DOXM_BENCH_SECS", plan.update_secs.to_string())
            .env("DOXM_BENCH_EXPECT", plan.update_eligible.to_string()),
        "patcher",
    );
    let steady = steady.map(|s| fields(&s.finish("steady sender")));
    let gate_cpu = cpu_seconds(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    std::thread::sleep(PUBLISHED);
    let s = stats(lab);
    gate.stop();
    Updates {
        load,
        durable,
        eligible: plan.update_eligible,
        patcher: fields(&out),
        steady,
        visible: s["update_to_visible_us"].clone(),
        cancelled: counter(&s, &["answers", "cancelled"]),
        gate_cpu,
        wall,
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to the roles.

/// A role process running in the background; killed if it is dropped unfinished.
struct Running(Option<Child>);

impl Running {
    fn finish(mut self, what: &str) -> String {
        let child = self.0.take().expect("running");
        let out = child.wait_with_output().expect(what);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{what} failed: {text}");
        text
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn role_output(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run the {what} role: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the {what} role failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// One control-API call from the OBT namespace: status, body, seconds (client-timed).
fn api(lab: &Lab, method: &str, path: &str, body: Option<&Path>) -> (u16, String, f64) {
    let mut cmd = lab.role(&lab.obt_ns, "api");
    cmd.env("DOXM_BENCH_API", format!("{GATE_V4}:8683"))
        .env("DOXM_BENCH_METHOD", method)
        .env("DOXM_BENCH_PATH", path);
    if let Some(body) = body {
        cmd.env("DOXM_BENCH_BODY", body);
    }
    let text = role_output(&mut cmd, "api");
    let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
    let f = fields(head);
    (number(&f, "status") as u16, body.to_owned(), float(&f, "secs"))
}

fn stats(lab: &Lab) -> Value {
    let (status, body, _) = api(lab, "GET", "/v1/stats", None);
    assert_eq!(status, 200, "/v1/stats: {body}");
    serde_json::from_str(&body).expect("/v1/stats JSON")
}

fn counter(v: &Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

fn float(f: &HashMap<String, String>, key: &str) -> f64 {
    f.get(key).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------------------------------------
// The machine, and the load on it while the bench ran.

struct Machine {
    host: String,
    cpus: usize,
    model: String,
    mem_total: String,
    kernel: String,
    loadavg_start: String,
    rmem_max: String,
    wmem_max: String,
    rustc: String,
    commit: String,
    /// Processes (other than this bench) using CPU in a one-second sample at the start.
    busy_at_start: String,
}

impl Machine {
    fn read() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_owned();
        let cpuinfo = read("/proc/cpuinfo");
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("?")
            .trim()
            .to_owned();
        let mem_total = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or("?".to_owned(), |kb| format!("{:.1} GiB", kb / (1024.0 * 1024.0)));
        let command = |args: &[&str]| {
            Command::new(args[0])
                .args(&args[1..])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let dir = env!("CARGO_MANIFEST_DIR");
        let commit = command(&["git", "-C", dir, "rev-parse", "--short", "HEAD"]).map_or(
            "?".to_owned(),
            |c| {
                let dirty = |paths: &[&str]| {
                    let mut args = vec!["git", "-C", dir, "status", "--porcelain", "--"];
                    args.extend(paths);
                    command(&args).is_some_and(|s| !s.is_empty())
                };
                if dirty(&["src", "Cargo.toml", "Cargo.lock"]) {
                    format!("{c}, with uncommitted changes to the gate's sources")
                } else if dirty(&["."]) {
                    format!("{c} (the gate's sources as committed; other files changed)")
                } else {
                    c
                }
            },
        );
        Machine {
            host: read("/proc/sys/kernel/hostname"),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            model,
            mem_total,
            kernel: read("/proc/sys/kernel/osrelease"),
            loadavg_start: loadavg(),
            rmem_max: read("/proc/sys/net/core/rmem_max"),
            wmem_max: read("/proc/sys/net/core/wmem_max"),
            rustc: command(&["rustc", "-V"]).unwrap_or_else(|| "?".to_owned()),
            commit,
            busy_at_start: busy_processes(),
        }
    }
}

fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// (busy, total) jiffies of all CPUs.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU ticks of every process, by pid: (name, utime + stime).
fn process_ticks() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_owned();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| f.get(i)?.parse::<u64>().ok()).sum();
        out.insert(pid, (name, ticks));
    }
    out
}

/// The processes that used the most CPU during one second, as "name 95%, name 12%".
fn busy_processes() -> String {
    let before = process_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let after = process_ticks();
    let hz = ticks_per_second();
    let me = std::process::id();
    let mut busy: Vec<(String, f64)> = after
        .iter()
        .filter(|(pid, _)| **pid != me)
        .filter_map(|(pid, (name, t))| {
            let t0 = before.get(pid).map_or(0, |b| b.1);
            let pct = 100.0 * t.saturating_sub(t0) as f64 / hz;
            (pct >= 5.0).then(|| (name.clone(), pct))
        })
        .collect();
    busy.sort_by(|a, b| b.1.total_cmp(&a.1));
    if busy.is_empty() {
        return "none above 5% of a CPU".to_owned();
    }
    busy.iter().take(6).map(|(n, p)| format!("{n} {p:.0}%")).collect::<Vec<_>>().join(", ")
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Samples the 1-minute load average and the host's CPU use every second.
struct Monitor {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<HostLoad>>,
}

#[derive(Debug, Clone, Default)]
struct HostLoad {
    load1: Vec<f64>,
    /// Fraction of all CPUs busy, per second.
    busy: Vec<f64>,
    loadavg_end: String,
}

impl Monitor {
    fn start() -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut load = HostLoad::default();
            let mut last = cpu_jiffies();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let now = cpu_jiffies();
                let (busy, total) = (now.0 - last.0, now.1 - last.1);
                if total > 0 {
                    load.busy.push(busy as f64 / total as f64);
                }
                last = now;
                if let Some(l1) = loadavg().split(' ').next().and_then(|v| v.parse().ok()) {
                    load.load1.push(l1);
                }
            }
            load.loadavg_end = loadavg();
            load
        });
        Monitor { stop, handle: Some(handle) }
    }

    fn stop(mut self) -> HostLoad {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// The report: Markdown and SVG plots.

fn write_report(plan: &Plan, r: &Results, dir: &Path) -> PathBuf {
    let date = utc_date(r.started);
    let base = format!("{date}-{}", r.machine.host);
    let svg = |name: &str| format!("{base}-{name}.svg");
    let floor = median_f64(r.floors.iter().map(Floor::per_sec).collect());
    let floor_cpu = median_f64(r.floors.iter().map(Floor::per_cpu_second).collect());
    let floor_range = floor_range(r, floor_cpu);
    let drops: Vec<&DropRow> = r.fleets.iter().flat_map(|f| &f.drops).collect();
    let mut md = String::new();
    let m = &r.machine;

    let _ = writeln!(md, "# doxm-gate benchmark report: {date}, host `{}`\n", m.host);
    if !plan.full {
        let _ = writeln!(
            md,
            "**Quick mode** (`cargo test --benches`, a debug build, bounded workloads): the \
             numbers only show that the report runs; they are not the gate's performance.\n"
        );
    }
    let _ = writeln!(
        md,
        "The real gate (`doxm-gate run`, {} build) over a veth pair between two network \
         namespaces on one {}-CPU virtual machine that other builds were using at the same time \
         (see [Machine](#machine)). Generated by `benches/report.rs`; reports live in \
         `benches/reports/` rather than a top-level `bench-reports/` because the repository's \
         top level is fixed (Cargo.toml, src/, benches/, fuzz/, tests/, README.md, .ci/).\n",
        if BIN.contains("/release/") { "release" } else { "debug" },
        m.cpus
    );

    // Headline figures.
    let _ = writeln!(md, "## Headline figures\n");
    if let Some(d) = drops.iter().find(|d| d.kind == Kind::NoEligible) {
        let pct_cpu = |d: &DropRow| 100.0 * d.per_cpu_second() / floor_cpu;
        let others: Vec<String> = drops
            .iter()
            .filter(|o| o.kind == Kind::NoEligible && o.fleet != d.fleet)
            .map(|o| format!("{} {:.0}%", short(o.fleet), pct_cpu(o)))
            .chain(
                drops
                    .iter()
                    .filter(|o| o.kind != Kind::NoEligible)
                    .map(|o| format!("{} {:.0}%", o.short_label(), pct_cpu(o))),
            )
            .collect();
        let sent_pct = drops
            .iter()
            .map(|o| 100.0 * o.processed as f64 / o.blast.sent.max(1) as f64)
            .fold(100.0, f64::min);
        let _ = writeln!(
            md,
            "- **Drop path, % of the floor**: per CPU-second the gate processes {} no-eligible \
             discoveries (`owned=FALSE`, N = {}) = **{:.0}% of the bare `recvmmsg` sink** \
             measured in the same run ({:.2} µs of gate CPU per datagram, all threads); {}. The \
             sink's own {} runs ranged {:.0}-{:.0}% of their median, so on this shared machine \
             the gate's drop path costs about what receiving alone costs. In rate the gate kept \
             up with the sender like the floor did ({}/s processed; {} of what was sent in every \
             blast): one `sendmmsg` sender is the bottleneck here, so the rates' own % of the \
             floor (table 1) only shows the sender's variation.",
            thousands(d.per_cpu_second()),
            short(d.fleet),
            pct_cpu(d),
            d.cpu_us_per_datagram(),
            others.join(", "),
            r.floors.len(),
            floor_range.0,
            floor_range.1,
            thousands(d.per_sec()),
            if sent_pct >= 99.95 { "all".to_owned() } else { format!("at least {sent_pct:.1}%") },
        );
    }
    if let Some(big) = r.fleets.last() {
        let n = short(big.fleet);
        let parts: Vec<String> = big
            .discoveries
            .iter()
            .map(|d| {
                format!(
                    "E = {}: last answer after {:.1} ms ({}/{} exact)",
                    thousands(d.eligible as f64),
                    d.last_ms(),
                    d.exact(),
                    d.reps.len()
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "- **Discovery in a fleet of {n}** (leisure 0, medians of {} discoveries): {}.",
            plan.reps,
            parts.join("; ")
        );
        if let Some(d) = big.discoveries.iter().max_by_key(|d| d.eligible) {
            let _ = writeln!(
                md,
                "  The largest: {}/s answers received, {:.1} ms of gate CPU per discovery \
                 ({:.1} µs per answer).",
                thousands(d.answers_per_sec()),
                d.gate_cpu_ms(),
                1e3 * d.gate_cpu_ms() / d.eligible as f64
            );
        }
        let exact: usize = r.fleets.iter().flat_map(|f| &f.discoveries).map(Discovery::exact).sum();
        let total: usize = r.fleets.iter().flat_map(|f| &f.discoveries).map(|d| d.reps.len()).sum();
        let _ = writeln!(
            md,
            "- **Exactly the eligible devices, once each**: {exact} of {total} discoveries \
             over all (N, E)."
        );
        let batch = full_batch_secs(r);
        let marginal = big.load.marginal_bytes_per_device().map_or(String::new(), |b| {
            format!(", {b:.0} bytes per device from the first batch's end to the last's")
        });
        let _ = writeln!(
            md,
            "- **Loading through the API**: {}{} devices in {:.1} s ({}/s); gate RSS growth \
             {:.0} bytes per device over the whole load{marginal}.",
            batch.map_or(String::new(), |s| format!(
                "a batch of 100,000 devices in **{s:.2} s** (mean of all such batches); "
            )),
            thousands(big.load.devices() as f64),
            big.load.secs(),
            thousands(big.load.devices() as f64 / big.load.secs().max(1e-9)),
            big.load.bytes_per_device(),
        );
    }
    if let Some(u) = r.updates.iter().find(|u| u.load && !u.durable) {
        let _ = writeln!(
            md,
            "- **Control updates under discovery load** ({} discoveries/s, {} answers each): \
             {}/s `PATCH`es with {} clients; update-to-visible p50 {} µs, p99 {} µs.",
            plan.discovery_rate,
            u.eligible,
            thousands(u.updates_per_sec()),
            plan.clients,
            counter(&u.visible, &["p50"]),
            counter(&u.visible, &["p99"]),
        );
    }
    let _ = writeln!(
        md,
        "- Host load: 1-minute load average {} at the start; {} during the run; host CPUs busy \
         {:.0}% on average (everything, this bench included).\n",
        m.loadavg_start,
        load_range(&r.host.load1),
        100.0 * mean(&r.host.busy),
    );

    // Machine.
    let _ = writeln!(md, "## Machine\n\n| | |\n|---|---|");
    let rows = [
        ("host", m.host.clone()),
        ("CPUs", format!("{} × {}", m.cpus, m.model)),
        ("memory", m.mem_total.clone()),
        ("kernel", format!("`{}`", m.kernel)),
        (
            "load average (1, 5, 15 min)",
            format!("start {}, end {}", m.loadavg_start, r.host.loadavg_end),
        ),
        ("1-minute load during the run", load_range(&r.host.load1)),
        (
            "host CPUs busy during the run",
            format!(
                "{:.0}% mean, {:.0}% max of {} CPUs (all processes)",
                100.0 * mean(&r.host.busy),
                100.0 * r.host.busy.iter().copied().fold(0.0, f64::max),
                m.cpus
            ),
        ),
        ("other processes busy at the start (1 s sample)", m.busy_at_start.clone()),
        ("net.core.rmem_max / wmem_max", format!("{} / {}", m.rmem_max, m.wmem_max)),
        ("gate binary", format!("`{BIN}`")),
        ("commit", m.commit.clone()),
        ("rustc", m.rustc.clone()),
        ("run time", format!("{:.0} s", r.secs)),
    ];
    for (k, v) in rows {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let argv: Vec<String> = std::env::args().collect();
    let _ = writeln!(
        md,
        "\n## Command\n\n`cargo bench --bench report` (as root; {} mode; the bench binary ran \
         as `{}`). The quick version runs under `cargo test --benches` and writes to \
         `target/tmp/report-quick/`.\n",
        if plan.full { "full" } else { "quick" },
        argv.join(" ")
    );
    let _ = writeln!(
        md,
        "Setup: namespaces `gate` and `obt` joined by a veth pair. The gate runs \
         `doxm-gate run --mode address --v6-prefix fd00:d0c::/64 --leisure-ms 0 \
         --answer-rate-bytes 1000000000000 --source-rate 1000000000 --source-burst 1000000000 \
         --max-pending-answers 100000000 --control {GATE_V4}:8683` (one IPv6 address per \
         device, routed to the gate namespace). Senders and API clients run in the `obt` \
         namespace. Discoveries are the IoTivity-Lite OBT's `NON GET /oic/sec/doxm?owned=FALSE` \
         to ff02::158 with a fresh Message ID and token each.\n"
    );

    // 1. Drop throughput.
    let _ = writeln!(
        md,
        "## 1. Drop throughput\n\n{} s blasts with `sendmmsg` (batches of {BATCH}) to ff02::158, \
         {} per workload (the row shows the blast with the median datagrams per CPU-second; \
         the range of all of them is in brackets). processed = the engine's `datagrams` \
         counter (`/v1/stats`, read before and after) / sending time. The floor is a \
         `recvmmsg` sink on the gate's own group socket that only counts, measured in the same \
         run before the gate runs and after each fleet; the figures used for % are the medians \
         of those runs. On a 2-CPU machine the sender, the kernel's veth delivery (done in the \
         sender's context) and the receiver share the CPUs, so the rate is bounded by the \
         sender; datagrams per receiver CPU-second is the receiver's own capacity. Receiver CPU \
         is over the sending time plus a {} ms drain.\n",
        plan.blast_secs,
        plan.blast_reps,
        DRAIN.as_millis(),
    );
    let _ = writeln!(
        md,
        "| workload | sent/s | sender CPU busy | processed/s | processed / sent | % of floor | receiver CPU busy | receiver CPU µs / datagram | datagrams per receiver CPU-second | % of floor per CPU-second | datagrams (engine / driver) | rcvbuf drops | backlog drops | answers |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let busy = |cpu: f64, b: &Blast| 100.0 * cpu / (b.secs + DRAIN.as_secs_f64());
    for f in &r.floors {
        let _ = writeln!(
            md,
            "| floor: `recvmmsg` sink ({}) | {} | {:.0}% | {} | {:.1}% | (floor) | {:.0}% | {:.2} | {} | (floor) | {} | {} | {} | - |",
            f.label,
            thousands(f.blast.per_sec()),
            100.0 * f.blast.cpu / f.blast.secs,
            thousands(f.per_sec()),
            100.0 * f.processed as f64 / f.blast.sent.max(1) as f64,
            busy(f.cpu, &f.blast),
            1e6 * f.cpu / f.processed.max(1) as f64,
            thousands(f.per_cpu_second()),
            thousands(f.processed as f64),
            f.kernel.rcvbuf_errors,
            f.kernel.backlog_drops,
        );
    }
    for d in &drops {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0}% | {} | {:.1}% | {:.0}% | {:.0}% | {:.2} | {} | {} | {} / {} | {} | {} | {} |",
            d.label(),
            thousands(d.blast.per_sec()),
            100.0 * d.blast.cpu / d.blast.secs,
            thousands(d.per_sec()),
            100.0 * d.processed as f64 / d.blast.sent.max(1) as f64,
            100.0 * d.per_sec() / floor,
            busy(d.cpu, &d.blast),
            d.cpu_us_per_datagram(),
            thousands(d.per_cpu_second()),
            pct_range(d, floor_cpu),
            thousands(d.processed as f64),
            thousands(d.received as f64),
            d.kernel.rcvbuf_errors,
            d.kernel.backlog_drops,
            d.answers,
        );
    }
    let errors: Vec<String> = r
        .floors
        .iter()
        .map(|f| &f.blast)
        .chain(drops.iter().map(|d| &d.blast))
        .filter(|b| !b.errors.is_empty())
        .map(|b| b.errors.clone())
        .collect();
    let _ = writeln!(
        md,
        "\nFloor used for %: {}/s and {} per CPU-second (medians of the {} sink runs). Sender \
         errors: {}.\n\n![% of floor]({})\n\n![throughput vs fleet size]({})\n",
        thousands(floor),
        thousands(floor_cpu),
        r.floors.len(),
        if errors.is_empty() { "none".to_owned() } else { errors.join("; ") },
        svg("percent-of-floor"),
        svg("throughput-vs-fleet"),
    );

    // 2. Loading and discovery.
    let _ = writeln!(
        md,
        "## 2. Fleets loaded through the control API\n\n`POST /v1/devices:batch` with \
         `{{\"upserts\":[...]}}`, {} devices per call, from the `obt` namespace (ureq). Each \
         device: two device types, two endpoints at a bridge, RFNOP (owned) until made \
         eligible. Seconds are the client's, request body built beforehand; the store is in \
         memory here (no `--state-dir`). Bytes/device: the gate's RSS growth over the whole \
         load / N, which for small N is mostly the one-time cost of parsing a batch body; and, \
         with several batches, the growth from the end of the first batch to the end of the \
         last / the devices of the later batches (the fleet's own cost).\n",
        thousands(UPSERT_BATCH as f64)
    );
    let _ = writeln!(
        md,
        "| N | batches | body per batch | load time | devices/s | 100k batch (mean) | gate CPU during load | RSS before → after | bytes/device: whole load / after the first batch |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for f in &r.fleets {
        let l = &f.load;
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} MB | {:.2} s | {} | {} | {:.2} s | {:.0} → {:.0} MB | {:.0} / {} |",
            thousands(f.fleet as f64),
            l.batches.len(),
            l.batches.iter().map(|b| b.1).max().unwrap_or(0) as f64 / 1e6,
            l.secs(),
            thousands(l.devices() as f64 / l.secs().max(1e-9)),
            l.full_batch_secs().map_or("-".to_owned(), |s| format!("{s:.2} s")),
            l.cpu,
            l.rss_before as f64 / 1e6,
            l.rss_after as f64 / 1e6,
            l.bytes_per_device(),
            l.marginal_bytes_per_device().map_or("-".to_owned(), |b| format!("{b:.0}")),
        );
    }
    let _ = writeln!(
        md,
        "\n## 3. Discovery: E eligible of N devices\n\nAfter the load, devices 1..=E are made \
         eligible with one batch of patches (RFOTM, unowned), then the probe sends {} \
         discoveries one at a time and collects every answer (until E arrived plus 300 ms, or \
         3 s of silence). Times are from the probe's send to the first / last answer \
         (medians); answers/s = E / time to last answer; exact = every eligible device \
         answered once, from its own address, and nothing else did. Gate CPU per discovery: the \
         gate's CPU time (all threads, from /proc) read by the probe just before its send and \
         again when the E-th answer arrived (median).\n",
        plan.reps
    );
    let _ = writeln!(
        md,
        "| N | E | patch batch | first answer | last answer (min / median / max) | answers/s | exact | gate CPU per discovery | gate CPU per answer | probe rcvbuf drops |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for f in &r.fleets {
        for d in &f.discoveries {
            let lasts: Vec<u64> = d.reps.iter().map(|r| r.last_us).collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} in {:.1} ms | {:.2} ms | {:.2} / {:.2} / {:.2} ms | {} | {}/{} | {:.2} ms | {:.1} µs | {} |",
                thousands(f.fleet as f64),
                thousands(d.eligible as f64),
                thousands(d.patched as f64),
                1e3 * d.patch_secs,
                d.first_ms(),
                min(&lasts) as f64 / 1e3,
                d.last_ms(),
                lasts.iter().copied().max().unwrap_or(0) as f64 / 1e3,
                thousands(d.answers_per_sec()),
                d.exact(),
                d.reps.len(),
                d.gate_cpu_ms(),
                1e3 * d.gate_cpu_ms() / d.eligible as f64,
                d.reps.iter().map(|r| r.rcvbuf_errors).sum::<u64>(),
            );
        }
    }
    for f in &r.fleets {
        for d in &f.discoveries {
            for (i, rep) in d.reps.iter().enumerate().filter(|(_, r)| !r.exact(d.eligible)) {
                let _ = writeln!(
                    md,
                    "\nN = {}, E = {}, discovery {i}: {} answers, {} distinct sources, {} \
                     distinct eligible UUIDs, {} others, {} probe rcvbuf drops.",
                    f.fleet,
                    d.eligible,
                    rep.answers,
                    rep.sources,
                    rep.uuids,
                    rep.wrong,
                    rep.rcvbuf_errors
                );
            }
        }
    }
    let failed: u64 = r.fleets.iter().map(|f| f.send_failed).sum();
    let _ = writeln!(
        md,
        "\nGate send failures over all fleets: {failed}.\n\n![time to last answer vs E]({})\n\n\
         ![answers per second vs fleet size]({})\n",
        svg("last-answer-vs-e"),
        svg("answers-vs-fleet"),
    );

    // 4. Updates.
    let _ = writeln!(
        md,
        "## 4. Control updates under discovery load\n\nA fleet of {} devices ({} eligible) from \
         a fleet file. {} clients (ureq, keep-alive) `PATCH /v1/devices/{{uuid}}` for {} s: \
         each takes an eligible device, opens its DOC (`{{\"doc_open\":true}}`, no longer \
         eligible), then closes it (`{{\"doc_open\":false}}`), so at most {} DOCs are open at any \
         moment. Under load, a steady sender sends {} discoveries/s for the whole time and \
         checks every answer: fewer than E answers to a discovery is expected when a DOC was \
         open as it arrived, or opened before that device's answer left (the engine re-checks \
         each device at send time and cancels the answer: \"cancelled\"); an answer from any \
         other device, or a second one from the same device, would be a bug. update-to-visible is the API's own histogram \
         (`/v1/stats`, `update_to_visible_us`: from receiving a change to the data path seeing \
         it; the journal's fsync comes after that and is in the client's latency only). The \
         journaled run writes to `--state-dir` on the same disk as `/tmp`; its histogram also \
         holds the one sample of the fleet file's seed.\n",
        thousands(plan.update_fleet as f64),
        plan.update_eligible,
        plan.clients,
        plan.update_secs,
        plan.clients,
        plan.discovery_rate,
    );
    let _ = writeln!(
        md,
        "| run | updates/s | failed | client latency p50 / p99 / max | update-to-visible p50 / p90 / p99 / p99.9 / max (count) | gate CPU busy | discoveries | answers per discovery (min / median / max) | not eligible / duplicate answers | time to last answer p50 / p99 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for u in &r.updates {
        let v = &u.visible;
        let p = &u.patcher;
        let steady = u.steady.as_ref().map_or(
            ["-".to_owned(), "-".to_owned(), "-".to_owned(), "-".to_owned()],
            |s| {
                [
                    format!(
                        "{} ({}/s)",
                        number(s, "discoveries"),
                        thousands(float(s, "answers_per_sec"))
                    ),
                    format!(
                        "{} / {} / {} of {}; {} cancelled",
                        number(s, "min_answers"),
                        number(s, "median_answers"),
                        number(s, "max_answers"),
                        u.eligible,
                        u.cancelled,
                    ),
                    format!("{} / {}", number(s, "wrong"), number(s, "duplicates")),
                    format!(
                        "{:.2} / {:.2} ms",
                        float(s, "last_p50_us") / 1e3,
                        float(s, "last_p99_us") / 1e3
                    ),
                ]
            },
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} / {} / {} µs | {} / {} / {} / {} / {} µs ({}) | {:.0}% | {} | {} | {} | {} |",
            u.label(),
            thousands(u.updates_per_sec()),
            number(p, "failed"),
            number(p, "p50_us"),
            number(p, "p99_us"),
            number(p, "max_us"),
            counter(v, &["p50"]),
            counter(v, &["p90"]),
            counter(v, &["p99"]),
            counter(v, &["p999"]),
            counter(v, &["max"]),
            counter(v, &["count"]),
            100.0 * u.gate_cpu / u.wall.max(1e-9),
            steady[0],
            steady[1],
            steady[2],
            steady[3],
        );
    }
    for u in r.updates.iter().filter(|u| number(&u.patcher, "slow") > 0) {
        let records = number(&u.patcher, "updates") + 1;
        let _ = writeln!(
            md,
            "\n{}: {} `PATCH`es took over 100 ms (max {:.0} ms).{}",
            u.label(),
            number(&u.patcher, "slow"),
            number(&u.patcher, "max_us") as f64 / 1e3,
            if u.durable {
                format!(
                    " The store writes a snapshot of the whole fleet every 10,000 journal records \
                     while it holds its lock (`maybe_snapshot` in src/control/store.rs): about \
                     {} snapshots of {} devices in this run, and every call that arrives \
                     meanwhile waits for it.",
                    records / 10_000,
                    thousands(plan.update_fleet as f64)
                )
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(md, "\n![update latency percentiles]({})\n", svg("update-latency"));
    let _ = writeln!(
        md,
        "## Notes\n\n\
         - Everything (gate, senders, probe, API clients, the kernel's veth work) shares the \
         same {} CPUs, and other builds were running (load above). Rates are therefore lower \
         bounds; the figures per CPU-second, against the floor measured in the same run, are \
         the comparable ones.\n\
         - The drop rate is bounded by the sender: one `sendmmsg` thread, and the veth delivers \
         each datagram into the receiver's socket in the sender's context.\n\
         - RSS per device includes allocator slack left by parsing the batch bodies (up to \
         ~{} MB each).\n",
        m.cpus,
        r.fleets.iter().flat_map(|f| &f.load.batches).map(|b| b.1).max().unwrap_or(0) / 1_000_000,
    );

    // Plots.
    let plots: [(&str, PlotFn); 5] = [
        ("percent-of-floor", plot_floor),
        ("throughput-vs-fleet", plot_throughput),
        ("last-answer-vs-e", plot_last_answer),
        ("answers-vs-fleet", plot_answers),
        ("update-latency", plot_updates),
    ];
    for (name, plot) in plots {
        let path = dir.join(svg(name));
        if let Err(e) = plot(&path, r, floor, floor_cpu) {
            eprintln!("plot {}: {e}", path.display());
        }
    }
    let path = dir.join(format!("{base}.md"));
    std::fs::write(&path, md).expect("write the report");
    path
}

type PlotFn = fn(&Path, &Results, f64, f64) -> Result<(), Box<dyn std::error::Error>>;

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Bars: % of the floor (rate) and % of the floor per CPU-second, per drop workload.
fn plot_floor(path: &Path, r: &Results, floor: f64, floor_cpu: f64) -> PlotResult {
    let drops: Vec<&DropRow> = r.fleets.iter().flat_map(|f| &f.drops).collect();
    let bars: Vec<(String, f64, f64)> = drops
        .iter()
        .map(|d| {
            (d.short_label(), 100.0 * d.per_sec() / floor, 100.0 * d.per_cpu_second() / floor_cpu)
        })
        .collect();
    let (lo, hi) = floor_range(r, floor_cpu);
    let top = bars.iter().map(|b| b.1.max(b.2)).fold(hi.max(100.0), f64::max) * 1.3;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Drop throughput, % of the recvmmsg floor (same run)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..bars.len() as f64 - 0.5, 0f64..top)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("% of floor")
        .draw()?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64;
            Rectangle::new([(x - 0.38, 0.0), (x - 0.02, b.1)], COLORS[0].filled())
        }))?
        .label("datagrams/s vs the floor's")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], COLORS[0].filled()));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64;
            Rectangle::new([(x + 0.02, 0.0), (x + 0.38, b.2)], COLORS[1].filled())
        }))?
        .label("datagrams per CPU-second vs the floor's")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], COLORS[1].filled()));
    let right = bars.len() as f64 - 0.5;
    chart
        .draw_series(LineSeries::new([(-0.5, 100.0), (right, 100.0)], BLACK.stroke_width(1)))?
        .label("the floor (median of its runs)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.stroke_width(1)));
    let grey = RGBColor(140, 140, 140);
    for (i, y) in [lo, hi].into_iter().enumerate() {
        let series =
            chart.draw_series(DashedLineSeries::new([(-0.5, y), (right, y)], 6, 4, grey.into()))?;
        if i == 0 {
            series
                .label("lowest and highest floor run, per CPU-second")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], grey));
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

fn fleet_axis(r: &Results) -> std::ops::Range<f64> {
    let lo = r.fleets.iter().map(|f| f.fleet).min().unwrap_or(1_000) as f64;
    let hi = r.fleets.iter().map(|f| f.fleet).max().unwrap_or(1_000_000) as f64;
    lo / 2.0..hi * 2.0
}

/// No-eligible datagrams/s processed vs fleet size, with the sender's rate and the floor.
fn plot_throughput(path: &Path, r: &Results, floor: f64, _: f64) -> PlotResult {
    let points: Vec<(f64, f64, f64)> = r
        .fleets
        .iter()
        .flat_map(|f| f.drops.iter().filter(|d| d.kind == Kind::NoEligible))
        .map(|d| (d.fleet as f64, d.per_sec(), d.blast.per_sec()))
        .collect();
    let top = points.iter().map(|p| p.1.max(p.2)).fold(floor, f64::max) * 1.2;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let xr = fleet_axis(r);
    let mut chart = ChartBuilder::on(&root)
        .caption("Drop throughput vs fleet size (owned=FALSE, 0 eligible)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(xr.clone().log_scale(), 0f64..top)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("devices in the fleet (N)")
        .y_desc("datagrams/s")
        .x_label_formatter(&|v| short(*v as usize))
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;
    chart
        .draw_series(
            LineSeries::new(points.iter().map(|p| (p.0, p.1)), COLORS[0].stroke_width(2))
                .point_size(4),
        )?
        .label("processed by the gate")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], COLORS[0].stroke_width(2)));
    chart
        .draw_series(
            LineSeries::new(points.iter().map(|p| (p.0, p.2)), COLORS[1].stroke_width(1))
                .point_size(3),
        )?
        .label("sent")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], COLORS[1].stroke_width(1)));
    chart
        .draw_series(LineSeries::new([(xr.start, floor), (xr.end, floor)], BLACK.stroke_width(1)))?
        .label("recvmmsg floor (mean)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.stroke_width(1)));
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// Median time to the last answer vs E, one line per N (log-log).
fn plot_last_answer(path: &Path, r: &Results, _: f64, _: f64) -> PlotResult {
    let all: Vec<f64> =
        r.fleets.iter().flat_map(|f| &f.discoveries).map(|d| d.last_ms().max(0.01)).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(1.0) / 2.0;
    let hi = all.iter().copied().fold(1.0, f64::max) * 2.0;
    let emax = r.fleets.iter().flat_map(|f| &f.discoveries).map(|d| d.eligible).max().unwrap_or(1);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Time to the last answer vs eligible devices (leisure 0)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0.5f64..emax as f64 * 2.0).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("eligible devices (E)")
        .y_desc("ms (median)")
        .x_label_formatter(&|v| short(*v as usize))
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;
    for (i, f) in r.fleets.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(
                LineSeries::new(
                    f.discoveries.iter().map(|d| (d.eligible as f64, d.last_ms().max(0.01))),
                    c.stroke_width(2),
                )
                .point_size(4),
            )?
            .label(format!("N = {}", short(f.fleet)))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

/// Answers/s (E / time to last answer) vs fleet size, one line per E.
fn plot_answers(path: &Path, r: &Results, _: f64, _: f64) -> PlotResult {
    let mut es: Vec<usize> =
        r.fleets.iter().flat_map(|f| &f.discoveries).map(|d| d.eligible).collect();
    es.sort_unstable();
    es.dedup();
    let top = r
        .fleets
        .iter()
        .flat_map(|f| &f.discoveries)
        .map(Discovery::answers_per_sec)
        .fold(1.0, f64::max)
        * 2.0;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Answers per second of one discovery vs fleet size", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(fleet_axis(r).log_scale(), (1f64..top).log_scale())?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("devices in the fleet (N)")
        .y_desc("answers/s (median)")
        .x_label_formatter(&|v| short(*v as usize))
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;
    for (i, &e) in es.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = r
            .fleets
            .iter()
            .filter_map(|f| {
                let d = f.discoveries.iter().find(|d| d.eligible == e)?;
                Some((f.fleet as f64, d.answers_per_sec().max(1.0)))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)).point_size(4))?
            .label(format!("E = {}", thousands(e as f64)))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present()?;
    Ok(())
}

/// The API's update-to-visible percentiles, one line per update run (log y).
fn plot_updates(path: &Path, r: &Results, _: f64, _: f64) -> PlotResult {
    let keys = ["p50", "p90", "p99", "p999", "max"];
    let values: Vec<Vec<f64>> = r
        .updates
        .iter()
        .map(|u| keys.iter().map(|k| counter(&u.visible, &[k]).max(1) as f64).collect())
        .collect();
    let hi = values.iter().flatten().copied().fold(10.0, f64::max) * 3.0;
    let lo = values.iter().flatten().copied().fold(f64::INFINITY, f64::min).min(10.0) / 2.0;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Control updates: update-to-visible percentiles (API)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3f64..keys.len() as f64 - 0.7, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(keys.len())
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                keys.get(i as usize).map_or(String::new(), |k| (*k).to_owned())
            } else {
                String::new()
            }
        })
        .light_line_style(TRANSPARENT)
        .y_desc("µs")
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;
    for (i, (u, v)) in r.updates.iter().zip(&values).enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(
                LineSeries::new(
                    v.iter().enumerate().map(|(j, &y)| (j as f64, y)),
                    c.stroke_width(2),
                )
                .point_size(4),
            )?
            .label(u.label())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

/// 1,000 -> "1k", 1,000,000 -> "1M".
fn short(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// "89% (85-92%)": a drop workload's datagrams per CPU-second as % of the floor's, with the
/// range over its blasts.
fn pct_range(d: &DropRow, floor_cpu: f64) -> String {
    let pct = |v: f64| 100.0 * v / floor_cpu;
    let (lo, hi) = (d.runs.first().copied(), d.runs.last().copied());
    match (lo, hi) {
        (Some(lo), Some(hi)) if d.runs.len() > 1 => {
            format!("{:.0}% ({:.0}-{:.0}%)", pct(d.per_cpu_second()), pct(lo), pct(hi))
        }
        _ => format!("{:.0}%", pct(d.per_cpu_second())),
    }
}

/// The lowest and highest of the sink's datagrams per CPU-second, as % of their median.
fn floor_range(r: &Results, floor_cpu: f64) -> (f64, f64) {
    let pct: Vec<f64> = r.floors.iter().map(|f| 100.0 * f.per_cpu_second() / floor_cpu).collect();
    (pct.iter().copied().fold(f64::INFINITY, f64::min), pct.iter().copied().fold(0.0, f64::max))
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn load_range(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".to_owned();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    format!("min {lo:.2}, mean {:.2}, max {hi:.2}", mean(v))
}

/// YYYY-MM-DD (UTC) of a time (days-from-civil, inverted; Howard Hinnant's algorithm).
fn utc_date(t: SystemTime) -> String {
    let days = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

// ---------------------------------------------------------------------------------------------
// This bench's roles (OBT namespace), run by `ip netns exec` with DOXM_BENCH_ROLE set.

fn report_role(role: &str) -> Option<i32> {
    match role {
        "api" => Some(role_api()),
        "load" => Some(role_load()),
        "steady" => Some(role_steady()),
        "patcher" => Some(role_patcher()),
        _ => None,
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build()
}

/// Status and body of a call, whatever the status.
fn response(result: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match result {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// One call: prints `status=S secs=T`, then the body.
fn role_api() -> i32 {
    let url = format!("http://{}{}", env("DOXM_BENCH_API"), env("DOXM_BENCH_PATH"));
    let body = std::env::var_os("DOXM_BENCH_BODY").map(|p| std::fs::read(p).expect("body file"));
    let request =
        agent().request(&env("DOXM_BENCH_METHOD"), &url).set("Content-Type", "application/json");
    let t0 = Instant::now();
    let result = match &body {
        Some(bytes) => request.send_bytes(bytes),
        None => request.call(),
    };
    let (status, text) = response(result);
    println!("status={status} secs={:.6}\n{text}", t0.elapsed().as_secs_f64());
    0
}

/// Devices 1..=DOXM_BENCH_DEVICES in batches of DOXM_BENCH_BATCH upserts; one line per batch.
fn role_load() -> i32 {
    #[derive(serde::Serialize)]
    struct Upserts {
        upserts: Vec<DeviceEntry>,
    }
    let url = format!("http://{}/v1/devices:batch", env("DOXM_BENCH_API"));
    let devices: usize = env("DOXM_BENCH_DEVICES").parse().expect("DOXM_BENCH_DEVICES");
    let batch: usize = env("DOXM_BENCH_BATCH").parse().expect("DOXM_BENCH_BATCH");
    // The same pid namespace: the gate's /proc entry is visible from here.
    let gate: u32 = env("DOXM_BENCH_GATE_PID").parse().expect("DOXM_BENCH_GATE_PID");
    let agent = agent();
    let mut start = 1;
    while start <= devices {
        let end = (start + batch - 1).min(devices);
        let body = Upserts { upserts: (start..=end).map(|i| device(i, false)).collect() };
        let bytes = serde_json::to_vec(&body).expect("batch JSON");
        drop(body);
        let t0 = Instant::now();
        let (status, text) =
            response(agent.post(&url).set("Content-Type", "application/json").send_bytes(&bytes));
        let secs = t0.elapsed().as_secs_f64();
        if status != 200 {
            eprintln!("batch {start}..={end}: status {status}: {text}");
            return 1;
        }
        println!(
            "batch devices={} bytes={} secs={secs:.6} gate_rss={}",
            end + 1 - start,
            bytes.len(),
            rss(gate)
        );
        start = end + 1;
    }
    0
}

/// One discovery in flight.
#[derive(Default)]
struct InFlight {
    sent: Option<Instant>,
    answers: u64,
    last: Duration,
    seen: HashSet<u128>,
    duplicates: u64,
    wrong: u64,
}

/// DOXM_BENCH_RATE discoveries/s for DOXM_BENCH_SECS, every answer matched to its discovery
/// by token and checked (devices 1..=DOXM_BENCH_EXPECT only, once each); then 500 ms for the
/// last answers.
fn role_steady() -> i32 {
    let rate: f64 = env("DOXM_BENCH_RATE").parse().expect("DOXM_BENCH_RATE");
    let secs: f64 = env("DOXM_BENCH_SECS").parse().expect("DOXM_BENCH_SECS");
    let expect: u128 = env("DOXM_BENCH_EXPECT").parse().expect("DOXM_BENCH_EXPECT");
    let index = interface(&env("DOXM_BENCH_IFACE")).index;
    let socket = sender_socket(index, true);
    let destination: SocketAddr = SocketAddrV6::new(GROUP, PORT, 0, index).into();
    let BatchReader { socket, mut poll, mut events, mut bufs, mut meta } = BatchReader::new(socket);
    let drops0 = snmp6("").get("Udp6RcvbufErrors").copied().unwrap_or(0);
    let salt = u64::from(std::process::id()) << 32;
    let mut flights: HashMap<u64, InFlight> = HashMap::new();
    let (mut foreign, mut send_errors, mut seq) = (0u64, 0u64, 0u64);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let stop_sending = start + Duration::from_secs_f64(secs);
    let end = stop_sending + Duration::from_millis(500);
    let mut next = start;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        while next <= now && next < stop_sending {
            seq += 1;
            let token = salt | seq;
            let request = discovery("FALSE", token as u16, &token.to_be_bytes());
            match socket.send_to(&request, destination) {
                Ok(_) => {
                    flights.insert(
                        token,
                        InFlight { sent: Some(Instant::now()), ..InFlight::default() },
                    );
                }
                Err(_) => send_errors += 1,
            }
            next += interval;
        }
        let wake = if next < stop_sending { next } else { end };
        let timeout = wake.saturating_duration_since(Instant::now()).min(Duration::from_millis(20));
        let _ = poll.poll(&mut events, Some(timeout));
        loop {
            let got = match sys::recv_batch(&socket, &mut bufs, &mut meta) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let at = Instant::now();
            for i in 0..got {
                let Ok(msg) = Message::parse(&bufs[i][..meta[i].len]) else {
                    foreign += 1;
                    continue;
                };
                let token = <[u8; 8]>::try_from(msg.token()).map(u64::from_be_bytes);
                let Some(flight) = token.ok().and_then(|t| flights.get_mut(&t)) else {
                    foreign += 1;
                    continue;
                };
                if msg.code() != Code::CONTENT {
                    foreign += 1;
                    continue;
                }
                flight.answers += 1;
                flight.last = at.duration_since(flight.sent.unwrap_or(start));
                match device_uuid(msg.payload()).map(|u| u.as_u128()) {
                    Some(v) if v & !LOW == ELIGIBLE && (1..=expect).contains(&(v & LOW)) => {
                        if !flight.seen.insert(v) {
                            flight.duplicates += 1;
                        }
                    }
                    _ => flight.wrong += 1,
                }
            }
        }
    }
    let mut counts: Vec<u64> = flights.values().map(|f| f.answers).collect();
    counts.sort_unstable();
    let mut last = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for f in flights.values().filter(|f| f.answers > 0) {
        let _ = last.record((f.last.as_micros() as u64).max(1));
    }
    let total: u64 = counts.iter().sum();
    let drops = snmp6("").get("Udp6RcvbufErrors").copied().unwrap_or(0) - drops0;
    println!(
        "discoveries={} answers={total} answers_per_sec={:.1} min_answers={} median_answers={} \
         max_answers={} unanswered={} wrong={} duplicates={} foreign={foreign} \
         send_errors={send_errors} last_p50_us={} last_p99_us={} last_max_us={} rcvbuf_errors={drops}",
        flights.len(),
        total as f64 / secs,
        counts.first().copied().unwrap_or(0),
        median(&counts),
        counts.last().copied().unwrap_or(0),
        counts.iter().filter(|&&c| c == 0).count(),
        flights.values().map(|f| f.wrong).sum::<u64>(),
        flights.values().map(|f| f.duplicates).sum::<u64>(),
        last.value_at_quantile(0.5),
        last.value_at_quantile(0.99),
        last.max(),
    );
    0
}

/// DOXM_BENCH_CLIENTS threads `PATCH` devices 1..=DOXM_BENCH_EXPECT for DOXM_BENCH_SECS: a DOC
/// opens, then closes (so at most one device per client is out of the answer set at a time).
fn role_patcher() -> i32 {
    let api = env("DOXM_BENCH_API");
    let clients: usize = env("DOXM_BENCH_CLIENTS").parse().expect("DOXM_BENCH_CLIENTS");
    let secs: f64 = env("DOXM_BENCH_SECS").parse().expect("DOXM_BENCH_SECS");
    let devices: usize = env("DOXM_BENCH_EXPECT").parse().expect("DOXM_BENCH_EXPECT");
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let api = api.clone();
            std::thread::spawn(move || {
                let agent = agent();
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let (mut ok, mut failed, mut slow) = (0u64, 0u64, 0u64);
                let mut i = c % devices.max(1);
                while Instant::now() < deadline {
                    let uuid = Uuid::from_u128(ELIGIBLE | (i + 1) as u128);
                    let url = format!("http://{api}/v1/devices/{uuid}");
                    for body in [r#"{"doc_open":true}"#, r#"{"doc_open":false}"#] {
                        let t = Instant::now();
                        let result = agent
                            .request("PATCH", &url)
                            .set("Content-Type", "application/json")
                            .send_string(body);
                        let us = t.elapsed().as_micros() as u64;
                        match response(result) {
                            (200, _) => {
                                ok += 1;
                                slow += u64::from(us > 100_000);
                                let _ = hist.record(us.max(1));
                            }
                            (status, text) => {
                                failed += 1;
                                if failed <= 3 {
                                    eprintln!("PATCH {uuid}: {status} {text}");
                                }
                            }
                        }
                    }
                    i = (i + clients) % devices.max(1);
                }
                (ok, failed, slow, hist)
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut ok, mut failed, mut slow) = (0u64, 0u64, 0u64);
    for t in threads {
        let (o, f, s, h) = t.join().expect("client thread");
        ok += o;
        failed += f;
        slow += s;
        let _ = hist.add(&h);
    }
    println!(
        "updates={ok} failed={failed} slow={slow} secs={:.6} p50_us={} p99_us={} max_us={}",
        t0.elapsed().as_secs_f64(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max(),
    );
    0
}
