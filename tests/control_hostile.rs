//! The control API's transport against hostile clients and careless
//! operators, on the real binary with raw TCP clients.
//!
//! - descriptor exhaustion under a lowered open-file limit (`prlimit`);
//! - an unauthenticated large chunked body: 401 before the body is read, the gate's RSS bounded;
//! - a trickled body (408), a stalled or trickled head, an idle keep-alive connection (closed);
//! - the bind refusal, the empty token, the token file, the bearer scheme in any case;
//! - SIGTERM and SIGINT with stalled clients (exit within 5 s with the summary line), SIGHUP.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Client, Gate, GateOpts, TempDir, BIN};

// ---- Raw clients ----

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the connection closes, or until a reply's status line is complete; returns the
/// status (`None`: closed without one) and when it came.
fn read_status(stream: &mut TcpStream, started: Instant) -> (Option<u16>, Duration) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return (None, started.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = got.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&got[..end]).into_owned();
            let status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
            return (status, started.elapsed());
        }
    }
}

/// Reads until the gate closes the connection (or 20 s pass); when it closed.
fn closed_after(stream: &mut TcpStream, started: Instant) -> Duration {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    started.elapsed()
}

fn raw_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = connect(addr);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    read_status(&mut s, Instant::now()).0
}

/// `VmRSS` and `VmHWM` of a process, in kB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs the binary with `args` (and `env`), which must refuse to start: its exit code and
/// stderr. Panics if it still runs after 10 s (it started).
fn refused(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("DOXM_GATE_TOKEN").env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code().unwrap_or(-1), err)
}

/// Free device ports and group port for a gate that is refused before it binds anything.
const PORTS: [&str; 6] = ["--port", "15683", "--port-base", "15700", "--port-count", "4"];

// ---- 1. Descriptor exhaustion ----

#[test]
fn issue_14_fd_exhaustion_under_a_lowered_limit_keeps_the_api_serving() {
    // The gate runs under a hard open-file limit of 192 with 60 device ports: the API's cap is
    // lowered to what the limit leaves (and says so); 400 idle connections then push the
    // longest-idle ones out instead of exhausting the descriptors.
    if Command::new("prlimit").arg("--version").output().is_err() {
        support::link::skip("prlimit (util-linux) is not installed");
        return;
    }
    let opts = GateOpts::ports(60).under(&["prlimit", "--nofile=192:192", "--"]);
    let Some(mut gate) = Gate::start(opts) else { return };
    // The listening line may reach the log a moment after the start is reported.
    assert!(gate.wait_log("max_connections=", Duration::from_secs(5)), "{}", gate.log());
    let log = gate.log();
    let cap: usize = log
        .split("max_connections=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the log says how many connections it allows:\n{log}"));
    assert!(cap < 192 && cap > 8, "cap {cap} under a limit of 192:\n{log}");
    assert!(log.contains("open_file_limit=192"), "{log}");
    assert!(log.contains("leaves room for fewer control API connections"), "{log}");

    let idle: Vec<TcpStream> = (0..400).map(|_| connect(gate.addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(raw_get(gate.addr, "/healthz"), Some(200), "the API answers through exhaustion");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let stats = gate.get("/v1/stats").json();
    let api = &stats["api"];
    assert!(api["connections"].as_u64().unwrap() <= cap as u64, "{api}");
    assert!(api["closed"]["evicted"].as_u64().unwrap() >= (400 - cap) as u64, "{api}");
    assert_eq!(api["max_connections"].as_u64(), Some(cap as u64), "{api}");

    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        assert_eq!(raw_get(gate.addr, "/healthz"), Some(200), "after the clients left");
    }
    let metrics = gate.get("/metrics").body;
    assert!(metrics.contains("doxm_gate_api_accept_errors_total "), "{metrics}");
    assert!(gate.is_running(), "{}", gate.log());
    assert!(!gate.log().contains("panicked"), "{}", gate.log());
}

// ---- 2. Authentication before the body; timeouts ----

