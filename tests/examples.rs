//! The files in `examples/` stay true: the configuration loads and is exactly the defaults and
//! names every key, the fleet loads and uses every field, and the systemd unit passes
//! `systemd-analyze verify`.

use doxm_gate::testing::lab::link;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use doxm_gate::config::{EndpointMode, EndpointsConfig, GateConfig, LimitsConfig, LogFormat};
use doxm_gate::control::fleet_file::{DeviceEntry, FleetFile};
use doxm_gate::control::RestartPolicy;
use doxm_gate::fleet::Fleet;
use doxm_gate::policy;
use uuid::Uuid;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// The dotted names of every key in a TOML table (`port`, `limits.leisure_ms`, ...).
fn keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let name = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) => keys(inner, &format!("{name}."), out),
            _ => {
                out.insert(name);
            }
        }
    }
}

/// A configuration with every key set, `Option`s included. Written without `..Default`, so a
/// new key in `GateConfig` does not compile here until it is added (and to examples/gate.toml).
fn every_key() -> GateConfig {
    GateConfig {
        interfaces: vec!["eth0".to_owned()],
        groups: vec!["ff02::158".parse().unwrap()],
        port: 5683,
        fleet: Some("fleet.toml".into()),
        log_level: "info".parse().unwrap(),
        log_format: LogFormat::Text,
        control: "127.0.0.1:8683".to_owned(),
        control_token: Some("t".to_owned()),
        control_token_file: Some("/run/credentials/doxm-gate.service/token".into()),
        control_insecure_no_token: false,
        control_header_timeout_ms: 10_000,
        control_body_timeout_ms: 30_000,
        control_idle_timeout_ms: 30_000,
        control_max_connections: 256,
        control_max_body_bytes: 128 << 20,
        state_dir: Some("/var/lib/doxm-gate".into()),
        restart_policy: RestartPolicy::FailClosed,
        endpoints: EndpointsConfig {
            mode: EndpointMode::Port,
            port_base: 40_000,
            port_count: 1_024,
            v6_prefix: Some("fd00:d0c::/64".to_owned()),
            v4_prefix: Some("10.77.0.0/16".to_owned()),
        },
        limits: LimitsConfig {
            leisure_ms: 2_000,
            max_window_ms: 60_000,
            source_window_ms: 10_000,
            answer_rate_bytes: 2_000_000,
            source_rate: 1.0,
            source_burst: 5.0,
            max_pending_answers: 2_000_000,
        },
    }
}

/// examples/gate.toml with its commented-out settings (`#key = value`, no space after the `#`)
/// switched on; prose comments (`# text`) stay comments.
fn with_every_setting_on(text: &str) -> String {
    let on = |line: &str| match line.strip_prefix('#') {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest.to_owned(),
        _ => line.to_owned(),
    };
    text.lines().map(on).collect::<Vec<_>>().join("\n")
}

#[test]
fn gate_toml_loads_and_is_the_defaults() {
    let config = GateConfig::load(&example("gate.toml")).unwrap();
    assert_eq!(config, GateConfig::default(), "examples/gate.toml must show the real defaults");
    config.engine().expect("the defaults are a valid configuration");
}

#[test]
fn gate_toml_names_every_key() {
    let toml::Value::Table(want) = toml::Value::try_from(every_key()).unwrap() else {
        panic!("a configuration serializes to a table")
    };
    let mut want_keys = BTreeSet::new();
    keys(&want, "", &mut want_keys);

    let text = std::fs::read_to_string(example("gate.toml")).unwrap();
    let on = with_every_setting_on(&text);
    // Every commented-out setting is a real key with a valid value (unknown keys are refused).
    let config: GateConfig = toml::from_str(&on).unwrap_or_else(|e| panic!("{e}\n{on}"));
    config.engine().expect("the commented-out settings form a valid configuration");
    let mut have_keys = BTreeSet::new();
    keys(&on.parse::<toml::Table>().unwrap(), "", &mut have_keys);

    let missing: Vec<_> = want_keys.difference(&have_keys).collect();
    assert!(missing.is_empty(), "examples/gate.toml does not mention {missing:?}");
    assert_eq!(have_keys, want_keys);
}

/// A device entry with every field set. Written without `..Default`, so a new field does not
/// compile here until it is added (and to examples/fleet.toml).
fn every_field() -> DeviceEntry {
    let uuid = Uuid::from_u128(1);
    DeviceEntry {
        uuid,
        name: "n".to_owned(),
        types: vec!["oic.wk.d".to_owned()],
        bridge: Some(uuid),
        piid: Some(uuid),
        dos: Some(1),
        owned: Some(false),
        doc_open: false,
        oxms: vec![0],
        oxmsel: 4,
        sct: 9,
        devowneruuid: uuid,
        rowneruuid: uuid,
        eps: vec![],
    }
}

#[test]
fn fleet_toml_loads_and_uses_every_field() {
    let file = FleetFile::load(&example("fleet.toml")).unwrap();
    let fleet = Fleet::with_capacity(16);
    assert_eq!(file.apply(&fleet).unwrap(), 5);

    let serde_json::Value::Object(want) = serde_json::to_value(every_field()).unwrap() else {
        panic!("an entry serializes to an object")
    };
    let text = std::fs::read_to_string(example("fleet.toml")).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let used: BTreeSet<&str> = table["device"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d.as_table().unwrap().keys().map(String::as_str))
        .collect();
    let missing: Vec<_> = want.keys().filter(|k| !used.contains(k.as_str())).collect();
    assert!(missing.is_empty(), "examples/fleet.toml never sets {missing:?}");

    // What the comments say of each device.
    let verdicts: Vec<(&str, &str)> = file
        .device
        .iter()
        .map(|d| {
            let id = fleet.lookup(&d.uuid).unwrap();
            let verdict = match policy::eligibility(&fleet.word(id).facts(d.uuid)) {
                Ok(()) => "ok",
                Err(reason) => reason.as_str(),
            };
            (d.name.as_str(), verdict)
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("hall bridge", "not-rfotm"),
            ("lamp 1", "ok"),
            ("lamp 2", "doc-open"),
            ("plug 3", "not-rfotm"),
            ("plug 4", "state-unknown"),
        ]
    );
    assert_eq!(fleet.eligible_count(), 1);
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(example("doxm-gate.service")).unwrap();
    let exec = "ExecStart=/usr/local/bin/doxm-gate run --config /etc/doxm-gate/gate.toml \
                --state-dir /var/lib/doxm-gate";
    assert!(unit.lines().any(|l| l == exec), "the unit's ExecStart is not {exec:?}");
    for line in ["DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=doxm-gate"] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    // No capability is needed (5683 and the device ports are above 1024).
    assert!(unit.lines().any(|l| l == "AmbientCapabilities="), "the unit grants capabilities");

    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        link::skip("systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    // verify wants ExecStart's binary to exist: point it at the one cargo built.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("doxm-gate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/doxm-gate", env!("CARGO_BIN_EXE_doxm-gate")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // verify exits 0 on an unknown or ignored setting, but says so, naming the file.
    let complaints: Vec<&str> =
        stderr.lines().filter(|l| l.contains("doxm-gate.service")).collect();
    assert!(complaints.is_empty(), "systemd-analyze verify complains:\n{}", complaints.join("\n"));
}
