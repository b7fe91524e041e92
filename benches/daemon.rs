//! The daemon over a veth pair: how many junk or ineligible multicast datagrams per second the
//! real gate processes (against a trivial `recvmmsg` sink measured in the same run, the
//! "floor"), and the time to the last answer of one discovery for E = 100 and E = 10,000
//! eligible devices with leisure 0.
//!
//! Run: `cargo bench --bench daemon` (as root: it creates two network namespaces joined by a
//! veth pair, like `tests/netns.rs`). Not root: prints `SKIP` and exits 0 (fails under
//! `DOXM_GATE_REQUIRE_ALL=1`). Under
//! `cargo test --benches` (no `--bench` argument) every measurement runs in a short version so
//! CI stays fast.
//!
//! The bench binary plays several roles. By default it is the orchestrator: it builds the lab,
//! starts and stops the gate (one gate process per workload, so that the counters the gate logs
//! on SIGTERM, `stopped datagrams=N ...`, belong to that workload alone), and prints the report.
//! Re-executed under `ip netns exec` with `DOXM_BENCH_ROLE` set, it is the `sink` (the floor),
//! the `blast` sender or the discovery `probe` of the lab shared with the report generator
//! (`doxm_gate::testing::lab::load`, which describes them). `cargo bench --bench report` runs these
//! workloads and more (fleets up to 1,000,000 devices loaded through the control API, control
//! updates under load) and writes the Markdown report with plots.

use doxm_gate::testing::lab::load as lab;

/// The gate under test (cargo builds it for benches; the lab finds the same file).
const BIN: &str = env!("CARGO_BIN_EXE_doxm-gate");

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use doxm_gate::control::fleet_file::{DeviceEntry, FleetFile};
use doxm_gate::io::sys::BATCH;
use lab::{
    common_role, cpu_model, cpu_seconds, median, min, ms, number, remove_stale_labs,
    stopped_fields, thousands, Blast, Kernel, Kind, Lab, Rep, SinkRun, DRAIN, ELIGIBLE, ROLE,
};
use uuid::Uuid;

/// Eligible device `i` (1..=E) is `ELIGIBLE | i`; every other device is `OTHER | i`.
const OTHER: u128 = 0xbe0c_0000_0000_4000_8000_0000_0000_0000;

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let code = common_role(&role).unwrap_or_else(|| {
            eprintln!("unknown {ROLE} {role}");
            2
        });
        std::process::exit(code);
    }
    let full = std::env::args().any(|a| a == "--bench");
    if let Some(reason) = lab::lab_unavailable() {
        lab::skip(&format!("{reason}; run `sudo cargo bench --bench daemon`"));
        return;
    }
    remove_stale_labs();
    let plan = if full {
        Plan { blast_secs: 5.0, reps: 7, floors: 2, sizes: &[100, 10_000] }
    } else {
        Plan { blast_secs: 0.5, reps: 1, floors: 1, sizes: &[100, 10_000] }
    };
    run(&plan, full);
}

// ---------------------------------------------------------------------------------------------
// The orchestrator.

struct Plan {
    blast_secs: f64,
    reps: usize,
    floors: usize,
    sizes: &'static [usize],
}

fn run(plan: &Plan, full: bool) {
    let lab = lab::bench_lab();
    let header = environment();
    eprintln!(
        "daemon bench ({} mode): gate {BIN}",
        if full { "full" } else { "quick, no --bench argument" }
    );

    // 1. Junk and ineligible throughput, with the floor before and after.
    let junk_fleet = std::path::PathBuf::from(lab.write_fleet_as("junk", &fleet(0, 1_000)));
    let mut rows = Vec::new();
    let mut floors = vec![floor_run(&lab, plan.blast_secs)];
    for kind in [Kind::Malformed, Kind::OwnedTrue, Kind::NoEligible] {
        rows.push(gate_run(&lab, &junk_fleet, kind, plan.blast_secs));
    }
    // The floor again after the gate workloads: the machine is shared, so bracket them.
    for _ in 1..plan.floors {
        floors.push(floor_run(&lab, plan.blast_secs));
    }

    // 2. Time to last answer.
    let mut answers = Vec::new();
    for &e in plan.sizes {
        answers.push(answer_run(&lab, e, plan.reps));
    }

    report(&header, plan, full, &floors, &rows, &answers);
    drop(lab);
}

/// One throughput workload (the gate's or the floor's).
struct Row {
    label: String,
    blast: Blast,
    /// Datagrams the receiver handled (the gate's `stopped datagrams=`, or the sink's count).
    processed: u64,
    /// CPU seconds the receiver used during the workload.
    cpu: f64,
    kernel: Kernel,
    /// Gate only: answers it sent (must be 0) and its send failures.
    answers_sent: Option<u64>,
}

impl Row {
    fn processed_per_sec(&self) -> f64 {
        self.processed as f64 / self.blast.secs
    }

    fn per_cpu_second(&self) -> f64 {
        self.processed as f64 / self.cpu.max(1e-9)
    }
}

