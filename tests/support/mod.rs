//! Shared by `tests/control_api.rs` and `tests/crash.rs`: the real `doxm-gate` binary started
//! on loopback with its control API on a free port, an HTTP client for that API, unique state
//! directories, and a small model of device entries.
//!
//! A [`Gate`] is killed (SIGKILL) and reaped when it drops, also when a test panics. When the
//! gate cannot join its multicast groups here (no usable loopback), [`Gate::start`] skips
//! ([`link::skip`], a failure under `DOXM_GATE_REQUIRE_ALL=1`) and returns `None`, and the test
//! returns early.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doxm_gate::control::mutation::PatchBody;

use doxm_gate::control::fleet_file::DeviceEntry;
/// The skip helper shared with the netns lab.
pub use doxm_gate::testing::lab::link;
use serde_json::Value;
use uuid::Uuid;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_doxm-gate");

/// Serialises the tests whose figures (or size) would suffer from running side by side on a
/// small machine: take it for the duration of such a test.
pub static HEAVY: Mutex<()> = Mutex::new(());

/// Takes [`HEAVY`], ignoring poisoning (a failed heavy test must not fail the others).
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---- Temporary directories ----

/// A unique directory under cargo's per-target temp dir (a real disk, so fsync is real), removed
/// when it drops unless the test is panicking (then it is kept, and its path printed).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("doxm-gate-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ---- The gate ----

/// How the gate gives devices their endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// Port mode with this many device ports (capacity: that many devices).
    Ports(u16),
    /// Address mode on a /111 IPv6 prefix (capacity 131,070 devices, one shared port).
    Addresses,
}

/// How to start a gate.
#[derive(Debug, Clone)]
pub struct GateOpts {
    pub state_dir: Option<PathBuf>,
    /// `--restart-policy` (absent: the default, fail-closed).
    pub restart_policy: Option<&'static str>,
    pub token: Option<String>,
    pub endpoints: Endpoints,
    /// `--control` (default `127.0.0.1:0`).
    pub control: String,
    /// More arguments after the usual ones.
    pub args: Vec<String>,
    /// A command the gate runs under, e.g. `prlimit --nofile=192:192 --`.
    pub prefix: Vec<String>,
    /// `--log-level` (default `info`; `None`: no flag, so a `--config` file's level applies).
    pub log_level: Option<String>,
}

impl GateOpts {
    pub fn ports(count: u16) -> GateOpts {
        GateOpts {
            state_dir: None,
            restart_policy: None,
            token: None,
            endpoints: Endpoints::Ports(count),
            control: "127.0.0.1:0".to_owned(),
            args: Vec::new(),
            prefix: Vec::new(),
            log_level: Some("info".to_owned()),
        }
    }

    /// No `--log-level` flag (a `--config` file's `log_level` applies).
    pub fn no_log_level(mut self) -> GateOpts {
        self.log_level = None;
        self
    }

