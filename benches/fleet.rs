//! Fleet benchmarks: state updates under readers, update-to-visible latency, memory per device.
//!
//! Run: `cargo bench --bench fleet` (a plain `main`, no criterion; it prints a small report).
//! `cargo test --benches` runs it without `--bench`, which selects a quick pass on a small fleet.
//!
//! 1. **Updates under readers.** One writer thread toggles `doc_open` with [`Fleet::patch`] on
//!    random devices of an N-device fleet (10% RFOTM, so about one toggle in ten changes a
//!    device's eligibility), for a few seconds, with 0, 1 and 2 reader threads that keep
//!    deciding: each walks [`Fleet::eligible`] and loads every candidate's [`Fleet::word`], as
//!    the engine does for a discovery. Reported: updates/s, the ratio to the no-reader baseline
//!    of the same run, and the readers' walks/s.
//! 2. **Update-to-visible latency.** The writer arms a reader thread on one device, reads the
//!    clock, and patches the device; the reader spins on [`Fleet::word`] until it sees the new
//!    `doc_open` and reads the clock. The deltas go into an HDR histogram (p50/p99/p99.9/max);
//!    the writer's own `patch` call time is reported beside them.
//! 3. **Memory per device.** A child process (this binary, re-run with `DOXM_BENCH_MEM=<kind>`)
//!    reads `VmRSS` from `/proc/self/status` before and after building an N-device fleet of
//!    realistic records (a 10-character name, two device types and one oxm shared through one
//!    `Arc` each, two endpoints of about 30 characters), and counts the live heap bytes with a
//!    counting allocator. A fresh process per variant keeps freed memory of one build from
//!    hiding the next one's. Variants: `full`, `own-lists` (the same records, each built with
//!    its own type and oxm lists, as the control API's loader builds them: the fleet shares
//!    equal lists, so this should cost what `full` does), `no-eps` (the same records without
//!    endpoints), and `empty` (the table with its capacity reserved and no device).
//!
//!    Reference figures at N = 1,000,000 (`DOXM_BENCH_MEM=full DOXM_BENCH_N=1000000` on the
//!    release bench binary, 2026-12-02): 176.8 B of RSS and 147.5 B of heap per device, two
//!    allocations per device (the record's head and its tail), within the 256 B goal of issue 13
//!    and under its 192 B aim; `no-eps` 144.7 B, `empty` 0.2 B. Before the packed record
//!    (`src/fleet/record.rs`): 288.6 B.
//!
//! Environment: `DOXM_BENCH_N` (fleet size, default 1,000,000), `DOXM_BENCH_SECS` (seconds per
//! update run, default 3), `DOXM_BENCH_UPDATES` (latency samples, default 100,000).
//!
//! The figures depend on the machine: on a small shared host the reader threads compete with the
//! writer for cores, so the ratio mixes interference (cache lines the writer invalidates) with
//! plain CPU sharing. The report prints the core count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use doxm_gate::fleet::{DeviceId, DeviceRecord, Fleet, OnboardingState, StatePatch};
use doxm_gate::policy::Dos;
use hdrhistogram::Histogram;
use uuid::Uuid;

