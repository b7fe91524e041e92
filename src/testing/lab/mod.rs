//! A lab for tests that cross a real link: two network namespaces joined by a veth pair, the
//! gate in one, the OBT side (the `discover` probe, raw senders, third-party clients, API calls)
//! in the other. Shared by the netns tests (`doxm_gate::testing::lab`) and, with the load roles
//! of [`load`], by the benches; [`fairness`] is the answer scheduler's fairness scenario, run by
//! both the test that asserts on it and the report that tabulates it.
//!
//! Needs root (`ip netns add`): [`Lab::new`] otherwise skips ([`link::skip`]: a visible `SKIP`
//! line, or a failure under `DOXM_GATE_REQUIRE_ALL=1`) and returns `None`.
//! Every namespace and process is removed when its guard drops, also on failure.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::control::fleet_file::FleetFile;

pub mod fairness;
pub mod link;
pub mod load;

#[allow(unused_imports)] // Not every binary that includes this module uses both.
pub use link::{is_root, sh, skip, Net};

/// The control token of every lab gate ([`Lab::api`] sends it).
pub const TOKEN: &str = "lab-token";
/// [`TOKEN`] as the `Authorization` header's value, for clients of the lab's gates.
pub const AUTHORIZATION: &str = "Bearer lab-token";

/// The gate's executable: next to the test or bench executable's directory (`target/<profile>/
/// deps/<test>-<hash>` runs `target/<profile>/doxm-gate`, which cargo builds for every
/// integration test and bench).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let me = std::env::current_exe().expect("the test executable");
        let profile = me.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
        let gate = profile.join("doxm-gate");
        assert!(gate.exists(), "{} is not built (cargo builds it for tests)", gate.display());
        gate.display().to_string()
    })
}

/// Two namespaces and the veth pair between them.
pub struct Lab {
    /// The gate's namespace.
    pub gate_ns: String,
    /// The OBT side's namespace.
    pub obt_ns: String,
    /// The gate's veth end.
    pub gate_if: String,
    /// The OBT side's veth end.
    pub obt_if: String,
    /// A scratch directory (fleet files, logs), removed on drop.
    pub dir: PathBuf,
    /// The addresses the link carries.
    pub net: Net,
}

impl Lab {
    /// A dual-stack lab; `None` (skipped, see [`link::skip`]) when the test cannot run here.
    pub fn new(tag: &str) -> Option<Lab> {
        Lab::on(tag, Net::Dual)
    }

    /// A lab whose link carries `net`'s addresses; `None` (skipped) when it cannot run here.
    pub fn on(tag: &str, net: Net) -> Option<Lab> {
        if let Some(reason) = link::lab_unavailable() {
            skip(reason);
            return None;
        }
        let id = format!("{tag}{}{:x}", net.letter(), std::process::id() & 0xffff);
        Some(Lab::create("dg-", "v", &id, 200, net))
    }

    /// Creates namespaces `{ns_prefix}g-{id}` and `{ns_prefix}o-{id}`, veth ends
    /// `{if_prefix}g{id}` and `{if_prefix}o{id}` on subnet `subnet`, and a scratch directory;
    /// all removed on drop. The caller has checked that it may ([`link::lab_unavailable`]).
    pub fn create(ns_prefix: &str, if_prefix: &str, id: &str, subnet: u8, net: Net) -> Lab {
        let lab = Lab {
            gate_ns: format!("{ns_prefix}g-{id}"),
            obt_ns: format!("{ns_prefix}o-{id}"),
            gate_if: format!("{if_prefix}g{id}"),
            obt_if: format!("{if_prefix}o{id}"),
            dir: std::env::temp_dir().join(format!("doxm-gate-{ns_prefix}{id}")),
            net,
        };
        // From here on, Drop removes whatever was created, also when a step panics.
        std::fs::create_dir_all(&lab.dir).expect("the lab's directory");
        link::create_on(&lab.gate_ns, &lab.obt_ns, &lab.gate_if, &lab.obt_if, subnet, net);
        lab
    }

    /// The gate's link-local address on its veth (the source of port-mode answers to
    /// ff02::158, and the IPv6 next hop on a link-local-only link).
    pub fn gate_link_local(&self) -> String {
        link::link_local(&self.gate_ns, &self.gate_if).expect("a link-local address")
    }

    /// Writes `fleet` as the lab's fleet file; returns its path for `--fleet`.
    pub fn write_fleet(&self, fleet: &FleetFile) -> String {
        self.write_file("fleet.toml", fleet)
    }

