//! Wire-layer benchmarks: our CoAP view against coap-lite on the same packets, in the same run.
//!
//! Run: `cargo bench --bench wire` (add `-- --warm-up-time 1 --measurement-time 3` for a quick
//! pass). `cargo test --benches` runs every benchmark once as a smoke test.
//!
//! Each packet gets one group, `wire/<packet>`, with two functions: `doxm-gate` (our
//! `Message::parse` plus a walk of every option) and `coap-lite` (`Packet::from_bytes` plus a walk
//! of every option). Both walks compute the same checksum over the message ID, token, every
//! option's number, length and first value byte, and the payload, so they do the same work; the
//! setup asserts that the checksums agree. Throughput is the datagram size. A last group,
//! `wire/encode_doxm_answer`, encodes a whole doxm answer (header, options, CBOR) into a stack
//! buffer.
//!
//! Under `cargo bench` a last table gives the same comparison measured *interleaved*: 301 short
//! rounds alternate between the two parsers on each packet and the table reports the median of
//! the per-round ratios. Criterion times one function for seconds and then the other, so a load
//! change on a shared machine between the two skews its ratio; adjacent rounds see the same load.

use std::hint::black_box;
use std::time::Instant;

use coap_lite::Packet;
use criterion::{criterion_group, Criterion, Throughput};
use doxm_gate::wire::fixtures::{real_doxm, OBT_REQUEST, OBT_TOKEN};
use doxm_gate::wire::ocf::{self, Doxm, View};
use doxm_gate::wire::{option, Code, Message, MessageType, Writer};

/// (b) NON GET /oic/sec/doxm?owned=FALSE with a 2-byte token: 4 + 2 + (4 + 4 + 5) + 12 = 31.
fn short_doxm_request() -> Vec<u8> {
    let mut buf = [0u8; 64];
    let mut w = Writer::new(&mut buf, MessageType::NonConfirmable, Code::GET, 0x2a2b, b"\x01\x02")
        .expect("header");
    w.option(option::URI_PATH, b"oic").expect("opt");
    w.option(option::URI_PATH, b"sec").expect("opt");
    w.option(option::URI_PATH, b"doxm").expect("opt");
    w.option(option::URI_QUERY, b"owned=FALSE").expect("opt");
    let len = w.finish();
    assert_eq!(len, 31, "packet (b) must be 31 bytes");
    buf[..len].to_vec()
}

/// (c) CON GET /oic/res?rt=oic.r.doxm with 7 options, as the OBT sends it after a doxm answer
/// (plus Content-Format and No-Response to reach 7).
fn res_request() -> Vec<u8> {
    let mut buf = [0u8; 128];
    let mut w = Writer::new(&mut buf, MessageType::Confirmable, Code::GET, 0xf1ce, &OBT_TOKEN)
        .expect("header");
    w.option(option::URI_PATH, b"oic").expect("opt");
    w.option(option::URI_PATH, b"res").expect("opt");
    w.uint_option(option::CONTENT_FORMAT, u32::from(ocf::CONTENT_FORMAT_OCF_CBOR)).expect("opt");
    w.option(option::URI_QUERY, b"rt=oic.r.doxm").expect("opt");
    w.uint_option(option::ACCEPT, u32::from(ocf::CONTENT_FORMAT_OCF_CBOR)).expect("opt");
    w.uint_option(option::NO_RESPONSE, 0).expect("opt");
    w.uint_option(option::OCF_ACCEPT_CONTENT_FORMAT_VERSION, u32::from(ocf::OCF_VERSION_1_0_0))
        .expect("opt");
    let len = w.finish();
    buf[..len].to_vec()
}

/// Encodes the whole doxm answer of SPEC section 4 into `buf`; returns its length.
fn encode_answer(buf: &mut [u8], doxm: &Doxm<'_>) -> usize {
    ocf::write_response(
        buf,
        MessageType::NonConfirmable,
        Code::CONTENT,
        0x7e57,
        &OBT_TOKEN,
        |out| doxm.encode(View::Default, out),
    )
    .expect("answer fits")
}

/// (d) NON 2.05 with Content-Format 10000, OCF-Content-Format-Version 2048 and the real
/// 180-byte doxm payload (201 bytes).
fn doxm_response() -> Vec<u8> {
    let mut buf = [0u8; 256];
    let len = encode_answer(&mut buf, &real_doxm());
    buf[..len].to_vec()
}

