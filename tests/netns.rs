//! The real binary on a real link: two network namespaces joined by a veth pair, the gate in
//! one, the `discover` probe (and raw senders) in the other.
//!
//! Needs root (`ip netns add`); skips with a message otherwise. CI runs as root, so these run
//! there. The lab itself is in `tests/lab/mod.rs`.

#[path = "lab/mod.rs"]
mod lab;

use std::time::{Duration, Instant};

use doxm_gate::fleet::file::{demo_fleet, FleetFile};
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
    args.extend(["--v6-prefix", "fd00:d0c::/64", "--v4-prefix", v4_prefix]);
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
    let obt = "5801f1cd61387b7099602b0bb36f69630373656304646f786d4b6f776e65643d46414c5345222710e206e30800";
    assert_eq!(lab.raw("ff02::158", &[obt], 0.8), 2);
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
    let Some(lab) = Lab::new("s") else { return };
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