    /// More arguments (`--control-idle-timeout-ms 1000`, ..).
    pub fn args(mut self, args: &[&str]) -> GateOpts {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Runs the gate under `prefix` (a wrapper command and its arguments).
    pub fn under(mut self, prefix: &[&str]) -> GateOpts {
        self.prefix = prefix.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// `--control ADDR`.
    pub fn control(mut self, addr: &str) -> GateOpts {
        self.control = addr.to_owned();
        self
    }

    pub fn addresses() -> GateOpts {
        GateOpts { endpoints: Endpoints::Addresses, ..GateOpts::ports(1) }
    }

    pub fn state_dir(mut self, dir: &Path) -> GateOpts {
        self.state_dir = Some(dir.to_owned());
        self
    }

    pub fn policy(mut self, policy: &'static str) -> GateOpts {
        self.restart_policy = Some(policy);
        self
    }

    pub fn token(mut self, token: &str) -> GateOpts {
        self.token = Some(token.to_owned());
        self
    }
}

/// A block of 64 UDP ports for one gate: the group port, then the device ports. Different for
/// every gate this process starts (and, by the process id, likely different from other test
/// processes on the machine); a gate whose ports are taken is retried on the next block.
fn port_block() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let slot = (std::process::id().wrapping_mul(37).wrapping_add(n)) % 300;
    // 12,000 .. 31,200: below the Linux ephemeral range (32,768..), above the well-known ports.
    12_000 + slot as u16 * 64
}

/// Removes ANSI escape sequences (tracing colours its output).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A running `doxm-gate run` process; SIGKILLed and reaped on drop.
pub struct Gate {
    child: Option<Child>,
    /// The control API.
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    opts: GateOpts,
    api: Client,
}

enum Started {
    Listening(SocketAddr),
    Exited,
}

impl Gate {
    /// Starts a gate and waits until its control API listens. `None` (with a SKIP message) when
    /// this environment cannot run a gate on loopback.
    pub fn start(opts: GateOpts) -> Option<Gate> {
        for _attempt in 0..6 {
            match Gate::try_start(&opts) {
                Ok(gate) => return Some(gate),
                Err(log) if log.contains("no interface could join the groups") => {
                    link::skip(&format!("the gate cannot join the multicast groups on lo:\n{log}"));
                    return None;
                }
                Err(log) if log.contains("in use") => {
                    eprintln!("ports taken, retrying on other ports:\n{log}");
                }
                Err(log) => panic!("the gate did not start:\n{log}"),
            }
        }
        panic!("the gate found no free ports in 6 attempts");
    }

