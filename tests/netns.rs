//! The real binary on a real link: two network namespaces joined by a veth pair, the gate in
//! one, the `discover` probe (and raw senders) in the other.
//!
//! Needs root (`ip netns add`); skips with a message otherwise. CI runs as root, so these run
//! there. The lab itself is `doxm_gate::testing::lab`.

use doxm_gate::testing::lab;

use std::time::{Duration, Instant};

use doxm_gate::control::fleet_file::{demo_fleet, FleetFile};
use lab::{assert_followed, eligible_uuids, sh, small_fleet, uuids, Lab};

#[test]
fn demo_fleet_port_mode_discover_and_follow() {
    let Some(lab) = Lab::new("p") else { return };
    let _gate = lab.gate(&["demo", "--leisure-ms", "300"]);
    let fleet = demo_fleet(1_000);
    let want = eligible_uuids(&fleet);
    assert_eq!(want.len(), 90);
    for group in ["ff02::158", "224.0.1.187"] {
        let (lines, status) = lab.discover(&["--group", group, "--follow", "--wait", "1.5"]);
        assert_eq!(status, 0);
        assert_eq!(uuids(&lines), want, "{group}");
        assert_eq!(lines.len(), want.len(), "one answer per device on {group}");
        assert_followed(&lines, &fleet);
    }
}

/// The gate over the small fleet in address mode, with `fd00:d0c::/64` and `v4_prefix`.
fn address_mode_gate(lab: &Lab, v4_prefix: &str) -> (lab::Gate, FleetFile) {
    let fleet = small_fleet();
    let path = lab.write_fleet(&fleet);
    let mut args = vec!["run", "--fleet", &path, "--mode", "address", "--leisure-ms", "200"];
    args.extend(["--v6-prefix", "fd00:d0c::/64", "--v4-prefix", v4_prefix, "--control", ""]);
    (lab.gate(&args), fleet)
}

#[test]
fn custom_fleet_address_mode_v6_and_v4() {
    let Some(lab) = Lab::new("a") else { return };
    let (_gate, fleet) = address_mode_gate(&lab, "10.77.0.0/16");
    let want = eligible_uuids(&fleet);
    assert_eq!(want.len(), 2);
    for (group, prefix) in [("ff02::158", "[fd00:d0c::"), ("224.0.1.187", "10.77.0.")] {
        let (lines, status) = lab.discover(&["--group", group, "--follow", "--wait", "1"]);
        assert_eq!(status, 0);
        assert_eq!(uuids(&lines), want, "{group}");
        for line in &lines {
            assert!(line["source"].as_str().unwrap().starts_with(prefix), "{line}");
        }
        assert_followed(&lines, &fleet);
    }
}

#[test]
fn address_mode_v4_prefix_smaller_than_the_fleet() {
    let Some(lab) = Lab::new("s") else { return };
    // A /30 holds devices 0 and 1 of the five; the /64 holds them all. The gate serves the
    // whole fleet: IPv6 discoveries reach every eligible device, IPv4 ones the first two.
    let (_gate, fleet) = address_mode_gate(&lab, "10.77.0.0/30");
    let all = eligible_uuids(&fleet);
    assert_eq!(all.len(), 2);
    let first: std::collections::BTreeSet<String> =
        ["5a11f1ee-0000-4000-8000-000000000001".to_owned()].into();
    for (group, want) in [("ff02::158", &all), ("224.0.1.187", &first)] {
        let (lines, status) = lab.discover(&["--group", group, "--follow", "--wait", "1"]);
        assert_eq!(status, 0);
        assert_eq!(&uuids(&lines), want, "{group}");
        assert_eq!(lines.len(), want.len(), "{group}: {lines:?}");
        assert_followed(&lines, &fleet);
    }
}

