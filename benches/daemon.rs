//! The daemon over a veth pair: how many junk or ineligible multicast datagrams per second the
//! real gate processes (against a trivial `recvmmsg` sink measured in the same run, the
//! "floor"), and the time to the last answer of one discovery for E = 100 and E = 10,000
//! eligible devices with leisure 0.
//!
//! Run: `cargo bench --bench daemon` (as root: it creates two network namespaces joined by a
//! veth pair, like `tests/netns.rs`). Not root: prints `SKIP` and exits 0. Under
//! `cargo test --benches` (no `--bench` argument) every measurement runs in a short version so
//! CI stays fast.
//!
//! The bench binary plays several roles. By default it is the orchestrator: it builds the lab,
//! starts and stops the gate (one gate process per workload, so that the counters the gate logs
//! on SIGTERM, `stopped datagrams=N ...`, belong to that workload alone), and prints the report.
//! Re-executed under `ip netns exec` with `DOXM_BENCH_ROLE` set, it is one of:
//! - `sink` (gate namespace): the floor, the gate's own group socket (`io::net::group_socket_v6`,
//!   same buffers and packet info) joined to ff02::158, drained with `io::sys::recv_batch` in a
//!   mio loop, counting datagrams and nothing else;
//! - `blast` (OBT namespace): batched `sendmmsg` of one kind of datagram to ff02::158 for a
//!   bounded time, each with a fresh Message ID and token;
//! - `probe` (OBT namespace): one discovery per repetition, then every answer, timed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doxm_gate::fleet::file::{DeviceEntry, FleetFile};
use doxm_gate::io::net;
use doxm_gate::io::sys::{self, Outgoing, Received, BATCH, DATAGRAM_MAX};
use doxm_gate::wire::{option, Code, Message, MessageType, Writer};
use socket2::{Domain, Protocol, Socket, Type};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_doxm-gate");
const ROLE: &str = "DOXM_BENCH_ROLE";
const GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x158);
const PORT: u16 = 5683;
/// Eligible device `i` (1..=E) is `ELIGIBLE | i`; every other device is `OTHER | i`.
const ELIGIBLE: u128 = 0xbe0c_e000_0000_4000_8000_0000_0000_0000;
const OTHER: u128 = 0xbe0c_0000_0000_4000_8000_0000_0000_0000;
const LOW: u128 = 0xffff_ffff;
/// How long the receiver may drain its socket after the sender stops, before it is read.
const DRAIN: Duration = Duration::from_millis(300);
/// Socket buffers asked for (the kernel caps them at net.core.[rw]mem_max).
const BUFFER_BYTES: usize = 4 << 20;

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let code = match role.as_str() {
            "sink" => role_sink(),
            "blast" => role_blast(),
            "probe" => role_probe(),
            other => {
                eprintln!("unknown {ROLE} {other}");
                2
            }
        };
        std::process::exit(code);
    }
    let full = std::env::args().any(|a| a == "--bench");
    if !is_root() {
        println!("SKIP: needs root (it creates network namespaces); run `sudo cargo bench --bench daemon`");
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        println!("SKIP: the ip command (iproute2) is not installed");
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
    let lab = Lab::new();
    let header = environment();
    eprintln!(
        "daemon bench ({} mode): gate {BIN}",
        if full { "full" } else { "quick, no --bench argument" }
    );

    // 1. Junk and ineligible throughput, with the floor before and after.
    let junk_fleet = lab.write_fleet("junk", &fleet(0, 1_000));
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

/// What a workload sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A mix of four malformed datagrams (truncated option value, payload marker without
    /// payload, reserved TKL, version 2), each ~45 bytes, parsed up to the error.
    Malformed,
    /// The OBT's discovery with `owned=TRUE`: dropped by the rule.
    OwnedTrue,
    /// The OBT's discovery with `owned=FALSE` to a fleet with no eligible device.
    NoEligible,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Malformed => "malformed",
            Kind::OwnedTrue => "owned-true",
            Kind::NoEligible => "no-eligible",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        [Kind::Malformed, Kind::OwnedTrue, Kind::NoEligible].into_iter().find(|k| k.name() == name)
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Malformed => "malformed mix (4 kinds, 44-46 B)",
            Kind::OwnedTrue => "doxm discovery owned=TRUE (44 B)",
            Kind::NoEligible => "doxm discovery owned=FALSE, 0 of 1,000 eligible (45 B)",
        }
    }
}

