//! The control API's semantics: conditional requests (RFC 9110 s13) on every mutating call and
//! per batch item, revisions that never repeat for a UUID across delete, re-create and
//! restart, and bodies with bytes after the JSON value; over HTTP, against the real daemon.
//!
//! `cargo test --test control_conditions`

mod support;

use doxm_gate::control::fleet_file::DeviceEntry;
use serde_json::{json, Value};
use support::{entry, to_json, uuid, Gate, GateOpts, Reply, TempDir};
use uuid::Uuid;

fn device_path(u: &Uuid) -> String {
    format!("/v1/devices/{u}")
}

fn lamp(u: Uuid, name: &str) -> DeviceEntry {
    entry(u, name, (Some(1), Some(false), false))
}

/// Everything the API shows of the fleet, to compare before and after a refused call.
fn fingerprint(gate: &Gate) -> Value {
    let list = gate.get("/v1/devices?limit=1000");
    assert_eq!(list.status, 200, "{list:?}");
    list.json()["devices"].clone()
}

fn put(gate: &Gate, e: &DeviceEntry, headers: &[(&str, &str)]) -> Reply {
    gate.call_with("PUT", &device_path(&e.uuid), Some(&to_json(e)), headers)
}

fn patch(gate: &Gate, u: &Uuid, body: &str, headers: &[(&str, &str)]) -> Reply {
    gate.call_with("PATCH", &device_path(u), Some(body), headers)
}

fn delete(gate: &Gate, u: &Uuid, headers: &[(&str, &str)]) -> Reply {
    gate.call_with("DELETE", &device_path(u), None, headers)
}

fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// A refused call: its status, the field named, and nothing changed.
fn refused(gate: &Gate, before: &Value, reply: &Reply, status: u16, field: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {reply:?}");
    assert_eq!(reply.error().0, field, "{what}: {reply:?}");
    assert_eq!(&fingerprint(gate), before, "{what}: the fleet changed");
}