#[test]
fn copies_and_junk() {
    let Some(lab) = Lab::new("c") else { return };
    let fleet = small_fleet();
    let path = lab.write_fleet(&fleet);
    let _gate = lab.gate(&["run", "--fleet", &path, "--leisure-ms", "200"]);
    // Identical v4 + v6 copies (same token and MID): one answer per device.
    let (lines, _) = lab.discover(&["--group", "all", "--wait", "1"]);
    assert_eq!(uuids(&lines), eligible_uuids(&fleet));
    assert_eq!(lines.len(), 2, "{lines:?}");
    // The real OBT request as CON, a malformed datagram, and a non-doxm GET: nothing comes back.
    let con = "4801f1cd61387b7099602b0bb36f69630373656304646f786d4b6f776e65643d46414c5345222710e206e30800";
    let malformed = "5f01f1cd";
    let res = "5001beef".to_owned() + "b36f696303726573";
    for group in ["ff02::158", "224.0.1.187"] {
        assert_eq!(lab.raw(group, &[con, malformed, &res], 0.8), 0, "{group}");
    }
    // And the valid request itself does get answers (the sender works).
    let obt = hex::encode(doxm_gate::wire::fixtures::OBT_REQUEST);
    assert_eq!(lab.raw("ff02::158", &[obt.as_str()], 0.8), 2);
}

#[test]
fn interface_down_and_up_resumes_answering() {
    let Some(lab) = Lab::new("d") else { return };
    let fleet = small_fleet();
    let path = lab.write_fleet(&fleet);
    let gate = lab.gate(&["run", "--fleet", &path, "--leisure-ms", "200"]);
    let want = eligible_uuids(&fleet);
    let (lines, _) = lab.discover(&["--group", "ff02::158", "--wait", "1"]);
    assert_eq!(uuids(&lines), want);
    sh(&["ip", "-n", &lab.gate_ns, "link", "set", &lab.gate_if, "down"]);
    std::thread::sleep(Duration::from_millis(2_500));
    let (lines, _) = lab.discover(&["--group", "ff02::158", "--wait", "0.5"]);
    assert!(lines.is_empty(), "nothing answers over a link that is down");
    sh(&["ip", "-n", &lab.gate_ns, "link", "set", &lab.gate_if, "up"]);
    // The gate looks at its interfaces every 2 s; allow a few seconds in all.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let (lines, _) = lab.discover(&["--group", "all", "--wait", "0.7"]);
        if uuids(&lines) == want {
            break;
        }
        assert!(Instant::now() < deadline, "no answers after the link came back:\n{}", gate.log());
    }
    assert!(gate.log().contains("interface down, gone or changed"), "{}", gate.log());
}

