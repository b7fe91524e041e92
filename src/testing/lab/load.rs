//! The lab shared by the daemon bench (`benches/daemon.rs`) and the report generator
//! (`benches/report.rs`): two network namespaces joined by a veth pair, the release gate in one
//! of them, and the roles this bench binary plays when it is re-executed under
//! `ip netns exec` with `DOXM_BENCH_ROLE` set:
//! - `sink` (gate namespace): the floor, the gate's own group socket (`io::net::group_socket_v6`,
//!   same buffers and packet info) joined to ff02::158, drained with `io::sys::recv_batch` in a
//!   mio loop, counting datagrams and nothing else;
//! - `blast` (OBT namespace): batched `sendmmsg` of one kind of datagram to ff02::158 for a
//!   bounded time, each with a fresh Message ID and token;
//! - `probe` (OBT namespace): one discovery per repetition, then every answer, timed.
//!
//! Used by both benches through `doxm_gate::testing::lab::load` (each uses a part of it).
//! Every namespace and process is removed when its guard drops, also when a step panics; the
//! namespaces of a bench that was killed outright are removed by the next run
//! ([`remove_stale_labs`]).

// The benches' own vocabulary (roles, counters, formatting), named for what each measures and
// not documented item by item; some items serve only one of the two benches.
#![allow(dead_code, missing_docs)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::io::net;
use crate::io::sys::{self, Outgoing, Received, BATCH, DATAGRAM_MAX};
use crate::wire::{option, Code, Message, MessageType, Writer};
use socket2::{Domain, Protocol, Socket, Type};
use uuid::Uuid;

pub const ROLE: &str = "DOXM_BENCH_ROLE";
pub const GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x158);
pub const PORT: u16 = 5683;
/// Eligible device `i` (1..=E) is `ELIGIBLE | i` (the probe counts any other UUID as wrong).
pub const ELIGIBLE: u128 = 0xbe0c_e000_0000_4000_8000_0000_0000_0000;
pub const LOW: u128 = 0xffff_ffff;
/// How long the receiver may drain its socket after the sender stops, before it is read.
pub const DRAIN: Duration = Duration::from_millis(300);
/// Socket buffers asked for (the kernel caps them at net.core.[rw]mem_max).
pub const BUFFER_BYTES: usize = 4 << 20;

/// What a workload sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A mix of four malformed datagrams (truncated option value, payload marker without
    /// payload, reserved TKL, version 2), each ~45 bytes, parsed up to the error.
    Malformed,
    /// The OBT's discovery with `owned=TRUE`: dropped by the rule.
    OwnedTrue,
    /// The OBT's discovery with `owned=FALSE` to a fleet with no eligible device.
    NoEligible,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Malformed => "malformed",
            Kind::OwnedTrue => "owned-true",
            Kind::NoEligible => "no-eligible",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Malformed, Kind::OwnedTrue, Kind::NoEligible].into_iter().find(|k| k.name() == name)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::Malformed => "malformed mix (4 kinds, 44-46 B)",
            Kind::OwnedTrue => "doxm discovery owned=TRUE (44 B)",
            Kind::NoEligible => "doxm discovery owned=FALSE, 0 of 1,000 eligible (45 B)",
        }
    }
}

/// Counters read around a workload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kernel {
    /// Gate namespace: UDP datagrams delivered to sockets.
    pub in_datagrams: u64,
    /// Gate namespace: datagrams dropped because a socket's receive buffer was full.
    pub rcvbuf_errors: u64,
    /// Whole host: packets dropped because a CPU's input backlog was full (veth -> netif_rx).
    pub backlog_drops: u64,
}

impl Kernel {
    pub fn read(ns: &str) -> Kernel {
        let snmp = snmp6(ns);
        Kernel {
            in_datagrams: snmp.get("Udp6InDatagrams").copied().unwrap_or(0),
            rcvbuf_errors: snmp.get("Udp6RcvbufErrors").copied().unwrap_or(0),
            backlog_drops: softnet_dropped(),
        }
    }

