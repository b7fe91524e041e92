//! The hot path allocates nothing: a counting global allocator proves it.
//!
//! The allocator wraps `std::alloc::System` and bumps a *per-thread* counter on every `alloc`,
//! `alloc_zeroed` and `realloc`, so the test harness's own threads (and tests running in
//! parallel) cannot disturb the measurement. Each measured region first checks that a deliberate
//! allocation *is* counted, so the test cannot pass vacuously.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use doxm_gate::policy::{Delivery, RequestFacts, Resource};
use doxm_gate::wire::fixtures::{real_doxm, OBT_REQUEST, REAL_DOXM_PAYLOAD};
use doxm_gate::wire::ocf::{self, DeviceInfo, Link, View};
use doxm_gate::wire::query::{Filters, Owned};
use doxm_gate::wire::{Code, Message, MessageType};
use uuid::Uuid;

struct CountingAllocator;

thread_local! {
    /// Allocations made by this thread. `const`-initialised and without a destructor, so
    /// touching it from inside the allocator never allocates or registers anything.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with` fails only while the thread is being torn down; then there is nothing to count.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only a thread-local `Cell`.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` was allocated by `System` (through this wrapper) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this wrapper) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The number of allocations this thread makes while running `f`, and `f`'s result.
fn allocations<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    let after = ALLOCATIONS.with(Cell::get);
    (after - before, out)
}

#[test]
fn test_counter_counts() {
    let (n, v) = allocations(|| black_box(Vec::<u8>::with_capacity(1)));
    assert_eq!(n, 1, "a deliberate allocation must be counted");
    drop(v);
    let (n, _) = allocations(|| {
        let mut v = black_box(Vec::<u8>::with_capacity(1));
        v.extend_from_slice(&[0; 64]);
        v
    });
    assert_eq!(n, 2, "an alloc and a realloc must both be counted");
}

/// Parsing the OBT request, walking its options, reading every accessor the policy uses and its
/// query filters: no allocation.
#[test]
fn test_parse_obt_request_allocates_nothing() {
    let (n, _) = allocations(|| black_box(Vec::<u8>::with_capacity(1)));
    assert_eq!(n, 1, "the counter works on this thread");

    let (n, summary) = allocations(|| {
        let msg = Message::parse(black_box(&OBT_REQUEST)).expect("the OBT request parses");
        let mut walked = 0usize;
        for opt in msg.options() {
            walked += usize::from(opt.number) + opt.value.len();
            black_box(opt.value);
        }
        let path_ok = msg.path_is(&[b"oic", b"sec", b"doxm"]);
        let path_len = msg.uri_path().count();
        let accept = msg.accept();
        let version = msg.ocf_accept_content_format_version();
        let content_format = msg.content_format();
        let no_response = msg.no_response();
        let ocf_version = msg.ocf_content_format_version();
        let critical = msg.first_unrecognised_critical();
        let filters = Filters::parse(msg.uri_query());
        black_box((
            msg.ty(),
            msg.code(),
            msg.message_id(),
            msg.token(),
            msg.payload(),
            content_format,
            no_response,
            ocf_version,
        ));
        (walked, path_ok, path_len, accept, version, critical, filters.owned, filters.di)
    });
    assert_eq!(n, 0, "parsing and reading the OBT request allocated {n} times");
    // The work was real: the values are those of the request.
    let (walked, path_ok, path_len, accept, version, critical, owned, di) = summary;
    assert_eq!(walked, 11 * 3 + 3 + 3 + 4 + 15 + 11 + 17 + 2 + 2049 + 2);
    assert!(path_ok);
    assert_eq!(path_len, 3);
    assert_eq!(accept, Some(10_000));
    assert_eq!(version, Some(2048));
    assert_eq!(critical, None);
    assert_eq!(owned, Owned::False);
    assert_eq!(di, None);
}

/// The engine's way in: parsing the OBT request and reading its request facts in one pass
/// (`RequestFacts::parse`, through `Message::parse_with`): no allocation.
#[test]
fn test_one_pass_request_facts_allocate_nothing() {
    let (n, _) = allocations(|| black_box(Vec::<u8>::with_capacity(1)));
    assert_eq!(n, 1, "the counter works on this thread");

    let (n, parsed) =
        allocations(|| RequestFacts::parse(black_box(&OBT_REQUEST), Delivery::Multicast));
    assert_eq!(n, 0, "the one-pass request facts allocated {n} times");
    // The work was real: the facts are those of the request.
    let (msg, facts) = parsed.expect("the OBT request parses");
    assert_eq!(facts, RequestFacts::from_message(&msg, Delivery::Multicast));
    assert_eq!(facts.resource, Resource::Doxm);
    assert_eq!(facts.accept, Some(10_000));
    assert_eq!(facts.ocf_accept_version, Some(2048));
    assert_eq!(facts.filters.owned, Owned::False);
}

