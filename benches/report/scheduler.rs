//! Workload 5: the answer scheduler.
//!
//! - **Cost**: gate CPU per answer for one discovery of E eligible devices (E = 1,000 and
//!   10,000), at the default leisure (2 s) and at leisure 0, in port and address mode, against
//!   the kernel's own cost of sending as many ~200-byte datagrams (the floor), all in one run.
//!   Each (mode, E, leisure) starts its own gate (leisure is a start flag) for one warm-up
//!   discovery and `sched_reps` measured ones; the variants of a (mode, E) run back to back,
//!   their order rotated every round, and the rounds repeat the whole sequence, so that load
//!   drift on this shared machine spreads over every variant. Medians are reported, and ratios
//!   both as the ratio of the medians and as each round's ratio (of that round's medians).
//! - **Fairness**: the scenario of `doxm_gate::testing::lab::fairness` (the one
//!   `tests/fairness.rs` asserts on), run once.
//!
//! The floor is a sender in the gate's namespace (the gate stopped) that sends E datagrams of
//! [`ANSWER_BYTES`] to a counting receiver in the OBT namespace, the way the gate's answers
//! travel: in address mode from one socket, [`BATCH`] per `sendmmsg`, each with its own source
//! address in fd00:d0c::/64 (IPV6_PKTINFO); in port mode one datagram per `sendmmsg` from each
//! of E sockets (a device's answer leaves from its own socket). Its CPU is its process's CPU
//! time over the sending loop only (sockets opened beforehand).

use super::*;
use doxm_gate::testing::lab::fairness::{self, Figures, Scenario};

/// The default leisure (ms): the gate's variant under test, and the paced floor's window.
const DEFAULT_LEISURE_MS: u64 = 2_000;

/// The answers' size in these fleets (a doxm answer with an 8-byte token: 199 B), for the floor.
pub(crate) const ANSWER_BYTES: usize = 199;
/// The floor receiver's port in the OBT namespace.
const FLOOR_PORT: u16 = 6_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Port,
    Address,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Port => "port",
            Mode::Address => "address",
        }
    }
}

/// What one cell of the cost table measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// The gate at this leisure (ms).
    Leisure(u64),
    /// The floor sender: every datagram in one tight loop.
    Floor,
    /// The paced floor: the same sender, each datagram at a uniformly random time in the
    /// default leisure window rounded up to the gate's 10 ms grain, sleeping in `epoll_wait`
    /// (mio) between grains, as the gate does: the kernel's cost of the answers' own pattern.
    PacedFloor,
}

/// One (mode, E, variant): µs per answer (gate) or per datagram (floor), one value per
/// measured discovery or floor repetition, with the round each came from.
pub(crate) struct CostCell {
    pub(crate) mode: Mode,
    pub(crate) eligible: usize,
    pub(crate) variant: Variant,
    pub(crate) runs: Vec<(usize, f64)>,
    /// Discoveries whose E answers all came, once each, from their own endpoints.
    pub(crate) exact: usize,
    /// The gate's answers expired (their window ended before they could leave) and shed, over
    /// its whole life (warm-up included), from `/v1/stats`.
    pub(crate) expired: u64,
    pub(crate) shed: u64,
    /// Time to the last answer (ms), per discovery.
    pub(crate) last_ms: Vec<f64>,
    /// The gate's CPU while idle (µs per second), measured before each gate's warm-up.
    pub(crate) idle_us_per_s: Vec<f64>,
    /// Floor: datagrams the receiver counted / sent, and backlog drops on the host.
    pub(crate) received: u64,
    pub(crate) sent: u64,
    pub(crate) backlog_drops: u64,
}

impl CostCell {
    fn new(mode: Mode, eligible: usize, variant: Variant) -> CostCell {
        CostCell {
            mode,
            eligible,
            variant,
            runs: Vec::new(),
            exact: 0,
            expired: 0,
            shed: 0,
            last_ms: Vec::new(),
            idle_us_per_s: Vec::new(),
            received: 0,
            sent: 0,
            backlog_drops: 0,
        }
    }

    pub(crate) fn median(&self) -> f64 {
        median_f64(self.runs.iter().map(|r| r.1).collect())
    }

    pub(crate) fn range(&self) -> (f64, f64) {
        let v = self.runs.iter().map(|r| r.1);
        (v.clone().fold(f64::INFINITY, f64::min), v.fold(0.0, f64::max))
    }

