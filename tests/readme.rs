//! The README's walkthrough runs as written: its marked shell blocks go, verbatim, to `bash -e`
//! in a fresh network namespace where the real `doxm-gate demo` serves on `lo`, with `curl`
//! made to fail on any non-2xx reply.
//!
//! A block belongs to a walkthrough when the line before its opening fence is
//! `<!-- walkthrough -->` (or `<!-- walkthrough: after a restart -->` for the part that needs a
//! restarted gate). Needs root (`ip netns add`), `ip` and `curl`; skips loudly otherwise (and
//! fails under `DOXM_GATE_REQUIRE_ALL=1`).
//!
//! Also: the README's links lead to files in the repository, never outside it.

use doxm_gate::testing::lab::link;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const README: &str = include_str!("../README.md");
const BIN: &str = env!("CARGO_BIN_EXE_doxm-gate");

/// The shell blocks marked `<!-- {marker} -->`, joined in order.
fn blocks(marker: &str) -> String {
    let marker = format!("<!-- {marker} -->");
    let mut lines = README.lines();
    let mut script = String::new();
    let mut found = 0;
    while let Some(line) = lines.next() {
        if line.trim() != marker {
            continue;
        }
        let fence = lines.next().unwrap_or_default();
        assert_eq!(fence.trim(), "```sh", "README: {marker} must come right before a ```sh fence");
        for line in lines.by_ref().take_while(|l| l.trim() != "```") {
            script.push_str(line);
            script.push('\n');
        }
        found += 1;
    }
    assert!(found > 0, "README.md has no block marked {marker}");
    script
}

/// Why the test cannot run here, if it cannot.
fn unavailable() -> Option<&'static str> {
    if let Some(why) = link::lab_unavailable() {
        return Some(why);
    }
    if Command::new("curl").arg("--version").output().is_err() {
        return Some("curl is not installed (apt-get install curl)");
    }
    None
}

/// A network namespace with only `lo`, up; deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("dg-readme-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Netns(name)
    }

    /// A command that runs `program` inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `doxm-gate demo --iface lo ARGS` in a namespace; killed on drop.
struct Demo {
    child: Child,
    log: PathBuf,
}

impl Demo {
    fn start(ns: &Netns, dir: &Path, args: &[&str]) -> Demo {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let log = dir.join(format!("gate-{}.log", STARTS.fetch_add(1, Ordering::Relaxed)));
        let child = ns
            .command(BIN)
            .args(["demo", "--iface", "lo"])
            .args(args)
            .env_remove("DOXM_GATE_TOKEN")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut demo = Demo { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !demo.log().contains("doxm-gate serving") {
            if let Ok(Some(status)) = demo.child.try_wait() {
                panic!("demo exited ({status}):\n{}", demo.log());
            }
            assert!(Instant::now() < deadline, "demo did not start:\n{}", demo.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        demo
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` with `bash -e -o pipefail` in the namespace, in `dir`, with `doxm-gate` on the
/// path and every `curl` failing on a non-2xx reply; returns the transcript.
fn walk(ns: &Netns, dir: &Path, script: &str) -> String {
    let prelude = "set -x\n\
                   curl() { command curl --fail-with-body --silent --show-error \"$@\"; echo; }\n";
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = ns
        .command("bash")
        .args(["-e", "-o", "pipefail", "-c"])
        .arg(format!("{prelude}{script}"))
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("DOXM_GATE_TOKEN")
        .output()
        .unwrap();
    let transcript = format!(
        "{}\n--- stderr (commands) ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the README walkthrough failed ({}):\n{transcript}", out.status);
    transcript
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("readme-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn walkthrough_runs_against_the_demo() {
    if let Some(why) = unavailable() {
        link::skip(why);
        return;
    }
    let script = blocks("walkthrough");
    let dir = scratch("walk");
    let ns = Netns::new("w");
    let demo = Demo::start(&ns, &dir, &[]);
    let transcript = walk(&ns, &dir, &script);
    // The blocks end where they began: the two devices they add are gone again.
    assert!(transcript.contains(r#"{"devices":1001,"status":"ok"}"#), "{transcript}");
    assert!(
        dir.join("fleet.toml").exists(),
        "`doxm-gate fleet export -o fleet.toml` wrote nothing"
    );
    drop(demo);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn restart_walkthrough_reconfirms_stale_devices() {
    if let Some(why) = unavailable() {
        link::skip(why);
        return;
    }
    let script = blocks("walkthrough: after a restart");
    let dir = scratch("restart");
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap();
    let ns = Netns::new("r");
    Demo::start(&ns, &dir, &["--state-dir", state_arg]).kill();
    let demo = Demo::start(&ns, &dir, &["--state-dir", state_arg]);
    // Demo lamp 10 (0x0a) answers in the demo; after the restart it waits for its state, and
    // the README's batch re-confirms it (and its bridge).
    let lamp = || {
        let out = run(ns.command("curl").args([
            "--fail-with-body",
            "--silent",
            "localhost:8683/v1/devices/0d0c0000-0000-4000-8000-00000000000a",
        ]));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let before = lamp();
    assert_eq!((&before["stale"], &before["reason"]), (&true.into(), &"state-unknown".into()));
    walk(&ns, &dir, &script);
    let after = lamp();
    assert_eq!((&after["stale"], &after["eligible"]), (&false.into(), &true.into()), "{after}");
    drop(demo);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readme_links_stay_inside_the_repository() {
    assert!(!README.contains("../"), "README.md points outside the repository");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for link in README.split("](").skip(1).filter_map(|rest| rest.split(')').next()) {
        if link.starts_with("http://") || link.starts_with("https://") {
            continue;
        }
        assert!(
            root.join(link).exists(),
            "README.md links to {link}, which is not in the repository"
        );
    }
}
