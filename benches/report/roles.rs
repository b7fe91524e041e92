//! This bench's roles (OBT namespace), run by `ip netns exec` with DOXM_BENCH_ROLE set.

use super::*;

pub(crate) fn report_role(role: &str) -> Option<i32> {
    match role {
        "api" => Some(role_api()),
        "load" => Some(role_load()),
        "steady" => Some(role_steady()),
        "patcher" => Some(role_patcher()),
        "floor-recv" => Some(role_floor_recv()),
        "floor-send" => Some(role_floor_send()),
        "fairness" => Some(fairness::role()),
        _ => None,
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build()
}

/// Status and body of a call, whatever the status.
pub(crate) fn response(result: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match result {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// One call: prints `status=S secs=T`, then the body.
pub(crate) fn role_api() -> i32 {
    let url = format!("http://{}{}", env("DOXM_BENCH_API"), env("DOXM_BENCH_PATH"));
    let body = std::env::var_os("DOXM_BENCH_BODY").map(|p| std::fs::read(p).expect("body file"));
    let request = agent()
        .request(&env("DOXM_BENCH_METHOD"), &url)
        .set("Content-Type", "application/json")
        .set("Authorization", lab::AUTHORIZATION);
    let t0 = Instant::now();
    let result = match &body {
        Some(bytes) => request.send_bytes(bytes),
        None => request.call(),
    };
    let (status, text) = response(result);
    println!("status={status} secs={:.6}\n{text}", t0.elapsed().as_secs_f64());
    0
}

/// Devices 1..=DOXM_BENCH_DEVICES in batches of DOXM_BENCH_BATCH upserts; one line per batch.
pub(crate) fn role_load() -> i32 {
    #[derive(serde::Serialize)]
    struct Upserts {
        upserts: Vec<DeviceEntry>,
    }
    let url = format!("http://{}/v1/devices:batch", env("DOXM_BENCH_API"));
    let devices: usize = env("DOXM_BENCH_DEVICES").parse().expect("DOXM_BENCH_DEVICES");
    let batch: usize = env("DOXM_BENCH_BATCH").parse().expect("DOXM_BENCH_BATCH");
    // The same pid namespace: the gate's /proc entry is visible from here.
    let gate: u32 = env("DOXM_BENCH_GATE_PID").parse().expect("DOXM_BENCH_GATE_PID");
    let agent = agent();
    let mut start = 1;
    while start <= devices {
        let end = (start + batch - 1).min(devices);
        let body = Upserts { upserts: (start..=end).map(|i| device(i, false)).collect() };
        let bytes = serde_json::to_vec(&body).expect("batch JSON");
        drop(body);
        let t0 = Instant::now();
        let (status, text) = response(
            agent
                .post(&url)
                .set("Content-Type", "application/json")
                .set("Authorization", lab::AUTHORIZATION)
                .send_bytes(&bytes),
        );
        let secs = t0.elapsed().as_secs_f64();
        if status != 200 {
            eprintln!("batch {start}..={end}: status {status}: {text}");
            return 1;
        }
        println!(
            "batch devices={} bytes={} secs={secs:.6} gate_rss={}",
            end + 1 - start,
            bytes.len(),
            rss(gate)
        );
        start = end + 1;
    }
    0
}

/// One discovery in flight.
#[derive(Default)]
pub(crate) struct InFlight {
    pub(crate) sent: Option<Instant>,
    pub(crate) answers: u64,
    pub(crate) last: Duration,
    pub(crate) seen: HashSet<u128>,
    pub(crate) duplicates: u64,
    pub(crate) wrong: u64,
}

/// DOXM_BENCH_RATE discoveries/s for DOXM_BENCH_SECS, every answer matched to its discovery
/// by token and checked (devices 1..=DOXM_BENCH_EXPECT only, once each); then 500 ms for the
/// last answers.
pub(crate) fn role_steady() -> i32 {
    let rate: f64 = env("DOXM_BENCH_RATE").parse().expect("DOXM_BENCH_RATE");
    let secs: f64 = env("DOXM_BENCH_SECS").parse().expect("DOXM_BENCH_SECS");
    let expect: u128 = env("DOXM_BENCH_EXPECT").parse().expect("DOXM_BENCH_EXPECT");
    let index = interface(&env("DOXM_BENCH_IFACE")).index;
    let socket = sender_socket(index, true);
    let destination: SocketAddr = SocketAddrV6::new(GROUP, PORT, 0, index).into();
    let mut reader = BatchReader::new(socket);
    let drops0 = snmp6("").get("Udp6RcvbufErrors").copied().unwrap_or(0);
    let salt = u64::from(std::process::id()) << 32;
    let mut flights: HashMap<u64, InFlight> = HashMap::new();
    let (mut foreign, mut send_errors, mut seq) = (0u64, 0u64, 0u64);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let stop_sending = start + Duration::from_secs_f64(secs);
    let end = stop_sending + Duration::from_millis(500);
    let mut next = start;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        while next <= now && next < stop_sending {
            seq += 1;
            let token = salt | seq;
            let request = discovery("FALSE", token as u16, &token.to_be_bytes());
            match reader.socket.send_to(&request, destination) {
                Ok(_) => {
                    flights.insert(
                        token,
                        InFlight { sent: Some(Instant::now()), ..InFlight::default() },
                    );
                }
                Err(_) => send_errors += 1,
            }
            next += interval;
        }
        let wake = if next < stop_sending { next } else { end };
        let timeout = wake.saturating_duration_since(Instant::now()).min(Duration::from_millis(20));
        reader.drain(timeout, |datagram, _| {
            let Ok(msg) = Message::parse(datagram) else {
                foreign += 1;
                return;
            };
            let token = <[u8; 8]>::try_from(msg.token()).map(u64::from_be_bytes);
            let Some(flight) = token.ok().and_then(|t| flights.get_mut(&t)) else {
                foreign += 1;
                return;
            };
            if msg.code() != Code::CONTENT {
                foreign += 1;
                return;
            }
            flight.answers += 1;
            flight.last = Instant::now().duration_since(flight.sent.unwrap_or(start));
            match device_uuid(msg.payload()).map(|u| u.as_u128()) {
                Some(v) if v & !LOW == ELIGIBLE && (1..=expect).contains(&(v & LOW)) => {
                    if !flight.seen.insert(v) {
                        flight.duplicates += 1;
                    }
                }
                _ => flight.wrong += 1,
            }
        });
    }
    let mut counts: Vec<u64> = flights.values().map(|f| f.answers).collect();
    counts.sort_unstable();
    let mut last = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for f in flights.values().filter(|f| f.answers > 0) {
        let _ = last.record((f.last.as_micros() as u64).max(1));
    }
    let total: u64 = counts.iter().sum();
    let drops = snmp6("").get("Udp6RcvbufErrors").copied().unwrap_or(0) - drops0;
    println!(
        "discoveries={} answers={total} answers_per_sec={:.1} min_answers={} median_answers={} \
         max_answers={} unanswered={} wrong={} duplicates={} foreign={foreign} \
         send_errors={send_errors} last_p50_us={} last_p99_us={} last_max_us={} rcvbuf_errors={drops}",
        flights.len(),
        total as f64 / secs,
        counts.first().copied().unwrap_or(0),
        median(&counts),
        counts.last().copied().unwrap_or(0),
        counts.iter().filter(|&&c| c == 0).count(),
        flights.values().map(|f| f.wrong).sum::<u64>(),
        flights.values().map(|f| f.duplicates).sum::<u64>(),
        last.value_at_quantile(0.5),
        last.value_at_quantile(0.99),
        last.max(),
    );
    0
}

/// DOXM_BENCH_CLIENTS threads `PATCH` devices 1..=DOXM_BENCH_EXPECT for DOXM_BENCH_SECS: a DOC
/// opens, then closes (so at most one device per client is out of the answer set at a time).
pub(crate) fn role_patcher() -> i32 {
    let api = env("DOXM_BENCH_API");
    let clients: usize = env("DOXM_BENCH_CLIENTS").parse().expect("DOXM_BENCH_CLIENTS");
    let secs: f64 = env("DOXM_BENCH_SECS").parse().expect("DOXM_BENCH_SECS");
    let devices: usize = env("DOXM_BENCH_EXPECT").parse().expect("DOXM_BENCH_EXPECT");
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let api = api.clone();
            std::thread::spawn(move || {
                let agent = agent();
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let (mut ok, mut failed, mut slow) = (0u64, 0u64, 0u64);
                let mut i = c % devices.max(1);
                while Instant::now() < deadline {
                    let uuid = Uuid::from_u128(ELIGIBLE | (i + 1) as u128);
                    let url = format!("http://{api}/v1/devices/{uuid}");
                    for body in [r#"{"doc_open":true}"#, r#"{"doc_open":false}"#] {
                        let t = Instant::now();
                        let result = agent
                            .request("PATCH", &url)
                            .set("Content-Type", "application/json")
                            .set("Authorization", lab::AUTHORIZATION)
                            .send_string(body);
                        let us = t.elapsed().as_micros() as u64;
                        match response(result) {
                            (200, _) => {
                                ok += 1;
                                slow += u64::from(us > 100_000);
                                let _ = hist.record(us.max(1));
                            }
                            (status, text) => {
                                failed += 1;
                                if failed <= 3 {
                                    eprintln!("PATCH {uuid}: {status} {text}");
                                }
                            }
                        }
                    }
                    i = (i + clients) % devices.max(1);
                }
                (ok, failed, slow, hist)
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut ok, mut failed, mut slow) = (0u64, 0u64, 0u64);
    for t in threads {
        let (o, f, s, h) = t.join().expect("client thread");
        ok += o;
        failed += f;
        slow += s;
        let _ = hist.add(&h);
    }
    println!(
        "updates={ok} failed={failed} slow={slow} secs={:.6} p50_us={} p99_us={} p999_us={} \
         max_us={}",
        t0.elapsed().as_secs_f64(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
    );
    0
}