fn main() {
    if let Ok(kind) = std::env::var("DOXM_BENCH_MEM") {
        memory_child(&kind, env_usize("DOXM_BENCH_N", 1_000_000));
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let n = env_usize("DOXM_BENCH_N", if full { 1_000_000 } else { 20_000 });
    let secs = env_f64("DOXM_BENCH_SECS", if full { 3.0 } else { 0.2 });
    let updates = env_usize("DOXM_BENCH_UPDATES", if full { 100_000 } else { 2_000 });
    let cores = thread::available_parallelism().map_or(1, |c| c.get());
    println!("doxm-gate fleet bench: N = {n}, {cores} cores available");

    let start = Instant::now();
    let fleet = Arc::new(build_fleet(n, Eps::Two));
    println!("built the fleet in {:.2?} ({} eligible)", start.elapsed(), fleet.eligible_count());

    println!();
    println!(
        "== 1. state updates: one writer toggling doc_open on random devices ({secs} s each) =="
    );
    println!(
        "{:>8} {:>14} {:>12} {:>10} {:>16} {:>18}",
        "readers", "updates/s", "ns/update", "ratio", "walks/s (each)", "words/s (all)"
    );
    let mut baseline = 0.0;
    for readers in [0, 1, 2] {
        let run = updates_under_readers(&fleet, readers, Duration::from_secs_f64(secs));
        let rate = run.updates as f64 / run.elapsed.as_secs_f64();
        if readers == 0 {
            baseline = rate;
        }
        let walks = run.walks as f64 / run.elapsed.as_secs_f64() / readers.max(1) as f64;
        let words = run.words as f64 / run.elapsed.as_secs_f64();
        println!(
            "{:>8} {:>14.0} {:>12.1} {:>10.3} {:>16.1} {:>18.0}",
            readers,
            rate,
            1e9 / rate,
            rate / baseline,
            walks,
            words
        );
    }

    println!();
    println!("== 2. update-to-visible latency: patch -> a spinning reader sees the word ({updates} updates) ==");
    let (visible, patch) = update_to_visible(&fleet, updates);
    println!("{:>22} {:>9} {:>9} {:>9} {:>9} {:>11}", "ns", "p50", "p99", "p99.9", "max", "mean");
    for (label, h) in [("update -> visible", &visible), ("patch call", &patch)] {
        println!(
            "{:>22} {:>9} {:>9} {:>9} {:>9} {:>11.1}",
            label,
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.mean()
        );
    }
    drop(fleet);

    println!();
    println!("== 3. memory per device at N = {n} (fresh process per variant) ==");
    memory_report(n);
}

// ---- 1. Updates under readers. ----

struct UpdateRun {
    updates: u64,
    elapsed: Duration,
    walks: u64,
    words: u64,
}

fn updates_under_readers(fleet: &Arc<Fleet>, readers: usize, run_for: Duration) -> UpdateRun {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..readers)
        .map(|_| {
            let fleet = fleet.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let (mut walks, mut words) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let mut eligible = 0u64;
                    for id in fleet.eligible() {
                        words += 1;
                        eligible += u64::from(fleet.word(id).is_eligible());
                    }
                    black_box(eligible);
                    walks += 1;
                }
                (walks, words)
            })
        })
        .collect();
    // Let the readers start before the clock does.
    thread::sleep(Duration::from_millis(20));
    let mut rng = fastrand::Rng::with_seed(7);
    let n = fleet.len() as u32;
    let mut updates = 0u64;
    let start = Instant::now();
    let elapsed = loop {
        for _ in 0..1024 {
            let i = rng.u32(..n);
            let open = fleet.word(DeviceId(i)).state().is_some_and(|s| s.doc_open);
            let patch = StatePatch { doc_open: Some(!open), ..StatePatch::default() };
            fleet.patch(&uuid(i), &patch, None).expect("patch");
        }
        updates += 1024;
        let elapsed = start.elapsed();
        if elapsed >= run_for {
            break elapsed;
        }
    };
    stop.store(true, Ordering::Relaxed);
    let (mut walks, mut words) = (0, 0);
    for h in handles {
        let (w, d) = h.join().expect("reader");
        walks += w;
        words += d;
    }
    UpdateRun { updates, elapsed, walks, words }
}

// ---- 2. Update-to-visible latency. ----

/// What the writer tells the reader: the device to watch and the `doc_open` to wait for.
struct Job {
    /// Bumped (Release) once `device` and `expect_open` are stored.
    seq: AtomicU32,
    device: AtomicU32,
    expect_open: AtomicBool,
    /// The reader watches the device (it read the job).
    armed: AtomicU32,
    /// The reader saw the change, at `seen_at` nanoseconds after `base`.
    done: AtomicU32,
    seen_at: AtomicU64,
    stop: AtomicBool,
}