    /// The median of this cell's values in round `round`.
    fn in_round(&self, round: usize) -> Option<f64> {
        let v: Vec<f64> = self.runs.iter().filter(|r| r.0 == round).map(|r| r.1).collect();
        (!v.is_empty()).then(|| median_f64(v))
    }
}

pub(crate) struct Scheduler {
    pub(crate) rounds: usize,
    pub(crate) reps: usize,
    pub(crate) cells: Vec<CostCell>,
    pub(crate) fairness: Option<Figures>,
    /// The fairness gate's verdicts and answer counters, from `/v1/stats` after the scenario.
    pub(crate) fairness_stats: Value,
}

impl Scheduler {
    pub(crate) fn cell(&self, mode: Mode, eligible: usize, variant: Variant) -> Option<&CostCell> {
        self.cells.iter().find(|c| c.mode == mode && c.eligible == eligible && c.variant == variant)
    }

    /// `a / b` for (mode, E): the ratio of the medians, and the ratio in each round (of that
    /// round's medians).
    pub(crate) fn ratio(
        &self,
        mode: Mode,
        eligible: usize,
        a: Variant,
        b: Variant,
    ) -> Option<(f64, Vec<f64>)> {
        let (a, b) = (self.cell(mode, eligible, a)?, self.cell(mode, eligible, b)?);
        let per_round: Vec<f64> = (0..self.rounds)
            .filter_map(|r| Some(a.in_round(r)? / b.in_round(r)?.max(1e-9)))
            .collect();
        Some((a.median() / b.median().max(1e-9), per_round))
    }
}

/// The gate's flags for a cost run: every limit out of the way but the leisure, so that the
/// leisure is the only difference between the variants (with the default 2 MB/s budget, E =
/// 10,000 answers would stretch even leisure 0 to a 1 s window).
fn gate_args(mode: Mode, eligible: usize, leisure_ms: u64, fleet: &str) -> Vec<String> {
    // The API (for `/v1/stats` after the probes; idle while they run).
    let control = format!("{GATE_V4}:8683");
    let mut a: Vec<String> = ["run", "--fleet", fleet, "--leisure-ms", &leisure_ms.to_string()]
        .map(str::to_owned)
        .to_vec();
    let rest = [
        "--answer-rate-bytes",
        "1000000000000",
        "--source-rate",
        "1000000000",
        "--source-burst",
        "1000000000",
        "--max-pending-answers",
        "100000000",
        "--control",
        &control,
        "--log-level",
        "info",
    ];
    a.extend(rest.map(str::to_owned));
    match mode {
        Mode::Port => a.extend(["--port-count".to_owned(), eligible.max(1024).to_string()]),
        Mode::Address => {
            a.extend(["--mode", "address", "--v6-prefix", "fd00:d0c::/64"].map(str::to_owned))
        }
    }
    a
}

pub(crate) fn scheduler_run(lab: &Lab, plan: &Plan) -> Scheduler {
    let modes = [Mode::Port, Mode::Address];
    let leisures = [DEFAULT_LEISURE_MS, 0];
    let fleets: HashMap<usize, String> = plan
        .sched_eligible
        .iter()
        .map(|&e| (e, lab.write_fleet_as(&format!("sched-{e}"), &update_fleet(e, e))))
        .collect();
    let mut cells = Vec::new();
    for &mode in &modes {
        for &e in plan.sched_eligible {
            for v in variants(leisures) {
                cells.push(CostCell::new(mode, e, v));
            }
        }
    }
    for round in 0..plan.sched_rounds {
        for &mode in &modes {
            for &e in plan.sched_eligible {
                let mut order = variants(leisures);
                let shift = round % order.len();
                order.rotate_left(shift);
                for variant in order {
                    let cell = cells
                        .iter_mut()
                        .find(|c| c.mode == mode && c.eligible == e && c.variant == variant)
                        .expect("a cell");
                    eprintln!(
                        "  scheduler cost, round {round}: {} mode, E = {e}, {variant:?}",
                        mode.name()
                    );
                    match variant {
                        Variant::Leisure(ms) => {
                            gate_cost(lab, cell, round, plan.sched_reps, &fleets[&e], ms)
                        }
                        Variant::Floor => floor_cost(lab, cell, round, plan.sched_floor_reps, 0),
                        Variant::PacedFloor => {
                            floor_cost(lab, cell, round, plan.sched_floor_reps, DEFAULT_LEISURE_MS)
                        }
                    }
                }
            }
        }
    }
    eprintln!("  scheduler fairness: {:?}", plan.fairness);
    let (fairness, fairness_stats) = fairness_run(lab, &plan.fairness);
    Scheduler {
        rounds: plan.sched_rounds,
        reps: plan.sched_reps,
        cells,
        fairness: Some(fairness),
        fairness_stats,
    }
}

