//! The files in `examples/` stay true: the fleet loads and uses every field, and the systemd unit
//! passes `systemd-analyze verify`. (examples/gate.toml is checked where the configuration lives,
//! by the unit tests of `src/bin/doxm-gate/config.rs`: it loads, is exactly the defaults, and
//! names every key.)

use doxm_gate::testing::lab::link;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use doxm_gate::control::fleet_file::{DeviceEntry, FleetFile};
use doxm_gate::fleet::Fleet;
use doxm_gate::policy;
use uuid::Uuid;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
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