fn update_to_visible(fleet: &Arc<Fleet>, count: usize) -> (Histogram<u64>, Histogram<u64>) {
    let base = Instant::now();
    let job = Arc::new(Job {
        seq: AtomicU32::new(0),
        device: AtomicU32::new(0),
        expect_open: AtomicBool::new(false),
        armed: AtomicU32::new(0),
        done: AtomicU32::new(0),
        seen_at: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let reader = {
        let (fleet, job) = (fleet.clone(), job.clone());
        thread::spawn(move || {
            let mut last = 0;
            loop {
                let seq = spin_until(|| {
                    let s = job.seq.load(Ordering::Acquire);
                    (s != last || job.stop.load(Ordering::Relaxed)).then_some(s)
                });
                if seq == last {
                    return;
                }
                last = seq;
                let id = DeviceId(job.device.load(Ordering::Relaxed));
                let want = job.expect_open.load(Ordering::Relaxed);
                job.armed.store(seq, Ordering::Release);
                spin_until(|| {
                    let open = fleet.word(id).state().is_some_and(|s| s.doc_open);
                    (open == want).then_some(())
                });
                let seen = base.elapsed();
                job.seen_at.store(seen.as_nanos() as u64, Ordering::Relaxed);
                job.done.store(seq, Ordering::Release);
            }
        })
    };
    let mut visible = histogram();
    let mut patch_time = histogram();
    let mut rng = fastrand::Rng::with_seed(11);
    let n = fleet.len() as u32;
    for seq in 1..=count as u32 {
        let i = rng.u32(..n);
        let open = fleet.word(DeviceId(i)).state().is_some_and(|s| s.doc_open);
        job.device.store(i, Ordering::Relaxed);
        job.expect_open.store(!open, Ordering::Relaxed);
        job.seq.store(seq, Ordering::Release);
        spin_until(|| (job.armed.load(Ordering::Acquire) == seq).then_some(()));
        let patch = StatePatch { doc_open: Some(!open), ..StatePatch::default() };
        let t0 = base.elapsed();
        fleet.patch(&uuid(i), &patch, None).expect("patch");
        let t1 = base.elapsed();
        spin_until(|| (job.done.load(Ordering::Acquire) == seq).then_some(()));
        let seen = job.seen_at.load(Ordering::Relaxed);
        let t0 = t0.as_nanos() as u64;
        visible.saturating_record(seen.saturating_sub(t0).max(1));
        patch_time.saturating_record((t1.as_nanos() as u64).saturating_sub(t0).max(1));
    }
    job.stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    (visible, patch_time)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// Spins until `f` gives a value; panics after 30 s (a lost wakeup would otherwise hang).
fn spin_until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if let Some(v) = f() {
            return v;
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins % 65_536 == 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "the other thread is stuck");
            // On an oversubscribed host, let the other thread run.
            thread::yield_now();
        }
    }
}

// ---- 3. Memory per device. ----

fn memory_report(n: usize) {
    let run = |kind: &str| -> Option<MemoryFigures> {
        let exe = std::env::current_exe().ok()?;
        let out = std::process::Command::new(exe)
            .env("DOXM_BENCH_MEM", kind)
            .env("DOXM_BENCH_N", n.to_string())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find_map(|l| l.strip_prefix("memory "))?;
        let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        (v.len() == 3).then(|| MemoryFigures { rss: v[0], heap: v[1], allocations: v[2] })
    };
    let per = |bytes: u64| bytes as f64 / n as f64;
    println!(
        "{:>8} {:>14} {:>12} {:>14} {:>12} {:>12}",
        "variant", "RSS bytes", "RSS B/dev", "heap bytes", "heap B/dev", "allocs/dev"
    );
    let mut figures = Vec::new();
    for kind in ["full", "own-lists", "no-eps", "empty"] {
        let Some(f) = run(kind) else {
            println!("{kind:>8}: the child process failed");
            continue;
        };
        println!(
            "{:>8} {:>14} {:>12.1} {:>14} {:>12.1} {:>12.2}",
            kind,
            f.rss,
            per(f.rss),
            f.heap,
            per(f.heap),
            f.allocations as f64 / n as f64
        );
        figures.push((kind, f));
    }
    let get = |k: &str| figures.iter().find(|(kind, _)| *kind == k).map(|(_, f)| *f);
    if let (Some(full), Some(no_eps), Some(empty)) = (get("full"), get("no-eps"), get("empty")) {
        let verdict = match per(full.rss) {
            b if b <= 192.0 => "within the 256 B goal and the 192 B aim",
            b if b <= 256.0 => "within the 256 B goal, over the 192 B aim",
            _ => "OVER the 256 B goal",
        };
        println!(
            "RSS per device (full): {:.1} B ({verdict}); of which endpoints {:.1} B, \
             fixed (capacity reserved, no device) {:.1} B",
            per(full.rss),
            per(full.rss.saturating_sub(no_eps.rss)),
            per(empty.rss)
        );
    }
    println!(
        "sizes: DeviceRecord head {} B (+16 B Arc counts per record, plus its byte tail), \
         Arc<DeviceRecord> {} B, StateWord {} B",
        std::mem::size_of::<DeviceRecord>(),
        std::mem::size_of::<Arc<DeviceRecord>>(),
        std::mem::size_of::<doxm_gate::fleet::StateWord>()
    );
}