/// Every variant of one (mode, E): the gate at each leisure, the floor, the paced floor.
fn variants(leisures: [u64; 2]) -> Vec<Variant> {
    let floors = [Variant::Floor, Variant::PacedFloor];
    leisures.map(Variant::Leisure).into_iter().chain(floors).collect()
}

/// One gate at one leisure: a warm-up discovery, its idle CPU over 1 s, then `reps` measured.
fn gate_cost(lab: &Lab, cell: &mut CostCell, round: usize, reps: usize, fleet: &str, ms: u64) {
    let args = gate_args(cell.mode, cell.eligible, ms, fleet);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gate = lab.gate_within(&args, Duration::from_secs(60));
    let pid = gate.pid();
    let e = cell.eligible;
    // The warm-up discovery, then the idle gate (its start-up work is over by then).
    lab.probe_gate(e, 1, Some(pid));
    std::thread::sleep(Duration::from_millis(200));
    let cpu0 = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(1));
    cell.idle_us_per_s.push((cpu_seconds(pid) - cpu0) * 1e6);
    for rep in &lab.probe_gate(e, reps, Some(pid)) {
        cell.runs.push((round, rep.gate_cpu_us as f64 / e as f64));
        cell.exact += usize::from(rep.exact(e));
        cell.last_ms.push(rep.last_us as f64 / 1e3);
    }
    std::thread::sleep(Duration::from_millis(600)); // the stats are published every 500 ms
    let s = stats(lab);
    cell.expired += counter(&s, &["answers", "expired"]);
    cell.shed += counter(&s, &["answers", "shed"]);
    gate.stop();
}

/// The floor sender, `reps` repetitions of E datagrams after a warm-up one, all at once
/// (`spread_ms` 0) or paced over a window of `spread_ms` at the gate's grain.
fn floor_cost(lab: &Lab, cell: &mut CostCell, round: usize, reps: usize, spread_ms: u64) {
    let mut receiver = lab
        .role(&lab.obt_ns, "floor-recv")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the floor receiver");
    let mut stdout = std::io::BufReader::new(receiver.stdout.take().expect("receiver stdout"));
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut stdout, &mut line);
    let mut receiver = lab::Sink { child: receiver, stdout, stopped: false };
    assert_eq!(line.trim(), "ready", "the floor receiver did not start");
    let to = doxm_gate::testing::lab::link::link_local(&lab.obt_ns, &lab.obt_if)
        .expect("the OBT side's link-local address");
    let drops0 = lab::softnet_dropped();
    let out = role_output(
        lab.role(&lab.gate_ns, "floor-send")
            .env("DOXM_BENCH_MODE", cell.mode.name())
            .env("DOXM_BENCH_COUNT", cell.eligible.to_string())
            .env("DOXM_BENCH_REPS", (reps + 1).to_string())
            .env("DOXM_BENCH_TO", &to)
            .env("DOXM_BENCH_SPREAD_MS", spread_ms.to_string()),
        "floor-send",
    );
    std::thread::sleep(DRAIN);
    let received = number(&fields(&receiver.stop()), "datagrams");
    cell.backlog_drops += lab::softnet_dropped().saturating_sub(drops0);
    cell.received += received;
    for (i, l) in out.lines().filter(|l| l.starts_with("rep ")).enumerate() {
        let f = fields(l);
        let sent = number(&f, "sent");
        cell.sent += sent;
        if i > 0 {
            cell.runs.push((round, float(&f, "cpu_us") / sent.max(1) as f64));
        }
    }
}