/// Counters read around a workload.
#[derive(Debug, Clone, Copy, Default)]
struct Kernel {
    /// Gate namespace: UDP datagrams delivered to sockets.
    in_datagrams: u64,
    /// Gate namespace: datagrams dropped because a socket's receive buffer was full.
    rcvbuf_errors: u64,
    /// Whole host: packets dropped because a CPU's input backlog was full (veth -> netif_rx).
    backlog_drops: u64,
}

impl Kernel {
    fn read(ns: &str) -> Kernel {
        let snmp = snmp6(ns);
        Kernel {
            in_datagrams: snmp.get("Udp6InDatagrams").copied().unwrap_or(0),
            rcvbuf_errors: snmp.get("Udp6RcvbufErrors").copied().unwrap_or(0),
            backlog_drops: softnet_dropped(),
        }
    }

    fn since(self, before: Kernel) -> Kernel {
        Kernel {
            in_datagrams: self.in_datagrams.saturating_sub(before.in_datagrams),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            backlog_drops: self.backlog_drops.saturating_sub(before.backlog_drops),
        }
    }
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

/// What the sender reported.
#[derive(Debug, Clone, Default)]
struct Blast {
    sent: u64,
    attempted: u64,
    secs: f64,
    /// The sender's own CPU time (which includes the kernel's veth delivery into the
    /// receiver's socket, done in the sender's context).
    cpu: f64,
    errors: String,
}

impl Blast {
    fn per_sec(&self) -> f64 {
        self.sent as f64 / self.secs
    }
}

fn floor_run(lab: &Lab, secs: f64) -> Row {
    let mut sink = lab.sink();
    let cpu0 = cpu_seconds(sink.child.id());
    let k0 = Kernel::read(&lab.gate_ns);
    let blast = lab.blast(Kind::NoEligible, secs);
    std::thread::sleep(DRAIN);
    let cpu1 = cpu_seconds(sink.child.id());
    let kernel = Kernel::read(&lab.gate_ns).since(k0);
    let out = sink.stop();
    let fields = fields(&out);
    let processed = number(&fields, "datagrams");
    Row {
        label: "floor: recvmmsg sink (same datagrams as no-eligible)".to_owned(),
        blast,
        processed,
        cpu: cpu1 - cpu0,
        kernel,
        answers_sent: None,
    }
}

fn gate_run(lab: &Lab, fleet: &Path, kind: Kind, secs: f64) -> Row {
    let mut gate = lab.gate(fleet);
    let pid = gate.child.id();
    let cpu0 = cpu_seconds(pid);
    let k0 = Kernel::read(&lab.gate_ns);
    let blast = lab.blast(kind, secs);
    // Let the gate drain its socket buffer before its counters are read.
    std::thread::sleep(DRAIN);
    let cpu1 = cpu_seconds(pid);
    let kernel = Kernel::read(&lab.gate_ns).since(k0);
    let log = gate.stop();
    let stopped = stopped_fields(&log);
    Row {
        label: kind.describe().to_owned(),
        blast,
        processed: number(&stopped, "datagrams"),
        cpu: cpu1 - cpu0,
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
    cpu_us: u64,
}

impl Rep {
    fn exact(&self, e: usize) -> bool {
        let e = e as u64;
        self.answers == e && self.sources == e && self.uuids == e && self.wrong == 0
    }
}

fn answer_run(lab: &Lab, eligible: usize, reps: usize) -> Answers {
    let others = (eligible / 10).max(10);
    let file = fleet(eligible, others);
    let size = file.device.len();
    let path = lab.write_fleet(&format!("e{eligible}"), &file);
    let started = Instant::now();
    let mut gate = lab.gate(&path);
    let load_secs = started.elapsed().as_secs_f64();
    let pid = gate.child.id();
    let cpu0 = cpu_seconds(pid);
    let lines = lab.probe(eligible, reps);
    let cpu1 = cpu_seconds(pid);
    let log = gate.stop();
    let stopped = stopped_fields(&log);
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
            cpu_us: number(f, "cpu_us"),
        })
        .collect();
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
    let model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
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

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1e3)
}