fn floor_run(lab: &Lab, secs: f64) -> Row {
    let SinkRun { blast, processed, cpu, kernel } = lab.sink_run(secs);
    Row {
        label: "floor: recvmmsg sink (same datagrams as no-eligible)".to_owned(),
        blast,
        processed,
        cpu,
        kernel,
        answers_sent: None,
    }
}

fn gate_run(lab: &Lab, fleet: &Path, kind: Kind, secs: f64) -> Row {
    let mut gate = lab.bench_gate(&gate_args(fleet));
    let (blast, cpu, kernel) = lab.timed_blast(gate.child.id(), kind, secs);
    let log = gate.stop();
    let stopped = stopped_fields(&log);
    Row {
        label: kind.describe().to_owned(),
        blast,
        processed: number(&stopped, "datagrams"),
        cpu,
        kernel,
        answers_sent: Some(number(&stopped, "answers_sent") + number(&stopped, "responses_sent")),
    }
}

/// One fleet size: the probe's repetitions and the gate's view.
struct Answers {
    eligible: usize,
    fleet: usize,
    reps: Vec<Rep>,
    gate_answers_sent: u64,
    gate_send_failed: u64,
    gate_cpu: f64,
    load_secs: f64,
}

fn answer_run(lab: &Lab, eligible: usize, reps: usize) -> Answers {
    let others = (eligible / 10).max(10);
    let file = fleet(eligible, others);
    let size = file.device.len();
    let path = std::path::PathBuf::from(lab.write_fleet_as(&format!("e{eligible}"), &file));
    let started = Instant::now();
    let mut gate = lab.bench_gate(&gate_args(&path));
    let load_secs = started.elapsed().as_secs_f64();
    let pid = gate.child.id();
    let cpu0 = cpu_seconds(pid);
    let reps = lab.probe(eligible, reps);
    let cpu1 = cpu_seconds(pid);
    let log = gate.stop();
    let stopped = stopped_fields(&log);
    Answers {
        eligible,
        fleet: size,
        reps,
        gate_answers_sent: number(&stopped, "answers_sent"),
        gate_send_failed: number(&stopped, "send_failed"),
        gate_cpu: cpu1 - cpu0,
        load_secs,
    }
}

