//! The control API of the real daemon (`doxm-gate run --iface lo`), over HTTP: every endpoint,
//! every class of bad input (4xx, a JSON error naming the field, nothing changed), the bearer
//! token, the `stats` and `fleet export|import` commands, concurrent clients, and the figures.
//!
//! Figures (printed, never asserted; mutations are fsynced because every gate here has a state
//! directory on a real disk):
//! `cargo test --test control_api -- --nocapture figures batch_100k`

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doxm_gate::control::fleet_file::{DeviceEntry, FleetFile};
use doxm_gate::control::mutation::PatchBody;
use serde_json::{json, Value};
use support::{
    eligible, entry, full_patch, heavy, patched, random_state, to_json, uuid, Gate, GateOpts,
    Reply, TempDir, BIN,
};
use uuid::Uuid;

fn device_path(u: &Uuid) -> String {
    format!("/v1/devices/{u}")
}

/// Everything the API shows about the fleet: every device with its revision, state, record and
/// eligibility, plus the counters of the fleet. Equal before and after a refused call.
fn fingerprint(gate: &Gate) -> Value {
    let list = gate.get("/v1/devices?limit=100000");
    assert_eq!(list.status, 200, "{list:?}");
    let stats = gate.get("/v1/stats").json();
    json!({"devices": list.json()["devices"], "fleet": stats["fleet"]})
}

/// Creates `devices` with one batch call.
fn upsert_all(gate: &Gate, devices: &[DeviceEntry]) -> Reply {
    let reply =
        gate.call("POST", "/v1/devices:batch", Some(&to_json(&json!({"upserts": devices}))));
    assert_eq!(reply.status, 200, "{reply:?}");
    reply
}

