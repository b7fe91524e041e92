//! Limits under which the gate could never answer are refused at startup, naming the key (the
//! bound is the engine's own: the unit tests of `src/bin/doxm-gate/config.rs` show that the
//! smallest accepted budget answers and one byte less would not).
//!
//! `cargo test --test config_limits`

mod support;

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