#[test]
fn if_match_and_if_none_match_on_put_patch_delete() {
    let dir = TempDir::new("cond");
    let Some(gate) = Gate::start(GateOpts::ports(8).state_dir(dir.path())) else { return };
    let u = uuid(14, 1);
    let n = uuid(14, 2); // never created

    // If-None-Match: * creates only: 201, then 412 once the device exists.
    let reply = put(&gate, &lamp(u, "a"), &[("If-None-Match", "*")]);
    assert_eq!((reply.status, reply.etag), (201, Some(1)), "{reply:?}");
    let before = fingerprint(&gate);
    let reply = put(&gate, &lamp(u, "b"), &[("If-None-Match", "*")]);
    refused(&gate, &before, &reply, 412, "If-None-Match", "create-only of an existing device");

    // A stale or unknown If-Match is refused on every method (it used to be ignored on PUT
    // and DELETE), and so is a weak tag (strong comparison).
    for stale in ["\"99999\"", "\"0\"", "W/\"1\"", "\"2\", \"3\""] {
        let h = [("If-Match", stale)];
        let reply = put(&gate, &lamp(u, "c"), &h);
        refused(&gate, &before, &reply, 412, "If-Match", &format!("PUT {stale}"));
        let reply = patch(&gate, &u, r#"{"doc_open":true}"#, &h);
        refused(&gate, &before, &reply, 412, "If-Match", &format!("PATCH {stale}"));
        let reply = delete(&gate, &u, &h);
        refused(&gate, &before, &reply, 412, "If-Match", &format!("DELETE {stale}"));
    }
    // If-None-Match with the current tag (weak comparison: W/ matches too): 412.
    for current in ["\"1\"", "W/\"1\"", "\"5\", \"1\""] {
        let reply = patch(&gate, &u, r#"{"doc_open":true}"#, &[("If-None-Match", current)]);
        refused(&gate, &before, &reply, 412, "If-None-Match", current);
    }

    // If-Match: * matches any current representation; a list matches any of its tags.
    let reply = put(&gate, &lamp(u, "d"), &[("If-Match", "*")]);
    assert_eq!((reply.status, reply.etag), (200, Some(2)), "{reply:?}");
    let reply = patch(&gate, &u, r#"{"doc_open":true}"#, &[("If-Match", "\"9\", \"2\"")]);
    assert_eq!((reply.status, reply.etag), (200, Some(3)), "{reply:?}");
    let reply = patch(&gate, &u, r#"{"doc_open":false}"#, &[("If-None-Match", "\"2\"")]);
    assert_eq!((reply.status, reply.etag), (200, Some(4)), "{reply:?}");
    let reply = put(&gate, &lamp(u, "e"), &[("If-Match", &etag(4))]);
    assert_eq!((reply.status, reply.etag), (200, Some(5)), "{reply:?}");

    // A device that does not exist: If-Match (`*` or a tag) refuses a PUT with 412 and creates
    // nothing; a PATCH or DELETE is 404 as without conditions (RFC 9110 s13.2.1).
    let before = fingerprint(&gate);
    for condition in ["*", "\"1\""] {
        let reply = put(&gate, &lamp(n, "new"), &[("If-Match", condition)]);
        refused(&gate, &before, &reply, 412, "If-Match", &format!("PUT new {condition}"));
        let reply = patch(&gate, &n, "{}", &[("If-Match", condition)]);
        refused(&gate, &before, &reply, 404, "uuid", &format!("PATCH new {condition}"));
        let reply = delete(&gate, &n, &[("If-Match", condition)]);
        refused(&gate, &before, &reply, 404, "uuid", &format!("DELETE new {condition}"));
    }
    assert!(gate.device(&n).is_none());

    // Malformed conditions: 400 naming the header (an ETag is quoted).
    for (name, value) in
        [("If-Match", "5"), ("If-Match", "\"5"), ("If-None-Match", "any"), ("If-Match", "*, \"5\"")]
    {
        let reply = patch(&gate, &u, "{}", &[(name, value)]);
        refused(&gate, &before, &reply, 400, name, value);
    }

    // GET: If-None-Match of the current ETag is 304 without a body; If-Match that does not
    // match is 412; otherwise 200.
    let get = |headers: &[(&str, &str)]| gate.call_with("GET", &device_path(&u), None, headers);
    for current in ["\"5\"", "W/\"5\"", "*", "\"1\", \"5\""] {
        let reply = get(&[("If-None-Match", current)]);
        assert_eq!(
            (reply.status, reply.etag, reply.body.as_str()),
            (304, Some(5), ""),
            "{current}"
        );
    }
    assert_eq!(get(&[("If-None-Match", "\"4\"")]).status, 200);
    assert_eq!(get(&[("If-Match", "\"5\"")]).status, 200);
    let reply = get(&[("If-Match", "\"4\"")]);
    refused(&gate, &before, &reply, 412, "If-Match", "GET If-Match stale");
    assert_eq!(get(&[("If-Match", "5")]).status, 400);

    // DELETE with the current ETag: 200, no ETag (the device is gone).
    let reply = delete(&gate, &u, &[("If-Match", &etag(5))]);
    assert_eq!((reply.status, reply.etag), (200, None), "{reply:?}");
    assert!(gate.device(&u).is_none());
}

#[test]
fn revisions_never_repeat_across_delete_recreate_and_restart() {
    let dir = TempDir::new("revs");
    let opts = GateOpts::ports(8).state_dir(dir.path()).policy("resume");
    let Some(mut gate) = Gate::start(opts) else { return };
    let u = uuid(14, 10);
    let other = uuid(14, 11);
    assert_eq!(put(&gate, &lamp(other, "other"), &[]).status, 201);

    // Revisions 1..=3, then a delete.
    assert_eq!(put(&gate, &lamp(u, "first"), &[]).etag, Some(1));
    assert_eq!(patch(&gate, &u, r#"{"doc_open":true}"#, &[]).etag, Some(2));
    assert_eq!(patch(&gate, &u, r#"{"doc_open":false}"#, &[]).etag, Some(3));
    assert_eq!(delete(&gate, &u, &[]).status, 200);

    // Re-created: above every revision the old device had, so none of its ETags matches.
    let reply = put(&gate, &lamp(u, "second"), &[]);
    assert_eq!((reply.status, reply.etag), (201, Some(4)), "{reply:?}");
    let stale_all = |gate: &Gate, up_to: u64| {
        let before = fingerprint(gate);
        for stale in 1..=up_to {
            let h = [("If-Match", etag(stale))];
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let reply = patch(gate, &u, r#"{"dos":3,"owned":true}"#, &h);
            refused(gate, &before, &reply, 412, "If-Match", &format!("stale {stale}"));
            let reply = delete(gate, &u, &h);
            refused(gate, &before, &reply, 412, "If-Match", &format!("stale {stale}"));
        }
    };
    stale_all(&gate, 3);
    // Another device's changes do not move this one's revision.
    assert_eq!(patch(&gate, &other, "{}", &[]).etag, Some(2));
    assert_eq!(gate.device(&u).expect("present").revision, 4);

    // After a restart (journal replay): the same revisions, and the floor is still there.
    gate.kill9();
    let mut gate = gate.restart();
    assert_eq!(gate.device(&u).expect("acknowledged").revision, 4);
    stale_all(&gate, 3);
    assert_eq!(delete(&gate, &u, &[("If-Match", "\"4\"")]).status, 200);
    gate.kill9();
    let gate = gate.restart();
    let reply = put(&gate, &lamp(u, "third"), &[("If-None-Match", "*")]);
    assert_eq!((reply.status, reply.etag), (201, Some(5)), "{reply:?}");
    stale_all(&gate, 4);
    let reply = patch(&gate, &u, "{}", &[("If-Match", "\"5\"")]);
    assert_eq!((reply.status, reply.etag), (200, Some(6)), "{reply:?}");
}

#[test]
fn batch_items_carry_their_own_conditions() {
    let dir = TempDir::new("batchcond");
    let Some(gate) = Gate::start(GateOpts::ports(16).state_dir(dir.path())) else { return };
    let (a, b, c) = (uuid(15, 1), uuid(15, 2), uuid(15, 3));
    for u in [a, b] {
        assert_eq!(put(&gate, &lamp(u, "x"), &[]).etag, Some(1));
    }
    let before = fingerprint(&gate);
    let batch = |body: Value| gate.call("POST", "/v1/devices:batch", Some(&to_json(&body)));
    let new_c = json!({"uuid": c, "name": "c", "dos": 1});
    let cases = [
        (
            "a stale patch after a good one",
            json!({"patches": [{"uuid": a, "doc_open": true, "if_match": "\"1\""},
                               {"uuid": b, "doc_open": true, "if_match": "\"7\""}]}),
            412,
            "patches[1].if_match",
        ),
        (
            "a stale revision as a number",
            json!({"patches": [{"uuid": a, "doc_open": true, "if_match": 2}]}),
            412,
            "patches[0].if_match",
        ),
        (
            "create-only of an existing device",
            json!({"upserts": [new_c, {"uuid": b, "name": "b", "if_none_match": "*"}]}),
            412,
            "upserts[1].if_none_match",
        ),
        (
            "if_match * of a new device",
            json!({"upserts": [{"uuid": c, "name": "c", "if_match": "*"}]}),
            412,
            "upserts[0].if_match",
        ),
        (
            "a stale conditional delete",
            json!({"deletes": [a, {"uuid": b, "if_match": "\"3\""}]}),
            412,
            "deletes[1].if_match",
        ),
        (
            "a malformed condition",
            json!({"patches": [{"uuid": a, "if_match": "1"}]}),
            400,
            "patches[0].if_match",
        ),
        (
            "a malformed condition on an upsert",
            json!({"upserts": [{"uuid": c, "name": "c", "if_none_match": "all"}]}),
            400,
            "upserts[0].if_none_match",
        ),
        (
            "a condition of the wrong type",
            json!({"deletes": [{"uuid": a, "if_match": true}]}),
            400,
            "deletes[0].if_match",
        ),
        (
            "an unknown key next to a condition",
            json!({"upserts": [{"uuid": c, "name": "c", "if_match": "*", "colour": 1}]}),
            400,
            "upserts[0].colour",
        ),
        (
            "an unknown key in a conditional delete",
            json!({"deletes": [{"uuid": a, "if_match": "*", "colour": 1}]}),
            400,
            "deletes[0].colour",
        ),
    ];
    for (what, body, status, field) in cases {
        let reply = batch(body);
        refused(&gate, &before, &reply, status, field, what);
    }
    // A key given twice is refused, not read as its last value.
    let twice = format!(
        r#"{{"upserts":[{{"uuid":"{c}","name":"c","if_none_match":"*","if_none_match":"*"}}]}}"#
    );
    let reply = gate.call("POST", "/v1/devices:batch", Some(&twice));
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(&fingerprint(&gate), &before);
    // The conditions of a batch are per item: a header on the batch is refused.
    let reply = gate.call_with(
        "POST",
        "/v1/devices:batch",
        Some(&to_json(&json!({"deletes": [a]}))),
        &[("If-Match", "\"1\"")],
    );
    refused(&gate, &before, &reply, 400, "If-Match", "If-Match on the batch");

    // All conditions true: applied together.
    let reply = batch(json!({
        "upserts": [{"uuid": c, "name": "c", "dos": 1, "if_none_match": "*"}],
        "patches": [{"uuid": a, "doc_open": true, "if_match": "\"1\""},
                    {"uuid": c, "doc_open": true, "if_match": "*"}],
        "deletes": [{"uuid": b, "if_match": 1}],
    }));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json()["applied"],
        json!([{"uuid": c, "revision": 1}, {"uuid": a, "revision": 2},
               {"uuid": c, "revision": 2}, {"uuid": b, "revision": 0}])
    );
    assert!(gate.device(&b).is_none());
    // b comes back above its old revision; its old ETag does not match.
    let reply = batch(json!({"upserts": [{"uuid": b, "name": "b", "if_none_match": "*"}]}));
    assert_eq!(reply.json()["applied"], json!([{"uuid": b, "revision": 2}]), "{reply:?}");
    let before = fingerprint(&gate);
    let reply = batch(json!({"deletes": [{"uuid": b, "if_match": "\"1\""}]}));
    refused(&gate, &before, &reply, 412, "deletes[0].if_match", "b's old ETag");
}

// ---- Validation at the door: every answer fits in one datagram ----

/// A device whose answers cannot fit in one datagram (1,152 bytes of CoAP, RFC 7252 s4.6) is
/// refused with 400 naming the field, alone or in a batch; it used to be accepted and reported
/// `eligible: true` while it could never answer.
#[test]
fn oversized_devices_are_refused_naming_the_field() {
    let dir = TempDir::new("oversized");
    let Some(gate) = Gate::start(GateOpts::ports(8).state_dir(dir.path())) else { return };
    let u = uuid(16, 1);
    let base = lamp(u, "big");
    let v6 = |i: usize| format!("coap://[fd00::b]:{}", 50_000 + i);
    let cases: Vec<(&str, DeviceEntry, &str)> = vec![
        ("2,000 oxms", DeviceEntry { oxms: vec![0; 2_000], ..base.clone() }, "oxms"),
        (
            "10k types",
            DeviceEntry { types: vec!["oic.d.light".into(); 10_000], ..base.clone() },
            "types",
        ),
        ("9 types", DeviceEntry { types: vec!["oic.d.light".into(); 9], ..base.clone() }, "types"),
        ("long types", DeviceEntry { types: vec!["t".repeat(300); 4], ..base.clone() }, "types"),
        ("9 IPv6 eps", DeviceEntry { eps: (0..9).map(v6).collect(), ..base.clone() }, "eps"),
        (
            "long eps",
            DeviceEntry {
                eps: (0..4).map(|i| format!("coap://{}{i}:5683", "h".repeat(200))).collect(),
                ..base.clone()
            },
            "eps",
        ),
    ];
    let before = fingerprint(&gate);
    for (what, device, field) in &cases {
        let reply = put(&gate, device, &[]);
        refused(&gate, &before, &reply, 400, field, what);
        assert!(reply.error().1.contains("1152 bytes") || reply.error().1.contains("at most 8"));
        let body = json!({"upserts": [lamp(uuid(16, 2), "fine"), device]});
        let reply = gate.call("POST", "/v1/devices:batch", Some(&to_json(&body)));
        refused(&gate, &before, &reply, 400, &format!("upserts[1].{field}"), what);
    }
    // At the limits: 8 endpoints of each family and 8 types are accepted, and eligible.
    let full = DeviceEntry {
        eps: (0..8).map(v6).chain((0..8).map(|i| format!("coap://10.0.0.1:{i}"))).collect(),
        types: (0..8).map(|i| format!("oic.d.t{i}")).collect(),
        ..base.clone()
    };
    let reply = put(&gate, &full, &[]);
    assert_eq!(reply.status, 201, "{reply:?}");
    assert!(gate.device(&u).expect("created").eligible);
}

/// The same device in a fleet file: `run` refuses to start, naming the entry and the field.
#[test]
fn fleet_file_with_an_oversized_device_is_refused_at_startup() {
    let dir = TempDir::new("oversized-file");
    let oxms = vec!["0"; 2_000].join(", ");
    let file = dir.path().join("fleet.toml");
    let text = format!(
        "[[device]]\nuuid = \"{}\"\nname = \"ok\"\ndos = 1\n\n\
         [[device]]\nuuid = \"{}\"\nname = \"big\"\ndos = 1\noxms = [{oxms}]\n",
        uuid(17, 1),
        uuid(17, 2)
    );
    std::fs::write(&file, text).expect("write the fleet file");
    for state_dir in [None, Some(dir.path().join("state"))] {
        let mut cmd = std::process::Command::new(support::BIN);
        cmd.args(["run", "--iface", "lo", "--control", "", "--fleet"]).arg(&file);
        if let Some(state) = &state_dir {
            cmd.arg("--state-dir").arg(state);
        }
        let out = support::output_within(cmd, std::time::Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        let want = format!("device[1] ({}): oxms: with 2000 owner-transfer methods", uuid(17, 2));
        assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
    }
}