    pub fn since(self, before: Kernel) -> Kernel {
        Kernel {
            in_datagrams: self.in_datagrams.saturating_sub(before.in_datagrams),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            backlog_drops: self.backlog_drops.saturating_sub(before.backlog_drops),
        }
    }
}

/// What the sender reported.
#[derive(Debug, Clone, Default)]
pub struct Blast {
    pub sent: u64,
    pub attempted: u64,
    pub secs: f64,
    /// The sender's own CPU time (which includes the kernel's veth delivery into the
    /// receiver's socket, done in the sender's context).
    pub cpu: f64,
    pub errors: String,
}

impl Blast {
    pub fn per_sec(&self) -> f64 {
        self.sent as f64 / self.secs
    }
}

pub fn thousands(v: f64) -> String {
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

pub fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1e3)
}

pub fn min(v: &[u64]) -> u64 {
    v.iter().copied().min().unwrap_or(0)
}

pub fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The lab: two namespaces, a veth pair, and the processes in them.

pub use super::link::{is_root, lab_unavailable, sh, skip};
use super::Net;
pub use super::{bin, terminate, Gate, Lab, AUTHORIZATION, TOKEN};

pub const NS_PREFIX: &str = "dgbench-";

/// Namespaces left by a bench that was killed (Ctrl-C skips destructors): named after the pid of
/// their orchestrator, removed when that process is gone.
pub fn remove_stale_labs() {
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

/// The gate's address on the veth (the OBT side is 10.201.0.2, fd00:201::2).
pub const GATE_V4: &str = "10.201.0.1";

/// Runs the role named by `DOXM_BENCH_ROLE` if it is one of this module's (`sink`, `blast`,
/// `probe`) and returns its exit code; `None` for any other name.
pub fn common_role(role: &str) -> Option<i32> {
    match role {
        "sink" => Some(role_sink()),
        "blast" => Some(role_blast()),
        "probe" => Some(role_probe()),
        _ => None,
    }
}

/// The bench's lab: namespaces `dgbench-g-{pid}` and `dgbench-o-{pid}` on subnet 201 (so that a
/// bench never meets a test's lab), removed on drop or by the next run's [`remove_stale_labs`].
pub fn bench_lab() -> Lab {
    let pid = std::process::id().to_string();
    Lab::create(NS_PREFIX, "vb", &pid, 201, Net::Dual)
}

impl Lab {
    /// The gate in address mode (a device address each in fd00:d0c::/64, port 5683) with leisure
    /// 0 and every limit out of the way, serving the lab's veth; `args` adds flags (`--fleet`,
    /// `--v4-prefix`, `--control`, `--state-dir`, ...). Waits until it serves.
    pub fn bench_gate(&self, args: &[&str]) -> Gate {
        let mut all = vec!["run", "--mode", "address", "--v6-prefix", "fd00:d0c::/64"];
        all.extend(["--leisure-ms", "0", "--answer-rate-bytes", "1000000000000"]);
        all.extend(["--source-rate", "1000000000", "--source-burst", "1000000000"]);
        all.extend(["--max-pending-answers", "100000000", "--log-level", "info"]);
        all.extend(args);
        self.gate_within(&all, Duration::from_secs(60))
    }

    pub fn role(&self, ns: &str, role: &str) -> Command {
        let me = std::env::current_exe().expect("bench executable");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(me)
            .env(ROLE, role)
            .env("DOXM_BENCH_IFACE", if ns == self.gate_ns { &self.gate_if } else { &self.obt_if });
        cmd
    }

    /// The floor: a no-eligible blast of `secs` at the `recvmmsg` sink, with the sink's CPU time
    /// and the kernel's drops over the blast and a drain.
    pub fn sink_run(&self, secs: f64) -> SinkRun {
        let mut sink = self.sink();
        let (blast, cpu, kernel) = self.timed_blast(sink.child.id(), Kind::NoEligible, secs);
        let processed = number(&fields(&sink.stop()), "datagrams");
        SinkRun { blast, processed, cpu, kernel }
    }

    /// A blast of `kind` for `secs` at the receiver in the gate namespace (process `pid`), and
    /// the receiver's CPU seconds and the kernel's drops over the blast and a [`DRAIN`] (so that
    /// the receiver empties its socket buffer before its counters are read).
    pub fn timed_blast(&self, pid: u32, kind: Kind, secs: f64) -> (Blast, f64, Kernel) {
        let cpu0 = cpu_seconds(pid);
        let k0 = Kernel::read(&self.gate_ns);
        let blast = self.blast(kind, secs);
        std::thread::sleep(DRAIN);
        let cpu = cpu_seconds(pid) - cpu0;
        (blast, cpu, Kernel::read(&self.gate_ns).since(k0))
    }

    pub fn sink(&self) -> Sink {
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

    pub fn blast(&self, kind: Kind, secs: f64) -> Blast {
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

    /// `reps` discoveries by the probe role, each expecting `eligible` answers.
    pub fn probe(&self, eligible: usize, reps: usize) -> Vec<Rep> {
        self.probe_gate(eligible, reps, None)
    }

    /// [`Lab::probe`], and with the gate's pid each [`Rep`] also has the gate's CPU time.
    pub fn probe_gate(&self, eligible: usize, reps: usize, gate: Option<u32>) -> Vec<Rep> {
        let mut cmd = self.role(&self.obt_ns, "probe");
        cmd.env("DOXM_BENCH_EXPECT", eligible.to_string()).env("DOXM_BENCH_REPS", reps.to_string());
        if let Some(pid) = gate {
            cmd.env("DOXM_BENCH_GATE_PID", pid.to_string());
        }
        let out = cmd.output().expect("run the probe");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "probe failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines().filter(|l| l.starts_with("rep=")).map(|l| Rep::parse(&fields(l))).collect()
    }
}

/// One discovery as the probe saw it (a `rep=` line of [`role_probe`]).
#[derive(Debug, Clone, Default)]
pub struct Rep {
    pub answers: u64,
    pub sources: u64,
    pub uuids: u64,
    pub wrong: u64,
    pub first_us: u64,
    pub last_us: u64,
    pub rcvbuf_errors: u64,
    /// The probe's own CPU time for the discovery.
    pub cpu_us: u64,
    /// The gate's CPU time from the send to the E-th answer's arrival (0 without its pid).
    pub gate_cpu_us: u64,
}

impl Rep {
    fn parse(f: &HashMap<String, String>) -> Rep {
        Rep {
            answers: number(f, "answers"),
            sources: number(f, "sources"),
            uuids: number(f, "uuids"),
            wrong: number(f, "wrong"),
            first_us: number(f, "first_us"),
            last_us: number(f, "last_us"),
            rcvbuf_errors: number(f, "rcvbuf_errors"),
            cpu_us: number(f, "cpu_us"),
            gate_cpu_us: number(f, "gate_cpu_us"),
        }
    }

    /// Whether exactly `e` devices answered, once each, from their own endpoints.
    pub fn exact(&self, e: usize) -> bool {
        let e = e as u64;
        self.answers == e && self.sources == e && self.uuids == e && self.wrong == 0
    }
}

pub struct Sink {
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
    pub stopped: bool,
}

impl Sink {
    pub fn stop(&mut self) -> String {
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
pub fn fields(text: &str) -> HashMap<String, String> {
    strip_ansi(text)
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The fields of the gate's `stopped` log line (and of the `stopping on signal` one).
pub fn stopped_fields(log: &str) -> HashMap<String, String> {
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

/// What [`Lab::sink_run`] measured.
pub struct SinkRun {
    pub blast: Blast,
    /// Datagrams the sink read.
    pub processed: u64,
    /// The sink's CPU seconds.
    pub cpu: f64,
    pub kernel: Kernel,
}

/// The CPU model from /proc/cpuinfo (`?` when it does not say).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

pub fn number(fields: &HashMap<String, String>, key: &str) -> u64 {
    fields.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn strip_ansi(text: &str) -> String {
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
pub fn cpu_seconds(pid: u32) -> f64 {
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

pub fn clock_ticks() -> f64 {
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
pub fn snmp6(ns: &str) -> HashMap<String, u64> {
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
pub fn softnet_dropped() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The roles, each run by `ip netns exec <ns> <this bench> ` with DOXM_BENCH_ROLE set.

pub fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set"))
}

pub fn interface(name: &str) -> net::Interface {
    net::interfaces(&[name.to_owned()])
        .expect("list interfaces")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no interface {name}"))
}

/// The OBT's discovery (NON GET /oic/sec/doxm?owned=..., Accept 10000, 2049 = 2048).
pub fn discovery(owned: &str, message_id: u16, token: &[u8]) -> Vec<u8> {
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
pub fn templates(kind: Kind) -> Vec<Vec<u8>> {
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
pub fn stamp(datagram: &mut [u8], seq: u64) {
    datagram[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    datagram[4..12].copy_from_slice(&seq.to_be_bytes());
}

pub fn sender_socket(index: u32, nonblocking: bool) -> Socket {
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
pub fn role_blast() -> i32 {
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

pub fn role_sink() -> i32 {
    let interface = interface(&env("DOXM_BENCH_IFACE"));
    let socket = net::group_socket_v6(PORT, true).expect("sink socket");
    net::join(&socket, IpAddr::V6(GROUP), &interface).expect("join ff02::158");
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()).expect("SIGTERM");
    let mut reader = BatchReader::new(socket);
    let (mut count, mut calls) = (0u64, 0u64);
    println!("ready");
    let _ = std::io::stdout().flush();
    while !stop.load(Ordering::Relaxed) {
        calls += reader.drain(Duration::from_millis(100), |_, _| count += 1);
    }
    println!("datagrams={count} calls={calls}");
    0
}

/// A socket registered with its own mio poll, and the buffers for [`sys::recv_batch`]: what the
/// roles that read floods or answers (sink, probe, the report's steady load) each need.
pub struct BatchReader {
    pub socket: mio::net::UdpSocket,
    poll: mio::Poll,
    events: mio::Events,
    bufs: Vec<[u8; DATAGRAM_MAX]>,
    meta: [Received; BATCH],
}

impl BatchReader {
    pub fn new(socket: socket2::Socket) -> BatchReader {
        let mut socket = mio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket));
        let poll = mio::Poll::new().expect("poll");
        poll.registry()
            .register(&mut socket, mio::Token(0), mio::Interest::READABLE)
            .expect("register");
        BatchReader {
            socket,
            poll,
            events: mio::Events::with_capacity(16),
            bufs: vec![[0u8; DATAGRAM_MAX]; BATCH],
            meta: [Received::EMPTY; BATCH],
        }
    }

    /// Waits up to `timeout` for a datagram, then reads every one queued, `BATCH` per
    /// `recvmmsg`, handing each to `each` with its packet info; returns the calls made.
    pub fn drain(&mut self, timeout: Duration, mut each: impl FnMut(&[u8], &Received)) -> u64 {
        let _ = self.poll.poll(&mut self.events, Some(timeout));
        let mut calls = 0;
        loop {
            calls += 1;
            match sys::recv_batch(&self.socket, &mut self.bufs, &mut self.meta) {
                Ok(0) => return calls,
                Ok(n) => {
                    for (buf, meta) in self.bufs.iter().zip(&self.meta).take(n) {
                        each(&buf[..meta.len], meta);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return calls,
            }
        }
    }
}

/// The `deviceuuid` of a doxm answer's CBOR payload: text key "deviceuuid", then a 36-byte
/// text string (0x78 0x24).
pub fn device_uuid(payload: &[u8]) -> Option<Uuid> {
    const KEY: &[u8] = b"\x6adeviceuuid\x78\x24";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let text = std::str::from_utf8(payload.get(at..at + 36)?).ok()?;
    Uuid::parse_str(text).ok()
}

/// DOXM_BENCH_REPS discoveries, one at a time; for each, every answer until DOXM_BENCH_EXPECT
/// have come (plus 300 ms for stragglers and duplicates) or none came for 3 s. With
/// DOXM_BENCH_GATE_PID, also the gate's CPU time from just before the send to the arrival of
/// the DOXM_BENCH_EXPECT-th answer (`gate_cpu_us`; the pid namespace is shared, so the gate's
/// /proc entry is visible from the OBT namespace).
pub fn role_probe() -> i32 {
    let expect: u64 = env("DOXM_BENCH_EXPECT").parse().expect("DOXM_BENCH_EXPECT");
    let reps: u64 = env("DOXM_BENCH_REPS").parse().expect("DOXM_BENCH_REPS");
    let gate: Option<u32> = std::env::var("DOXM_BENCH_GATE_PID").ok().and_then(|p| p.parse().ok());
    let index = interface(&env("DOXM_BENCH_IFACE")).index;
    let socket = sender_socket(index, true);
    let destination: SocketAddr = SocketAddrV6::new(GROUP, PORT, 0, index).into();
    let mut reader = BatchReader::new(socket);
    let salt = u64::from(std::process::id()) << 32;
    for rep in 0..reps {
        let token = (salt | rep).to_be_bytes();
        let request = discovery("FALSE", (salt | rep) as u16 ^ 0x5a5a, &token);
        let drops0 = snmp6("").get("Udp6RcvbufErrors").copied().unwrap_or(0);
        let mut sources = HashSet::new();
        let mut uuids = HashSet::new();
        let (mut answers, mut wrong, mut foreign) = (0u64, 0u64, 0u64);
        let (mut first, mut last) = (None::<Duration>, Duration::ZERO);
        let gate0 = gate.map(cpu_seconds);
        let mut gate1 = None;
        let t0 = Instant::now();
        reader.socket.send_to(&request, destination).expect("send the discovery");
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
            reader.drain(Duration::from_millis(20), |datagram, info| {
                let Ok(msg) = Message::parse(datagram) else {
                    foreign += 1;
                    return;
                };
                if msg.token() != token || msg.code() != Code::CONTENT {
                    foreign += 1;
                    return;
                }
                let at = t0.elapsed();
                answers += 1;
                if answers == expect {
                    gate1 = gate.map(cpu_seconds);
                }
                first.get_or_insert(at);
                last = at;
                sources.insert(info.source);
                match device_uuid(msg.payload()).map(|u| u.as_u128()) {
                    Some(v)
                        if v & !LOW == ELIGIBLE
                            && (1..=u128::from(expect)).contains(&(v & LOW)) =>
                    {
                        uuids.insert(v);
                    }
                    _ => wrong += 1,
                }
            });
            idle_deadline = t0 + last + Duration::from_secs(3);
        }
        // Includes the 300 ms wait after the last answer (idle, so it costs next to nothing).
        let cpu_us = ((cpu_seconds(std::process::id()) - cpu0) * 1e6) as u64;
        let drops = snmp6("").get("Udp6RcvbufErrors").copied().unwrap_or(0) - drops0;
        let gate_cpu = match (gate0, gate1.or_else(|| gate.map(cpu_seconds))) {
            (Some(a), Some(b)) => format!(" gate_cpu_us={}", ((b - a) * 1e6) as u64),
            _ => String::new(),
        };
        println!(
            "rep={rep} answers={answers} sources={} uuids={} wrong={wrong} foreign={foreign} \
             first_us={} last_us={} rcvbuf_errors={drops} cpu_us={cpu_us}{gate_cpu}",
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