#[test]
fn issue_14_unauthenticated_chunked_bodies_get_401_at_once_and_rss_stays_bounded() {
    let _heavy = support::heavy();
    let Some(gate) = Gate::start(GateOpts::ports(8).token("right")) else { return };
    let pid = gate.pid().unwrap();
    let (rss_before, _) = memory_kb(pid);
    const TOTAL: usize = 120 << 20;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = gate.addr;
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let started = Instant::now();
                s.write_all(
                    b"POST /v1/devices:batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\
                      Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                )
                .unwrap();
                let mut reader = s.try_clone().unwrap();
                let reply = std::thread::spawn(move || read_status(&mut reader, started));
                let chunk = [b' '; 64 << 10];
                let mut sent = 0;
                while sent < TOTAL {
                    let frame =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    if s.write_all(&frame).is_err() {
                        break;
                    }
                    sent += chunk.len();
                }
                (reply.join().unwrap(), sent)
            })
        })
        .collect();
    for client in clients {
        let ((status, after), sent) = client.join().unwrap();
        assert_eq!(status, Some(401), "a wrong token gets 401");
        assert!(after < Duration::from_secs(2), "401 after {after:?}");
        assert!(sent < TOTAL, "the gate read all 120 MB of an unauthenticated body");
    }
    let (rss, hwm) = memory_kb(pid);
    eprintln!("gate RSS: {rss_before} kB before, {rss} kB after, peak {hwm} kB");
    assert!(hwm < rss_before + 64 * 1024, "peak RSS {hwm} kB from {rss_before} kB");
    // The right token, in any case of the scheme, still works.
    let client = Client::new(gate.addr, None);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} right");
        let reply = client.try_call_with("GET", "/healthz", None, &[("Authorization", &auth)]);
        assert_eq!(reply.unwrap().status, 200, "{scheme}");
    }
    let stats = gate.get("/v1/stats").json();
    assert!(stats["api"]["unauthorized"].as_u64().unwrap() >= 8, "{stats}");
}

