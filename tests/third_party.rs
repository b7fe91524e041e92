//! Proof against software no one here wrote: libcoap's `coap-client-notls`, aiocoap
//! and node-coap send the OBT's multicast discovery over the lab's veth to the real gate, and
//! must see exactly the eligible devices; then the scenarios a bridge meets (state flips through the
//! control API, copies, query variants, No-Response, follow-ups in both endpoint modes).
//!
//! Needs root (network namespaces, see `doxm_gate::testing::lab`) and the clients, which
//! `.ci/install-clients` installs: `coap-client-notls` on PATH (Debian `libcoap3-bin`), aiocoap
//! and cbor2 importable by the `python3` on PATH, and node-coap in
//! `$DOXM_GATE_CLIENTS/node_modules` (default `/opt/doxm-gate-clients`). A test whose client is
//! missing skips with a visible `SKIP` line, except under `DOXM_GATE_REQUIRE_ALL=1` (set by
//! `.ci/run`), where it fails the test: CI must exercise them. The drivers are in `tests/clients/`.

use doxm_gate::testing::lab;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use doxm_gate::control::fleet_file::FleetFile;
use lab::{assert_followed, eligible_uuids, uuids, Lab, Net};
use serde_json::Value;

// ---- The clients -------------------------------------------------------------------------

const LIBCOAP: &str = "coap-client-notls";
const PORT_BASE: u16 = 41_000;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("clients")
}

