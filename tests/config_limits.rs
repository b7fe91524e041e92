//! Issue 14: limits under which the gate could never answer are refused at startup, naming the
//! key, and the bound is the engine's own: the smallest accepted budget answers, one byte less
//! would not.
//!
//! `cargo test --test config_limits`

mod support;

use std::sync::Arc;
use std::time::Instant;

use doxm_gate::config::{one_answer_bytes, GateConfig};
use doxm_gate::engine::{Config, Engine, Meta};
use doxm_gate::fleet::{DeviceRecord, Fleet, OnboardingState};
use doxm_gate::policy::Dos;
use doxm_gate::wire::{option, Code, MessageType, Writer};
use uuid::Uuid;

/// One eligible device with one oxm (the answer the engine budgets for).
fn fleet() -> Arc<Fleet> {
    let fleet = Arc::new(Fleet::with_capacity(8));
    let record = DeviceRecord::new(
        Uuid::from_u128(0x0d0c_0000_0000_4000_8000_0000_0000_0001),
        Uuid::from_u128(1),
        "lamp",
        Arc::from(vec![Box::from("oic.wk.d")]),
        None,
        Arc::from(vec![0]),
        4,
        9,
        Uuid::nil(),
        Uuid::nil(),
        &[],
    )
    .unwrap();
    let rfotm = OnboardingState { dos: Dos::Rfotm, owned: false, doc_open: false };
    fleet.upsert(record, Some(rfotm)).unwrap();
    fleet
}

/// How many answers one baseline discovery with an 8-byte token gets under `limits`.
fn answers(config: Config) -> usize {
    let mut engine = Engine::new(config, fleet(), 7);
    let mut buf = [0u8; 256];
    let mut w = Writer::new(&mut buf, MessageType::NonConfirmable, Code::GET, 1, &[9; 8]).unwrap();
    for p in ["oic", "sec", "doxm"] {
        w.option(option::URI_PATH, p.as_bytes()).unwrap();
    }
    w.option(option::URI_QUERY, b"if=oic.if.baseline").unwrap();
    let len = w.finish();
    let meta = Meta {
        source: "[fe80::1234]:49152".parse().unwrap(),
        destination: "[ff02::158]:5683".parse().unwrap(),
        interface: 3,
    };
    let start = Instant::now();
    engine.handle(start, &meta, &buf[..len]);
    let (mut sent, mut now, mut out) = (0, start, [0u8; 1500]);
    loop {
        while engine.poll_transmit(now, &mut out).is_some() {
            sent += 1;
        }
        match engine.poll_timeout() {
            Some(next) => now = now.max(next),
            None => return sent,
        }
    }
}

fn limits(rate: u64, window_ms: u64, leisure_ms: u64) -> GateConfig {
    let mut config = GateConfig::default();
    config.limits.answer_rate_bytes = rate;
    config.limits.max_window_ms = window_ms;
    config.limits.leisure_ms = leisure_ms;
    config.limits.source_window_ms = window_ms;
    config
}

/// The smallest budget the configuration accepts answers; below it (refused at startup) the
/// same request would get nothing.
#[test]
fn the_smallest_accepted_budget_answers() {
    let answer = one_answer_bytes();
    let accepted = limits(answer, 1_000, 0).engine().expect("exactly one answer's budget");
    assert_eq!(answers(accepted.clone()), 1);
    let err = limits(answer - 1, 1_000, 0).engine().unwrap_err();
    assert_eq!(err.key, "limits.answer_rate_bytes");
    assert_eq!(answers(Config { answer_rate_bytes: answer - 1, ..accepted.clone() }), 0);
    // A window of nothing answers nothing, whatever the leisure.
    let err = limits(2_000_000, 0, 0).engine().unwrap_err();
    assert_eq!(err.key, "limits.max_window_ms");
    assert_eq!(answers(Config { max_window: std::time::Duration::ZERO, ..accepted }), 0);
}

/// `run --leisure-ms 0 --max-window-ms 0` (and a budget below one answer) refuses to start,
/// naming the key; it used to start and answer nothing.
#[test]
fn run_refuses_limits_that_never_answer() {
    for (args, key) in [
        (
            // The command line, as it was.
            vec!["--leisure-ms", "0", "--max-window-ms", "0"],
            "limits.max_window_ms",
        ),
        (
            vec![
                "--answer-rate-bytes",
                "100",
                "--max-window-ms",
                "1000",
                "--source-window-ms",
                "1000",
                "--leisure-ms",
                "1000",
            ],
            "limits.answer_rate_bytes",
        ),
    ] {
        let mut cmd = std::process::Command::new(support::BIN);
        cmd.args(["run", "--iface", "lo", "--control", ""]).args(&args);
        let out = support::output_within(cmd, std::time::Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?}: want {key} in:\n{stderr}");
    }
}