/// The fairness scenario against a gate of its own (port mode, the scenario's budget), with
/// the API on the gate's veth address for the role's `/v1/stats` samples.
fn fairness_run(lab: &Lab, scenario: &Scenario) -> (Figures, Value) {
    let control = format!("{GATE_V4}:8683");
    fairness::add_sources(lab, scenario.attackers);
    let fleet = scenario.write_fleet(lab);
    let args = scenario.gate_args(&fleet, &control);
    let mut gate = lab.gate(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let outcome = fairness::run(lab, lab.role(&lab.obt_ns, "fairness"), scenario, &control);
    let s = stats(lab);
    gate.stop();
    let figures = outcome.figures();
    eprintln!("{figures}");
    (figures, s)
}

// ---------------------------------------------------------------------------------------------
// The floor's roles.

/// Counts the datagrams that reach `[::]:FLOOR_PORT` (OBT namespace) until SIGTERM.
pub(crate) fn role_floor_recv() -> i32 {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .expect("socket");
    let _ = socket.set_recv_buffer_size(lab::BUFFER_BYTES);
    socket.set_nonblocking(true).expect("nonblocking");
    socket
        .bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, FLOOR_PORT)).into())
        .expect("bind the floor receiver");
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()).expect("SIGTERM");
    let mut reader = BatchReader::new(socket);
    let mut count = 0u64;
    println!("ready");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    while !stop.load(Ordering::Relaxed) {
        reader.drain(Duration::from_millis(100), |_, _| count += 1);
    }
    println!("datagrams={count}");
    0
}

/// Sends DOXM_BENCH_REPS x DOXM_BENCH_COUNT datagrams of [`ANSWER_BYTES`] to
/// `[DOXM_BENCH_TO%iface]:FLOOR_PORT` the way the gate's answers leave in DOXM_BENCH_MODE, all
/// at once (DOXM_BENCH_SPREAD_MS 0) or at the times the gate would send them over a window of
/// DOXM_BENCH_SPREAD_MS; one `rep` line each with the process's CPU over the sending loop.
pub(crate) fn role_floor_send() -> i32 {
    use doxm_gate::io::sys::{self, Outgoing};
    let count: usize = env("DOXM_BENCH_COUNT").parse().expect("DOXM_BENCH_COUNT");
    let reps: usize = env("DOXM_BENCH_REPS").parse().expect("DOXM_BENCH_REPS");
    let address_mode = env("DOXM_BENCH_MODE") == "address";
    let index = interface(&env("DOXM_BENCH_IFACE")).index;
    let to: std::net::Ipv6Addr = env("DOXM_BENCH_TO").parse().expect("DOXM_BENCH_TO");
    let destination = SocketAddr::V6(SocketAddrV6::new(to, FLOOR_PORT, 0, index));
    // A NON 2.05 header and token, then filler: the kernel does not look inside.
    let mut datagram = vec![0x5a_u8; ANSWER_BYTES];
    datagram[..4].copy_from_slice(&[0x58, 0x45, 0x12, 0x34]);
    let open = |_| {
        let s = sender_socket(index, false);
        if address_mode {
            let _ = sys::enable_freebind(&s, true);
        }
        s
    };
    let sockets: Vec<socket2::Socket> = if address_mode {
        vec![open(0)]
    } else {
        let _ = sys::raise_nofile_limit(count as u64 + 256);
        (0..count).map(open).collect()
    };
    let sources: Vec<IpAddr> = (0..count)
        .map(|i| {
            let base = u128::from("fd00:d0c::".parse::<std::net::Ipv6Addr>().unwrap());
            IpAddr::V6((base + i as u128 + 1).into())
        })
        .collect();
    let spread = Duration::from_millis(env("DOXM_BENCH_SPREAD_MS").parse().expect("SPREAD_MS"));
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut poll = mio::Poll::new().expect("a poll");
    let mut events = mio::Events::with_capacity(8);
    for _ in 0..reps {
        let (mut sent, mut calls, mut errors, mut wakes) = (0usize, 0u64, 0u64, 0u64);
        let grains = grains(count, spread, &mut rng);
        let cpu0 = cpu_seconds(std::process::id());
        let start = Instant::now();
        for (due, devices) in grains {
            // Sleep in epoll_wait until the grain is due, as the gate's loop does.
            while let Some(left) = (start + due).checked_duration_since(Instant::now()) {
                if left.is_zero() {
                    break;
                }
                let _ = poll.poll(&mut events, Some(left));
                wakes += 1;
            }
            let mut i = devices.start;
            while i < devices.end {
                // One datagram per call from device i's own socket (port mode), or up to BATCH
                // per call, each from its device's address (address mode).
                let n = if address_mode { (devices.end - i).min(BATCH) } else { 1 };
                let out: [Outgoing<'_>; BATCH] = std::array::from_fn(|k| Outgoing {
                    data: &datagram,
                    destination,
                    source_ip: address_mode.then(|| sources[(i + k).min(count - 1)]),
                    interface: if address_mode { index } else { 0 },
                });
                let socket = &sockets[if address_mode { 0 } else { i }];
                calls += 1;
                match sys::send_batch(socket, &out[..n], false) {
                    Ok(k) => {
                        sent += k;
                        i += k.max(1);
                    }
                    Err(_) => {
                        errors += 1;
                        i += 1;
                    }
                }
            }
        }
        let cpu_us = (cpu_seconds(std::process::id()) - cpu0) * 1e6;
        println!("rep sent={sent} calls={calls} errors={errors} wakes={wakes} cpu_us={cpu_us:.1}");
        std::thread::sleep(Duration::from_millis(100));
    }
    0
}