/// Where `.ci/install-clients` put node-coap.
fn node_path() -> PathBuf {
    let prefix = std::env::var_os("DOXM_GATE_CLIENTS")
        .map_or_else(|| PathBuf::from("/opt/doxm-gate-clients"), PathBuf::from);
    prefix.join("node_modules")
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .env("NODE_PATH", node_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `client` is installed; when it is not, skip ([`lab::skip`]).
fn have(client: &str) -> bool {
    let ok = match client {
        "libcoap" => runs("sh", &["-c", &format!("command -v {LIBCOAP}")]),
        "aiocoap" => runs("python3", &["-c", "import aiocoap, cbor2"]),
        "node-coap" => runs("node", &["-e", "require('coap')"]),
        _ => unreachable!(),
    };
    if !ok {
        lab::skip(&format!("{client} is not installed: run `bash .ci/install-clients` (as root)"));
    }
    ok
}

/// A lab on a `net` link for a test that uses `clients`, or `None` (skipped).
fn lab_for(tag: &str, net: Net, clients: &[&str]) -> Option<Lab> {
    if !lab::is_root() {
        return Lab::on(tag, net); // skips
    }
    if !clients.iter().all(|c| have(c)) {
        return None;
    }
    Lab::on(tag, net)
}

fn obt_command(lab: &Lab, program: &str, args: &[String]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.obt_ns, program])
        .args(args)
        .env("NODE_PATH", node_path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn finish(child: Child, what: &str) -> Output {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Starts `tests/clients/aiocoap_discover.py` with `args` (after `--iface`).
fn aiocoap_spawn(lab: &Lab, args: &[&str]) -> Child {
    let script = clients_dir().join("aiocoap_discover.py");
    let mut all = vec![script.display().to_string(), "--iface".into(), lab.obt_if.clone()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    obt_command(lab, "python3", &all).spawn().unwrap()
}

/// One aiocoap discovery: its answers, one JSON object each.
fn aiocoap(lab: &Lab, args: &[&str]) -> Vec<Value> {
    json_lines(&finish(aiocoap_spawn(lab, args), &format!("aiocoap {args:?}")))
}

/// One node-coap discovery: its answers, one JSON object each.
fn node_coap(lab: &Lab, args: &[&str]) -> Vec<Value> {
    let script = clients_dir().join("node_discover.js");
    let mut all = vec![script.display().to_string(), "--iface".into(), lab.obt_if.clone()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let child = obt_command(lab, "node", &all).spawn().unwrap();
    json_lines(&finish(child, &format!("node-coap {args:?}")))
}

/// One answer as libcoap logged it.
#[derive(Debug)]
struct Logged {
    /// The answer's source as libcoap prints it: `[fe80::1]:41000`, `10.200.0.1:41000`.
    source: String,
    /// libcoap's one-line summary of the message (`v:1 t:NON c:2.05 i:.. {..} [ options ]`).
    summary: String,
    /// The payload's `deviceuuid` (decoded with ciborium from the logged hex).
    deviceuuid: String,
}

/// Runs `coap-client-notls` in the OBT namespace: the OBT's discovery (NON GET, no Uri-Host,
/// Accept 10000, OCF-Accept-Content-Format-Version 2048) to `group`, waiting `secs` seconds
/// for answers. libcoap 4.3.1 rejects (RST) every answer, as option 2053 is critical and unknown
/// to it, but at `-v 7` it first logs each datagram it received: those are the answers.
fn libcoap(lab: &Lab, group: &str, query: &str, secs: u32) -> Vec<Logged> {
    let uri = if group.starts_with("ff02") {
        format!("coap://[{group}%{}]/oic/sec/doxm{query}", lab.obt_if)
    } else if group.contains(':') {
        format!("coap://[{group}]/oic/sec/doxm{query}")
    } else {
        format!("coap://{group}/oic/sec/doxm{query}")
    };
    let mut args: Vec<String> = ["-m", "get", "-N", "-U", "-A", "10000", "-O", "2049,0x0800"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(["-B".to_owned(), secs.to_string(), "-v".to_owned(), "7".to_owned()]);
    if !group.contains(':') {
        // No route to 224.0.0.0/4 in the OBT namespace: name the interface by its address.
        args.extend(["-a".to_owned(), "10.200.0.2".to_owned()]);
    }
    args.push(uri);
    let out = obt_command(lab, LIBCOAP, &args).output().unwrap();
    // coap-client's exit status is not about answers (a multicast request "times out"), and it
    // logs to stdout or stderr depending on the level: read both.
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("sent "), "coap-client sent nothing:\n{text}");
    parse_libcoap_log(&text)
}

/// The answers in a `coap-client -v 7` log: each `... <-> SOURCE UDP : received N bytes` line,
/// the message summary after it, and the `<<hex>>` payload dump.
fn parse_libcoap_log(text: &str) -> Vec<Logged> {
    let lines: Vec<&str> = text.lines().collect();
    let mut answers = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = line.find(" UDP : received ") else { continue };
        let source = line[..at].rsplit("<-> ").next().unwrap().trim().to_owned();
        let rest = &lines[i + 1..];
        let end = rest.iter().position(|l| l.contains(" UDP : received ")).unwrap_or(rest.len());
        let rest = &rest[..end];
        let summary = rest.iter().find(|l| l.starts_with("v:1 ")).unwrap_or(&"").to_string();
        let hex = rest
            .iter()
            .filter_map(|l| l.strip_prefix("<<").and_then(|l| l.strip_suffix(">>")))
            .find(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .unwrap_or_else(|| panic!("no payload logged for the answer from {source}:\n{text}"));
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|j| u8::from_str_radix(&hex[j..j + 2], 16).unwrap())
            .collect();
        let value: ciborium::Value = ciborium::from_reader(bytes.as_slice()).unwrap();
        let deviceuuid = value
            .as_map()
            .and_then(|m| {
                m.iter()
                    .find(|(k, _)| k.as_text() == Some("deviceuuid"))
                    .and_then(|(_, v)| v.as_text())
            })
            .unwrap_or_else(|| panic!("no deviceuuid in {value:?}"))
            .to_owned();
        answers.push(Logged { source, summary, deviceuuid });
    }
    answers
}

// ---- Fleets and endpoints ----------------------------------------------------------------

/// A mixed-state fleet: an owned bridge with VODs in every state, an unowned bridge (itself
/// eligible) whose VODs must stay silent, and stand-alone devices. Every device has endpoints
/// in both families, so a follow-up can be checked on either.
fn mixed_fleet() -> FleetFile {
    let mut text = String::new();
    // (name, types, bridge, state)
    let rows: [(&str, &str, Option<usize>, &str); 15] = [
        ("bridge A (owned)", "oic.d.bridge", None, "dos = 3"),
        ("A1 rfotm", "oic.d.light", Some(0), "dos = 1"),
        ("A2 doc open", "oic.d.light", Some(0), "dos = 1\ndoc_open = true"),
        ("A3 rfpro", "oic.d.light", Some(0), "dos = 2"),
        ("A4 rfnop", "oic.d.light", Some(0), "dos = 3"),
        ("A5 reset", "oic.d.light", Some(0), "dos = 0"),
        ("A6 sreset", "oic.d.light", Some(0), "dos = 4"),
        ("A7 unknown", "oic.d.light", Some(0), ""),
        ("A8 rfotm", "oic.d.sensor", Some(0), "dos = 1\noxms = [0, 2]\nsct = 9"),
        ("bridge B (unowned)", "oic.d.bridge", None, "dos = 1"),
        ("B1 rfotm", "oic.d.light", Some(9), "dos = 1"),
        ("B2 rfotm", "oic.d.light", Some(9), "dos = 1"),
        ("S1 rfotm", "oic.d.switch", None, "dos = 1"),
        ("S2 rfnop", "oic.d.switch", None, "dos = 3"),
        ("S3 rfotm", "oic.d.fan", None, "dos = 1\noxms = [0, 1]"),
    ];
    for (i, (name, kind, bridge, state)) in rows.iter().enumerate() {
        let virt = if bridge.is_some() { ", \"oic.d.virtual\"" } else { "" };
        text += &format!(
            "[[device]]\nuuid = \"{}\"\nname = \"{name}\"\ntypes = [\"oic.wk.d\", \"{kind}\"{virt}]\n{state}\n",
            mixed_uuid(i)
        );
        if let Some(b) = bridge {
            text += &format!("bridge = \"{}\"\n", mixed_uuid(*b));
        }
        let p = 2 * i + 5000;
        text += &format!(
            "eps = [\"coap://[fd00:b::{i:x}]:{p}\", \"coap://10.9.0.{i}:{p}\", \"coaps://[fd00:b::{i:x}]:{}\", \"coaps://10.9.0.{i}:{}\"]\n",
            p + 1,
            p + 1
        );
    }
    toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn mixed_uuid(i: usize) -> String {
    format!("3a1d0000-0000-4000-8000-{i:012x}")
}

/// Gate arguments for a fleet file: short leisure, no rate limiting in the way of the many
/// discoveries a test sends from one source, and the given extra flags.
fn gate_args<'a>(fleet: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--fleet",
        fleet,
        "--leisure-ms",
        "200",
        "--source-rate",
        "100",
        "--source-burst",
        "100",
    ];
    args.extend_from_slice(extra);
    args
}

const ADDRESS_MODE: [&str; 6] =
    ["--mode", "address", "--v6-prefix", "fd00:d0c::/64", "--v4-prefix", "10.77.0.0/16"];

/// Where each device of `fleet` answers from, by UUID, in the family of `group` (SPEC s5: port
/// mode, device i at `PORT_BASE + i` on the gate's interface address; address mode, device i at
/// prefix + i + 1 on port 5683). libcoap's spelling: no zone.
fn endpoints(
    lab: &Lab,
    fleet: &FleetFile,
    group: &str,
    address_mode: bool,
) -> BTreeMap<String, String> {
    let v6 = group.contains(':');
    let ll = if v6 { lab.gate_link_local() } else { String::new() };
    fleet
        .device
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let ep = match (address_mode, v6) {
                (false, true) if group.starts_with("ff02") => {
                    format!("[{ll}]:{}", usize::from(PORT_BASE) + i)
                }
                (false, true) => format!("[fd00:200::1]:{}", usize::from(PORT_BASE) + i),
                (false, false) => format!("10.200.0.1:{}", usize::from(PORT_BASE) + i),
                (true, true) => format!("[fd00:d0c::{:x}]:5683", i + 1),
                (true, false) => format!("10.77.{}.{}:5683", (i + 1) >> 8, (i + 1) & 255),
            };
            (d.uuid.hyphenated().to_string(), ep)
        })
        .collect()
}

/// Strips an IPv6 zone (`[fe80::1%vo1]:5` -> `[fe80::1]:5`).
fn unzoned(source: &str) -> String {
    match (source.find('%'), source.find(']')) {
        (Some(p), Some(b)) if p < b => format!("{}{}", &source[..p], &source[b..]),
        _ => source.to_owned(),
    }
}

/// Exactly one answer per eligible device, each from that device's own endpoint.
fn assert_exact(
    what: &str,
    answers: &[(String, String)],
    want: &BTreeSet<String>,
    endpoints: &BTreeMap<String, String>,
) {
    let got: BTreeSet<String> = answers.iter().map(|(u, _)| u.clone()).collect();
    assert_eq!(&got, want, "{what}: the devices that answered");
    assert_eq!(answers.len(), want.len(), "{what}: one answer per device: {answers:?}");
    for (uuid, source) in answers {
        assert_eq!(&unzoned(source), &endpoints[uuid], "{what}: {uuid} answers from its endpoint");
    }
}

fn uuid_source(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| {
            let u = l["deviceuuid"].as_str().unwrap_or_else(|| panic!("{l}"));
            (u.to_owned(), l["source"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// What a conforming answer looks like (SPEC s4), whatever the client.
fn assert_answer_shape(line: &Value, token: Option<&str>) {
    assert_eq!(line["code"].as_str().map(|c| &c[..4]), Some("2.05"), "{line}");
    assert_eq!(line["type"], "NON", "{line}");
    assert_eq!(line["content_format"], 10000, "{line}");
    assert_eq!(line["ocf_version"], 2048, "{line}");
    let keys: Vec<&str> =
        line["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(
        keys,
        ["oxms", "oxmsel", "sct", "owned", "devowneruuid", "deviceuuid", "rowneruuid"],
        "{line}"
    );
    if let Some(token) = token {
        assert_eq!(line["token"], token, "{line}");
    }
}

// ---- 1. libcoap ---------------------------------------------------------------------------

/// On every kind of link (SPEC 4 "Networks"), over each family the link carries.
#[test]
fn libcoap_discovers_exactly_the_eligible_devices_in_both_modes() {
    for net in Net::ALL {
        let Some(lab) = lab_for("l", net, &["libcoap"]) else { return };
        let fleet = mixed_fleet();
        let path = lab.write_fleet(&fleet);
        let want = eligible_uuids(&fleet);
        assert_eq!(want.len(), 5, "{want:?}");
        let port_base = PORT_BASE.to_string();
        for address_mode in [false, true] {
            let mut extra = vec!["--control", "", "--port-base", &port_base];
            if address_mode {
                extra.extend(ADDRESS_MODE);
            }
            let gate = lab.gate(&gate_args(&path, &extra));
            for group in net.groups() {
                let what = format!("libcoap, {net:?}, {group}, address mode {address_mode}");
                let logged = libcoap(&lab, group, "?owned=FALSE", 1);
                for answer in &logged {
                    assert!(answer.summary.starts_with("v:1 t:NON c:2.05 "), "{what}: {answer:?}");
                    assert!(answer.summary.contains("Content-Format:10000"), "{what}: {answer:?}");
                    assert!(answer.summary.contains("2053:\\x08\\x00"), "{what}: {answer:?}");
                }
                let answers: Vec<_> =
                    logged.into_iter().map(|a| (a.deviceuuid, a.source)).collect();
                let eps = endpoints(&lab, &fleet, group, address_mode);
                assert_exact(&what, &answers, &want, &eps);
            }
            // libcoap's RSTs (its reaction to option 2053) reach the devices' endpoints: the
            // gate must take them in its stride and still serve.
            let logged = libcoap(&lab, net.groups()[0], "?owned=FALSE", 1);
            assert_eq!(logged.len(), want.len(), "{}", gate.log());
        }
    }
}

// ---- 2. aiocoap and node-coap -------------------------------------------------------------

/// One discovery per group the lab's link carries, through a JSON-line client driver (`discover` gets `--group G
/// --wait 1 --follow`): every answer well-formed (and, with `one_token`, all under the token of
/// the first), exactly the eligible devices, each from its own endpoint. Returns each group's
/// answers for the client's own checks.
fn discover_each_group(
    lab: &Lab,
    fleet: &FleetFile,
    address_mode: bool,
    what: &str,
    one_token: bool,
    discover: impl Fn(&Lab, &[&str]) -> Vec<Value>,
) -> Vec<Vec<Value>> {
    let want = eligible_uuids(fleet);
    let mut groups = Vec::new();
    for group in lab.net.groups() {
        let lines = discover(lab, &["--group", group, "--wait", "1", "--follow"]);
        let token = lines.first().filter(|_| one_token).map(|l| l["token"].as_str().unwrap());
        for line in &lines {
            assert_answer_shape(line, token);
        }
        assert_exact(
            &format!("{what} {:?} {group}", lab.net),
            &uuid_source(&lines),
            &want,
            &endpoints(lab, fleet, group, address_mode),
        );
        groups.push(lines);
    }
    groups
}

/// On every kind of link (SPEC 4 "Networks"), over each family the link carries.
#[test]
fn aiocoap_discovers_and_follows_up_in_port_mode() {
    on_each_net_in_port_mode("i", "aiocoap", |lab, fleet, net| {
        for lines in discover_each_group(lab, fleet, false, "aiocoap", true, aiocoap) {
            // The OBT's next steps at each answer's source: /oic/res?rt=oic.r.doxm anchored at
            // the device, /oic/d with its di and name, eps of the family, in registered order.
            assert_followed(&lines, fleet);
            for line in &lines {
                assert_eq!(line["res_type"], "ACK", "CON answered piggybacked: {line}");
            }
        }
        // aiocoap's own request API on the group gets one (the first) answer, and accepts it.
        // Not on an IPv4-only link: aiocoap's client context (its IPv6 socket, v4-mapped) then
        // fails to resolve 224.0.1.187 at all ("No address information found"), before
        // anything is sent; the plain-socket discovery above covers IPv4 there.
        if !net.v6() {
            return;
        }
        let first = aiocoap(lab, &["--first", "--wait", "1", "--group", "ff02::158"]);
        assert_eq!(first.len(), 1, "{net:?}: {first:?}");
        let uuid = first[0]["deviceuuid"].as_str().unwrap();
        assert!(eligible_uuids(fleet).contains(uuid), "{net:?}: {first:?}");
    });
}

/// On every kind of link; on a link-local-only one the OBT reaches the devices' prefix through
/// the gate's `fe80::` address (`doxm_gate::testing::lab::link`).
#[test]
fn aiocoap_follows_up_in_address_mode() {
    for net in Net::ALL {
        let Some(lab) = lab_for("m", net, &["aiocoap"]) else { return };
        let fleet = mixed_fleet();
        let path = lab.write_fleet(&fleet);
        let mut extra = vec!["--control", ""];
        extra.extend(ADDRESS_MODE);
        let _gate = lab.gate(&gate_args(&path, &extra));
        let what = "aiocoap address mode";
        for lines in discover_each_group(&lab, &fleet, true, what, false, aiocoap) {
            assert_followed(&lines, &fleet);
        }
    }
}

/// On every kind of link, over each family the link carries.
#[test]
fn node_coap_discovers_and_follows_up() {
    on_each_net_in_port_mode("n", "node-coap", |lab, fleet, net| {
        for lines in discover_each_group(lab, fleet, false, "node-coap", true, node_coap) {
            for line in &lines {
                assert_eq!(line["follow"], "ok", "{net:?}: {line}");
                let uuid = line["deviceuuid"].as_str().unwrap();
                let entry = fleet.device.iter().find(|d| d.uuid.hyphenated().to_string() == uuid);
                assert_eq!(line["n"].as_str(), entry.map(|e| e.name.as_str()), "{line}");
            }
        }
    });
}

/// Runs `check` on a lab of each kind of link (SPEC 4 "Networks"), each with a port-mode gate
/// over [`mixed_fleet`]; returns early (skipped) where `client` or the lab cannot run.
fn on_each_net_in_port_mode(tag: &str, client: &str, check: impl Fn(&Lab, &FleetFile, Net)) {
    for net in Net::ALL {
        let Some(lab) = lab_for(tag, net, &[client]) else { return };
        let fleet = mixed_fleet();
        let path = lab.write_fleet(&fleet);
        let port_base = PORT_BASE.to_string();
        let _gate = lab.gate(&gate_args(&path, &["--control", "", "--port-base", &port_base]));
        check(&lab, &fleet, net);
    }
}

// ---- 3. Scenarios -------------------------------------------------------------------------

/// Applies a state patch to the local copy of the fleet (for the expected set).
fn set_state(fleet: &mut FleetFile, i: usize, dos: u8, owned: bool, doc_open: bool) {
    let d = &mut fleet.device[i];
    d.dos = Some(dos);
    d.owned = Some(owned);
    d.doc_open = doc_open;
}

#[test]
fn state_flips_through_the_api_between_discoveries() {
    let Some(lab) = lab_for("f", Net::Dual, &["libcoap"]) else { return };
    let mut fleet = mixed_fleet();
    let path = lab.write_fleet(&fleet);
    let control = "10.200.0.1:8683";
    let port_base = PORT_BASE.to_string();
    let gate = lab.gate(&gate_args(&path, &["--control", control, "--port-base", &port_base]));
    let eps = endpoints(&lab, &fleet, "ff02::158", false);
    let patch = |i: usize, body: &str| -> (u16, String) {
        lab.api(control, "PATCH", &format!("/v1/devices/{}", mixed_uuid(i)), body)
    };
    let check = |step: &str, fleet: &FleetFile| {
        let want = eligible_uuids(fleet);
        let logged = libcoap(&lab, "ff02::158", "?owned=FALSE", 1);
        let answers: Vec<_> = logged.into_iter().map(|a| (a.deviceuuid, a.source)).collect();
        assert_exact(&format!("after {step}"), &answers, &want, &eps);
        want
    };
    let initial = check("start", &fleet);
    let a1 = mixed_uuid(1);
    assert!(initial.contains(&a1));

    // An OBT opens a DOC to A1: it goes silent at once.
    let (status, body) = patch(1, r#"{"doc_open":true}"#);
    assert_eq!(status, 200, "{body}");
    set_state(&mut fleet, 1, 1, false, true);
    assert!(!check("DOC open", &fleet).contains(&a1));

    // The owner transfer completes: RFPRO, owned, DOC closed. Still silent.
    let owner = "0b70b700-0000-4000-8000-000000000001";
    let body = format!(r#"{{"dos":2,"owned":true,"doc_open":false,"devowneruuid":"{owner}"}}"#);
    let (status, text) = patch(1, &body);
    assert_eq!(status, 200, "{text}");
    set_state(&mut fleet, 1, 2, true, false);
    assert!(!check("owner transfer", &fleet).contains(&a1));
    // A state no device can be in is refused and changes nothing.
    let (status, text) = patch(1, r#"{"dos":1,"owned":true}"#);
    assert_eq!(status, 400, "{text}");

    // A hard reset: RESET (silent), then RFOTM, unowned again: A1 answers again.
    let nil = "00000000-0000-0000-0000-000000000000";
    let (status, text) = patch(1, &format!(r#"{{"dos":0,"owned":false,"devowneruuid":"{nil}"}}"#));
    assert_eq!(status, 200, "{text}");
    set_state(&mut fleet, 1, 0, false, false);
    assert!(!check("reset (RESET)", &fleet).contains(&a1));
    let (status, text) = patch(1, r#"{"dos":1}"#);
    assert_eq!(status, 200, "{text}");
    set_state(&mut fleet, 1, 1, false, false);
    assert_eq!(check("reset (RFOTM)", &fleet), initial);

    // A device of unknown state is reported for the first time: it needs the whole state.
    let (status, text) = patch(7, r#"{"dos":1}"#);
    assert_eq!(status, 400, "{text}");
    let (status, text) = patch(7, r#"{"dos":1,"owned":false,"doc_open":false}"#);
    assert_eq!(status, 200, "{text}");
    set_state(&mut fleet, 7, 1, false, false);
    assert!(check("unknown reported", &fleet).contains(&mixed_uuid(7)));

    // Bridge A becomes unowned (reset to RFOTM): all of its VODs go silent, and the bridge
    // itself, now in RFOTM, answers.
    let (status, text) = patch(0, r#"{"dos":1,"owned":false}"#);
    assert_eq!(status, 200, "{text}");
    set_state(&mut fleet, 0, 1, false, false);
    let now = check("bridge A unowned", &fleet);
    assert!(now.contains(&mixed_uuid(0)) && !now.contains(&a1) && !now.contains(&mixed_uuid(8)));

    // Bridge B is onboarded: its VODs may answer now, and B itself no longer does.
    let (status, text) = patch(9, r#"{"dos":3,"owned":true}"#);
    assert_eq!(status, 200, "{text}");
    set_state(&mut fleet, 9, 3, true, false);
    let now = check("bridge B owned", &fleet);
    assert!(now.contains(&mixed_uuid(10)) && !now.contains(&mixed_uuid(9)));

    // Bridge A owned again: its VODs come back. Our own probe agrees with libcoap.
    let (status, text) = patch(0, r#"{"dos":3,"owned":true}"#);
    assert_eq!(status, 200, "{text}");
    set_state(&mut fleet, 0, 3, true, false);
    let want = check("bridge A owned again", &fleet);
    let (lines, status) = lab.discover(&["--group", "all", "--wait", "1"]);
    assert_eq!(status, 0);
    assert_eq!(uuids(&lines), want, "{}", gate.log());
    assert_eq!(lines.len(), want.len());
}

#[test]
fn query_variants_and_no_response() {
    let Some(lab) = lab_for("q", Net::Dual, &["aiocoap"]) else { return };
    let fleet = mixed_fleet();
    let path = lab.write_fleet(&fleet);
    let want = eligible_uuids(&fleet);
    let port_base = PORT_BASE.to_string();
    let _gate = lab.gate(&gate_args(&path, &["--control", "", "--port-base", &port_base]));
    let a8 = mixed_uuid(8);
    let a8_upper = format!("di={}", a8.to_uppercase());
    let a2_di = format!("di={}", mixed_uuid(2));
    let none = BTreeSet::new();
    let only_a8: BTreeSet<String> = [a8.clone()].into();
    // (case, aiocoap arguments after --group/--wait, the devices that must answer)
    let cases: Vec<(&str, Vec<&str>, &BTreeSet<String>)> = vec![
        ("owned absent", vec!["--no-query"], &want),
        ("owned=FALSE", vec!["--query", "owned=FALSE"], &want),
        ("Owned=false", vec!["--query", "Owned=false"], &want),
        ("owned=TRUE", vec!["--query", "owned=TRUE"], &none),
        ("owned=true", vec!["--query", "owned=true"], &none),
        ("owned=0", vec!["--query", "owned=0"], &none),
        ("owned=1", vec!["--query", "owned=1"], &none),
        ("owned=", vec!["--query", "owned="], &none),
        ("owned", vec!["--query", "owned"], &none),
        ("owned=yes", vec!["--query", "owned=yes"], &none),
        ("first owned wins", vec!["--query", "owned=TRUE", "--query", "owned=FALSE"], &none),
        ("di (upper case)", vec!["--query", "owned=FALSE", "--query", a8_upper.as_str()], &only_a8),
        ("di of a silent device", vec!["--query", a2_di.as_str()], &none),
        ("di unknown", vec!["--query", "di=00000000-0000-4000-8000-0000000000ff"], &none),
        ("if=oic.if.ll", vec!["--query", "if=oic.if.ll&owned=FALSE"], &none),
        ("No-Response 0", vec!["--no-response", "0"], &want),
        ("No-Response 2", vec!["--no-response", "2"], &none),
        ("No-Response 8", vec!["--no-response", "8"], &want),
        ("No-Response 16", vec!["--no-response", "16"], &want),
        ("No-Response 26", vec!["--no-response", "26"], &none),
    ];
    // Run them in groups at once (each from its own socket), to keep the test short.
    for chunk in cases.chunks(7) {
        let children: Vec<_> = chunk
            .iter()
            .map(|(_, args, _)| {
                let mut all = vec!["--group", "ff02::158", "--wait", "1.2"];
                all.extend(args.iter().copied());
                aiocoap_spawn(&lab, &all)
            })
            .collect();
        for ((case, _, expect), child) in chunk.iter().zip(children) {
            let lines = json_lines(&finish(child, case));
            assert_eq!(&uuids(&lines), *expect, "{case}: {lines:?}");
            assert_eq!(lines.len(), expect.len(), "{case}: one answer per device");
        }
    }
    // if=oic.if.baseline: rt and if come first, then the doxm properties.
    for group in ["ff02::158", "224.0.1.187"] {
        let lines = aiocoap(
            &lab,
            &["--group", group, "--wait", "1", "--query", "owned=FALSE&if=oic.if.baseline"],
        );
        assert_eq!(uuids(&lines), want, "baseline on {group}");
        for line in &lines {
            let keys: Vec<&str> =
                line["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
            assert_eq!(
                keys,
                [
                    "rt",
                    "if",
                    "oxms",
                    "oxmsel",
                    "sct",
                    "owned",
                    "devowneruuid",
                    "deviceuuid",
                    "rowneruuid"
                ],
                "{line}"
            );
            assert_eq!(line["payload"]["rt"], serde_json::json!(["oic.r.doxm"]), "{line}");
            assert_eq!(
                line["payload"]["if"],
                serde_json::json!(["oic.if.rw", "oic.if.baseline"]),
                "{line}"
            );
        }
    }
    // libcoap agrees on a few (when it is installed too).
    if have("libcoap") {
        let eps = endpoints(&lab, &fleet, "ff02::158", false);
        for (query, expect) in [("?owned=TRUE", &none), ("?owned=0", &none), ("", &want)] {
            let answers: Vec<_> = libcoap(&lab, "ff02::158", query, 1)
                .into_iter()
                .map(|a| (a.deviceuuid, a.source))
                .collect();
            assert_exact(&format!("libcoap {query:?}"), &answers, expect, &eps);
        }
    }
}

#[test]
fn identical_copies_are_answered_once() {
    let Some(lab) = lab_for("c", Net::Dual, &["aiocoap"]) else { return };
    let fleet = mixed_fleet();
    let path = lab.write_fleet(&fleet);
    let want = eligible_uuids(&fleet);
    let port_base = PORT_BASE.to_string();
    let _gate = lab.gate(&gate_args(&path, &["--control", "", "--port-base", &port_base]));
    // The IoTivity-Lite OBT: ff02::158 and 224.0.1.187, one token and Message ID. Each device
    // answers once, on the family of the copy that came first.
    for (groups, family) in
        [(["ff02::158", "224.0.1.187"], "v6"), (["224.0.1.187", "ff02::158"], "v4")]
    {
        let lines = aiocoap(&lab, &["--group", groups[0], "--group", groups[1], "--wait", "1"]);
        assert_exact(
            &format!("copies {groups:?}"),
            &uuid_source(&lines),
            &want,
            &endpoints(&lab, &fleet, groups[0], false),
        );
        assert!(lines.iter().all(|l| l["family"] == family), "{lines:?}");
    }
    // The plgd client: ff03::158 and ff05::158 from one socket (here one source address), one
    // Message ID, a fresh token per group: answered once.
    let lines = aiocoap(
        &lab,
        &["--group", "ff03::158", "--group", "ff05::158", "--token-per-group", "--wait", "1"],
    );
    assert_exact(
        "plgd copies ff03+ff05",
        &uuid_source(&lines),
        &want,
        &endpoints(&lab, &fleet, "ff03::158", false),
    );
    // Not copies: a fresh token from another source address (v4 and v6) is a new exchange.
    let lines = aiocoap(
        &lab,
        &["--group", "ff02::158", "--group", "224.0.1.187", "--token-per-group", "--wait", "1"],
    );
    assert_eq!(lines.len(), 2 * want.len(), "{lines:?}");
    // Our own probe agrees.
    let (lines, status) = lab.discover(&["--group", "all", "--wait", "1"]);
    assert_eq!(status, 0);
    assert_eq!(uuids(&lines), want);
    assert_eq!(lines.len(), want.len());
}

// ---- 4. deviceuuid -------------------------------------------------------------

/// The `deviceuuid` query of OCF's published doxm schema: aiocoap (and libcoap, when installed)
/// ask one device by it on ff02::158 and 224.0.1.187, and exactly that device answers, once,
/// from its own endpoint; a device that may not answer, another device, an empty or non-UUID
/// value get nothing; `discover --device` agrees; and the gate counts the values that name no
/// device under their own reason.
#[test]
fn deviceuuid_names_exactly_one_device() {
    let Some(lab) = lab_for("v", Net::Dual, &["aiocoap", "libcoap"]) else { return };
    let fleet = mixed_fleet();
    let path = lab.write_fleet(&fleet);
    let control = "10.200.0.1:8683";
    let port_base = PORT_BASE.to_string();
    let gate = lab.gate(&gate_args(&path, &["--control", control, "--port-base", &port_base]));
    // S3: a stand-alone device in RFOTM. A2 has a DOC open; B1 is a VOD of the unowned bridge.
    let (s3, a1, a2, b1) = (mixed_uuid(14), mixed_uuid(1), mixed_uuid(2), mixed_uuid(10));
    let eligible = eligible_uuids(&fleet);
    assert!(eligible.contains(&s3) && eligible.contains(&a1), "{eligible:?}");
    assert!(!eligible.contains(&a2) && !eligible.contains(&b1), "{eligible:?}");
    let only_s3: BTreeSet<String> = [s3.clone()].into();
    let none = BTreeSet::new();
    let q = |text: String| vec!["--query".to_owned(), text];
    // (case, aiocoap --query options, the devices that must answer)
    let cases: Vec<(&str, Vec<String>, &BTreeSet<String>)> = vec![
        ("deviceuuid", [q("owned=FALSE".into()), q(format!("deviceuuid={s3}"))].concat(), &only_s3),
        ("DeviceUUID upper case", q(format!("DeviceUUID={}", s3.to_uppercase())), &only_s3),
        ("with di", q(format!("owned=FALSE&di={s3}&deviceuuid={s3}")), &only_s3),
        ("di names another", q(format!("di={a1}&deviceuuid={s3}")), &none),
        ("DOC open", q(format!("deviceuuid={a2}")), &none),
        ("VOD of an unowned bridge", q(format!("deviceuuid={b1}")), &none),
        ("empty", q("owned=FALSE&deviceuuid=".into()), &none),
        ("not a UUID", q(format!("deviceuuid={}", s3.replace('-', ""))), &none),
    ];
    for group in ["ff02::158", "224.0.1.187"] {
        let eps = endpoints(&lab, &fleet, group, false);
        let children: Vec<_> = cases
            .iter()
            .map(|(_, query, _)| {
                let mut args = vec!["--group", group, "--wait", "1.2"];
                args.extend(query.iter().map(String::as_str));
                aiocoap_spawn(&lab, &args)
            })
            .collect();
        for ((case, _, expect), child) in cases.iter().zip(children) {
            let lines = json_lines(&finish(child, case));
            for line in &lines {
                assert_answer_shape(line, None);
            }
            assert_exact(&format!("{case} on {group}"), &uuid_source(&lines), expect, &eps);
        }
    }
    // Our probe: the IoTivity-Lite OBT's two copies with `deviceuuid=S3`, answered once.
    let (lines, status) = lab.discover(&["--group", "all", "--device", &s3, "--wait", "1"]);
    assert_eq!(status, 0);
    assert_eq!(uuids(&lines), only_s3, "{}", gate.log());
    assert_eq!(lines.len(), 1, "{lines:?}");
    // The two values that name no device, on two groups: policy/deviceuuid-invalid.
    let (status, body) = lab.api(control, "GET", "/v1/stats", "");
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["verdicts"]["policy/deviceuuid-invalid"], 4, "{body}");
    // libcoap agrees (when it is installed too). Its coap-client encodes the URI's options into
    // a 100-byte buffer and silently drops what does not fit (`owned=FALSE` with both UUIDs
    // loses the last), so the query with two UUIDs leaves `owned` out.
    if have("libcoap") {
        let eps = endpoints(&lab, &fleet, "ff02::158", false);
        for (query, expect) in [
            (format!("?owned=FALSE&deviceuuid={s3}"), &only_s3),
            (format!("?deviceuuid={a1}&di={s3}"), &none),
            (format!("?di={s3}&DEVICEUUID={}", s3.to_uppercase()), &only_s3),
            ("?owned=FALSE&deviceuuid=".to_owned(), &none),
        ] {
            let answers: Vec<_> = libcoap(&lab, "ff02::158", &query, 1)
                .into_iter()
                .map(|a| (a.deviceuuid, a.source))
                .collect();
            assert_exact(&format!("libcoap {query:?}"), &answers, expect, &eps);
        }
    }
}