fn min(v: &[u64]) -> u64 {
    v.iter().copied().min().unwrap_or(0)
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
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

// ---------------------------------------------------------------------------------------------
// The lab: two namespaces, a veth pair, and the processes in them.

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run command");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

const NS_PREFIX: &str = "dgbench-";

/// Namespaces left by a bench that was killed (Ctrl-C skips destructors): named after the pid of
/// their orchestrator, removed when that process is gone.
fn remove_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else { continue };
        let Some(pid) = rest.get(2..).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

struct Lab {
    gate_ns: String,
    obt_ns: String,
    gate_if: String,
    obt_if: String,
    dir: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            gate_ns: format!("{NS_PREFIX}g-{pid}"),
            obt_ns: format!("{NS_PREFIX}o-{pid}"),
            gate_if: format!("vbg{pid:x}"),
            obt_if: format!("vbo{pid:x}"),
            dir: std::env::temp_dir().join(format!("doxm-gate-bench-{pid}")),
        };
        // From here on, Drop removes whatever was created, also when a step panics.
        std::fs::create_dir_all(&lab.dir).expect("bench directory");
        sh(&["ip", "netns", "add", &lab.gate_ns]);
        sh(&["ip", "netns", "add", &lab.obt_ns]);
        sh(&["ip", "link", "add", &lab.gate_if, "type", "veth", "peer", "name", &lab.obt_if]);
        for (ns, ifname, v4, v6) in [
            (&lab.gate_ns, &lab.gate_if, "10.201.0.1/24", "fd00:201::1/64"),
            (&lab.obt_ns, &lab.obt_if, "10.201.0.2/24", "fd00:201::2/64"),
        ] {
            sh(&["ip", "link", "set", ifname, "netns", ns]);
            let dad = format!("net.ipv6.conf.{ifname}.accept_dad=0");
            sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &dad]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
            sh(&["ip", "-n", ns, "addr", "add", v4, "dev", ifname]);
            sh(&["ip", "-n", ns, "-6", "addr", "add", v6, "dev", ifname, "nodad"]);
        }
        sh(&[
            "ip",
            "-n",
            &lab.gate_ns,
            "-6",
            "route",
            "add",
            "local",
            "fd00:d0c::/64",
            "dev",
            "lo",
        ]);
        sh(&["ip", "-n", &lab.gate_ns, "route", "add", "local", "10.77.0.0/16", "dev", "lo"]);
        sh(&["ip", "-n", &lab.obt_ns, "-6", "route", "add", "fd00:d0c::/64", "via", "fd00:201::1"]);
        sh(&["ip", "-n", &lab.obt_ns, "route", "add", "10.77.0.0/16", "via", "10.201.0.1"]);
        // Link-local addresses come up with the link.
        std::thread::sleep(Duration::from_millis(300));
        lab
    }

    fn write_fleet(&self, name: &str, file: &FleetFile) -> PathBuf {
        let path = self.dir.join(format!("fleet-{name}.toml"));
        std::fs::write(&path, toml::to_string(file).expect("fleet to TOML")).expect("write fleet");
        path
    }

    /// The gate in address mode with leisure 0 and every limit out of the way.
    fn gate(&self, fleet: &Path) -> Gate {
        let log = self.dir.join("gate.log");
        let file = std::fs::File::create(&log).expect("gate log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.gate_ns, BIN, "run", "--fleet"])
            .arg(fleet)
            .args(["--mode", "address", "--v6-prefix", "fd00:d0c::/64"])
            .args(["--v4-prefix", "10.77.0.0/16", "--iface", &self.gate_if])
            .args(["--leisure-ms", "0", "--answer-rate-bytes", "1000000000000"])
            .args(["--source-rate", "1000000000", "--source-burst", "1000000000"])
            .args(["--max-pending-answers", "100000000", "--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the gate");
        let mut gate = Gate { child, log, stopped: false };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !gate.log().contains("doxm-gate serving") {
            if let Ok(Some(status)) = gate.child.try_wait() {
                panic!("the gate exited ({status}):\n{}", gate.log());
            }
            assert!(Instant::now() < deadline, "gate did not start:\n{}", gate.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        gate
    }

    fn role(&self, ns: &str, role: &str) -> Command {
        let me = std::env::current_exe().expect("bench executable");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(me)
            .env(ROLE, role)
            .env("DOXM_BENCH_IFACE", if ns == self.gate_ns { &self.gate_if } else { &self.obt_if });
        cmd
    }

    fn sink(&self) -> Sink {
        let mut child = self
            .role(&self.gate_ns, "sink")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the sink");
        let mut stdout = BufReader::new(child.stdout.take().expect("sink stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let sink = Sink { child, stdout, stopped: false };
        assert_eq!(line.trim(), "ready", "the sink did not start");
        sink
    }

    fn blast(&self, kind: Kind, secs: f64) -> Blast {
        let out = self
            .role(&self.obt_ns, "blast")
            .env("DOXM_BENCH_KIND", kind.name())
            .env("DOXM_BENCH_SECS", secs.to_string())
            .output()
            .expect("run the sender");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "sender failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = fields(&text);
        Blast {
            sent: number(&f, "sent"),
            attempted: number(&f, "attempted"),
            secs: f.get("secs").and_then(|s| s.parse().ok()).unwrap_or(secs),
            cpu: f.get("cpu").and_then(|s| s.parse().ok()).unwrap_or(0.0),
            errors: f.get("errors").cloned().unwrap_or_default(),
        }
    }

    fn probe(&self, eligible: usize, reps: usize) -> Vec<HashMap<String, String>> {
        let out = self
            .role(&self.obt_ns, "probe")
            .env("DOXM_BENCH_EXPECT", eligible.to_string())
            .env("DOXM_BENCH_REPS", reps.to_string())
            .output()
            .expect("run the probe");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "probe failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines().filter(|l| l.starts_with("rep=")).map(fields).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it (and so the pair).
        let _ = Command::new("ip").args(["netns", "del", &self.gate_ns]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.obt_ns]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).output();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The gate process (`ip netns exec` execs it, so its pid is the gate's); killed on drop.
struct Gate {
    child: Child,
    log: PathBuf,
    stopped: bool,
}

impl Gate {
    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// SIGTERM, wait, and the log (with the `stopped ...` counters).
    fn stop(&mut self) -> String {
        terminate(&mut self.child);
        self.stopped = true;
        self.log()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Sink {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stopped: bool,
}

impl Sink {
    fn stop(&mut self) -> String {
        terminate(&mut self.child);
        self.stopped = true;
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        rest
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `key=value` pairs of a line or text, ANSI colour codes removed.
fn fields(text: &str) -> HashMap<String, String> {
    strip_ansi(text)
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The fields of the gate's `stopped` log line (and of the `stopping on signal` one).
fn stopped_fields(log: &str) -> HashMap<String, String> {
    let clean = strip_ansi(log);
    let mut out = HashMap::new();
    for line in clean.lines().filter(|l| l.contains(" stopped ") || l.contains("stopping on")) {
        out.extend(fields(line));
    }
    assert!(
        out.contains_key("datagrams"),
        "no `stopped datagrams=` line in the gate log:\n{clean}"
    );
    out
}

fn number(fields: &HashMap<String, String>, key: &str) -> u64 {
    fields.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// CPU time of a process (all its threads), in seconds: from `schedstat` (nanoseconds) when the
/// kernel has it, else utime + stime from `stat` (clock ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            ns += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    if ns > 0 {
        return ns as f64 / 1e9;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| f.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// /proc/net/snmp6 of a namespace (of this process's namespace when `ns` is empty).
fn snmp6(ns: &str) -> HashMap<String, u64> {
    let text = if ns.is_empty() {
        std::fs::read_to_string("/proc/net/snmp6").unwrap_or_default()
    } else {
        Command::new("ip")
            .args(["netns", "exec", ns, "cat", "/proc/net/snmp6"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// Packets dropped by full input backlogs, all CPUs (column 2 of /proc/net/softnet_stat, hex).
fn softnet_dropped() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The roles, each run by `ip netns exec <ns> <this bench> ` with DOXM_BENCH_ROLE set.

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set"))
}

fn interface(name: &str) -> net::Interface {
    net::interfaces(&[name.to_owned()])
        .expect("list interfaces")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no interface {name}"))
}

/// The OBT's discovery (NON GET /oic/sec/doxm?owned=..., Accept 10000, 2049 = 2048).
fn discovery(owned: &str, message_id: u16, token: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 128];
    let mut w = Writer::new(&mut buf, MessageType::NonConfirmable, Code::GET, message_id, token)
        .expect("header");
    for segment in [&b"oic"[..], b"sec", b"doxm"] {
        w.option(option::URI_PATH, segment).expect("path");
    }
    w.option(option::URI_QUERY, format!("owned={owned}").as_bytes()).expect("query");
    w.uint_option(option::ACCEPT, 10_000).expect("accept");
    w.uint_option(option::OCF_ACCEPT_CONTENT_FORMAT_VERSION, 2048).expect("2049");
    let len = w.finish();
    buf[..len].to_vec()
}

/// The datagrams one workload cycles through (each has an 8-byte token at bytes 4..12).
fn templates(kind: Kind) -> Vec<Vec<u8>> {
    let valid = discovery("FALSE", 0, &[0; 8]);
    match kind {
        Kind::NoEligible => vec![valid],
        Kind::OwnedTrue => vec![discovery("TRUE", 0, &[0; 8])],
        Kind::Malformed => {
            let truncated_value = valid[..valid.len() - 1].to_vec();
            let mut marker_only = valid.clone();
            marker_only.push(0xff);
            let mut reserved_tkl = valid.clone();
            reserved_tkl[0] = 0x5f;
            let mut version_2 = valid.clone();
            version_2[0] = 0x98;
            vec![truncated_value, marker_only, reserved_tkl, version_2]
        }
    }
}

/// A fresh Message ID and token.
fn stamp(datagram: &mut [u8], seq: u64) {
    datagram[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    datagram[4..12].copy_from_slice(&seq.to_be_bytes());
}

fn sender_socket(index: u32, nonblocking: bool) -> Socket {
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    socket.set_only_v6(true).expect("v6only");
    socket.set_multicast_if_v6(index).expect("multicast interface");
    socket.set_multicast_hops_v6(1).expect("hops");
    let _ = socket.set_send_buffer_size(BUFFER_BYTES);
    let _ = socket.set_recv_buffer_size(BUFFER_BYTES);
    socket.set_nonblocking(nonblocking).expect("nonblocking");
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into()).expect("bind");
    socket
}

/// Sends datagrams of one kind to ff02::158 for DOXM_BENCH_SECS seconds, in sendmmsg batches.
fn role_blast() -> i32 {
    let kind = Kind::from_name(&env("DOXM_BENCH_KIND")).expect("DOXM_BENCH_KIND");
    let secs: f64 = env("DOXM_BENCH_SECS").parse().expect("DOXM_BENCH_SECS");
    let index = interface(&env("DOXM_BENCH_IFACE")).index;
    let socket = sender_socket(index, false);
    let destination = SocketAddr::V6(SocketAddrV6::new(GROUP, PORT, 0, index));
    let kinds = templates(kind);
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|i| kinds[i % kinds.len()].clone()).collect();
    // Distinct from other runs' tokens.
    let mut seq = u64::from(std::process::id()) << 40;
    let (mut sent, mut attempted, mut calls) = (0u64, 0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let cpu0 = cpu_seconds(std::process::id());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    loop {
        if calls % 16 == 0 && Instant::now() >= deadline {
            break;
        }
        calls += 1;
        for b in &mut bufs {
            seq += 1;
            stamp(b, seq);
        }
        let out: [Outgoing<'_>; BATCH] = std::array::from_fn(|i| Outgoing {
            data: &bufs[i],
            destination,
            source_ip: None,
            interface: 0,
        });
        attempted += BATCH as u64;
        match sys::send_batch(&socket, &out, false) {
            Ok(n) => sent += n as u64,
            Err(e) => {
                *errors.entry(e.to_string().replace(' ', "_")).or_default() += 1;
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(std::process::id()) - cpu0;
    let errors: Vec<String> = errors.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "sent={sent} attempted={attempted} calls={calls} secs={secs:.6} cpu={cpu:.6} errors={}",
        errors.join(",")
    );
    0
}

fn role_sink() -> i32 {
    let interface = interface(&env("DOXM_BENCH_IFACE"));
    let socket = net::group_socket_v6(PORT, true).expect("sink socket");
    net::join(&socket, IpAddr::V6(GROUP), &interface).expect("join ff02::158");
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()).expect("SIGTERM");
    let mut socket = mio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket));
    let mut poll = mio::Poll::new().expect("poll");
    poll.registry()
        .register(&mut socket, mio::Token(0), mio::Interest::READABLE)
        .expect("register");
    let mut events = mio::Events::with_capacity(16);
    let mut bufs = vec![[0u8; DATAGRAM_MAX]; BATCH];
    let mut meta = [empty_meta(); BATCH];
    let (mut count, mut calls) = (0u64, 0u64);
    println!("ready");
    let _ = std::io::stdout().flush();
    while !stop.load(Ordering::Relaxed) {
        let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
        loop {
            calls += 1;
            match sys::recv_batch(&socket, &mut bufs, &mut meta) {
                Ok(0) => break,
                Ok(n) => count += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    println!("datagrams={count} calls={calls}");
    0
}

fn empty_meta() -> Received {
    Received {
        len: 0,
        source: SocketAddr::from(([0, 0, 0, 0], 0)),
        destination: None,
        interface: 0,
        truncated: false,
    }
}

/// The `deviceuuid` of a doxm answer's CBOR payload: text key "deviceuuid", then a 36-byte
/// text string (0x78 0x24).
fn device_uuid(payload: &[u8]) -> Option<Uuid> {
    const KEY: &[u8] = b"\x6adeviceuuid\x78\x24";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let text = std::str::from_utf8(payload.get(at..at + 36)?).ok()?;
    Uuid::parse_str(text).ok()
}

/// DOXM_BENCH_REPS discoveries, one at a time; for each, every answer until DOXM_BENCH_EXPECT
/// have come (plus 300 ms for stragglers and duplicates) or none came for 3 s.
fn role_probe() -> i32 {
    let expect: u64 = env("DOXM_BENCH_EXPECT").parse().expect("DOXM_BENCH_EXPECT");
    let reps: u64 = env("DOXM_BENCH_REPS").parse().expect("DOXM_BENCH_REPS");
    let index = interface(&env("DOXM_BENCH_IFACE")).index;
    let socket = sender_socket(index, true);
    let destination: SocketAddr = SocketAddrV6::new(GROUP, PORT, 0, index).into();
    let mut socket = mio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket));
    let mut poll = mio::Poll::new().expect("poll");
    poll.registry()
        .register(&mut socket, mio::Token(0), mio::Interest::READABLE)
        .expect("register");
    let mut events = mio::Events::with_capacity(16);
    let mut bufs = vec![[0u8; DATAGRAM_MAX]; BATCH];
    let mut meta = [empty_meta(); BATCH];
    let salt = u64::from(std::process::id()) << 32;
    for rep in 0..reps {
        let token = (salt | rep).to_be_bytes();
        let request = discovery("FALSE", (salt | rep) as u16 ^ 0x5a5a, &token);
        let drops0 = snmp6("").get("Udp6RcvbufErrors").copied().unwrap_or(0);
        let mut sources = HashSet::new();
        let mut uuids = HashSet::new();
        let (mut answers, mut wrong, mut foreign) = (0u64, 0u64, 0u64);
        let (mut first, mut last) = (None::<Duration>, Duration::ZERO);
        let t0 = Instant::now();
        socket.send_to(&request, destination).expect("send the discovery");
        let cpu0 = cpu_seconds(std::process::id());
        let mut idle_deadline = t0 + Duration::from_secs(3);
        loop {
            let now = Instant::now();
            if answers >= expect && now >= t0 + last + Duration::from_millis(300) {
                break;
            }
            if now >= idle_deadline {
                break;
            }
            let _ = poll.poll(&mut events, Some(Duration::from_millis(20)));
            loop {
                let got = match sys::recv_batch(&socket, &mut bufs, &mut meta) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let at = t0.elapsed();
                for i in 0..got {
                    let Ok(msg) = Message::parse(&bufs[i][..meta[i].len]) else {
                        foreign += 1;
                        continue;
                    };
                    if msg.token() != token || msg.code() != Code::CONTENT {
                        foreign += 1;
                        continue;
                    }
                    answers += 1;
                    first.get_or_insert(at);
                    last = at;
                    sources.insert(meta[i].source);
                    match device_uuid(msg.payload()) {
                        Some(u) => {
                            let v = u.as_u128();
                            if v & !LOW == ELIGIBLE && (1..=u128::from(expect)).contains(&(v & LOW))
                            {
                                uuids.insert(v);
                            } else {
                                wrong += 1;
                            }
                        }
                        None => wrong += 1,
                    }
                }
                idle_deadline = t0 + last + Duration::from_secs(3);
            }
        }
        // Includes the 300 ms wait after the last answer (idle, so it costs next to nothing).
        let cpu_us = ((cpu_seconds(std::process::id()) - cpu0) * 1e6) as u64;
        let drops = snmp6("").get("Udp6RcvbufErrors").copied().unwrap_or(0) - drops0;
        println!(
            "rep={rep} answers={answers} sources={} uuids={} wrong={wrong} foreign={foreign} \
             first_us={} last_us={} rcvbuf_errors={drops} cpu_us={cpu_us}",
            sources.len(),
            uuids.len(),
            first.unwrap_or_default().as_micros(),
            last.as_micros(),
        );
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_millis(200));
    }
    0
}