/// When each datagram leaves: with no spread, all at once; otherwise each at a uniformly random
/// time in `[0, spread)` rounded up to the gate's grain (`engine::TIMER_GRAIN`), as (due time,
/// the datagrams due then), in time order. Devices are interchangeable here, so datagram i
/// takes the i-th earliest time.
fn grains(
    count: usize,
    spread: Duration,
    rng: &mut fastrand::Rng,
) -> Vec<(Duration, std::ops::Range<usize>)> {
    if spread.is_zero() {
        return vec![(Duration::ZERO, 0..count)];
    }
    let grain = doxm_gate::engine::TIMER_GRAIN.as_nanos() as u64;
    let span = spread.as_nanos() as u64;
    let mut due: Vec<u64> = (0..count).map(|_| rng.u64(0..span).div_ceil(grain) * grain).collect();
    due.sort_unstable();
    let mut out: Vec<(Duration, std::ops::Range<usize>)> = Vec::new();
    for (i, &t) in due.iter().enumerate() {
        match out.last_mut() {
            Some((d, r)) if d.as_nanos() as u64 == t => r.end = i + 1,
            _ => out.push((Duration::from_nanos(t), i..i + 1)),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Section 5 of the report.

/// "12.3 µs [11.0-15.2]" for a cell (µs per answer or per datagram).
fn cost_text(c: Option<&CostCell>) -> String {
    match c {
        Some(c) if !c.runs.is_empty() => {
            let (lo, hi) = c.range();
            format!("{:.2} µs [{lo:.2}-{hi:.2}]", c.median())
        }
        _ => "-".to_owned(),
    }
}

/// "**2.31x** ✓ (rounds 2.10, 2.55, 2.20)", the mark against `target` (none when infinite).
fn ratio_text(r: Option<(f64, Vec<f64>)>, target: f64) -> String {
    match r {
        Some((m, rounds)) if m.is_finite() => {
            let mark = match target {
                t if t.is_infinite() => "",
                t if m <= t => " ✓",
                _ => " ✗",
            };
            let rounds: Vec<String> = rounds.iter().map(|r| format!("{r:.2}")).collect();
            if rounds.len() > 1 {
                format!("**{m:.2}x**{mark} (rounds {})", rounds.join(", "))
            } else {
                format!("**{m:.2}x**{mark}")
            }
        }
        _ => "-".to_owned(),
    }
}

/// The headline line of section 5, if it ran.
pub(crate) fn headline(s: &Scheduler) -> String {
    let d = Variant::Leisure(DEFAULT_LEISURE_MS);
    let mut parts = Vec::new();
    for mode in [Mode::Port, Mode::Address] {
        let Some(e) = s.cells.iter().filter(|c| c.mode == mode).map(|c| c.eligible).min() else {
            continue;
        };
        if let (Some(c), Some(z), Some(f)) = (
            s.cell(mode, e, d),
            s.ratio(mode, e, d, Variant::Leisure(0)),
            s.ratio(mode, e, d, Variant::Floor),
        ) {
            let paced = s.ratio(mode, e, d, Variant::PacedFloor).map_or(String::new(), |p| {
                format!(", {:.2}x the same sends paced alone (the paced floor)", p.0)
            });
            parts.push(format!(
                "{} mode, E = {}: {:.1} µs of gate CPU per answer at the default leisure, {:.2}x \
                 leisure 0 and {:.2}x the kernel's send floor (targets 1.5x and 2x){paced}",
                mode.name(),
                thousands(e as f64),
                c.median(),
                z.0,
                f.0
            ));
        }
    }
    let mut out = format!("- **Answer scheduler** (section 5): {}.", parts.join("; "));
    if let Some(f) = &s.fairness {
        let failures = f.failures();
        let _ = write!(
            out,
            " Fairness ({} sources, then an OBT): the OBT's first answer {}, {} answers in {} s \
             against a fair share of {:.1}; {} of the 4 fairness checks hold.",
            f.scenario.attackers,
            f.obt_first_us
                .map_or("never came".to_owned(), |us| format!("after {:.2} s", us as f64 / 1e6)),
            f.obt_answers,
            f.scenario.observe,
            f.fair_share,
            4 - failures.len(),
        );
    }
    out
}

pub(crate) fn write_section(md: &mut String, plan: &Plan, s: &Scheduler) {
    let _ = writeln!(
        md,
        "## 5. The answer scheduler\n\n### 5a. Cost per answer\n\nOne discovery of E eligible \
         devices (a fleet of E, all eligible, from a fleet file), in port mode and in address \
         mode (fd00:d0c::/64), at the default leisure (`--leisure-ms 2000`) and at \
         `--leisure-ms 0`. Every other limit is out of the way (`--answer-rate-bytes \
         1000000000000`, source rate and burst 10^9, pending 10^8), so the leisure is the only \
         difference (with the default 2 MB/s budget, E = 10,000 would stretch even leisure 0 to \
         a 1 s window). Each (mode, E, leisure) starts a gate of its own: one warm-up \
         discovery, its idle CPU over 1 s, then {} measured ones; gate CPU per answer = the gate's \
         CPU time (all threads, `/proc/PID/task/*/schedstat`, nanoseconds) from just before the \
         probe's send to the arrival of the E-th answer, / E. The floor: the kernel's cost of \
         sending E datagrams of {ANSWER_BYTES} B from the gate's namespace to a counting \
         receiver on the OBT side, the way the answers leave (address mode: one socket, {BATCH} \
         per `sendmmsg` (`io::sys::BATCH`, the gate's own batch), each from its device's address \
         with IPV6_PKTINFO; port mode: one datagram per `sendmmsg` from each of E sockets), CPU \
         of the sender's process over its sending loop / E, after a warm-up repetition. The \
         paced floor: the same sender sending each datagram at a uniformly random time in a 2 s \
         window rounded up to the gate's 10 ms grain, sleeping in `epoll_wait` (mio) between \
         grains: what the kernel charges for the default leisure's own pattern (about 200 \
         wake-ups for E = 1,000), with nothing of the gate in it. Process CPU \
         (the gate's and the floor's alike) includes the kernel's delivery into the receiver's \
         socket when the softirq runs in the sender's context; when the kernel defers it to \
         `ksoftirqd` it is not counted, which is why single floor readings sometimes fall far \
         below the median. Each \
         (mode, E) runs its four variants back to back, in an order rotated every round; \
         {} round(s). Cells: median [min-max] over every measurement; ratios: of the medians, \
         then in brackets each round's ratio (of that round's medians). Exact: the discoveries \
         answered by exactly the E devices, once each (with the gate's expired and shed \
         answers from `/v1/stats`, when there are any). Targets (SPEC 4): the default \
         leisure within **1.5x** of leisure 0 and within **2x** of the floor.\n",
        s.reps, s.rounds
    );
    let _ = writeln!(
        md,
        "| mode | E | default leisure: gate CPU per answer | leisure 0: gate CPU per answer | floor: CPU per datagram | paced floor: CPU per datagram | default / leisure 0 (≤ 1.5x) | default / floor (≤ 2x) | leisure 0 / floor | default / paced floor | gate CPU per discovery (default / leisure 0) | last answer (default / leisure 0) | exact | gate idle CPU |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let (d, z, f, p) = (
        Variant::Leisure(DEFAULT_LEISURE_MS),
        Variant::Leisure(0),
        Variant::Floor,
        Variant::PacedFloor,
    );
    for mode in [Mode::Port, Mode::Address] {
        for &e in plan.sched_eligible {
            let (cd, cz) = (s.cell(mode, e, d), s.cell(mode, e, z));
            let per_discovery = |c: Option<&CostCell>| {
                c.map_or("-".to_owned(), |c| format!("{:.2} ms", c.median() * e as f64 / 1e3))
            };
            let last = |c: Option<&CostCell>| {
                c.map_or("-".to_owned(), |c| format!("{:.0} ms", median_f64(c.last_ms.clone())))
            };
            let exact = |c: Option<&CostCell>| {
                c.map_or("-".to_owned(), |c| {
                    let lost = if c.expired + c.shed > 0 {
                        format!(" ({} expired, {} shed)", c.expired, c.shed)
                    } else {
                        String::new()
                    };
                    format!("{}/{}{lost}", c.exact, c.runs.len())
                })
            };
            let idle: Vec<f64> =
                [cd, cz].iter().flatten().flat_map(|c| c.idle_us_per_s.clone()).collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {:.0} µs/s |",
                mode.name(),
                thousands(e as f64),
                cost_text(cd),
                cost_text(cz),
                cost_text(s.cell(mode, e, f)),
                cost_text(s.cell(mode, e, p)),
                ratio_text(s.ratio(mode, e, d, z), 1.5),
                ratio_text(s.ratio(mode, e, d, f), 2.0),
                ratio_text(s.ratio(mode, e, z, f), f64::INFINITY),
                ratio_text(s.ratio(mode, e, d, p), f64::INFINITY),
                per_discovery(cd),
                per_discovery(cz),
                last(cd),
                last(cz),
                exact(cd),
                exact(cz),
                median_f64(idle),
            );
        }
    }
    let floors: Vec<String> = s
        .cells
        .iter()
        .filter(|c| matches!(c.variant, Variant::Floor | Variant::PacedFloor))
        .map(|c| {
            format!(
                "{}{} E = {}: {} of {} received, {} backlog drops",
                if c.variant == Variant::PacedFloor { "paced, " } else { "" },
                c.mode.name(),
                thousands(c.eligible as f64),
                thousands(c.received as f64),
                thousands(c.sent as f64),
                c.backlog_drops
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "\nFloor deliveries (every repetition, warm-ups included): {}. The gate's idle CPU \
         (µs per second, median) is what it spends with nothing to do; over a 2 s leisure \
         window it adds about twice that to a discovery.\n",
        floors.join("; ")
    );
    if let Some(f) = &s.fairness {
        write_fairness(md, f, &s.fairness_stats);
    }
}

fn write_fairness(md: &mut String, f: &Figures, stats: &Value) {
    let sc = &f.scenario;
    let _ = writeln!(
        md,
        "### 5b. Fairness under many sources\n\nThe scenario of \
         `doxm_gate::testing::lab::fairness` (the one `tests/fairness.rs` asserts on): the gate \
         in port mode with {} eligible devices and `--answer-rate-bytes {}` (other limits at \
         their defaults); {} link-local source addresses on the OBT side's veth each send one \
         `NON GET /oic/sec/doxm?owned=FALSE` to ff02::158, spread over {:.1} s, then the OBT \
         sends its own from another address at {:.1} s; every answer is received on its \
         source's socket and timed with the kernel's receive timestamp (`SO_TIMESTAMPNS`; on a \
         veth taken in the gate's send call), for {} s after the OBT's request. Times are from \
         the first source's request.\n\n\
         Definitions. A source is *pending* from its request to its last answer seen (the OBT: \
         to its {}th answer); a source that got no answer at all is not counted (its answers \
         were shed, or it is starved beyond the observation). The OBT's **fair share** over the \
         {} s after its request = min({}, Σ over each second k of `budget × 1 s / S / N_k`), \
         S = the mean answer size, N_k = the sources pending in second k, the OBT included \
         (with all {} pending throughout and S = 199 B: {:.1} answers). A second (from t = 0, \
         whole seconds) is *pending* if a pending interval overlaps it, or the gate's \
         `answers.pending` (`/v1/stats`, read every 250 ms, published every 500 ms) read in its \
         second half is above zero. **Sliding maximum**: the most answer bytes arriving within \
         any interval shorter than 1 s, against the budget plus one answer plus 2 ms of budget \
         (the datagrams of one batched send are stamped up to the call's duration apart).\n",
        sc.eligible,
        thousands(sc.budget as f64),
        sc.attackers,
        sc.attack_secs,
        sc.obt_after,
        sc.observe,
        sc.eligible,
        sc.observe,
        sc.eligible,
        sc.attackers + 1,
        (sc.observe * sc.budget as f64 / 199.0 / (sc.attackers + 1) as f64).min(sc.eligible as f64),
    );
    let failures = f.failures();
    let verdict = |bad: bool| if bad { "✗ fails" } else { "✓ holds" };
    let first = f
        .obt_first_us
        .map_or("none in the observation".to_owned(), |us| format!("{:.3} s", us as f64 / 1e6));
    let (n, lo, med, hi) = f.pending_output();
    let rows = [
        (
            "OBT's first answer after its request (≤ 2 s)".to_owned(),
            first,
            verdict(f.obt_first_us.is_none_or(|us| us > 2_000_000)),
        ),
        (
            format!(
                "OBT's answers in the {} s after its request (≥ half its fair share)",
                sc.observe
            ),
            format!(
                "{} against a fair share of {:.1} (uncapped {:.1}; sources pending per second: \
                 mean {:.1}, {:?})",
                f.obt_answers,
                f.fair_share,
                f.raw_share,
                f.mean_pending(),
                f.pending_per_slot
            ),
            verdict((f.obt_answers as f64) < f.fair_share / 2.0),
        ),
        (
            "seconds without output while answers were pending (none)".to_owned(),
            format!(
                "{} of {n} pending seconds {:?}; longest gap while pending {:.3} s",
                f.stalled.len(),
                f.stalled,
                f.longest_gap_us as f64 / 1e6
            ),
            verdict(!f.stalled.is_empty()),
        ),
        (
            "most bytes in a sliding second (≤ budget + one answer)".to_owned(),
            format!(
                "{} B against {} B ({:.1}% of the budget)",
                thousands(f.sliding_max as f64),
                thousands(f.sliding_bound() as f64),
                100.0 * f.sliding_max as f64 / sc.budget as f64
            ),
            verdict(f.sliding_max > f.sliding_bound()),
        ),
        (
            "gate output per pending second (receiver side)".to_owned(),
            format!(
                "min {} / median {} / max {} B/s",
                thousands(lo as f64),
                thousands(med as f64),
                thousands(hi as f64)
            ),
            "",
        ),
        (
            "answers seen".to_owned(),
            format!(
                "{} ({} B, {:.1} B mean) to {} of {} sources; the OBT {} in all; stamps: {}",
                thousands(f.answers as f64),
                thousands(f.bytes as f64),
                f.mean_size,
                f.sources_answered,
                sc.attackers + 1,
                f.obt_total,
                if f.kernel_stamps { "the kernel's" } else { "some from the receiver's clock" },
            ),
            "",
        ),
        (
            "the gate (`/v1/stats` after the scenario)".to_owned(),
            format!(
                "answers scheduled {}, sent {}, shed {}, cancelled {}, expired {}; pending at \
                 most {} while sampled; budget stretches {}",
                thousands(counter(stats, &["answers", "scheduled"]) as f64),
                thousands(counter(stats, &["answers", "sent"]) as f64),
                thousands(counter(stats, &["answers", "shed"]) as f64),
                thousands(counter(stats, &["answers", "cancelled"]) as f64),
                thousands(counter(stats, &["answers", "expired"]) as f64),
                thousands(f.max_pending as f64),
                counter(stats, &["answers", "budget_stretches"]),
            ),
            "",
        ),
    ];
    let _ = writeln!(md, "| figure | measured | check |\n|---|---|---|");
    for (k, v, c) in rows {
        let _ = writeln!(md, "| {k} | {v} | {c} |");
    }
    let seconds: Vec<String> = f
        .per_second
        .iter()
        .zip(&f.pending_seconds)
        .map(|(b, p)| if *p { thousands(*b as f64) } else { format!("({})", thousands(*b as f64)) })
        .collect();
    let _ = writeln!(
        md,
        "\nOutput per second from t = 0 (B; in brackets: nothing pending): {}.\n\n{}\n",
        seconds.join(", "),
        if failures.is_empty() {
            "Every check holds.".to_owned()
        } else {
            format!(
                "Failing checks, as `tests/fairness.rs` reports them:\n\n```\n{}\n```",
                failures.join("\n")
            )
        }
    );
}