/// Encoding the whole doxm answer (header, options, CBOR) into a stack buffer: no allocation.
#[test]
fn test_encode_doxm_answer_allocates_nothing() {
    let (n, _) = allocations(|| black_box(Vec::<u8>::with_capacity(1)));
    assert_eq!(n, 1, "the counter works on this thread");

    let doxm = real_doxm();
    let token = &OBT_REQUEST[4..12];
    let mut buf = [0u8; 512];
    let mut baseline = [0u8; 512];
    let (n, (len, baseline_len)) = allocations(|| {
        let len = ocf::write_response(
            black_box(&mut buf),
            MessageType::NonConfirmable,
            Code::CONTENT,
            0x1234,
            token,
            |out| doxm.encode(View::Default, out),
        )
        .expect("the answer fits");
        let baseline_len = ocf::write_response(
            black_box(&mut baseline),
            MessageType::Acknowledgement,
            Code::CONTENT,
            0x1235,
            token,
            |out| doxm.encode(View::Baseline, out),
        )
        .expect("the baseline answer fits");
        (len, baseline_len)
    });
    assert_eq!(n, 0, "encoding the doxm answer allocated {n} times");

    // The work was real: a 201-byte answer around the real payload.
    assert_eq!(len, 4 + 8 + 3 + 5 + 1 + 180);
    let msg = Message::parse(&buf[..len]).unwrap();
    assert_eq!(msg.payload(), REAL_DOXM_PAYLOAD);
    assert_eq!(msg.token(), token);
    assert!(baseline_len > len);
}

/// The other representations the gate serves (`/oic/res` links, `/oic/d`) encode without
/// allocating too.
#[test]
fn test_encode_links_and_device_allocate_nothing() {
    let (n, _) = allocations(|| black_box(Vec::<u8>::with_capacity(1)));
    assert_eq!(n, 1, "the counter works on this thread");

    let di = real_doxm().deviceuuid;
    let eps = ["coap://[fe80::1]:56789", "coaps://[fe80::1]:56790"];
    let link = Link {
        anchor: di,
        href: "/oic/sec/doxm",
        rt: &[ocf::RT_DOXM],
        interfaces: &ocf::DOXM_INTERFACES,
        bm: 1,
        eps: &eps,
    };
    let device = DeviceInfo {
        di,
        n: "Lamp",
        rt: &[ocf::RT_DEVICE, "oic.d.virtual"],
        icv: "ocf.2.0.5",
        dmv: "ocf.res.1.3.0,ocf.sh.1.3.0",
        piid: Uuid::nil(),
    };
    let mut buf = [0u8; 512];
    let (n, lens) = allocations(|| {
        let links = ocf::encode_links(&[link], black_box(&mut buf)).expect("fits");
        let res = ocf::encode_res_baseline(&[link], black_box(&mut buf)).expect("fits");
        let d = device.encode(View::Default, black_box(&mut buf)).expect("fits");
        let d_baseline = device.encode(View::Baseline, black_box(&mut buf)).expect("fits");
        [links, res, d, d_baseline]
    });
    assert_eq!(n, 0, "encoding links and /oic/d allocated {n} times");
    assert!(lens.iter().all(|&len| len > 0));
}

/// The engine's steady state allocates nothing: once its tables and lists have grown to a
/// workload, a round of the same workload (discoveries from fresh sources, their answers
/// drained through the fair scheduler) allocates nothing.
#[test]
fn test_engine_steady_state_allocates_nothing() {
    use doxm_gate::control::fleet_file::demo_fleet;
    use doxm_gate::engine::endpoint::EndpointPlan;
    use doxm_gate::engine::{Config, Engine, Meta};
    use doxm_gate::fleet::Fleet;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let fleet = Arc::new(Fleet::with_capacity(256));
    demo_fleet(200).apply(&fleet).expect("the demo fleet loads");
    let config = Config {
        endpoints: EndpointPlan::Ports { base: 40_000, count: 1_000 },
        answer_rate_bytes: 400_000,
        ..Config::default()
    };
    let mut engine = Engine::new(config, fleet, 7);
    let t0 = Instant::now();
    let mut buf = vec![0u8; 1500];
    let mut sent = 0u64;
    // One round: 20 sources discover within 100 ms, then answers drain for 3 s (woken at
    // every `poll_timeout`).
    let mut round = |engine: &mut Engine, start: Instant, first_source: u16, sent: &mut u64| {
        for i in 0..20u16 {
            let meta = Meta {
                source: std::net::SocketAddr::new(
                    std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, first_source + i).into(),
                    5683,
                ),
                destination: "[ff02::158]:5683".parse().unwrap(),
                interface: 2,
            };
            // A fresh Message ID per request: one MID from one port on one interface is a copy
            // (SPEC 1.1).
            let mut request = OBT_REQUEST;
            request[2..4].copy_from_slice(&(first_source + i).to_be_bytes());
            engine.handle(start + Duration::from_millis(5 * u64::from(i)), &meta, &request);
        }
        let mut now = start + Duration::from_millis(100);
        let end = start + Duration::from_secs(3);
        while now < end {
            while let Some(t) = engine.poll_transmit(now, &mut buf) {
                *sent += t.len as u64;
            }
            now = engine.poll_timeout().map_or(end, |t| t.max(now + Duration::from_micros(1)));
        }
    };
    // Warm-up: the tables and lists grow to the workload.
    round(&mut engine, t0, 0x100, &mut sent);
    round(&mut engine, t0 + Duration::from_secs(4), 0x200, &mut sent);
    assert!(sent > 100_000, "the warm-up answered: {sent} B");
    let before = sent;
    let (count, ()) = allocations(|| {
        let _ = black_box(Vec::<u8>::with_capacity(8));
        round(&mut engine, t0 + Duration::from_secs(8), 0x300, &mut sent);
    });
    assert!(sent - before > 50_000, "the measured round answered: {} B", sent - before);
    assert_eq!(count, 1, "only the deliberate allocation: the engine allocated {}", count - 1);
}