#[derive(Debug, Clone, Copy)]
struct MemoryFigures {
    /// RSS growth over the build.
    rss: u64,
    /// Live heap bytes added by the build (requested sizes, without allocator overhead).
    heap: u64,
    /// Live allocations added by the build.
    allocations: u64,
}

/// The child side: builds one variant and prints `memory <rss> <heap> <allocations>`.
fn memory_child(kind: &str, n: usize) {
    let (rss0, heap0, allocs0) = (vm_rss(), LIVE_BYTES.load(Ordering::Relaxed), live_allocs());
    let fleet = match kind {
        "full" => build_fleet(n, Eps::Two),
        "own-lists" => build_fleet(n, Eps::OwnLists),
        "no-eps" => build_fleet(n, Eps::None),
        "empty" => Fleet::with_capacity(n),
        other => panic!("unknown variant {other}"),
    };
    let (rss1, heap1, allocs1) = (vm_rss(), LIVE_BYTES.load(Ordering::Relaxed), live_allocs());
    black_box(&fleet);
    println!(
        "memory {} {} {}",
        rss1.saturating_sub(rss0),
        heap1.saturating_sub(heap0),
        allocs1.saturating_sub(allocs0)
    );
}

/// The resident set size in bytes (`VmRSS` of `/proc/self/status`); 0 where there is none.
fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn live_allocs() -> u64 {
    LIVE_ALLOCS.load(Ordering::Relaxed) as u64
}

/// Live heap bytes and allocations, counted by [`Counting`].
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE_ALLOCS: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes and allocations (for the memory breakdown).
struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only two atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through this wrapper) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through this wrapper) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---- The fleet. ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eps {
    Two,
    /// Two endpoints, and lists built per record.
    OwnLists,
    None,
}

/// `n` devices, all with a known state: 10% RFOTM (eligible), 80% RFNOP, 10% RFPRO. Device `i`
/// gets id `i` (the fleet starts empty).
fn build_fleet(n: usize, eps: Eps) -> Fleet {
    let fleet = Fleet::with_capacity(n);
    let device_types: Arc<[Box<str>]> =
        Arc::from(vec![Box::from("oic.wk.d"), Box::from("oic.d.light")]);
    let oxms: Arc<[i32]> = Arc::from(vec![0]);
    for i in 0..n as u32 {
        let state = match i % 10 {
            0 => OnboardingState { dos: Dos::Rfotm, owned: false, doc_open: false },
            1 => OnboardingState { dos: Dos::Rfpro, owned: true, doc_open: false },
            _ => OnboardingState { dos: Dos::Rfnop, owned: true, doc_open: false },
        };
        let (coap, coaps) = (
            format!("coap://[fd00:b:c::{:x}]:5683", i & 0xffff),
            format!("coaps://[fd00:b:c::{:x}]:5684", i & 0xffff),
        );
        let endpoints: &[&str] = match eps {
            Eps::Two | Eps::OwnLists => &[&coap, &coaps],
            Eps::None => &[],
        };
        let record = DeviceRecord::new(
            uuid(i),
            Uuid::from_u128(0x7000_0000_0000_0000_0000_0000_0000_0000 | u128::from(i)),
            &format!("lamp-{i:05}"),
            if eps == Eps::OwnLists {
                Arc::from(device_types.to_vec())
            } else {
                device_types.clone()
            },
            None,
            if eps == Eps::OwnLists { Arc::from(oxms.to_vec()) } else { oxms.clone() },
            4,
            9,
            Uuid::nil(),
            Uuid::nil(),
            endpoints,
        )
        .expect("record");
        let (id, _) = fleet.upsert(record, Some(state)).expect("upsert");
        assert_eq!(id, DeviceId(i), "ids are dense from 0 in an empty fleet");
    }
    fleet
}

fn uuid(i: u32) -> Uuid {
    Uuid::from_u128(0x50e1_a3ae_6a0c_4ac0_7b4f_0000_0000_0000 | u128::from(i))
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.replace('_', "").parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}