#[test]
fn issue_14_trickled_body_gets_408_within_the_body_timeout() {
    let opts = GateOpts::ports(4).args(&["--control-body-timeout-ms", "1500"]);
    let Some(gate) = Gate::start(opts) else { return };
    let mut s = connect(gate.addr);
    let started = Instant::now();
    s.write_all(
        b"PUT /v1/devices/0d0c0000-0000-4000-8000-000000000001 HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n{\"uuid\":",
    )
    .unwrap();
    let mut writer = s.try_clone().unwrap();
    // 10 bytes every 250 ms: the whole body would take 50 s.
    std::thread::spawn(move || {
        while writer.write_all(b"          ").is_ok() && started.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    let (status, after) = read_status(&mut s, started);
    assert_eq!(status, Some(408), "after {after:?}");
    assert!(after >= Duration::from_millis(1400) && after < Duration::from_secs(4), "{after:?}");
    let stats = gate.get("/v1/stats").json();
    assert_eq!(stats["api"]["body_timeouts"].as_u64(), Some(1), "{stats}");
}

#[test]
fn issue_14_stalled_or_trickled_heads_and_idle_connections_are_closed() {
    let opts = GateOpts::ports(4).args(&[
        "--control-header-timeout-ms",
        "1000",
        "--control-idle-timeout-ms",
        "2000",
    ]);
    let Some(gate) = Gate::start(opts) else { return };
    // Half a head, then nothing.
    let mut stalled = connect(gate.addr);
    let started = Instant::now();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    // A head trickled a byte every 200 ms: the header timeout runs from the first byte.
    let mut trickled = connect(gate.addr);
    let mut writer = trickled.try_clone().unwrap();
    std::thread::spawn(move || {
        for byte in
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if writer.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    // A keep-alive connection after one call.
    let mut idle = connect(gate.addr);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_status(&mut idle, started).0, Some(200));
    let idle_since = Instant::now();
    for (name, conn, from, within) in [
        ("stalled head", &mut stalled, started, 900..3_000),
        ("trickled head", &mut trickled, started, 900..3_000),
        ("idle keep-alive", &mut idle, idle_since, 1_900..4_000),
    ] {
        let ms = closed_after(conn, from).as_millis();
        assert!(within.contains(&ms), "{name}: closed after {ms} ms, expected {within:?}");
    }
    let stats = gate.get("/v1/stats").json();
    assert_eq!(stats["api"]["closed"]["header_timeout"].as_u64(), Some(2), "{stats}");
    assert!(stats["api"]["closed"]["idle_timeout"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["api"]["closed"]["reply_timeout"].as_u64(), Some(0), "{stats}");
}

// ---- 3. Bind refusal, empty token, token file ----

#[test]
fn issue_14_non_loopback_without_token_is_refused_unless_insecure_is_said() {
    for control in ["0.0.0.0:18683", "[::]:18683"] {
        let mut args = vec!["run", "--iface", "lo", "--control", control];
        args.extend(PORTS);
        let (code, err) = refused(&args, &[]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("control: ") && err.contains("no token"), "{err}");
        assert!(err.contains("--control-insecure-no-token"), "the way out is named: {err}");
    }
    let opts = GateOpts::ports(4).control("0.0.0.0:0").args(&["--control-insecure-no-token"]);
    let Some(gate) = Gate::start(opts) else { return };
    assert!(gate.wait_log("address=0.0.0.0:", Duration::from_secs(5)), "{}", gate.log());
    let local = SocketAddr::from(([127, 0, 0, 1], gate.addr.port()));
    assert_eq!(raw_get(local, "/healthz"), Some(200));
}

#[test]
fn issue_14_empty_token_is_a_startup_error_naming_it() {
    let mut args = vec!["run", "--iface", "lo", "--control-token", ""];
    args.extend(PORTS);
    let (code, err) = refused(&args, &[]);
    assert!(code == 2 && err.contains("control_token") && err.contains("empty"), "{err}");
    let mut args = vec!["run", "--iface", "lo"];
    args.extend(PORTS);
    let (code, err) = refused(&args, &[("DOXM_GATE_TOKEN", "")]);
    assert!(code == 2 && err.contains("DOXM_GATE_TOKEN") && err.contains("empty"), "{err}");
    let dir = TempDir::new("token-file");
    for (text, why) in [("", "empty"), ("\n", "empty"), ("two words\n", "whitespace")] {
        let file = dir.path().join("token");
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap();
        let mut args = vec!["run", "--iface", "lo", "--control-token-file", path];
        args.extend(PORTS);
        let (code, err) = refused(&args, &[]);
        assert!(code == 2 && err.contains("control_token_file") && err.contains(path), "{err}");
        assert!(err.contains(why), "{text:?}: {err}");
    }
    let missing = dir.path().join("none");
    let mut args = vec!["run", "--iface", "lo", "--control-token-file", missing.to_str().unwrap()];
    args.extend(PORTS);
    let (code, err) = refused(&args, &[]);
    assert!(code == 2 && err.contains("cannot read"), "{err}");
}

#[test]
fn issue_14_token_file_is_read_and_reread_on_sighup() {
    let dir = TempDir::new("token-file");
    let file = dir.path().join("token");
    std::fs::write(&file, "first\n").unwrap();
    let opts = GateOpts::ports(4)
        .control("0.0.0.0:0")
        .args(&["--control-token-file", file.to_str().unwrap()]);
    let Some(mut gate) = Gate::start(opts) else { return };
    let local = SocketAddr::from(([127, 0, 0, 1], gate.addr.port()));
    let status = |token: Option<&str>| {
        Client::new(local, token.map(str::to_owned)).call("GET", "/v1/stats", None).status
    };
    assert_eq!((status(Some("first")), status(Some("second")), status(None)), (200, 401, 401));

    std::fs::write(&file, "second\n").unwrap();
    gate.signal("HUP");
    assert!(gate.wait_log("SIGHUP: control API token re-read", Duration::from_secs(5)));
    assert_eq!((status(Some("first")), status(Some("second"))), (401, 200));

    std::fs::write(&file, "").unwrap();
    gate.signal("HUP");
    assert!(gate.wait_log("keeping the current token", Duration::from_secs(5)), "{}", gate.log());
    assert_eq!(status(Some("second")), 200, "an empty file keeps the current token");
    assert!(gate.is_running(), "SIGHUP never stops the gate");
}

// ---- 4. Signals ----

#[test]
fn issue_14_sighup_rereads_the_log_level_of_the_config_file() {
    let dir = TempDir::new("sighup-config");
    let config = dir.path().join("gate.toml");
    std::fs::write(&config, "log_level = \"info\"\n").unwrap();
    let opts = GateOpts::ports(4).no_log_level().args(&["--config", config.to_str().unwrap()]);
    let Some(mut gate) = Gate::start(opts) else { return };
    std::fs::write(&config, "log_level = \"debug\"\n").unwrap();
    gate.signal("HUP");
    assert!(
        gate.wait_log("SIGHUP: debug lines are now shown", Duration::from_secs(5)),
        "{}",
        gate.log()
    );
    assert!(gate.log().contains("SIGHUP: log level re-read level=\"debug\""), "{}", gate.log());
    // A broken file keeps the level in force.
    std::fs::write(&config, "log_level = \"loud\"\n").unwrap();
    gate.signal("HUP");
    assert!(gate.wait_log("keeping the log level", Duration::from_secs(5)), "{}", gate.log());
    assert!(gate.is_running(), "{}", gate.log());
    assert_eq!(gate.get("/healthz").status, 200);
}

#[test]
fn issue_14_sighup_without_token_file_is_logged_and_ignored() {
    let Some(mut gate) = Gate::start(GateOpts::ports(4)) else { return };
    gate.signal("HUP");
    assert!(gate.wait_log("SIGHUP: nothing to reload", Duration::from_secs(5)), "{}", gate.log());
    std::thread::sleep(Duration::from_millis(200));
    assert!(gate.is_running(), "{}", gate.log());
    assert_eq!(gate.get("/healthz").status, 200);
}

#[test]
fn issue_14_sigterm_lets_a_call_in_progress_finish() {
    let _heavy = support::heavy();
    let dir = TempDir::new("sigterm-in-flight");
    let Some(mut gate) = Gate::start(GateOpts::addresses().state_dir(dir.path())) else { return };
    // A batch large enough to keep the store busy for a while (parsed, checked, journaled).
    let devices: Vec<String> = (0..15_000u64)
        .map(|i| format!(r#"{{"uuid":"{}","name":"lamp {i}","dos":3}}"#, support::uuid(14, i)))
        .collect();
    let body = format!(r#"{{"upserts":[{}]}}"#, devices.join(","));
    let mut s = connect(gate.addr);
    let head = format!(
        "POST /v1/devices:batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let started = Instant::now();
    gate.signal("TERM");
    let (status, after) = read_status(&mut s, started);
    assert_eq!(status, Some(200), "the call in progress at SIGTERM got its reply ({after:?})");
    let exit = gate.wait_exit(Duration::from_secs(5));
    assert!(exit.is_some_and(|e| e.success()), "{exit:?} after {:?}", started.elapsed());
    eprintln!(
        "SIGTERM during a 15,000-device batch: reply after {after:?}, exit after {:?}",
        started.elapsed()
    );
    // Acknowledged, so on disk: the next gate on the same journal has them all.
    let gate = gate.restart();
    assert_eq!(gate.device_count(), 15_000);
}

#[test]
fn issue_14_sigterm_and_sigint_with_stalled_clients_exit_within_5_s() {
    for signal in ["TERM", "INT"] {
        let Some(mut gate) = Gate::start(GateOpts::ports(4)) else { return };
        let mut half_head = connect(gate.addr);
        half_head.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
        let mut part_body = connect(gate.addr);
        part_body
            .write_all(
                b"PUT /v1/devices/0d0c0000-0000-4000-8000-000000000001 HTTP/1.1\r\nHost: x\r\n\
                  Content-Length: 1000\r\n\r\n{\"uuid\"",
            )
            .unwrap();
        let _idle = connect(gate.addr);
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        gate.signal(signal);
        let status = gate.wait_exit(Duration::from_secs(5));
        let took = started.elapsed();
        let status = status.unwrap_or_else(|| panic!("SIG{signal}: still running after 5 s"));
        assert!(status.success(), "SIG{signal}: {status}");
        assert!(
            gate.wait_log(" stopped ", Duration::from_secs(2)),
            "summary line:\n{}",
            gate.log()
        );
        eprintln!("SIG{signal} with stalled clients: exited in {took:?}");
        assert!(!gate.log().contains("panicked"), "{}", gate.log());
    }
}

// ---- The new keys: flags, defaults, limits ----

#[test]
fn issue_14_body_limit_is_configurable() {
    let opts = GateOpts::ports(4).token("t").args(&["--control-max-body-bytes", "1000"]);
    let Some(gate) = Gate::start(opts) else { return };
    let big = format!("{{\"deletes\":[{}]}}", vec!["\"x\""; 300].join(","));
    let reply = gate.call("POST", "/v1/devices:batch", Some(&big));
    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(reply.error().1.contains("1000"), "{reply:?}");
    // A chunked body over the limit (no Content-Length) too, and the connection closes.
    let mut s = connect(gate.addr);
    s.write_all(
        b"POST /v1/devices:batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    for _ in 0..4 {
        s.write_all(format!("200\r\n{}\r\n", " ".repeat(512)).as_bytes()).unwrap();
    }
    assert_eq!(read_status(&mut s, Instant::now()).0, Some(413));
    assert_eq!(gate.get("/healthz").status, 200);
}