#[test]
fn put_get_replace_delete() {
    let dir = TempDir::new("crud");
    let Some(gate) = Gate::start(GateOpts::ports(8).state_dir(dir.path())) else { return };
    let u = uuid(1, 1);
    let lamp = entry(u, "lamp", (Some(1), Some(false), false));

    // Create: 201, ETag "1".
    let reply = gate.call("PUT", &device_path(&u), Some(&to_json(&lamp)));
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.etag, Some(1), "{reply:?}");
    assert!(reply.content_type.starts_with("application/json"), "{reply:?}");
    assert_eq!(reply.json()["applied"], json!([{"uuid": u, "revision": 1}]));

    // Read: the record, revision (and ETag), eligible, reason, stale.
    let view = gate.device(&u).expect("created");
    assert_eq!((view.revision, view.etag), (1, Some(1)));
    assert!(view.eligible && !view.stale && view.reason == "ok", "{view:?}");
    assert_eq!(view.device, lamp);

    // Replace: 200, ETag "2", the new record.
    let mut lamp2 = entry(u, "lamp two", (Some(3), None, false));
    lamp2.eps = vec!["coap://[fd00::b]:50001".into(), "coaps://[fd00::b]:50002".into()];
    lamp2.devowneruuid = uuid(0xffff, 1);
    let reply = gate.call("PUT", &device_path(&u), Some(&to_json(&lamp2)));
    assert_eq!((reply.status, reply.etag), (200, Some(2)), "{reply:?}");
    let view = gate.device(&u).expect("replaced");
    lamp2.owned = Some(true); // dos 3 (RFNOP) without `owned` means owned
    assert_eq!(view.device, lamp2);
    assert_eq!((view.revision, view.eligible, view.stale), (2, false, false), "{view:?}");
    assert_eq!(view.reason, "not-rfotm");

    // The other reasons a device is not eligible.
    let cases = [
        (entry(uuid(1, 2), "unknown", (None, None, false)), "state-unknown", true),
        (entry(uuid(1, 3), "doc", (Some(1), Some(false), true)), "doc-open", false),
        // A VOD whose bridge is not in the fleet, then one whose bridge is there but unowned.
        (
            DeviceEntry {
                bridge: Some(uuid(1, 99)),
                ..entry(uuid(1, 4), "vod", (Some(1), None, false))
            },
            "bridge-missing",
            false,
        ),
        (entry(uuid(1, 98), "bridge", (Some(1), None, false)), "ok", false),
        (
            DeviceEntry {
                bridge: Some(uuid(1, 98)),
                ..entry(uuid(1, 5), "vod", (Some(1), None, false))
            },
            "bridge-unowned",
            false,
        ),
    ];
    for (device, reason, stale) in &cases {
        let reply = gate.call("PUT", &device_path(&device.uuid), Some(&to_json(device)));
        assert_eq!((reply.status, reply.etag), (201, Some(1)), "{reply:?}");
        let view = gate.device(&device.uuid).expect("created");
        let eligible = *reason == "ok";
        assert_eq!((view.eligible, view.reason.as_str(), view.stale), (eligible, *reason, *stale));
    }
    assert_eq!(gate.device_count(), 6);
    // The missing bridge arrives, owned: its VOD answers.
    let bridge = entry(uuid(1, 99), "bridge 99", (Some(3), None, false));
    let reply = gate.call("PUT", &device_path(&bridge.uuid), Some(&to_json(&bridge)));
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(gate.device(&uuid(1, 4)).expect("vod").reason, "ok");
    let reply = gate.call("DELETE", &device_path(&bridge.uuid), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(gate.device(&uuid(1, 4)).expect("vod").reason, "bridge-missing");

    // Delete: 200, then 404 for GET, PATCH and a second DELETE.
    let reply = gate.call("DELETE", &device_path(&u), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(gate.device(&u).is_none());
    for method in ["GET", "DELETE"] {
        let reply = gate.call(method, &device_path(&u), None);
        assert_eq!(reply.status, 404, "{method}: {reply:?}");
        assert_eq!(reply.error().0, "uuid");
    }
    let reply = gate.call("PATCH", &device_path(&u), Some(r#"{"dos":1}"#));
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(gate.device_count(), 5);
    assert!(gate.export().iter().all(|d| d.uuid != u));
}

#[test]
fn list_filters_and_paging() {
    let dir = TempDir::new("list");
    let Some(gate) = Gate::start(GateOpts::ports(32).state_dir(dir.path())) else { return };
    // 30 devices: 10 eligible, 10 owned (RFNOP), 10 with an unknown state.
    let devices: Vec<DeviceEntry> = (0..30u64)
        .map(|i| {
            let state = match i % 3 {
                0 => (Some(1), Some(false), false),
                1 => (Some(3), Some(true), false),
                _ => (None, None, false),
            };
            entry(uuid(2, i), &format!("d{i}"), state)
        })
        .collect();
    upsert_all(&gate, &devices);
    let set = |filter: &dyn Fn(u64) -> bool| -> BTreeSet<Uuid> {
        (0..30u64).filter(|&i| filter(i)).map(|i| uuid(2, i)).collect()
    };
    let listed = |query: &str| -> BTreeSet<Uuid> {
        let reply = gate.get(&format!("/v1/devices?{query}"));
        assert_eq!(reply.status, 200, "{query}: {reply:?}");
        let v = reply.json();
        assert!(v["next_cursor"].is_null(), "{query}: one page expected");
        v["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["uuid"].as_str().expect("uuid").parse().expect("a UUID"))
            .collect()
    };
    assert_eq!(listed(""), set(&|_| true));
    assert_eq!(listed("eligible=true"), set(&|i| i % 3 == 0));
    assert_eq!(listed("eligible=false"), set(&|i| i % 3 != 0));
    assert_eq!(listed("stale=true"), set(&|i| i % 3 == 2));
    assert_eq!(listed("stale=false"), set(&|i| i % 3 != 2));
    assert_eq!(listed("eligible=false&stale=false"), set(&|i| i % 3 == 1));
    assert_eq!(listed("eligible=true&stale=true"), BTreeSet::new());

    // Paging: limit=7 walks all 30 exactly once, pages of 7 and a last of 2.
    for query in ["", "eligible=false&"] {
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut cursor: Option<u64> = None;
        loop {
            let path = match cursor {
                None => format!("/v1/devices?{query}limit=7"),
                Some(c) => format!("/v1/devices?{query}limit=7&cursor={c}"),
            };
            let v = gate.get(&path).json();
            let page = v["devices"].as_array().expect("devices").clone();
            sizes.push(page.len());
            seen.extend(page.iter().map(|d| d["uuid"].as_str().expect("uuid").to_owned()));
            match v["next_cursor"].as_u64() {
                Some(c) => cursor = Some(c),
                None => break,
            }
            assert!(sizes.len() < 10, "paging does not end");
        }
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "a device listed twice: {seen:?}");
        let expected = if query.is_empty() { vec![7, 7, 7, 7, 2] } else { vec![7, 7, 6] };
        assert_eq!(sizes, expected, "{query}");
    }
}

#[test]
fn export_healthz_metrics_stats() {
    let dir = TempDir::new("observe");
    let Some(gate) = Gate::start(GateOpts::ports(16).state_dir(dir.path())) else { return };
    let health = gate.get("/healthz");
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json(), json!({"status": "ok", "devices": 0, "journal": "ok"}));

    let devices: Vec<DeviceEntry> = (0..12u64)
        .map(|i| {
            let mut e = entry(uuid(3, i), &format!("d{i}"), support::STATES[i as usize % 7]);
            e.eps = vec![format!("coap://10.0.0.1:{}", 20_000 + i)];
            e
        })
        .collect();
    upsert_all(&gate, &devices);
    let expected_eligible = devices.iter().filter(|d| eligible(d)).count() as u64;
    assert_eq!(gate.device_count(), 12);

    // Export: the whole fleet as a fleet file, exactly what was put.
    assert_eq!(gate.export(), devices);

    // Prometheus text.
    let metrics = gate.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.content_type.starts_with("text/plain"), "{}", metrics.content_type);
    for name in [
        "doxm_gate_datagrams_total",
        "doxm_gate_answers_total",
        "doxm_gate_budget_stretches_total",
        "doxm_gate_source_share_cuts_total",
        "doxm_gate_responses_total",
        "doxm_gate_send_failed_total",
        "doxm_gate_receive_overflows_total",
        "doxm_gate_fleet_devices",
        "doxm_gate_fleet_eligible",
        "doxm_gate_pending_answers",
        "doxm_gate_pending_sources",
        "doxm_gate_decision_ns",
        "doxm_gate_answers_per_request",
        "doxm_gate_answer_lateness_us",
        "doxm_gate_update_to_visible_us",
    ] {
        assert!(
            metrics.body.contains(&format!("# TYPE {name} ")),
            "no {name} in\n{}",
            metrics.body
        );
    }
    let sample = |name: &str| -> Option<f64> {
        metrics.body.lines().find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
    };
    assert_eq!(sample("doxm_gate_fleet_devices"), Some(12.0));
    assert_eq!(sample("doxm_gate_fleet_eligible"), Some(expected_eligible as f64));
    assert!(sample("doxm_gate_update_to_visible_us_count").is_some_and(|n| n >= 1.0));
    assert!(metrics
        .body
        .contains(r#"doxm_gate_datagrams_total{group="policy",reason="not-rfotm"}"#));
    assert!(metrics.body.contains(r#"doxm_gate_update_to_visible_us{quantile="0.99"}"#));
    // Every sample line is `name{labels} number`.
    for line in metrics.body.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        assert!(line.starts_with("doxm_gate_"), "bad sample line {line:?}");
    }

    // The same as JSON.
    let stats = gate.get("/v1/stats");
    assert_eq!(stats.status, 200);
    let v = stats.json();
    assert_eq!(v["fleet"], json!({"devices": 12, "eligible": expected_eligible}));
    for key in ["datagrams", "verdicts", "answers", "driver", "decision_ns", "update_to_visible_us"]
    {
        assert!(!v[key].is_null(), "no {key} in {v}");
    }
    assert!(v["update_to_visible_us"]["count"].as_u64().is_some_and(|n| n >= 1), "{v}");
    assert!(v["verdicts"]["policy/not-rfotm"].is_u64(), "{v}");
}

#[test]
fn patch_with_if_match() {
    let dir = TempDir::new("patch");
    let Some(gate) = Gate::start(GateOpts::ports(4).state_dir(dir.path())) else { return };
    let u = uuid(4, 1);
    let lamp = entry(u, "lamp", (Some(1), Some(false), false));
    assert_eq!(gate.call("PUT", &device_path(&u), Some(&to_json(&lamp))).etag, Some(1));

    // If-Match with the current revision: 200 and the next ETag; the state changes.
    let owner = uuid(0xffff, 7);
    let patch = PatchBody {
        dos: Some(2),
        owned: Some(true),
        devowneruuid: Some(owner),
        rowneruuid: Some(owner),
        oxmsel: Some(0),
        ..PatchBody::default()
    };
    let path = device_path(&u);
    let reply = gate.call_with("PATCH", &path, Some(&to_json(&patch)), &[("If-Match", "\"1\"")]);
    assert_eq!((reply.status, reply.etag), (200, Some(2)), "{reply:?}");
    let after = gate.device(&u).expect("present");
    assert_eq!((after.revision, after.etag), (2, Some(2)));
    assert_eq!(after.device, patched(&lamp, &patch));
    assert_eq!(after.reason, "not-rfotm");

    // A stale revision, a weak tag (If-Match compares strongly) or another tag: 412 naming
    // If-Match, and nothing changes.
    let before = fingerprint(&gate);
    let back = r#"{"dos":1,"owned":false}"#;
    for stale in ["\"1\"", "W/\"1\"", "W/\"2\"", "\"99\"", "\"abc\"", "\"1\", \"3\""] {
        let reply = gate.call_with("PATCH", &path, Some(back), &[("If-Match", stale)]);
        assert_eq!(reply.status, 412, "{stale}: {reply:?}");
        assert_eq!(reply.error().0, "If-Match");
        assert_eq!(fingerprint(&gate), before);
    }
    let view = gate.device(&u).expect("present");
    assert_eq!((view.revision, view.device.dos), (2, Some(2)));

    // Not an entity-tag (RFC 9110 quotes them): 400.
    for bad in ["1", "\"1", "\"1\" x", "W/1", "**", ""] {
        let reply = gate.call_with("PATCH", &path, Some(back), &[("If-Match", bad)]);
        assert_eq!(reply.status, 400, "{bad:?}: {reply:?}");
        assert_eq!(reply.error().0, "If-Match");
        assert_eq!(fingerprint(&gate), before);
    }

    // Unconditional: applies; a partial patch keeps the other fields; the DOC opens and closes.
    let reply = gate.call("PATCH", &path, Some(back));
    assert_eq!((reply.status, reply.etag), (200, Some(3)), "{reply:?}");
    let view = gate.device(&u).expect("present");
    assert!(view.eligible, "{view:?}");
    assert_eq!(view.device.devowneruuid, owner, "a partial patch keeps devowneruuid");
    let reply = gate.call("PATCH", &path, Some(r#"{"doc_open":true}"#));
    assert_eq!(reply.etag, Some(4));
    let view = gate.device(&u).expect("present");
    assert_eq!((view.eligible, view.reason.as_str()), (false, "doc-open"));
    let reply =
        gate.call_with("PATCH", &path, Some(r#"{"doc_open":false}"#), &[("If-Match", "\"4\"")]);
    assert_eq!(reply.etag, Some(5));
    assert!(gate.device(&u).expect("present").eligible);
    // An empty patch is a no-op change that still counts as one.
    let reply = gate.call("PATCH", &path, Some("{}"));
    assert_eq!((reply.status, reply.etag), (200, Some(6)), "{reply:?}");
}

#[test]
fn batch_100k_devices_in_one_call() {
    let _heavy = heavy();
    let dir = TempDir::new("batch100k");
    let Some(gate) = Gate::start(GateOpts::addresses().state_dir(dir.path())) else { return };
    const N: u64 = 100_000;
    let devices: Vec<Value> = (0..N)
        .map(|i| {
            let dos = if i % 10 == 0 { 1 } else { 3 };
            json!({"uuid": uuid(5, i), "name": format!("lamp {i}"), "dos": dos,
                   "eps": [format!("coap://10.1.{}.{}:5683", i / 250 % 250, i % 250 + 1)]})
        })
        .collect();
    let body = to_json(&json!({ "upserts": devices }));
    let started = Instant::now();
    let reply = gate.call("POST", "/v1/devices:batch", Some(&body));
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{}", &reply.body[..reply.body.len().min(500)]);
    println!(
        "FIGURE batch: {N} device upserts in one POST /v1/devices:batch ({:.1} MB): {:.2} s \
         ({:.0} devices/s, fsynced; debug build unless --release)",
        body.len() as f64 / 1e6,
        took.as_secs_f64(),
        N as f64 / took.as_secs_f64()
    );
    // The reply does not grow with the batch: counts, and the first 1,000 revisions.
    let counts = reply.json();
    assert_eq!((counts["count"].as_u64(), counts["upserts"].as_u64()), (Some(N), Some(N)));
    assert_eq!(counts["applied"].as_array().map(Vec::len), Some(1_000));
    assert_eq!(counts["applied_omitted"].as_u64(), Some(N - 1_000));
    assert!(reply.body.len() < 100_000, "a reply of {} bytes", reply.body.len());
    assert_eq!(gate.device_count(), N);
    let metrics = gate.get("/metrics").body;
    assert!(metrics.contains(&format!("\ndoxm_gate_fleet_devices {N}\n")), "{metrics}");
    assert!(metrics.contains(&format!("\ndoxm_gate_fleet_eligible {}\n", N / 10)));
    let last = gate.device(&uuid(5, N - 1)).expect("the last device");
    assert_eq!((last.revision, last.device.name.as_str()), (1, "lamp 99999"));

    // A second batch of 1,000 with the last entry bad: refused, naming "upserts[999].dos",
    // nothing applied.
    let mut more: Vec<Value> = (0..1_000u64)
        .map(|i| json!({"uuid": uuid(6, i), "name": format!("more {i}"), "dos": 1}))
        .collect();
    more[999]["dos"] = json!(7);
    let reply = gate.call("POST", "/v1/devices:batch", Some(&to_json(&json!({"upserts": more}))));
    assert_eq!(reply.status, 400, "{reply:?}");
    let (field, reason) = reply.error();
    assert_eq!(field, "upserts[999].dos", "{reason}");
    assert_eq!(gate.device_count(), N);
    assert!(gate.device(&uuid(6, 0)).is_none());
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| -> u64 {
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        kb.unwrap_or_else(|| panic!("{name} in /proc/{pid}/status")) * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Issue 13: a 100k-upsert batch peaks at no more than 3x its body. The gate's peak RSS
/// (`VmHWM`, reset through `clear_refs` just before the call) grows by at most 3x the body over
/// the call, with a journal (the body, the decoded changes, the journal's record and the new
/// records all count). The devices are the benchmark report's: two endpoints, an owner, two
/// types, two oxms (about 360 bytes of JSON each). Debug and release builds allocate alike.
#[test]
fn batch_100k_peak_rss_is_at_most_3x_the_body() {
    let _heavy = heavy();
    let dir = TempDir::new("batchpeak");
    let Some(gate) = Gate::start(GateOpts::addresses().state_dir(dir.path())) else { return };
    let pid = gate.pid().expect("the gate's pid");
    let owner = uuid(0xb7e, 1);
    let device = |i: u64| {
        let port = 10_000 + 2 * (i % 25_000);
        let mut d = entry(uuid(9, i), &format!("bench lamp {i}"), (Some(3), None, false));
        d.types = vec!["oic.wk.d".into(), "oic.d.light".into()];
        (d.oxms, d.oxmsel, d.sct) = (vec![0, 1], 0, 9);
        (d.devowneruuid, d.rowneruuid) = (owner, owner);
        d.eps =
            vec![format!("coap://[fd00:b::1]:{port}"), format!("coaps://[fd00:b::1]:{}", port + 1)];
        d
    };
    // Serialised as a client with the crate's types does (`doxm-gate fleet import`): the
    // entries' fields in their declared order.
    #[derive(serde::Serialize)]
    struct Upserts {
        upserts: Vec<DeviceEntry>,
    }
    let body = to_json(&Upserts { upserts: (0..100_000).map(device).collect() });
    // A small batch first, so that the gate's one-time start-up allocations are not counted.
    let small = to_json(&Upserts { upserts: (100_000..100_010).map(device).collect() });
    assert_eq!(gate.call("POST", "/v1/devices:batch", Some(&small)).status, 200);
    let (before, _) = memory(pid);
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM (clear_refs)");
    let reply = gate.call("POST", "/v1/devices:batch", Some(&body));
    assert_eq!(reply.status, 200, "{}", &reply.body[..reply.body.len().min(500)]);
    let (after, peak) = memory(pid);
    let growth = peak.saturating_sub(before);
    let ratio = growth as f64 / body.len() as f64;
    println!(
        "FIGURE batch peak: 100,000 upserts, body {:.1} MB: peak RSS +{:.1} MB ({ratio:.2}x the \
         body), RSS +{:.1} MB after",
        body.len() as f64 / 1e6,
        growth as f64 / 1e6,
        after.saturating_sub(before) as f64 / 1e6
    );
    assert!(ratio <= 3.0, "peak RSS grew {growth} bytes, {ratio:.2}x the {} byte body", body.len());
    assert_eq!(gate.device_count(), 100_010);
}

#[test]
fn batch_is_all_or_nothing() {
    // 16 device ports: a fleet of at most 16 devices.
    let dir = TempDir::new("batch");
    let Some(gate) = Gate::start(GateOpts::ports(16).state_dir(dir.path())) else { return };
    let seed: Vec<DeviceEntry> =
        (0..10u64).map(|i| entry(uuid(7, i), &format!("s{i}"), (Some(1), None, false))).collect();
    upsert_all(&gate, &seed);
    let before = fingerprint(&gate);
    let fresh = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"uuid": uuid(8, i as u64), "name": format!("n{i}"), "dos": 1}))
            .collect()
    };
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut bad_dos = fresh(1_000);
    bad_dos[999]["dos"] = json!(7);
    cases.push(("dos 7 at the end of 1,000", json!({"upserts": bad_dos}), "upserts[999].dos"));
    let mut bad_eps = fresh(1_000);
    bad_eps[500]["eps"] = json!(["http://x"]);
    cases.push(("bad eps in the middle", json!({"upserts": bad_eps}), "upserts[500].eps"));
    let mut bad_owned = fresh(10);
    bad_owned[0]["owned"] = json!(true);
    cases.push(("owned in RFOTM first", json!({"upserts": bad_owned}), "upserts[0].owned"));
    cases.push((
        "a patch of an unknown device after good upserts",
        json!({"upserts": fresh(5), "patches": [{"uuid": uuid(9, 1), "dos": 3}]}),
        "patches[0].uuid",
    ));
    cases.push((
        "an inconsistent patch after good ones",
        json!({"patches": [{"uuid": uuid(7, 0), "dos": 3, "owned": true},
                           {"uuid": uuid(7, 1), "owned": true}]}),
        "patches[1].owned",
    ));
    cases.push((
        "deleting a device twice",
        json!({"deletes": [uuid(7, 2), uuid(7, 2)]}),
        "deletes[1]",
    ));
    // Patches come before deletes in a batch: the patch is checked first (RFNOP unowned).
    cases.push((
        "a bad patch of a device the batch also deletes",
        json!({"deletes": [uuid(7, 3)], "patches": [{"uuid": uuid(7, 3), "dos": 3}]}),
        "patches[0].owned",
    ));
    let mut twice = fresh(8);
    twice[7]["uuid"] = twice[3]["uuid"].clone();
    cases.push(("two upserts of one device", json!({"upserts": twice}), "upserts[7].uuid"));
    let mut bad_uuid = fresh(100);
    bad_uuid[99]["uuid"] = json!("not-a-uuid");
    cases.push(("a bad UUID in the last entry", json!({"upserts": bad_uuid}), "upserts[99].uuid"));
    let mut unknown = fresh(100);
    unknown[42]["colour"] = json!("red");
    cases.push((
        "an unknown field in one entry",
        json!({"upserts": unknown}),
        "upserts[42].colour",
    ));
    cases.push(("an unknown top-level key", json!({"upsert": fresh(1)}), "upsert"));
    cases.push(("an empty batch", json!({}), "body"));
    // 20 good new devices do not fit a fleet of 16 (10 present): 507, none of them applied.
    cases.push(("more devices than the fleet holds", json!({"upserts": fresh(20)}), "body"));
    for (what, body, field) in cases {
        let reply = gate.call("POST", "/v1/devices:batch", Some(&to_json(&body)));
        let full = what.starts_with("more devices");
        assert!(
            (400..500).contains(&reply.status) || (full && reply.status == 507),
            "{what}: {reply:?}"
        );
        let (got, reason) = reply.error();
        assert_eq!(got, field, "{what}: {reason}");
        if what == "two upserts of one device" {
            let want = format!("upserts[3] and upserts[7] have the same uuid {}", uuid(8, 3));
            assert_eq!(reason, want);
        }
        assert_eq!(fingerprint(&gate), before, "{what}: the fleet changed");
    }

    // A good mixed batch: upserts, patches (also of a device created by the same batch) and
    // deletes, applied together, with one revision per change.
    let body = json!({
        "upserts": [{"uuid": uuid(8, 1), "name": "new", "dos": 1}],
        "patches": [{"uuid": uuid(8, 1), "dos": 3, "owned": true},
                    {"uuid": uuid(7, 4), "doc_open": true}],
        "deletes": [uuid(7, 5)],
    });
    let reply = gate.call("POST", "/v1/devices:batch", Some(&to_json(&body)));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json()["applied"],
        json!([{"uuid": uuid(8, 1), "revision": 1}, {"uuid": uuid(8, 1), "revision": 2},
               {"uuid": uuid(7, 4), "revision": 2}, {"uuid": uuid(7, 5), "revision": 0}])
    );
    assert_eq!(gate.device(&uuid(8, 1)).expect("new").device.dos, Some(3));
    assert_eq!(gate.device(&uuid(7, 4)).expect("patched").reason, "doc-open");
    assert!(gate.device(&uuid(7, 5)).is_none());
    assert_eq!(gate.device_count(), 10);
}

/// One bad call: what is sent, the status expected and the field the error must name.
struct Bad {
    what: &'static str,
    method: &'static str,
    path: String,
    body: Option<String>,
    headers: Vec<(&'static str, &'static str)>,
    status: &'static [u16],
    field: &'static str,
}

fn bad(what: &'static str, method: &'static str, path: &str, body: Option<&str>) -> Bad {
    Bad {
        what,
        method,
        path: path.to_owned(),
        body: body.map(str::to_owned),
        headers: Vec::new(),
        status: &[400],
        field: "body",
    }
}

impl Bad {
    fn field(mut self, field: &'static str) -> Bad {
        self.field = field;
        self
    }
    fn status(mut self, status: &'static [u16]) -> Bad {
        self.status = status;
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Bad {
        self.headers.push((name, value));
        self
    }
}

/// A gate with one eligible device `D` (`uuid(10, 1)`) and one of unknown state `S`.
fn bad_input_gate(dir: &TempDir) -> Option<Gate> {
    let gate = Gate::start(GateOpts::ports(8).state_dir(dir.path()))?;
    upsert_all(
        &gate,
        &[
            entry(uuid(10, 1), "D", (Some(1), Some(false), false)),
            entry(uuid(10, 2), "S", (None, None, false)),
        ],
    );
    Some(gate)
}

fn bad_inputs() -> Vec<Bad> {
    let d = uuid(10, 1);
    let n = uuid(10, 3); // not in the fleet
    let dp = device_path(&d);
    let np = device_path(&n);
    let sp = device_path(&uuid(10, 2));
    let put = |extra: &str| format!(r#"{{"uuid":"{n}","name":"x"{extra}}}"#);
    vec![
        // Malformed JSON.
        bad("malformed JSON (PUT)", "PUT", &np, Some(r#"{"uuid":"#)),
        bad("malformed JSON (PATCH)", "PATCH", &dp, Some("{dos:1}")),
        bad("malformed JSON (batch)", "POST", "/v1/devices:batch", Some("[")),
        bad("not an object (PUT)", "PUT", &np, Some("42")),
        bad("empty body (PUT)", "PUT", &np, Some("")),
        // Trailing bytes after the JSON value.
        bad("trailing garbage (PATCH)", "PATCH", &dp, Some(r#"{"doc_open":false} xyz"#)),
        bad("two values (PATCH)", "PATCH", &dp, Some(r#"{"doc_open":true}{"dos":3}"#)),
        bad("trailing garbage (PUT)", "PUT", &np, Some(format!("{} ]", put("")).as_str())),
        bad(
            "trailing garbage (batch)",
            "POST",
            "/v1/devices:batch",
            Some(format!(r#"{{"patches":[{{"uuid":"{d}","doc_open":true}}]}} x"#).as_str()),
        ),
        // Unknown fields.
        bad("unknown field (PUT)", "PUT", &np, Some(put(r#","colour":"red""#).as_str()))
            .field("colour"),
        bad("unknown field (PATCH)", "PATCH", &dp, Some(r#"{"colour":1}"#)).field("colour"),
        bad("a PUT-only field in a PATCH", "PATCH", &dp, Some(r#"{"name":"y"}"#)).field("name"),
        bad("unknown batch key", "POST", "/v1/devices:batch", Some(r#"{"upsert":[]}"#))
            .field("upsert"),
        // Bad UUIDs.
        bad("bad UUID in the path (PUT)", "PUT", "/v1/devices/not-a-uuid", Some("{}"))
            .field("uuid"),
        bad("bad UUID in the path (PATCH)", "PATCH", "/v1/devices/0d0c", Some(r#"{"dos":1}"#))
            .field("uuid"),
        bad("bad UUID in the path (GET)", "GET", "/v1/devices/zz", None).field("uuid"),
        bad("bad UUID in the path (DELETE)", "DELETE", "/v1/devices/zz", None).field("uuid"),
        bad("body uuid differs from the path's", "PUT", &dp, Some(put(r#","dos":1"#).as_str()))
            .field("uuid"),
        bad("missing uuid", "PUT", &np, Some(r#"{"name":"x"}"#)).field("uuid"),
        bad("missing name", "PUT", &np, Some(format!(r#"{{"uuid":"{n}"}}"#).as_str()))
            .field("name"),
        bad(
            "bad UUID in devowneruuid (PUT)",
            "PUT",
            &np,
            Some(put(r#","devowneruuid":"x""#).as_str()),
        )
        .field("devowneruuid"),
        bad("bad UUID in devowneruuid (PATCH)", "PATCH", &dp, Some(r#"{"devowneruuid":"nope"}"#))
            .field("devowneruuid"),
        // dos out of range or of the wrong type.
        bad("dos 7 (PUT)", "PUT", &np, Some(put(r#","dos":7"#).as_str())).field("dos"),
        bad("dos 7 (PATCH)", "PATCH", &dp, Some(r#"{"dos":7}"#)).field("dos"),
        bad("dos -1 (PATCH)", "PATCH", &dp, Some(r#"{"dos":-1}"#)).field("dos"),
        bad("dos as a string (PATCH)", "PATCH", &dp, Some(r#"{"dos":"1"}"#)).field("dos"),
        bad("types not a list (PUT)", "PUT", &np, Some(put(r#","types":"oic.wk.d""#).as_str()))
            .field("types"),
        // Inconsistent state.
        bad("owned in RFOTM (PUT)", "PUT", &np, Some(put(r#","dos":1,"owned":true"#).as_str()))
            .field("owned"),
        bad("unowned in RFNOP (PUT)", "PUT", &np, Some(put(r#","dos":3,"owned":false"#).as_str()))
            .field("owned"),
        bad("owned in RESET (PUT)", "PUT", &np, Some(put(r#","dos":0,"owned":true"#).as_str()))
            .field("owned"),
        bad("owned in RFOTM (PATCH)", "PATCH", &dp, Some(r#"{"owned":true}"#)).field("owned"),
        bad("RFNOP unowned (PATCH)", "PATCH", &dp, Some(r#"{"dos":3}"#)).field("owned"),
        bad("partial state of an unknown device", "PATCH", &sp, Some(r#"{"dos":1}"#)).field("dos"),
        bad("own bridge (PUT)", "PUT", &np, Some(put(&format!(r#","bridge":"{n}""#)).as_str()))
            .field("bridge"),
        // Bad records.
        bad("eps http://x", "PUT", &np, Some(put(r#","eps":["http://x"]"#).as_str())).field("eps"),
        bad(
            "eps coaps before coap",
            "PUT",
            &np,
            Some(put(r#","eps":["coaps://[fd00::1]:5684","coap://[fd00::1]:5683"]"#).as_str()),
        )
        .field("eps"),
        bad("eps with a space", "PUT", &np, Some(put(r#","eps":["coap://a b:1"]"#).as_str()))
            .field("eps"),
        bad("empty name", "PUT", &np, Some(format!(r#"{{"uuid":"{n}","name":""}}"#).as_str()))
            .field("name"),
        bad("no oxms", "PUT", &np, Some(put(r#","oxms":[]"#).as_str())).field("oxms"),
        // Conditional requests.
        bad("If-Match not an entity-tag", "PATCH", &dp, Some(r#"{"dos":1}"#))
            .header("If-Match", "7")
            .field("If-Match"),
        bad("If-None-Match not an entity-tag", "PUT", &np, Some(put("").as_str()))
            .header("If-None-Match", "any")
            .field("If-None-Match"),
        bad("If-Match on a batch", "POST", "/v1/devices:batch", Some(r#"{"deletes":[]}"#))
            .header("If-Match", "*")
            .field("If-Match"),
        bad("If-Match of another tag", "PATCH", &dp, Some(r#"{"dos":1}"#))
            .header("If-Match", "\"x\"")
            .status(&[412])
            .field("If-Match"),
        bad(
            "If-Match stale (PUT)",
            "PUT",
            &dp,
            Some(format!(r#"{{"uuid":"{d}","name":"x"}}"#).as_str()),
        )
        .header("If-Match", "\"99999\"")
        .status(&[412])
        .field("If-Match"),
        bad("If-Match stale (DELETE)", "DELETE", &dp, None)
            .header("If-Match", "\"99999\"")
            .status(&[412])
            .field("If-Match"),
        bad("If-Match * of a new device (PUT)", "PUT", &np, Some(put("").as_str()))
            .header("If-Match", "*")
            .status(&[412])
            .field("If-Match"),
        bad(
            "If-None-Match * of a device (PUT)",
            "PUT",
            &dp,
            Some(format!(r#"{{"uuid":"{d}","name":"x"}}"#).as_str()),
        )
        .header("If-None-Match", "*")
        .status(&[412])
        .field("If-None-Match"),
        bad("If-Match stale", "PATCH", &dp, Some(r#"{"dos":1}"#))
            .header("If-Match", "\"7\"")
            .status(&[412])
            .field("If-Match"),
        // Unknown devices.
        bad("PATCH an unknown device", "PATCH", &np, Some(r#"{"dos":1}"#))
            .status(&[404])
            .field("uuid"),
        bad("DELETE an unknown device", "DELETE", &np, None).status(&[404]).field("uuid"),
        // Listing queries.
        bad("eligible=maybe", "GET", "/v1/devices?eligible=maybe", None).field("eligible"),
        bad("stale=1", "GET", "/v1/devices?stale=1", None).field("stale"),
        bad("limit=0", "GET", "/v1/devices?limit=0", None).field("limit"),
        bad("limit=abc", "GET", "/v1/devices?limit=abc", None).field("limit"),
        bad("cursor=-1", "GET", "/v1/devices?cursor=-1", None).field("cursor"),
        bad("unknown query key", "GET", "/v1/devices?colour=red", None).field("colour"),
        // Unknown paths and wrong methods.
        bad("unknown path", "GET", "/v2/devices", None).status(&[404]).field("path"),
        bad("root path", "GET", "/", None).status(&[404]).field("path"),
        bad("unknown path (PUT)", "PUT", "/v1/device/x", Some("{}")).status(&[404]).field("path"),
        bad("POST on a device", "POST", &dp, Some("{}")).status(&[405]).field("method"),
        bad("OPTIONS on a device", "OPTIONS", &dp, None).status(&[405]).field("method"),
        // These answer 404 today; 405 would be more precise (see the report).
        bad("DELETE on the collection", "DELETE", "/v1/devices", None)
            .status(&[404, 405])
            .field(""),
        bad("PUT on /healthz", "PUT", "/healthz", Some("{}")).status(&[404, 405]).field(""),
        bad("GET the batch call", "GET", "/v1/devices:batch", None).status(&[404, 405]).field(""),
    ]
}

fn send(gate: &Gate, case: &Bad) -> Reply {
    gate.client()
        .try_call_with(case.method, &case.path, case.body.as_deref(), &case.headers)
        .unwrap_or_else(|e| panic!("{}: no reply: {e}", case.what))
}

/// Whether `field` is exactly `want` (not `colour.colour` for `colour`); an empty `want`
/// accepts any field.
fn names_exactly(field: &str, want: &str) -> bool {
    want.is_empty() || field == want
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = TempDir::new("bad");
    let Some(gate) = bad_input_gate(&dir) else { return };
    let before = fingerprint(&gate);
    for case in bad_inputs() {
        let reply = send(&gate, &case);
        assert!(case.status.contains(&reply.status), "{}: {reply:?}", case.what);
        assert!(reply.content_type.starts_with("application/json"), "{}: {reply:?}", case.what);
        let (field, reason) = reply.error();
        assert!(
            names_exactly(&field, case.field),
            "{}: the error should name {:?}: {field}: {reason}",
            case.what,
            case.field
        );
        assert_eq!(fingerprint(&gate), before, "{}: the fleet changed", case.what);
    }
    assert!(gate.device(&uuid(10, 3)).is_none());
}

/// Every bad input names the offending field in `field` itself (record errors by their field,
/// serde errors by their path, e.g. `devowneruuid` or `upserts[3].dos`).
#[test]
fn bad_input_names_the_field() {
    let dir = TempDir::new("badstrict");
    let Some(gate) = bad_input_gate(&dir) else { return };
    let mut wrong = Vec::new();
    for case in bad_inputs().into_iter().filter(|c| !c.field.is_empty()) {
        let (field, reason) = send(&gate, &case).error();
        if !names_exactly(&field, case.field) {
            wrong.push(format!("{}: want {:?}, got {field:?} ({reason})", case.what, case.field));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} errors do not name their field:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Sends a raw HTTP request (head and body as given) and returns the status and body of the
/// reply, then closes the connection.
fn raw_http(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the whole reply (headers + Content-Length bytes) is in.
    loop {
        let n = stream.read(&mut buf).expect("read the reply");
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some((headers, rest)) = text.split_once("\r\n\r\n") {
            let len = headers
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            if rest.len() >= len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Oversized bodies: a declared Content-Length over the limit (128 MiB) is refused with 413
/// before any of it is read. (Sending 128 MiB to test a streamed, undeclared oversize body is
/// too slow for this suite; the gate's `take(max + 1)` covers it.)
#[test]
fn oversized_body_gets_413() {
    let dir = TempDir::new("oversize");
    let Some(gate) = bad_input_gate(&dir) else { return };
    let before = fingerprint(&gate);
    let n = uuid(10, 3);
    let body = format!(r#"{{"uuid":"{n}","name":"x","dos":1}}"#);
    for (method, path) in [("PUT", device_path(&n)), ("POST", "/v1/devices:batch".to_owned())] {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: gate\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            (128u64 << 20) + 1
        );
        let (status, reply) = raw_http(gate.addr, &head, body.as_bytes());
        assert_eq!(status, 413, "{method} {path}: {reply}");
        let v: Value = serde_json::from_str(&reply).expect("JSON error");
        assert_eq!(v["error"]["field"], "body", "{reply}");
        assert_eq!(fingerprint(&gate), before);
    }
    // A body that is sent as declared, within the limit, still works on a new connection.
    let reply = gate.call("PUT", &device_path(&n), Some(&body));
    assert_eq!(reply.status, 201, "{reply:?}");
}

/// BUG (reported): a single request declaring a huge Content-Length kills the gate, token or
/// not. (Regression: with tiny_http 0.12, dropping such a request drained the unread body with
/// `vec![0; remaining]` and the process aborted; the API now answers 413 from the header.)
#[test]
fn huge_content_length_does_not_kill_the_gate() {
    let dir = TempDir::new("hugecl");
    let Some(mut gate) = bad_input_gate(&dir) else { return };
    let head = "PUT /v1/devices/x HTTP/1.1\r\nHost: gate\r\nContent-Length: 1000000000000\r\n\r\n";
    let (status, _) = raw_http(gate.addr, head, b"{}");
    assert!((400..500).contains(&status), "{status}");
    // The abort comes after the reply (and a debug build takes a while to print a backtrace).
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(gate.is_running(), "the gate died:\n{}", gate.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gate.device_count(), 2);
}

#[test]
fn bearer_token_is_required() {
    let dir = TempDir::new("token");
    let Some(gate) = Gate::start(GateOpts::ports(8).state_dir(dir.path()).token("secret")) else {
        return;
    };
    let d = uuid(11, 1);
    let n = uuid(11, 2);
    upsert_all(&gate, &[entry(d, "D", (Some(1), Some(false), false))]);
    let before = fingerprint(&gate);
    let calls: Vec<(&str, String, Option<String>)> = vec![
        ("GET", "/healthz".into(), None),
        ("GET", "/metrics".into(), None),
        ("GET", "/v1/stats".into(), None),
        ("GET", "/v1/export".into(), None),
        ("GET", "/v1/devices".into(), None),
        ("GET", device_path(&d), None),
        ("PUT", device_path(&n), Some(to_json(&entry(n, "N", (Some(1), None, false))))),
        ("PUT", device_path(&d), Some(to_json(&entry(d, "D2", (Some(3), None, false))))),
        ("PATCH", device_path(&d), Some(r#"{"dos":3,"owned":true}"#.into())),
        ("DELETE", device_path(&d), None),
        ("POST", "/v1/devices:batch".into(), Some(to_json(&json!({"deletes": [d]})))),
        ("GET", "/nope".into(), None),
    ];
    let client = gate.client();
    let wrong: [&[(&str, &str)]; 5] = [
        &[],
        &[("Authorization", "Bearer wrong")],
        &[("Authorization", "secret")],
        &[("Authorization", "Basic c2VjcmV0")],
        &[("Authorization", "Bearer secre")],
    ];
    for (method, path, body) in &calls {
        for headers in wrong {
            let reply = client
                .try_call_with(method, path, body.as_deref(), headers)
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            assert_eq!(reply.status, 401, "{method} {path} {headers:?}: {reply:?}");
            assert_eq!(reply.error().0, "Authorization");
        }
    }
    assert_eq!(fingerprint(&gate), before, "a call without the token changed something");

    // With the token, every call works (in this order: create, replace, patch, delete).
    for (method, path, body) in &calls {
        let reply = gate.call(method, path, body.as_deref());
        let want = match (*method, path.as_str()) {
            (_, "/nope") => 404,
            ("PUT", p) if p.ends_with(&n.to_string()) => 201,
            ("POST", _) => 404, // the device was deleted by the call before
            _ => 200,
        };
        assert_eq!(reply.status, want, "{method} {path}: {reply:?}");
    }
    assert_eq!(gate.device_count(), 1);

    // The command-line client: --token, or DOXM_GATE_TOKEN.
    let control = gate.addr.to_string();
    let stats = |token: Option<&str>, env: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["stats", "--control", &control]).env_remove("DOXM_GATE_TOKEN");
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        if let Some(t) = env {
            cmd.env("DOXM_GATE_TOKEN", t);
        }
        cmd.output().expect("run doxm-gate stats")
    };
    let out = stats(None, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{out:?}");
    assert!(!stats(Some("wrong"), None).status.success());
    assert!(stats(Some("secret"), None).status.success());
    assert!(stats(None, Some("secret")).status.success());
}

#[test]
fn cli_stats_and_fleet_export_import() {
    let dir = TempDir::new("cli");
    let Some(a) = Gate::start(GateOpts::ports(16).state_dir(dir.path())) else { return };
    let Some(b) = Gate::start(GateOpts::ports(16)) else { return };
    let owner = uuid(0xffff, 1);
    let bridge = DeviceEntry {
        types: vec!["oic.wk.d".into(), "oic.d.bridge".into()],
        devowneruuid: owner,
        rowneruuid: owner,
        oxmsel: 0,
        eps: vec!["coap://[fd00:b::1]:5683".into(), "coaps://[fd00:b::1]:5684".into()],
        ..entry(uuid(12, 0), "bridge", (Some(3), Some(true), false))
    };
    let mut devices = vec![bridge];
    for i in 1..=15u64 {
        let mut d = entry(uuid(12, i), &format!("vod {i}"), support::STATES[i as usize % 7]);
        if i % 5 == 0 {
            d.dos = None;
            d.owned = None;
            d.doc_open = false;
        }
        if i <= 10 {
            d.bridge = Some(uuid(12, 0));
            d.types = vec!["oic.wk.d".into(), "oic.d.light".into(), "oic.d.virtual".into()];
        }
        d.oxms = vec![0, 1];
        d.eps = vec![format!("coap://10.0.11.1:{}", 20_000 + i)];
        devices.push(d);
    }
    upsert_all(&a, &devices);
    let mut sorted = devices.clone();
    sorted.sort_by_key(|d| d.uuid);
    assert_eq!(a.export(), sorted);

    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("DOXM_GATE_TOKEN")
            .output()
            .expect("run doxm-gate");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let control_a = a.addr.to_string();
    let control_b = b.addr.to_string();

    // stats: the same JSON as /v1/stats, pretty-printed.
    let out = run(&["stats", "--control", &control_a]);
    let stats: Value = serde_json::from_slice(&out.stdout).expect("stats prints JSON");
    // The bridge is owned, so its VODs answer like standalone devices.
    let want_eligible = devices
        .iter()
        .filter(|d| d.dos == Some(1) && d.owned == Some(false) && !d.doc_open)
        .count();
    assert!(want_eligible > 0);
    assert_eq!(stats["fleet"], json!({"devices": 16, "eligible": want_eligible}));
    assert!(stats["update_to_visible_us"]["count"].as_u64().is_some_and(|n| n >= 1));

    // export to TOML, JSON and stdout; import the TOML into a fresh gate.
    let toml_path = dir.path().join("fleet.toml");
    let json_path = dir.path().join("fleet.json");
    run(&["fleet", "export", "--control", &control_a, "-o", toml_path.to_str().expect("utf-8")]);
    run(&["fleet", "export", "--control", &control_a, "-o", json_path.to_str().expect("utf-8")]);
    let stdout = run(&["fleet", "export", "--control", &control_a]).stdout;
    for file in [
        FleetFile::load(&toml_path).expect("TOML fleet file"),
        FleetFile::load(&json_path).expect("JSON fleet file"),
        serde_json::from_slice(&stdout).expect("JSON on stdout"),
    ] {
        let mut got = file.device;
        got.sort_by_key(|d| d.uuid);
        assert_eq!(got, sorted);
    }
    assert_eq!(b.device_count(), 0);
    let out =
        run(&["fleet", "import", "--control", &control_b, toml_path.to_str().expect("utf-8")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("imported 16 devices"), "{out:?}");
    assert_eq!(b.export(), a.export());
    // Same eligibility on both gates, device by device.
    let views = |g: &Gate| -> Vec<(String, bool, String)> {
        let v = g.get("/v1/devices?limit=100").json();
        let mut out: Vec<_> = v["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| {
                let reason = d["reason"].as_str().unwrap_or_default().to_owned();
                (d["uuid"].to_string(), d["eligible"] == true, reason)
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(views(&b), views(&a));
    assert!(views(&a).iter().any(|(_, e, _)| *e), "some device should be eligible");

    // Importing a bad file changes nothing and fails.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[device]]\nuuid = \"0d0c0000-0000-4000-8000-00000000ffff\"\nname = \"x\"\ndos = 9\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["fleet", "import", "--control", &control_b, bad.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert_eq!(b.export(), a.export());
}

/// One acknowledged change, as the concurrency test records it.
#[derive(Debug, Clone)]
enum Change {
    Put(DeviceEntry),
    Patch(PatchBody),
}

#[test]
fn concurrent_clients_keep_invariants() {
    let _heavy = heavy();
    const THREADS: usize = 8;
    const CALLS: usize = 200;
    const SHARED: u64 = 8;
    let dir = TempDir::new("concurrency");
    let Some(gate) = Gate::start(GateOpts::ports(16).state_dir(dir.path())) else { return };
    // Devices 0..8 are shared by every thread; 8 + t belongs to thread t alone.
    let initial: Vec<DeviceEntry> = (0..SHARED + THREADS as u64)
        .map(|i| entry(uuid(13, i), &format!("d{i}"), (Some(1), Some(false), false)))
        .collect();
    upsert_all(&gate, &initial);
    let started = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = gate.client();
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(0xc0c0 + t as u64);
                let mut acks: Vec<(u64, u64, Change)> = Vec::new(); // (device, revision, change)
                let mut refused = 0u64;
                for i in 0..CALLS {
                    let device = if rng.bool() { rng.u64(..SHARED) } else { SHARED + t as u64 };
                    let u = uuid(13, device);
                    let path = device_path(&u);
                    let roll = rng.u8(..100);
                    let (reply, change) = if roll < 35 {
                        let mut e = entry(u, &format!("t{t} c{i}"), random_state(&mut rng));
                        e.eps = vec![format!("coap://10.9.{t}.{}:5683", i % 250 + 1)];
                        (client.call("PUT", &path, Some(&to_json(&e))), Change::Put(e))
                    } else if roll < 80 {
                        let patch = full_patch(&mut rng);
                        (client.call("PATCH", &path, Some(&to_json(&patch))), Change::Patch(patch))
                    } else {
                        // Conditional: read the revision, then change only that revision.
                        let rev = client.device(&u).expect("present").revision;
                        let patch = full_patch(&mut rng);
                        let etag = format!("\"{rev}\"");
                        let reply = client
                            .try_call_with(
                                "PATCH",
                                &path,
                                Some(&to_json(&patch)),
                                &[("If-Match", etag.as_str())],
                            )
                            .expect("a reply");
                        if reply.status == 412 {
                            refused += 1;
                            continue;
                        }
                        assert_eq!(reply.etag, Some(rev + 1), "If-Match {rev}: {reply:?}");
                        (reply, Change::Patch(patch))
                    };
                    assert_eq!(reply.status, 200, "{reply:?}");
                    let revision = reply.etag.expect("an ETag");
                    acks.push((device, revision, change));
                }
                (acks, refused)
            })
        })
        .collect();
    let mut acks_by_device: BTreeMap<u64, Vec<(u64, Change, usize)>> = BTreeMap::new();
    let mut refused = 0;
    for (t, h) in handles.into_iter().enumerate() {
        let (acks, r) = h.join().expect("a client thread panicked");
        refused += r;
        for (device, revision, change) in acks {
            acks_by_device.entry(device).or_default().push((revision, change, t));
        }
    }
    let took = started.elapsed();
    let total: usize = acks_by_device.values().map(Vec::len).sum();
    println!(
        "concurrency: {THREADS} threads x {CALLS} calls: {total} acknowledged changes, {refused} \
         conditional PATCHes refused with 412, in {:.2} s",
        took.as_secs_f64()
    );

    let mut want_eligible = 0;
    for (device, mut acks) in acks_by_device {
        let u = uuid(13, device);
        let view = gate.device(&u).expect("never deleted");
        // Revision = 1 (creation) + acknowledged changes; every acknowledged change got its own
        // revision, and together they are exactly 2..=revision (no change lost or doubled).
        assert_eq!(view.revision, 1 + acks.len() as u64, "device {device}");
        acks.sort_by_key(|a| a.0);
        let revisions: Vec<u64> = acks.iter().map(|a| a.0).collect();
        assert_eq!(revisions, (2..=view.revision).collect::<Vec<_>>(), "device {device}");
        // The state is what the acknowledged changes make, applied in revision order.
        let mut model = initial[device as usize].clone();
        for (_, change, _) in &acks {
            model = match change {
                Change::Put(e) => e.clone(),
                Change::Patch(p) => patched(&model, p),
            };
        }
        assert_eq!(view.device, model, "device {device}");
        // A device of one thread: the state of that thread's last acknowledged change.
        if device >= SHARED {
            assert!(acks.iter().all(|a| a.2 == (device - SHARED) as usize));
            let last = match &acks.last().expect("changed").1 {
                Change::Put(e) => e.clone(),
                Change::Patch(p) => patched(&view.device, p),
            };
            assert_eq!(view.device, last, "device {device}");
        }
        want_eligible += u64::from(eligible(&model));
        assert_eq!(view.eligible, eligible(&model), "device {device}");
    }
    let stats = gate.get("/v1/stats").json();
    assert_eq!(
        stats["fleet"],
        json!({"devices": SHARED + THREADS as u64, "eligible": want_eligible})
    );
}

/// Mutations per second with fsync: single PATCH calls from one thread and from eight (group
/// commit), and PATCHes in batches. Printed, not asserted.
#[test]
fn figures_mutations_per_second() {
    let _heavy = heavy();
    let dir = TempDir::new("figures");
    let Some(gate) = Gate::start(GateOpts::addresses().state_dir(dir.path())) else { return };
    const DEVICES: u64 = 1_000;
    let devices: Vec<DeviceEntry> = (0..DEVICES)
        .map(|i| entry(uuid(14, i), &format!("d{i}"), (Some(1), Some(false), false)))
        .collect();
    upsert_all(&gate, &devices);
    let window = Duration::from_millis(1_500);
    let patch_body = |i: u64| {
        if i % 2 == 0 {
            r#"{"doc_open":true}"#
        } else {
            r#"{"doc_open":false}"#
        }
    };
    let rate = |threads: u64| -> (u64, f64) {
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (client, done) = (gate.client(), done.clone());
                std::thread::spawn(move || {
                    let mut i = 0;
                    while started.elapsed() < window {
                        let u = uuid(14, (t * 100 + i % 100) % DEVICES);
                        let reply = client.call("PATCH", &device_path(&u), Some(patch_body(i)));
                        assert_eq!(reply.status, 200, "{reply:?}");
                        done.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("client thread");
        }
        let n = done.load(Ordering::Relaxed);
        (n, n as f64 / started.elapsed().as_secs_f64())
    };
    let (n1, r1) = rate(1);
    let (n8, r8) = rate(8);
    // Batched: 1,000 patches per call.
    let started = Instant::now();
    let mut batched = 0;
    let mut round = 0;
    while started.elapsed() < window || round == 0 {
        let patches: Vec<Value> = (0..DEVICES)
            .map(|i| json!({"uuid": uuid(14, i), "doc_open": round % 2 == 0}))
            .collect();
        let reply =
            gate.call("POST", "/v1/devices:batch", Some(&to_json(&json!({"patches": patches}))));
        assert_eq!(reply.status, 200, "{reply:?}");
        batched += DEVICES;
        round += 1;
    }
    let rb = batched as f64 / started.elapsed().as_secs_f64();
    let stats = gate.get("/v1/stats").json();
    let visible = &stats["update_to_visible_us"];
    println!("FIGURE mutations/s with fsync (debug build unless --release):");
    println!("  1 thread,  single PATCH calls: {r1:>9.0}/s ({n1} calls)");
    println!("  8 threads, single PATCH calls: {r8:>9.0}/s ({n8} calls, group commit)");
    println!("  batches of {DEVICES} patches:         {rb:>9.0}/s ({round} calls)");
    println!(
        "  update-to-visible: p50 {} us, p99 {} us, max {} us ({} calls)",
        visible["p50"], visible["p99"], visible["max"], visible["count"]
    );
}
