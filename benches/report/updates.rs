//! Workload 3: control updates, alone and under discovery load, in memory and journaled.
//!
//! Also the focused run `DOXM_BENCH_UPDATES_AT=N cargo bench --bench report` ([`focused`]):
//! only journaled updates under discovery load, at a fleet of N loaded through the API, for
//! `DOXM_BENCH_UPDATES_SECS` (default 20) seconds, so that several snapshots of the whole fleet
//! cross the run; it prints the patcher's percentiles and the journal's stats and writes no
//! report.

use super::*;

pub(crate) struct Updates {
    pub(crate) load: bool,
    pub(crate) durable: bool,
    pub(crate) eligible: usize,
    /// The patcher's line: updates, failed, secs, p50_us, p99_us, max_us.
    pub(crate) patcher: HashMap<String, String>,
    /// The steady sender's line, under load.
    pub(crate) steady: Option<HashMap<String, String>>,
    /// `/v1/stats` `update_to_visible_us`.
    pub(crate) visible: Value,
    /// `/v1/stats` answers cancelled at send time (the device was no longer eligible).
    pub(crate) cancelled: u64,
    pub(crate) gate_cpu: f64,
    pub(crate) wall: f64,
}

impl Updates {
    pub(crate) fn label(&self) -> &'static str {
        match (self.load, self.durable) {
            (false, _) => "no discovery load, in memory",
            (true, false) => "under discovery load, in memory",
            (true, true) => "under discovery load, journaled (--state-dir)",
        }
    }

    pub(crate) fn updates_per_sec(&self) -> f64 {
        number(&self.patcher, "updates") as f64 / float(&self.patcher, "secs").max(1e-9)
    }
}

pub(crate) fn update_run(
    lab: &Lab,
    plan: &Plan,
    fleet: &Path,
    load: bool,
    durable: bool,
) -> Updates {
    eprintln!("updates: discovery load {load}, journaled {durable}");
    let control = format!("{GATE_V4}:8683");
    let state = lab.dir.join(format!("state-{}", u8::from(load) + 2 * u8::from(durable)));
    let mut args = vec!["--fleet", fleet.to_str().expect("UTF-8 path"), "--control", &control];
    if durable {
        args.extend(["--state-dir", state.to_str().expect("UTF-8 path")]);
    }
    let mut gate = lab.bench_gate(&args);
    let pid = gate.child.id();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let steady = load.then(|| {
        let child = lab
            .role(&lab.obt_ns, "steady")
            .env("DOXM_BENCH_RATE", plan.discovery_rate.to_string())
            .env("DOXM_BENCH_SECS", (plan.update_secs + 1.0).to_string())
            .env("DOXM_BENCH_EXPECT", plan.update_eligible.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the steady sender");
        // Half a second of discoveries before the updates start, half a second after.
        std::thread::sleep(Duration::from_millis(500));
        Running(Some(child))
    });
    let out = role_output(
        lab.role(&lab.obt_ns, "patcher")
            .env("DOXM_BENCH_API", &control)
            .env("DOXM_BENCH_CLIENTS", plan.clients.to_string())
            .env("DOXM_BENCH_SECS", plan.update_secs.to_string())
            .env("DOXM_BENCH_EXPECT", plan.update_eligible.to_string()),
        "patcher",
    );
    let steady = steady.map(|s| fields(&s.finish("steady sender")));
    let gate_cpu = cpu_seconds(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    std::thread::sleep(PUBLISHED);
    let s = stats(lab);
    gate.stop();
    Updates {
        load,
        durable,
        eligible: plan.update_eligible,
        patcher: fields(&out),
        steady,
        visible: s["update_to_visible_us"].clone(),
        cancelled: counter(&s, &["answers", "cancelled"]),
        gate_cpu,
        wall,
    }
}

/// The focused run (module docs): prints one `focused` line and the journal's stats.
pub(crate) fn focused(n: usize, plan: &Plan) {
    let secs: f64 =
        std::env::var("DOXM_BENCH_UPDATES_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let lab = lab::bench_lab();
    let control = format!("{GATE_V4}:8683");
    let state = lab.dir.join("state-focused");
    let _ = std::fs::remove_dir_all(&state);
    let mut gate = lab.bench_gate(&["--control", &control, "--state-dir", state.to_str().unwrap()]);
    let pid = gate.child.id();
    eprintln!("focused updates: load {n} devices through the API (journaled)");
    role_output(
        lab.role(&lab.obt_ns, "load")
            .env("DOXM_BENCH_API", &control)
            .env("DOXM_BENCH_DEVICES", n.to_string())
            .env("DOXM_BENCH_BATCH", UPSERT_BATCH.to_string())
            .env("DOXM_BENCH_GATE_PID", pid.to_string()),
        "load",
    );
    let body = lab.dir.join("patches.json");
    std::fs::write(&body, make_eligible(1, plan.update_eligible).to_string()).expect("body");
    let (status, text, _) = api(&lab, "POST", "/v1/devices:batch", Some(&body));
    assert_eq!(status, 200, "patches: {text}");
    let before = stats(&lab);
    eprintln!("focused updates: {secs} s of PATCHes by {} clients", plan.clients);
    let steady = lab
        .role(&lab.obt_ns, "steady")
        .env("DOXM_BENCH_RATE", plan.discovery_rate.to_string())
        .env("DOXM_BENCH_SECS", (secs + 1.0).to_string())
        .env("DOXM_BENCH_EXPECT", plan.update_eligible.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the steady sender");
    let steady = Running(Some(steady));
    std::thread::sleep(Duration::from_millis(500));
    let out = role_output(
        lab.role(&lab.obt_ns, "patcher")
            .env("DOXM_BENCH_API", &control)
            .env("DOXM_BENCH_CLIENTS", plan.clients.to_string())
            .env("DOXM_BENCH_SECS", secs.to_string())
            .env("DOXM_BENCH_EXPECT", plan.update_eligible.to_string()),
        "patcher",
    );
    let steady = steady.finish("steady sender");
    std::thread::sleep(PUBLISHED);
    let after = stats(&lab);
    let log = gate.stop();
    let snapshots: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("snapshot written") || l.contains("journal compacted"))
        .collect();
    println!("focused devices={n} {}", out.trim());
    println!("steady {}", steady.trim());
    println!("journal before the PATCHes: {}", before["journal"]);
    println!("journal after: {}", after["journal"]);
    println!("snapshots logged by the gate:\n{}", snapshots.join("\n"));
}
