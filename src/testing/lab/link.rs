//! The network both kinds of lab stand on: two namespaces joined by a veth pair, with the routes
//! address mode needs. Used by the netns tests (through [`super::Lab`]) and by the load benches
//! ([`super::load`]), which differ only in names and subnet.

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

/// The addresses a lab's link carries: the networks users have (SPEC 4 "Networks").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// IPv4 and IPv6 (a ULA `fd00:{subnet}::/64` and the kernel's link-local addresses).
    Dual,
    /// IPv6 only: the ULA and link-local addresses, no IPv4.
    V6Only,
    /// Only the kernel's `fe80::` addresses: a LAN without a router, the common home case.
    LinkLocalOnly,
    /// IPv4 only, with IPv6 disabled on the link (`disable_ipv6=1`: not even `fe80::`).
    V4Only,
}

impl Net {
    /// Every kind, dual stack first.
    pub const ALL: [Net; 4] = [Net::Dual, Net::V6Only, Net::LinkLocalOnly, Net::V4Only];

    /// Whether the link carries IPv6 (link-local at least).
    pub fn v6(self) -> bool {
        self != Net::V4Only
    }

    /// Whether the link carries IPv4.
    pub fn v4(self) -> bool {
        matches!(self, Net::Dual | Net::V4Only)
    }

    /// Whether the link carries routable (ULA) IPv6 addresses besides the link-local ones.
    pub fn routable_v6(self) -> bool {
        matches!(self, Net::Dual | Net::V6Only)
    }

    /// The discovery groups a client can use on it: ff02::158 with IPv6, 224.0.1.187 with IPv4.
    pub fn groups(self) -> Vec<&'static str> {
        let v6 = self.v6().then_some("ff02::158");
        v6.into_iter().chain(self.v4().then_some("224.0.1.187")).collect()
    }

    /// One letter for names (namespaces, interfaces).
    pub fn letter(self) -> char {
        match self {
            Net::Dual => 'd',
            Net::V6Only => '6',
            Net::LinkLocalOnly => 'l',
            Net::V4Only => '4',
        }
    }
}

/// [`create_on`] with a dual-stack link.
pub fn create(gate_ns: &str, obt_ns: &str, gate_if: &str, obt_if: &str, subnet: u8) {
    create_on(gate_ns, obt_ns, gate_if, obt_if, subnet, Net::Dual);
}

/// Creates namespaces `gate_ns` and `obt_ns` and the veth pair `gate_if`/`obt_if` between them,
/// with the addresses `net` calls for: the gate side `10.{subnet}.0.1/24` and
/// `fd00:{subnet}::1/64`, the OBT side `.2`/`::2`, and the kernel's `fe80::` addresses.
/// The device prefixes of address mode (`fd00:d0c::/64`, `10.77.0.0/16`) are local on the gate
/// and routed to it from the OBT side, through the gate's address of the family: its ULA, or
/// on a link-local-only link its `fe80::` address. [`remove`] undoes it.
pub fn create_on(gate_ns: &str, obt_ns: &str, gate_if: &str, obt_if: &str, subnet: u8, net: Net) {
    sh(&["ip", "netns", "add", gate_ns]);
    sh(&["ip", "netns", "add", obt_ns]);
    sh(&["ip", "link", "add", gate_if, "type", "veth", "peer", "name", obt_if]);
    for (ns, ifname, host) in [(gate_ns, gate_if, 1), (obt_ns, obt_if, 2)] {
        sh(&["ip", "link", "set", ifname, "netns", ns]);
        let dad = format!("net.ipv6.conf.{ifname}.accept_dad=0");
        sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &dad]);
        if !net.v6() {
            set_ipv6(ns, ifname, false);
        }
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        if net.v4() {
            let v4 = format!("10.{subnet}.0.{host}/24");
            sh(&["ip", "-n", ns, "addr", "add", &v4, "dev", ifname]);
        }
        if net.routable_v6() {
            let v6 = format!("fd00:{subnet}::{host}/64");
            sh(&["ip", "-n", ns, "-6", "addr", "add", &v6, "dev", ifname, "nodad"]);
        }
    }
    sh(&["ip", "-n", gate_ns, "-6", "route", "add", "local", "fd00:d0c::/64", "dev", "lo"]);
    sh(&["ip", "-n", gate_ns, "route", "add", "local", "10.77.0.0/16", "dev", "lo"]);
    if net.v4() {
        let via = format!("10.{subnet}.0.1");
        sh(&["ip", "-n", obt_ns, "route", "add", "10.77.0.0/16", "via", &via]);
    }
    if net.v6() {
        // Link-local addresses come up with the link (both ends up): wait for them.
        let gate_ll = wait_link_local(gate_ns, gate_if);
        wait_link_local(obt_ns, obt_if);
        let via = if net.routable_v6() { format!("fd00:{subnet}::1") } else { gate_ll };
        sh(&[
            "ip",
            "-n",
            obt_ns,
            "-6",
            "route",
            "add",
            "fd00:d0c::/64",
            "via",
            &via,
            "dev",
            obt_if,
        ]);
    }
}

/// Turns IPv6 on or off on `ifname` in `ns` (`disable_ipv6`): off removes every IPv6 address
/// of the interface, `fe80::` included; on brings the link-local address back.
pub fn set_ipv6(ns: &str, ifname: &str, on: bool) {
    let sysctl = format!("net.ipv6.conf.{ifname}.disable_ipv6={}", u8::from(!on));
    sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &sysctl]);
}

/// The kernel's link-local address of `ifname` in `ns`, if it has one.
pub fn link_local(ns: &str, ifname: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-6", "-o", "addr", "show", "dev", ifname, "scope", "link"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let addr = text.split_whitespace().skip_while(|w| *w != "inet6").nth(1)?;
    addr.split('/').next().map(str::to_owned)
}

/// Waits (up to 3 s) for the link-local address of `ifname` in `ns`; returns it.
pub fn wait_link_local(ns: &str, ifname: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(addr) = link_local(ns, ifname) {
            return addr;
        }
        assert!(std::time::Instant::now() < deadline, "no link-local address on {ifname} in {ns}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes both namespaces (and with them the veth pair); errors are ignored (cleanup).
pub fn remove(gate_ns: &str, obt_ns: &str) {
    let _ = Command::new("ip").args(["netns", "del", gate_ns]).output();
    let _ = Command::new("ip").args(["netns", "del", obt_ns]).output();
}