/// (e) CON GET with 20 Uri-Path segments of assorted lengths.
fn deep_path_request() -> Vec<u8> {
    const SEGMENTS: [&[u8]; 20] = [
        b"oic",
        b"sec",
        b"doxm",
        b"a",
        b"bridge",
        b"vod",
        b"0123456789abcdef",
        b"x",
        b"y",
        b"zz",
        b"light",
        b"1",
        b"switch",
        b"binary",
        b"level",
        b"7",
        b"segment-with-13",
        b"b",
        b"c",
        b"end",
    ];
    let mut buf = [0u8; 256];
    let mut w = Writer::new(&mut buf, MessageType::Confirmable, Code::GET, 0x0102, &OBT_TOKEN[..4])
        .expect("header");
    for segment in SEGMENTS {
        w.option(option::URI_PATH, segment).expect("opt");
    }
    let len = w.finish();
    buf[..len].to_vec()
}

/// Mixes one option into the checksum: its number, value length and first value byte.
#[inline(always)]
fn mix(acc: u64, number: u16, value: &[u8]) -> u64 {
    let first = value.first().copied().unwrap_or(0);
    acc.wrapping_mul(31)
        .wrapping_add(u64::from(number))
        .wrapping_add((value.len() as u64) << 16)
        .wrapping_add(u64::from(first) << 40)
}

/// Ours: parse (full validation) and walk every option.
fn walk_ours(datagram: &[u8]) -> u64 {
    let Ok(msg) = Message::parse(datagram) else { return u64::MAX };
    let mut acc = u64::from(msg.message_id()) ^ (msg.token().len() as u64) << 20;
    for opt in msg.options() {
        acc = mix(acc, opt.number, opt.value);
    }
    acc ^ (msg.payload().len() as u64) << 48
}

/// coap-lite: decode into a `Packet` and walk every option (numbers ascending, repeats in order).
fn walk_coap_lite(datagram: &[u8]) -> u64 {
    let Ok(packet) = Packet::from_bytes(datagram) else { return u64::MAX };
    let mut acc = u64::from(packet.header.message_id) ^ (packet.get_token().len() as u64) << 20;
    for (&number, values) in packet.options() {
        for value in values {
            acc = mix(acc, number, value);
        }
    }
    acc ^ (packet.payload.len() as u64) << 48
}

/// The five packets of the issue, by name.
fn packets() -> [(&'static str, Vec<u8>); 5] {
    [
        ("obt_request", OBT_REQUEST.to_vec()),
        ("doxm_request_31b", short_doxm_request()),
        ("res_request_7opts", res_request()),
        ("doxm_response", doxm_response()),
        ("path_20_segments", deep_path_request()),
    ]
}

fn bench_parse(c: &mut Criterion) {
    for (name, datagram) in &packets() {
        let ours = walk_ours(datagram);
        assert_ne!(ours, u64::MAX, "{name}: our parser rejects the packet");
        assert_eq!(ours, walk_coap_lite(datagram), "{name}: the two walks disagree");

        let mut group = c.benchmark_group(format!("wire/{name}"));
        group.throughput(Throughput::Bytes(datagram.len() as u64));
        group.bench_function("doxm-gate", |b| b.iter(|| walk_ours(black_box(datagram.as_slice()))));
        group.bench_function("coap-lite", |b| {
            b.iter(|| walk_coap_lite(black_box(datagram.as_slice())))
        });
        group.finish();
    }
}

fn bench_encode(c: &mut Criterion) {
    let doxm = real_doxm();
    let mut buf = [0u8; 256];
    let len = encode_answer(&mut buf, &doxm);
    assert_eq!(&buf[..len], doxm_response().as_slice());

    let mut group = c.benchmark_group("wire/encode_doxm_answer");
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function("doxm-gate", |b| {
        b.iter(|| {
            let len = encode_answer(black_box(&mut buf), black_box(&doxm));
            black_box(&buf);
            len
        })
    });
    group.finish();
}

/// Nanoseconds per call of `walk` on `datagram`, over one round of `iterations` calls.
fn round(walk: fn(&[u8]) -> u64, datagram: &[u8], iterations: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(walk(black_box(datagram)));
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

/// Prints the interleaved comparison (see the module documentation).
fn interleaved_ratios() {
    const ROUNDS: usize = 301;
    const ITERATIONS: u32 = 2_000;
    println!("\ninterleaved, {ROUNDS} rounds of {ITERATIONS} calls each (median per call):");
    println!("{:20} {:>11} {:>11} {:>14}", "packet", "doxm-gate", "coap-lite", "ratio (median)");
    for (name, datagram) in &packets() {
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (a, b) = (
                round(walk_ours, datagram, ITERATIONS),
                round(walk_coap_lite, datagram, ITERATIONS),
            );
            ours.push(a);
            theirs.push(b);
            ratios.push(b / a);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{name:20} {:>8.1} ns {:>8.1} ns {:>13.1}x",
            median(&mut ours),
            median(&mut theirs),
            median(&mut ratios)
        );
    }
}

criterion_group!(benches, bench_parse, bench_encode);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` (the CI smoke run) does not.
    if std::env::args().any(|arg| arg == "--bench") {
        interleaved_ratios();
    }
}