fn report(
    header: &str,
    plan: &Plan,
    full: bool,
    floors: &[Row],
    rows: &[Row],
    answers: &[Answers],
) {
    let floor = floors.iter().map(Row::processed_per_sec).sum::<f64>() / floors.len() as f64;
    let floor_cpu = floors.iter().map(Row::per_cpu_second).sum::<f64>() / floors.len() as f64;
    let mut out = String::new();
    out.push_str(&format!(
        "\n## doxm-gate daemon bench ({})\n\n{header}\n",
        if full { "full" } else { "quick mode: numbers are not meaningful" }
    ));
    out.push_str(&format!(
        "\n### Junk / ineligible multicast to ff02::158 over the veth ({} s per workload, \
         sendmmsg batches of {BATCH}, fresh MID and token per datagram)\n\n",
        plan.blast_secs
    ));
    out.push_str(
        "| workload | sent/s | sender CPU busy | processed/s | processed / sent | % of floor | receiver CPU busy | receiver CPU µs / datagram | datagrams per receiver CPU-second | % of floor per CPU-second | rcvbuf drops | backlog drops | answers | send errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for row in floors.iter().chain(rows) {
        let is_gate = row.answers_sent.is_some();
        let pct = |v: f64, of: f64| {
            if is_gate {
                format!("{:.0}%", 100.0 * v / of)
            } else {
                "(floor)".to_owned()
            }
        };
        out.push_str(&format!(
            "| {} | {} | {:.0}% | {} | {:.1}% | {} | {:.0}% | {:.2} | {} | {} | {} | {} | {} | {} |\n",
            row.label,
            thousands(row.blast.per_sec()),
            100.0 * row.blast.cpu / row.blast.secs,
            thousands(row.processed_per_sec()),
            100.0 * row.processed as f64 / row.blast.sent.max(1) as f64,
            pct(row.processed_per_sec(), floor),
            100.0 * row.cpu / (row.blast.secs + DRAIN.as_secs_f64()),
            1e6 * row.cpu / row.processed.max(1) as f64,
            thousands(row.per_cpu_second()),
            pct(row.per_cpu_second(), floor_cpu),
            row.kernel.rcvbuf_errors,
            row.kernel.backlog_drops,
            row.answers_sent.map_or("-".to_owned(), |a| a.to_string()),
            if row.blast.errors.is_empty() { "none".to_owned() } else { row.blast.errors.clone() },
        ));
    }
    out.push_str(&format!(
        "\nfloor used for %: {} datagrams/s (mean of {} sink run(s)); attempted vs sent: {}\n",
        thousands(floor),
        floors.len(),
        floors
            .iter()
            .chain(rows)
            .map(|r| format!("{}/{}", r.blast.sent, r.blast.attempted))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    out.push_str(&format!(
        "\n### Time to last answer, leisure 0, huge byte budget and source rate ({} discoveries \
         per size, one probe socket in the OBT namespace)\n\n",
        plan.reps
    ));
    out.push_str(
        "| E eligible (fleet) | first answer min / median | last answer min / median | answers/s (median) | exactly once | receiver rcvbuf drops | gate answers sent / send failed | gate CPU per discovery | probe CPU per discovery (median) | gate start + fleet load |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for a in answers {
        let firsts: Vec<u64> = a.reps.iter().map(|r| r.first_us).collect();
        let lasts: Vec<u64> = a.reps.iter().map(|r| r.last_us).collect();
        let rates: Vec<u64> = a
            .reps
            .iter()
            .map(|r| (r.answers as f64 / (r.last_us.max(1) as f64 / 1e6)) as u64)
            .collect();
        let exact = a.reps.iter().filter(|r| r.exact(a.eligible)).count();
        out.push_str(&format!(
            "| {} ({}) | {} / {} | {} / {} | {} | {}/{} | {} | {} / {} | {:.1} ms | {} | {:.2} s |\n",
            thousands(a.eligible as f64),
            thousands(a.fleet as f64),
            ms(min(&firsts)),
            ms(median(&firsts)),
            ms(min(&lasts)),
            ms(median(&lasts)),
            thousands(median(&rates) as f64),
            exact,
            a.reps.len(),
            a.reps.iter().map(|r| r.rcvbuf_errors).sum::<u64>(),
            a.gate_answers_sent,
            a.gate_send_failed,
            1e3 * a.gate_cpu / a.reps.len().max(1) as f64,
            ms(median(&a.reps.iter().map(|r| r.cpu_us).collect::<Vec<_>>())),
            a.load_secs,
        ));
        for (i, r) in a.reps.iter().enumerate() {
            if !r.exact(a.eligible) {
                out.push_str(&format!(
                    "\n  E={} rep {i}: answers={} distinct sources={} distinct uuids={} \
                     not-eligible uuids={} receiver rcvbuf drops={}\n",
                    a.eligible, r.answers, r.sources, r.uuids, r.wrong, r.rcvbuf_errors
                ));
            }
        }
    }
    out.push_str(
        "\nprocessed = datagrams the receiver handled (the gate's `stopped datagrams=` counter, \
         or the sink's count) / sending time; the floor is the sink's figure (mean of its runs). \
         Receiver CPU is its processes' CPU time (all threads) over the sending time plus a \
         300 ms drain; datagrams per CPU-second is the receiver's capacity on one core, which \
         the rate alone hides when the sender is the bottleneck. rcvbuf drops = the gate namespace's \
         Udp6RcvbufErrors (receiver too slow); backlog drops = /proc/net/softnet_stat (host-wide). \
         Answer times are from the probe's send to the receipt of the first / last answer; \
         answers/s = E / time to last answer.\n\ncommand: `cargo bench --bench daemon`\n",
    );
    println!("{out}");
    let _ = std::io::stdout().flush();
}

fn environment() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = cpu_model();
    let profile = if BIN.contains("/release/") { "release" } else { "debug" };
    format!(
        "host: {} CPUs ({model}), kernel {}, load average at start {}; gate binary: {profile} \
         ({BIN}); net.core.rmem_max {}",
        cpus,
        read("/proc/sys/kernel/osrelease"),
        read("/proc/loadavg").split(' ').take(3).collect::<Vec<_>>().join(" "),
        read("/proc/sys/net/core/rmem_max"),
    )
}

/// The gate's flags beyond the lab's: the fleet file, and device addresses in 10.77.0.0/16 too.
fn gate_args(fleet: &Path) -> Vec<&str> {
    vec!["--fleet", fleet.to_str().expect("UTF-8 path"), "--v4-prefix", "10.77.0.0/16"]
}

/// A fleet of `eligible` RFOTM devices, then `others` that are not eligible (most RFNOP, one
/// in ten RFOTM with an open DOC).
fn fleet(eligible: usize, others: usize) -> FleetFile {
    let entry = |uuid: u128, name: String, dos: u8, doc_open: bool| DeviceEntry {
        uuid: Uuid::from_u128(uuid),
        name,
        types: vec!["oic.wk.d".to_owned(), "oic.d.light".to_owned()],
        bridge: None,
        piid: None,
        dos: Some(dos),
        owned: None,
        doc_open,
        oxms: vec![0, 1],
        oxmsel: 4,
        sct: 9,
        devowneruuid: Uuid::nil(),
        rowneruuid: Uuid::nil(),
        eps: Vec::new(),
    };
    let mut device = Vec::with_capacity(eligible + others);
    for i in 1..=eligible as u128 {
        device.push(entry(ELIGIBLE | i, format!("bench lamp {i}"), 1, false));
    }
    for i in 1..=others as u128 {
        if i % 10 == 0 {
            device.push(entry(OTHER | i, format!("bench onboarding {i}"), 1, true));
        } else {
            device.push(entry(OTHER | i, format!("bench owned {i}"), 3, false));
        }
    }
    FleetFile { device }
}