#[test]
fn doc_opened_through_the_api_silences_the_device() {
    let Some(lab) = Lab::new("k") else { return };
    let fleet = small_fleet();
    let path = lab.write_fleet(&fleet);
    let state = lab.dir.join("state");
    let control = "10.200.0.1:8683";
    let _gate = lab.gate(&[
        "run",
        "--fleet",
        &path,
        "--leisure-ms",
        "200",
        "--control",
        control,
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let want = eligible_uuids(&fleet);
    let (lines, _) = lab.discover(&["--group", "ff02::158", "--wait", "1"]);
    assert_eq!(uuids(&lines), want);
    // The bridge reports that an OBT opened a DOC to "eligible one": it must go silent.
    let one = "5a11f1ee-0000-4000-8000-000000000001";
    let (status, body) =
        lab.api(control, "PATCH", &format!("/v1/devices/{one}"), r#"{"doc_open":true}"#);
    assert_eq!(status, 200, "{body}");
    let (lines, _) = lab.discover(&["--group", "ff02::158", "--wait", "1"]);
    let mut rest = want.clone();
    rest.remove(one);
    assert_eq!(uuids(&lines), rest);
    let (status, body) = lab.api(control, "GET", &format!("/v1/devices/{one}"), "");
    assert_eq!(status, 200);
    assert!(body.contains(r#""reason":"doc-open""#), "{body}");
    // The DOC closes without an owner transfer: the device answers again.
    let (status, _) =
        lab.api(control, "PATCH", &format!("/v1/devices/{one}"), r#"{"doc_open":false}"#);
    assert_eq!(status, 200);
    let (lines, _) = lab.discover(&["--group", "ff02::158", "--wait", "1"]);
    assert_eq!(uuids(&lines), want);
}

#[test]
fn two_gates_with_disjoint_shards_answer_the_union_once() {
    let Some(lab) = Lab::new("u") else { return };
    let fleet = demo_fleet(200);
    // Shard by device index: even entries to gate A, odd to gate B (the bridge goes to both, as
    // each gate needs to know whether its VODs' bridge is owned).
    let (mut a, mut b) = (FleetFile::default(), FleetFile::default());
    for (i, d) in fleet.device.iter().enumerate() {
        if i == 0 || i % 2 == 0 {
            a.device.push(d.clone());
        }
        if i == 0 || i % 2 == 1 {
            b.device.push(d.clone());
        }
    }
    let (path_a, path_b) = (lab.dir.join("a.toml"), lab.dir.join("b.toml"));
    std::fs::write(&path_a, toml::to_string(&a).unwrap()).unwrap();
    std::fs::write(&path_b, toml::to_string(&b).unwrap()).unwrap();
    let common = ["--leisure-ms", "300", "--port-count", "200", "--control", ""];
    let _gate_a = lab.gate(
        &[&["run", "--fleet", path_a.to_str().unwrap(), "--port-base", "40000"][..], &common]
            .concat(),
    );
    let _gate_b = lab.gate(
        &[&["run", "--fleet", path_b.to_str().unwrap(), "--port-base", "41000"][..], &common]
            .concat(),
    );
    let (lines, status) = lab.discover(&["--group", "all", "--follow", "--wait", "1.5"]);
    assert_eq!(status, 0);
    let want = eligible_uuids(&fleet);
    assert_eq!(want.len(), 18);
    assert_eq!(uuids(&lines), want, "the union of both shards");
    assert_eq!(lines.len(), want.len(), "once per device");
    assert_followed(&lines, &fleet);
}

/// SPEC 4 "Networks": on every kind of link the gate serves each family the link carries, in
/// both endpoint modes, and the follow-ups (`/oic/res`, `/oic/d`) list the registered `eps`
/// whatever addresses the gate holds. A family the link lacks is a warning, logged once.
#[test]
fn every_network_serves_its_families_in_both_modes() {
    for net in lab::Net::ALL {
        let Some(lab) = Lab::on("n", net) else { return };
        let fleet = small_fleet();
        let want = eligible_uuids(&fleet);
        let path = lab.write_fleet(&fleet);
        let port_mode = ["run", "--fleet", &path, "--leisure-ms", "200", "--control", ""];
        for address_mode in [false, true] {
            let started = Instant::now();
            let gate = match address_mode {
                false => lab.gate(&port_mode),
                true => address_mode_gate(&lab, "10.77.0.0/16").0,
            };
            for group in net.groups() {
                let what = format!("{net:?}, {group}, address mode {address_mode}");
                let (lines, status) = lab.discover(&["--group", group, "--follow", "--wait", "1"]);
                assert_eq!(status, 0, "{what}: {lines:?}");
                assert_eq!(uuids(&lines), want, "{what}:\n{}", gate.log());
                assert_eq!(lines.len(), want.len(), "{what}: {lines:?}");
                let from = match (address_mode, group.contains(':')) {
                    (false, true) => format!("[{}%{}]:", lab.gate_link_local(), lab.obt_if),
                    (false, false) => "10.200.0.1:".to_owned(),
                    (true, true) => "[fd00:d0c::".to_owned(),
                    (true, false) => "10.77.0.".to_owned(),
                };
                for line in &lines {
                    assert!(line["source"].as_str().unwrap().starts_with(&from), "{what}: {line}");
                }
                assert_followed(&lines, &fleet);
            }
            if address_mode {
                continue;
            }
            // The gate looks at its interfaces every 2 s: after a few looks, still one warning
            // per missing family, and none on a dual-stack link.
            std::thread::sleep(Duration::from_millis(4_500).saturating_sub(started.elapsed()));
            let log = gate.log();
            for (family, carried) in [("IPv6", net.v6()), ("IPv4", net.v4())] {
                let warnings = log.matches(&format!("has no {family} address")).count();
                assert_eq!(warnings, usize::from(!carried), "{net:?} {family}:\n{log}");
            }
            assert_eq!(log.matches("WARN").count(), usize::from(net != lab::Net::Dual), "{log}");
        }
    }
}

/// An address added after start is picked up like an interface that comes back: a gate on an
/// IPv4-only link starts (warning about IPv6), and once IPv6 comes up on the link it joins
/// ff02::158 and answers over link-local IPv6.
#[test]
fn ipv6_enabled_after_start_is_joined() {
    let Some(lab) = Lab::on("e", lab::Net::V4Only) else { return };
    let fleet = small_fleet();
    let path = lab.write_fleet(&fleet);
    let gate = lab.gate(&["run", "--fleet", &path, "--leisure-ms", "200"]);
    assert!(gate.log().contains("has no IPv6 address"), "{}", gate.log());
    let want = eligible_uuids(&fleet);
    let (lines, _) = lab.discover(&["--group", "224.0.1.187", "--wait", "0.7"]);
    assert_eq!(uuids(&lines), want);
    for (ns, ifname) in [(&lab.gate_ns, &lab.gate_if), (&lab.obt_ns, &lab.obt_if)] {
        lab::link::set_ipv6(ns, ifname, true);
    }
    lab::link::wait_link_local(&lab.gate_ns, &lab.gate_if);
    lab::link::wait_link_local(&lab.obt_ns, &lab.obt_if);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (lines, _) = lab.discover(&["--group", "ff02::158", "--follow", "--wait", "0.7"]);
        if uuids(&lines) == want {
            assert_followed(&lines, &fleet);
            break;
        }
        assert!(Instant::now() < deadline, "no answers over IPv6 added later:\n{}", gate.log());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// One gate per port: a second gate over the same device ports, or the same
/// address-mode prefix, refuses to start within a second, naming the endpoint and the process
/// that holds it; gates over disjoint shards start side by side.
#[test]
fn a_second_gate_on_the_same_endpoints_is_refused() {
    let Some(lab) = Lab::new("o") else { return };
    let fleet = small_fleet();
    let path = lab.write_fleet(&fleet);
    let ports = |base: &'static str| {
        let mut args = vec!["run", "--fleet", &path, "--port-base", base, "--port-count", "50"];
        args.extend(["--control", "", "--leisure-ms", "200"]);
        args
    };
    let first = lab.gate(&ports("40000"));
    assert_refused(&lab, &ports("40000"), "device port 40000", Some(&first));
    // Overlapping, not equal: refused at the first shared port.
    assert_refused(&lab, &ports("40030"), "device port 40030", Some(&first));
    let _disjoint = lab.gate(&ports("40050"));

    let address = |v6: &'static str| {
        let mut args = vec!["run", "--fleet", &path, "--mode", "address", "--leisure-ms", "200"];
        args.extend(["--control", ""]);
        args.extend(["--v6-prefix", v6, "--v4-prefix", "10.77.0.0/16"]);
        args
    };
    let third = lab.gate(&address("fd00:d0c::/64"));
    let same = "address-mode prefix fd00:d0c::/64 on port 5683";
    assert_refused(&lab, &address("fd00:d0c::/64"), same, Some(&third));
    // Another IPv6 prefix but the same IPv4 one: refused on the IPv4 prefix.
    let v4 = "address-mode prefix 10.77.0.0/16 on port 5683";
    assert_refused(&lab, &address("fd00:d0e::/64"), v4, Some(&third));
    // Every gate still answers for its own devices (the group port is shared).
    let (lines, _) = lab.discover(&["--group", "ff02::158", "--wait", "1"]);
    assert_eq!(lines.len(), 3 * eligible_uuids(&fleet).len(), "three gates, one fleet each");
}

/// Starts a gate over `args` that must exit non-zero within a second, its error naming
/// `endpoint` and the pid of `holder`.
fn assert_refused(lab: &Lab, args: &[&str], endpoint: &str, holder: Option<&lab::Gate>) {
    let started = Instant::now();
    let (code, log) = lab.gate_refused(args, Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}:\n{log}", started.elapsed());
    assert_ne!(code, 0, "{log}");
    assert!(log.contains(&format!("{endpoint} is in use")), "{log}");
    if let Some(gate) = holder {
        assert!(log.contains(&format!("by pid {} (doxm-gate)", gate.pid())), "{log}");
    }
}

/// SPEC 1.1: the plgd client on a host with a ULA. One socket, one Message
/// ID, a fresh token per group: ff02::158 from the link-local address (the kernel's choice),
/// ff03::158 and ff05::158 from the ULA (given with IPV6_PKTINFO, as the kernel would pick it
/// for those scopes). The gate takes them for one exchange: one answer per device, to the first
/// copy. A second exchange to ff03::158 alone, from the ULA, is answered there (so the copies
/// would have been, were they not recognised).
#[test]
fn plgd_copies_from_a_host_with_a_ula_answered_once() {
    let Some(lab) = Lab::new("m") else { return };
    let ula_gate = "fd00:77::1";
    let ula_obt = "fd00:77::2";
    for (ns, ifname, address) in
        [(&lab.gate_ns, &lab.gate_if, ula_gate), (&lab.obt_ns, &lab.obt_if, ula_obt)]
    {
        sh(&["ip", "-n", ns, "addr", "add", &format!("{address}/64"), "dev", ifname, "nodad"]);
    }
    let fleet = demo_fleet(200);
    let want = eligible_uuids(&fleet);
    assert_eq!(want.len(), 18);
    let path = lab.write_fleet(&fleet);
    // The default 2 s window: with a short one, a gate descheduled on a loaded CI machine past
    // an answer's window end rightly expires it (SPEC 4), and this test is about the copies.
    let gate = lab.gate(&["run", "--fleet", &path, "--leisure-ms", "2000", "--control", ""]);
    let request = |mid: u16, token: &str| {
        // NON GET /oic/sec/doxm?owned=FALSE with a 4-byte token.
        format!("5401{mid:04x}{token}b36f69630373656304646f786d4b6f776e65643d46414c5345")
    };
    let copies = [
        ("ff02::158", "", request(0x4242, "0a0b0c01")),
        ("ff03::158", ula_obt, request(0x4242, "0a0b0c02")),
        ("ff05::158", ula_obt, request(0x4242, "0a0b0c03")),
    ];
    let script = format!(
        r#"
import socket, struct, binascii, json
idx = socket.if_nametoindex("{iface}")
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 0))
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
def send(group, source, hexbytes):
    d = binascii.unhexlify(hexbytes)
    if source:
        info = socket.inet_pton(socket.AF_INET6, source) + struct.pack("I", idx)
        s.sendmsg([d], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0, (group, 5683, 0, idx))
    else:
        s.sendto(d, (group, 5683, 0, idx))
def collect(wait):
    s.settimeout(wait)
    try:
        while True:
            data, peer = s.recvfrom(2048)
            tkl = data[0] & 15
            token = binascii.hexlify(data[4:4 + tkl]).decode()
            at = data.find(b"jdeviceuuidx$")
            uuid = data[at + 13:at + 49].decode() if at >= 0 else ""
            print(json.dumps({{"token": token, "uuid": uuid, "peer": peer[0]}}), flush=True)
    except socket.timeout:
        pass
for group, source, hexbytes in {copies:?}:
    send(group, source, hexbytes)
collect(2.5)
print("--", flush=True)
send("ff03::158", "{ula_obt}", "{second}")
collect(2.5)
"#,
        iface = lab.obt_if,
        copies = copies.iter().map(|(g, s, d)| (*g, *s, d.as_str())).collect::<Vec<_>>(),
        second = request(0x4243, "0a0b0c04"),
    );
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.obt_ns, "python3", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (copied, second) = text.split_once("--\n").expect("both phases ran");
    let parse = |lines: &str| -> Vec<serde_json::Value> {
        lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (copied, second) = (parse(copied), parse(second));
    let log = gate.log();
    assert_eq!(
        copied.len(),
        want.len(),
        "one answer per device, not one per copy: {copied:?}\n{log}"
    );
    assert_eq!(uuids_of(&copied), want, "{copied:?}");
    for line in &copied {
        assert_eq!(line["token"], "0a0b0c01", "the first copy (ff02, link-local) wins: {line}");
        assert!(line["peer"].as_str().unwrap().starts_with("fe80:"), "{line}");
    }
    // The ULA path works: a new exchange from the ULA to ff03::158 is answered there.
    assert_eq!(second.len(), want.len(), "{second:?}\n{log}");
    assert_eq!(uuids_of(&second), want);
    assert!(second.iter().all(|l| l["token"] == "0a0b0c04"), "{second:?}");
}

fn uuids_of(lines: &[serde_json::Value]) -> std::collections::BTreeSet<String> {
    lines.iter().map(|l| l["uuid"].as_str().unwrap().to_owned()).collect()
}
