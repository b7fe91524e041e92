//! Workload 2: a fleet of N loaded through the API, drops at N, discovery with E eligible.

use super::*;

pub(crate) struct FleetResult {
    pub(crate) fleet: usize,
    pub(crate) load: Load,
    pub(crate) drops: Vec<DropRow>,
    pub(crate) discoveries: Vec<Discovery>,
    /// From the gate's `stopped` line.
    pub(crate) send_failed: u64,
}

/// Loading the fleet through `POST /v1/devices:batch`.
pub(crate) struct Load {
    /// (devices, body bytes, seconds, gate RSS after it) per batch, as the client saw them.
    pub(crate) batches: Vec<(usize, usize, f64, u64)>,
    pub(crate) cpu: f64,
    pub(crate) rss_before: u64,
    pub(crate) rss_after: u64,
}

impl Load {
    pub(crate) fn secs(&self) -> f64 {
        self.batches.iter().map(|b| b.2).sum()
    }

    pub(crate) fn devices(&self) -> usize {
        self.batches.iter().map(|b| b.0).sum()
    }

    /// Seconds for the full-size batches (of [`UPSERT_BATCH`]), if there were any.
    pub(crate) fn full_batch_secs(&self) -> Option<f64> {
        let full: Vec<f64> =
            self.batches.iter().filter(|b| b.0 == UPSERT_BATCH).map(|b| b.2).collect();
        (!full.is_empty()).then(|| full.iter().sum::<f64>() / full.len() as f64)
    }

    pub(crate) fn bytes_per_device(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.devices().max(1) as f64
    }

    /// RSS growth per device from the end of the first batch to the end of the last: the
    /// table's cost without the one-time peak of parsing a batch body (the allocator keeps and
    /// reuses that memory). `None` with a single batch.
    pub(crate) fn marginal_bytes_per_device(&self) -> Option<f64> {
        let (first, last) = (self.batches.first()?, self.batches.last()?);
        let devices: usize = self.batches.iter().skip(1).map(|b| b.0).sum();
        (devices > 0).then(|| last.3.saturating_sub(first.3) as f64 / devices as f64)
    }
}

/// The mean seconds of the full-size batches of all fleets.
pub(crate) fn full_batch_secs(r: &Results) -> Option<f64> {
    let full: Vec<f64> = r
        .fleets
        .iter()
        .flat_map(|f| &f.load.batches)
        .filter(|b| b.0 == UPSERT_BATCH)
        .map(|b| b.2)
        .collect();
    (!full.is_empty()).then(|| full.iter().sum::<f64>() / full.len() as f64)
}

/// One (N, E): the probe's repetitions.
pub(crate) struct Discovery {
    pub(crate) eligible: usize,
    /// Seconds for the batch of patches that made devices eligible (as the client timed it).
    pub(crate) patch_secs: f64,
    pub(crate) patched: usize,
    pub(crate) reps: Vec<Rep>,
}

impl Discovery {
    pub(crate) fn exact(&self) -> usize {
        self.reps.iter().filter(|r| r.exact(self.eligible)).count()
    }

    pub(crate) fn median_of(&self, f: impl Fn(&Rep) -> u64) -> u64 {
        median(&self.reps.iter().map(f).collect::<Vec<_>>())
    }

    pub(crate) fn last_ms(&self) -> f64 {
        self.median_of(|r| r.last_us) as f64 / 1e3
    }

    pub(crate) fn first_ms(&self) -> f64 {
        self.median_of(|r| r.first_us) as f64 / 1e3
    }

    pub(crate) fn answers_per_sec(&self) -> f64 {
        self.median_of(|r| (r.answers as f64 / (r.last_us.max(1) as f64 / 1e6)) as u64) as f64
    }

    /// Median gate CPU per discovery.
    pub(crate) fn gate_cpu_ms(&self) -> f64 {
        self.median_of(|r| r.gate_cpu_us) as f64 / 1e3
    }
}