    /// Writes `fleet` as `fleet-{name}.toml` in the lab's directory; returns its path.
    pub fn write_fleet_as(&self, name: &str, fleet: &FleetFile) -> String {
        self.write_file(&format!("fleet-{name}.toml"), fleet)
    }

    fn write_file(&self, file_name: &str, fleet: &FleetFile) -> String {
        let path = self.dir.join(file_name);
        std::fs::write(&path, toml::to_string(fleet).expect("fleet to TOML")).expect("fleet file");
        path.display().to_string()
    }

    /// Starts the gate in its namespace and waits until it serves.
    pub fn gate(&self, args: &[&str]) -> Gate {
        self.gate_within(args, Duration::from_secs(10))
    }

    /// Starts the gate in its namespace and waits up to `limit` until it serves (a gate loading
    /// a million devices takes longer than the tests' small fleets).
    pub fn gate_within(&self, args: &[&str], limit: Duration) -> Gate {
        let mut gate = self.spawn_gate(args);
        let deadline = Instant::now() + limit;
        while !gate.log().contains("doxm-gate serving") {
            let exited = gate.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "gate did not start ({exited:?}):\n{}",
                gate.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gate
    }

    /// Starts a gate that must refuse to start: waits up to `limit` for it to exit; returns
    /// its exit code and log (stderr). Fails the test if it is still running then.
    pub fn gate_refused(&self, args: &[&str], limit: Duration) -> (i32, String) {
        let mut gate = self.spawn_gate(args);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = gate.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), gate.log());
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}:\n{}", gate.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lab's gates run as production ones should: with a control token (through the
    /// environment, so that a test's flags stay about what it tests), which [`Lab::api`] sends.
    /// A gate whose API listens on its veth address would refuse to start without one.
    fn spawn_gate(&self, args: &[&str]) -> Gate {
        static GATES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = GATES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.dir.join(format!("gate-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.gate_ns, bin()])
            .args(args)
            .args(["--iface", &self.gate_if])
            .env("DOXM_GATE_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Gate { child, log, stopped: false }
    }

    /// Runs `discover --json` in the OBT namespace; returns its JSON lines and exit status.
    pub fn discover(&self, args: &[&str]) -> (Vec<serde_json::Value>, i32) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.obt_ns,
                bin(),
                "discover",
                "--json",
                "--iface",
                &self.obt_if,
            ])
            .args(args)
            .output()
            .unwrap();
        let lines = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        (lines, out.status.code().unwrap_or(-1))
    }

    /// Sends `count` copies of one datagram (hex) from the OBT namespace to a group, as fast as
    /// one sender goes; replies are not read.
    pub fn burst(&self, group: &str, datagram: &str, count: usize) {
        let script = format!(
            r#"
import socket, binascii
idx = socket.if_nametoindex("{iface}")
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
d = binascii.unhexlify("{datagram}")
for _ in range({count}):
    s.sendto(d, ("{group}", 5683, 0, idx))
"#,
            iface = self.obt_if,
        );
        self.obt_python(&script);
    }

    /// Sends raw datagrams from the OBT namespace to a group and returns how many replies came
    /// back within `wait`.
    pub fn raw(&self, group: &str, datagrams: &[&str], wait: f64) -> usize {
        let script = format!(
            r#"
import socket, binascii
v6 = ":" in "{group}"
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
if v6:
    idx = socket.if_nametoindex("{iface}")
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
    dest = ("{group}", 5683, 0, idx)
else:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.200.0.2"))
    dest = ("{group}", 5683)
for d in {datagrams:?}:
    s.sendto(binascii.unhexlify(d), dest)
s.settimeout({wait})
n = 0
try:
    while True:
        s.recvfrom(2048)
        n += 1
except socket.timeout:
    pass
print(n)
"#,
            iface = self.obt_if,
        );
        self.obt_python(&script).trim().parse().unwrap()
    }

    /// Runs a Python script in the OBT namespace; returns its output, or fails the test with
    /// its errors.
    fn obt_python(&self, script: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.obt_ns, "python3", "-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        link::remove(&self.gate_ns, &self.obt_ns);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The gate process (`ip netns exec` execs it, so its pid is the gate's); stopped on drop.
pub struct Gate {
    /// The process.
    pub child: Child,
    log: PathBuf,
    stopped: bool,
}

impl Gate {
    /// Its process id (`ip netns exec` execs the gate, so it is the gate's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the gate has written to stderr so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

impl Gate {
    /// SIGTERM, wait for the exit, and the log (with the `stopped ...` summary line).
    pub fn stop(&mut self) -> String {
        terminate(&mut self.child);
        self.stopped = true;
        self.log()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if !self.stopped {
            // SIGTERM first (clean stop), then make sure.
            let _ = Command::new("kill").arg(self.child.id().to_string()).output();
            std::thread::sleep(Duration::from_millis(100));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGTERM, then up to 10 s for `child` to exit, then SIGKILL.
pub fn terminate(child: &mut Child) {
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

impl Lab {
    /// One control-API call from the OBT namespace (the API listens on the gate's veth address
    /// in these tests, so it is reachable across the link); returns the status and body.
    pub fn api(&self, control: &str, method: &str, path: &str, body: &str) -> (u16, String) {
        let script = format!(
            r#"
import sys, urllib.request, urllib.error
req = urllib.request.Request("http://{control}{path}", method="{method}", data={data},
                             headers={{"Content-Type": "application/json",
                                       "Authorization": "Bearer {TOKEN}"}})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status); sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); sys.stdout.write(e.read().decode())
"#,
            data = if body.is_empty() { "None".to_owned() } else { format!("{body:?}.encode()") },
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.obt_ns, "python3", "-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
        (status.trim().parse().unwrap(), body.to_owned())
    }
}

/// The UUIDs of the devices in `file` that may answer discovery: RFOTM, unowned, no DOC, and
/// (for VODs) an owned bridge. Written from the fleet file, not from the gate's code.
pub fn eligible_uuids(file: &FleetFile) -> BTreeSet<String> {
    let owned_bridges: BTreeSet<_> =
        file.device.iter().filter(|d| d.dos.is_some_and(|dos| dos >= 2)).map(|d| d.uuid).collect();
    file.device
        .iter()
        .filter(|d| d.dos == Some(1) && !d.doc_open && d.owned != Some(true))
        .filter(|d| d.bridge.is_none_or(|b| owned_bridges.contains(&b)))
        .map(|d| d.uuid.hyphenated().to_string())
        .collect()
}

/// The `uuid`s of `discover --json` lines.
pub fn uuids(lines: &[serde_json::Value]) -> BTreeSet<String> {
    lines.iter().map(|l| l["deviceuuid"].as_str().unwrap().to_owned()).collect()
}

/// Asserts that every `discover --follow --json` line carries the follow-ups of its device as
/// registered in `file` (`/oic/res` link, `eps`, `/oic/d`).
pub fn assert_followed(lines: &[serde_json::Value], file: &FleetFile) {
    for line in lines {
        assert_eq!(line["follow"], "ok", "{line}");
        let uuid = line["deviceuuid"].as_str().unwrap();
        let entry = file.device.iter().find(|d| d.uuid.hyphenated().to_string() == uuid).unwrap();
        assert_eq!(line["name"], entry.name.as_str(), "{line}");
        let eps: Vec<&str> =
            line["eps"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        // The endpoints of the family the device was discovered on, in the registered order.
        let v6 = line["source"].as_str().unwrap().starts_with('[');
        let want: Vec<&str> =
            entry.eps.iter().map(String::as_str).filter(|e| e.contains("://[") == v6).collect();
        assert!(!want.is_empty(), "{line}");
        assert_eq!(eps, want, "{line}");
    }
}

/// A small fleet: two eligible devices, one with a DOC open, one owned, one unknown.
pub fn small_fleet() -> FleetFile {
    let text = r#"
        [[device]]
        uuid = "5a11f1ee-0000-4000-8000-000000000001"
        name = "eligible one"
        dos = 1
        eps = ["coap://[fd00:b::1]:1001", "coap://10.1.2.3:1001", "coaps://[fd00:b::1]:1002"]
        [[device]]
        uuid = "5a11f1ee-0000-4000-8000-000000000002"
        name = "doc open"
        dos = 1
        doc_open = true
        [[device]]
        uuid = "5a11f1ee-0000-4000-8000-000000000003"
        name = "owned"
        dos = 3
        [[device]]
        uuid = "5a11f1ee-0000-4000-8000-000000000004"
        name = "unknown state"
        [[device]]
        uuid = "5a11f1ee-0000-4000-8000-000000000005"
        name = "eligible two"
        types = ["oic.wk.d", "oic.d.light"]
        dos = 1
        eps = ["coap://[fd00:b::5]:1003", "coaps://[fd00:b::5]:1004", "coaps://10.1.2.3:1004"]
    "#;
    toml::from_str(text).unwrap()
}
