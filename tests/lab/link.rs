//! The network both kinds of lab stand on: two namespaces joined by a veth pair, with the routes
//! address mode needs. Used by the netns tests (`tests/lab/mod.rs`) and by the load benches
//! (`benches/common/lab.rs`, through `#[path]`), which differ only in names and subnet.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

/// The environment variable that turns every skip into a failure (`.ci/run` sets it to 1).
pub const REQUIRE_ALL: &str = "DOXM_GATE_REQUIRE_ALL";

/// The one way a test or bench skips: with `DOXM_GATE_REQUIRE_ALL=1` it panics with `reason`
/// (CI must run everything); otherwise it prints `SKIP` on the real stderr, past the test
/// runner's capture, so the skip shows in the summary of an otherwise passing run. The caller
/// then returns early.
pub fn skip(reason: &str) {
    let who = std::thread::current().name().unwrap_or("bench").to_owned();
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("{who} cannot run here and {REQUIRE_ALL}=1 forbids skipping: {reason}");
    }
    let _ = writeln!(std::io::stderr(), "SKIP {who}: {reason}");
}

/// Why this machine cannot build a lab (not root, no `ip`), or `None` when it can.
pub fn lab_unavailable() -> Option<&'static str> {
    if !is_root() {
        return Some("network namespaces need root (ip netns add); CI runs as root");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the ip command (iproute2) is not installed");
    }
    None
}

/// Whether this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs a command and panics with its stderr if it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run command");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Creates namespaces `gate_ns` and `obt_ns` and the veth pair `gate_if`/`obt_if` between them:
/// the gate side is `10.{subnet}.0.1/24` and `fd00:{subnet}::1/64`, the OBT side `.2`/`::2`.
/// The device prefixes of address mode (`fd00:d0c::/64`, `10.77.0.0/16`) are local on the gate
/// and routed to it from the OBT side. [`remove`] undoes it.
pub fn create(gate_ns: &str, obt_ns: &str, gate_if: &str, obt_if: &str, subnet: u8) {
    sh(&["ip", "netns", "add", gate_ns]);
    sh(&["ip", "netns", "add", obt_ns]);
    sh(&["ip", "link", "add", gate_if, "type", "veth", "peer", "name", obt_if]);
    for (ns, ifname, host) in [(gate_ns, gate_if, 1), (obt_ns, obt_if, 2)] {
        sh(&["ip", "link", "set", ifname, "netns", ns]);
        let dad = format!("net.ipv6.conf.{ifname}.accept_dad=0");
        sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &dad]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        let (v4, v6) = (format!("10.{subnet}.0.{host}/24"), format!("fd00:{subnet}::{host}/64"));
        sh(&["ip", "-n", ns, "addr", "add", &v4, "dev", ifname]);
        sh(&["ip", "-n", ns, "-6", "addr", "add", &v6, "dev", ifname, "nodad"]);
    }
    sh(&["ip", "-n", gate_ns, "-6", "route", "add", "local", "fd00:d0c::/64", "dev", "lo"]);
    sh(&["ip", "-n", gate_ns, "route", "add", "local", "10.77.0.0/16", "dev", "lo"]);
    let (via_v6, via_v4) = (format!("fd00:{subnet}::1"), format!("10.{subnet}.0.1"));
    sh(&["ip", "-n", obt_ns, "-6", "route", "add", "fd00:d0c::/64", "via", &via_v6]);
    sh(&["ip", "-n", obt_ns, "route", "add", "10.77.0.0/16", "via", &via_v4]);
    // Link-local addresses come up with the link; give the kernel a moment.
    std::thread::sleep(Duration::from_millis(300));
}

/// Deletes both namespaces (and with them the veth pair); errors are ignored (cleanup).
pub fn remove(gate_ns: &str, obt_ns: &str) {
    let _ = Command::new("ip").args(["netns", "del", gate_ns]).output();
    let _ = Command::new("ip").args(["netns", "del", obt_ns]).output();
}