    fn try_start(opts: &GateOpts) -> Result<Gate, String> {
        let block = port_block();
        let mut cmd = match opts.prefix.split_first() {
            Some((wrapper, args)) => {
                let mut cmd = Command::new(wrapper);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.args(["run", "--iface", "lo", "--control", &opts.control]);
        if let Some(level) = &opts.log_level {
            cmd.args(["--log-level", level]);
        }
        cmd.args(["--port", &block.to_string()]);
        match opts.endpoints {
            Endpoints::Ports(count) => {
                assert!(count < 64, "a port block has 63 device ports");
                cmd.args(["--mode", "port", "--port-base", &(block + 1).to_string()]);
                cmd.args(["--port-count", &count.to_string()]);
            }
            Endpoints::Addresses => {
                cmd.args(["--mode", "address", "--v6-prefix", "fd00:d0c:7e57::/111"]);
            }
        }
        if let Some(dir) = &opts.state_dir {
            cmd.arg("--state-dir").arg(dir);
        }
        if let Some(policy) = opts.restart_policy {
            cmd.args(["--restart-policy", policy]);
        }
        if let Some(token) = &opts.token {
            cmd.args(["--control-token", token]);
        }
        cmd.args(&opts.args);
        cmd.env_remove("DOXM_GATE_TOKEN").env_remove("RUST_LOG");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn {BIN}: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            // Drains stderr for the gate's whole life, so that the pipe never fills.
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let line = strip_ansi(&line);
                    if line.contains("control API listening") {
                        let addr = line
                            .split("address=")
                            .nth(1)
                            .and_then(|rest| rest.split_whitespace().next())
                            .and_then(|a| a.parse().ok());
                        if let Some(addr) = addr {
                            let _ = tx.send(Started::Listening(addr));
                        }
                    }
                    let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    log.push_str(&line);
                    log.push('\n');
                }
                let _ = tx.send(Started::Exited);
            });
        }
        let read_log = |log: &Arc<Mutex<String>>| {
            log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Started::Listening(addr)) => {
                let api = Client::new(addr, opts.token.clone());
                Ok(Gate { child: Some(child), addr, log, opts: opts.clone(), api })
            }
            Ok(Started::Exited) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(format!("{}(exit: {status})", read_log(&log)))
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("{}(no 'control API listening' within 60 s)", read_log(&log)))
            }
        }
    }

    /// Starts a gate that must refuse to start: its log, ending in `(exit: STATUS)`. Panics
    /// if it starts.
    pub fn refused(opts: GateOpts) -> String {
        match Gate::try_start(&opts) {
            Ok(gate) => panic!("the gate started but should have refused:\n{}", gate.log()),
            Err(log) => log,
        }
    }

    /// The process id (`None` once killed; `prlimit`, when it wraps the gate, execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The same gate again (same options and state directory), after [`Gate::kill9`].
    pub fn restart(&self) -> Gate {
        assert!(self.child.is_none(), "kill the gate before restarting it");
        Gate::start(self.opts.clone()).expect("the gate started before, so it must start again")
    }

    /// SIGKILL (`kill -9`): no shutdown code runs. Returns the exit status.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // std's Child::kill sends SIGKILL on Unix.
        let _ = child.kill();
        child.wait().ok()
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.pid().expect("a running gate").to_string();
        let status = Command::new("kill").args([&format!("-{name}"), &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} {pid}");
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `limit` for the log to contain `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log().contains(needle)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything it logged so far (ANSI colours removed).
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A new client (its own connection pool: one per thread).
    pub fn client(&self) -> Client {
        Client::new(self.addr, self.opts.token.clone())
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.api.call(method, path, body)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.api.call("GET", path, None)
    }

    /// A call with extra headers (and the token when the gate has one).
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let auth = self.opts.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        all.extend(auth.iter().map(|a| ("Authorization", a.as_str())));
        self.api
            .try_call_with(method, path, body, &all)
            .unwrap_or_else(|e| panic!("{method} {path}: no reply: {e}"))
    }

    /// `GET /healthz`'s device count.
    pub fn device_count(&self) -> u64 {
        let reply = self.get("/healthz");
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.json()["devices"].as_u64().expect("healthz devices")
    }

    /// `GET /v1/devices/{uuid}`: `None` for 404.
    pub fn device(&self, uuid: &Uuid) -> Option<DeviceView> {
        self.api.device(uuid)
    }

    /// The whole fleet (`GET /v1/export`), sorted by UUID.
    pub fn export(&self) -> Vec<DeviceEntry> {
        self.api.export()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---- The HTTP client ----

/// A reply of the control API.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// The ETag header as a revision.
    pub etag: Option<u64>,
    pub content_type: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `{"error":{"field":..,"reason":..}}` of a 4xx, checked for shape.
    pub fn error(&self) -> (String, String) {
        let v = self.json();
        let field = v["error"]["field"].as_str();
        let reason = v["error"]["reason"].as_str();
        match (field, reason) {
            (Some(f), Some(r)) if !f.is_empty() && !r.is_empty() => (f.to_owned(), r.to_owned()),
            _ => panic!("not an error object with field and reason: {}", self.body),
        }
    }
}

/// A client of one gate's control API, with its own connection pool.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr, token: Option<String>) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .max_idle_connections_per_host(4)
            .build();
        Client { agent, base: format!("http://{addr}"), token }
    }

    /// One call with exactly these headers (no token added). `Err` for a transport error (no
    /// reply: connection refused or reset, e.g. the gate was killed).
    pub fn try_call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let mut request = self.agent.request(method, &format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let result = match body {
            Some(body) => request.set("Content-Type", "application/json").send_string(body),
            None => request.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let status = response.status();
        let etag = response.header("ETag").and_then(|v| v.trim_matches('"').parse().ok());
        let content_type = response.header("Content-Type").unwrap_or_default().to_owned();
        // Not into_string: it stops at 10 MB, and a 100,000-device reply is larger.
        let mut bytes = Vec::new();
        response.into_reader().read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        let body = String::from_utf8(bytes).map_err(|e| e.to_string())?;
        Ok(Reply { status, etag, content_type, body })
    }

    /// One call, with the bearer token when the gate has one.
    pub fn try_call(&self, method: &str, path: &str, body: Option<&str>) -> Result<Reply, String> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        self.try_call_with(method, path, body, &headers)
    }

    /// [`Client::try_call`], panicking on a transport error.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: no reply: {e}"))
    }

    pub fn device(&self, uuid: &Uuid) -> Option<DeviceView> {
        let reply = self.call("GET", &format!("/v1/devices/{uuid}"), None);
        match reply.status {
            404 => None,
            200 => Some(DeviceView::parse(&reply)),
            _ => panic!("GET device {uuid}: {reply:?}"),
        }
    }

    pub fn export(&self) -> Vec<DeviceEntry> {
        let reply = self.call("GET", "/v1/export", None);
        assert_eq!(reply.status, 200, "{reply:?}");
        let file: doxm_gate::control::fleet_file::FleetFile =
            serde_json::from_str(&reply.body).expect("export is a fleet file");
        let mut devices = file.device;
        devices.sort_by_key(|d| d.uuid);
        devices
    }
}

/// `GET /v1/devices/{uuid}`, parsed.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub revision: u64,
    pub etag: Option<u64>,
    pub eligible: bool,
    pub reason: String,
    pub stale: bool,
    pub device: DeviceEntry,
}

impl DeviceView {
    pub fn parse(reply: &Reply) -> DeviceView {
        let v = reply.json();
        DeviceView {
            revision: v["revision"].as_u64().expect("revision"),
            etag: reply.etag,
            eligible: v["eligible"].as_bool().expect("eligible"),
            reason: v["reason"].as_str().expect("reason").to_owned(),
            stale: v["stale"].as_bool().expect("stale"),
            device: serde_json::from_value(v["device"].clone()).expect("device entry"),
        }
    }
}

// ---- A model of devices ----

/// A device UUID: `space` tells tests (and threads) apart, `n` numbers devices.
pub fn uuid(space: u32, n: u64) -> Uuid {
    Uuid::from_u128(
        0x0d0c_0000_0000_4000_8000_0000_0000_0000 | (u128::from(space) << 48) | n as u128,
    )
}

/// The onboarding state of a device entry: `dos`, `owned`, `doc_open`.
pub type State = (Option<u8>, Option<bool>, bool);

/// The consistent states (with `owned` explicit, as the gate reports it back).
pub const STATES: [State; 7] = [
    (Some(0), Some(false), false),
    (Some(1), Some(false), false),
    (Some(1), Some(false), true),
    (Some(2), Some(true), false),
    (Some(3), Some(true), false),
    (Some(3), Some(true), true),
    (Some(4), Some(true), false),
];

/// A device entry as the gate reports it back (defaults filled in).
pub fn entry(uuid: Uuid, name: &str, (dos, owned, doc_open): State) -> DeviceEntry {
    let mut e: DeviceEntry =
        serde_json::from_value(serde_json::json!({"uuid": uuid, "name": name}))
            .expect("a minimal entry");
    e.dos = dos;
    e.owned = owned;
    e.doc_open = doc_open;
    e
}

/// Whether an entry (without a bridge) is eligible for discovery.
pub fn eligible(e: &DeviceEntry) -> bool {
    e.bridge.is_none() && e.dos == Some(1) && e.owned == Some(false) && !e.doc_open
}

/// A random consistent state.
pub fn random_state(rng: &mut fastrand::Rng) -> State {
    STATES[rng.usize(..STATES.len())]
}

/// A patch that sets every mutable field (so its result does not depend on the state before).
pub fn full_patch(rng: &mut fastrand::Rng) -> PatchBody {
    let (dos, owned, doc_open) = random_state(rng);
    let owner = if owned == Some(true) { uuid(0xffff, rng.u64(1..4)) } else { Uuid::nil() };
    PatchBody {
        dos,
        owned,
        doc_open: Some(doc_open),
        devowneruuid: Some(owner),
        rowneruuid: Some(owner),
        oxmsel: Some(if owned == Some(true) { 0 } else { 4 }),
    }
}

/// What `patch` makes of `e`.
pub fn patched(e: &DeviceEntry, patch: &PatchBody) -> DeviceEntry {
    let mut e = e.clone();
    if let Some(dos) = patch.dos {
        e.dos = Some(dos);
    }
    if let Some(owned) = patch.owned {
        e.owned = Some(owned);
    }
    if let Some(doc_open) = patch.doc_open {
        e.doc_open = doc_open;
    }
    if let Some(u) = patch.devowneruuid {
        e.devowneruuid = u;
    }
    if let Some(u) = patch.rowneruuid {
        e.rowneruuid = u;
    }
    if let Some(x) = patch.oxmsel {
        e.oxmsel = x;
    }
    e
}

pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serialise")
}

/// Runs `cmd` to its end, or kills it after `limit` (a gate that starts serving instead of
/// refusing would otherwise never end).
pub fn output_within(
    mut cmd: std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn doxm-gate");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("reap doxm-gate")
}