pub(crate) fn fleet_run(lab: &Lab, plan: &Plan, n: usize, kinds: &[Kind]) -> FleetResult {
    let control = format!("{GATE_V4}:8683");
    let mut gate = lab.bench_gate(&["--control", &control]);
    let pid = gate.child.id();
    let rss_before = rss(pid);
    let cpu0 = cpu_seconds(pid);
    eprintln!("  load {n} devices through the API");
    let out = role_output(
        lab.role(&lab.obt_ns, "load")
            .env("DOXM_BENCH_API", &control)
            .env("DOXM_BENCH_DEVICES", n.to_string())
            .env("DOXM_BENCH_BATCH", UPSERT_BATCH.to_string())
            .env("DOXM_BENCH_GATE_PID", pid.to_string()),
        "load",
    );
    let cpu = cpu_seconds(pid) - cpu0;
    let rss_after = rss(pid);
    let batches = out
        .lines()
        .filter(|l| l.starts_with("batch "))
        .map(fields)
        .map(|f| {
            let devices = number(&f, "devices") as usize;
            (devices, number(&f, "bytes") as usize, float(&f, "secs"), number(&f, "gate_rss"))
        })
        .collect();
    let load = Load { batches, cpu, rss_before, rss_after };
    let s = stats(lab);
    assert_eq!(counter(&s, &["fleet", "devices"]), n as u64, "fleet size after the load");
    assert_eq!(counter(&s, &["fleet", "eligible"]), 0, "nothing eligible after the load");

    let drops = kinds.iter().map(|&k| drop_runs(lab, pid, n, k, plan)).collect();

    let mut discoveries = Vec::new();
    let mut made = 0;
    for &e in plan.eligible.iter().filter(|&&e| e <= n) {
        let body = lab.dir.join("patches.json");
        std::fs::write(&body, make_eligible(made + 1, e).to_string()).expect("patch body");
        let (status, text, patch_secs) = api(lab, "POST", "/v1/devices:batch", Some(&body));
        assert_eq!(status, 200, "patches: {text}");
        let patched = e - made;
        made = e;
        let s = stats(lab);
        assert_eq!(counter(&s, &["fleet", "eligible"]), e as u64, "eligible after the patches");
        eprintln!("  discover: {e} eligible of {n}");
        let reps = lab.probe_gate(e, plan.reps, Some(pid));
        discoveries.push(Discovery { eligible: e, patch_secs, patched, reps });
    }
    let log = gate.stop();
    let stopped = stopped_fields(&log);
    FleetResult { fleet: n, load, drops, discoveries, send_failed: number(&stopped, "send_failed") }
}

/// Device `i` (1..=N): `ELIGIBLE | i`, two endpoints at a bridge, RFNOP (owned, not eligible)
/// until patched.
pub(crate) fn device(i: usize, eligible: bool) -> DeviceEntry {
    let port = 10_000 + 2 * (i % 25_000);
    DeviceEntry {
        uuid: Uuid::from_u128(ELIGIBLE | i as u128),
        name: format!("bench lamp {i}"),
        types: vec!["oic.wk.d".to_owned(), "oic.d.light".to_owned()],
        bridge: None,
        piid: None,
        dos: Some(if eligible { 1 } else { 3 }),
        owned: None,
        doc_open: false,
        oxms: vec![0, 1],
        oxmsel: if eligible { 4 } else { 0 },
        sct: 9,
        devowneruuid: if eligible { Uuid::nil() } else { OWNER },
        rowneruuid: if eligible { Uuid::nil() } else { OWNER },
        eps: vec![
            format!("coap://[fd00:b::1]:{port}"),
            format!("coaps://[fd00:b::1]:{}", port + 1),
        ],
    }
}

/// The patches that put devices `from..=to` in RFOTM, unowned (as after a RESET).
pub(crate) fn make_eligible(from: usize, to: usize) -> Value {
    let patches: Vec<Value> = (from..=to)
        .map(|i| {
            json!({
                "uuid": Uuid::from_u128(ELIGIBLE | i as u128),
                "dos": 1,
                "owned": false,
                "devowneruuid": Uuid::nil(),
                "rowneruuid": Uuid::nil(),
                "oxmsel": 4,
            })
        })
        .collect();
    json!({ "patches": patches })
}

/// The update workload's fleet: devices 1..=E eligible, the rest RFNOP.
pub(crate) fn update_fleet(n: usize, eligible: usize) -> FleetFile {
    FleetFile { device: (1..=n).map(|i| device(i, i <= eligible)).collect() }
}
