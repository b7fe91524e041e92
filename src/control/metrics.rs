//! `/metrics` (Prometheus text format) and `/v1/stats` (the same figures as JSON).
//!
//! Counters come from the engine's closed enums, so every drop reason has its own label and a
//! new reason cannot go unreported. Histograms are reported as quantiles.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::journal::Health;
use super::store::Store;
use crate::io::board::Published;

const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

fn quantiles(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// The figures as JSON.
pub fn json(store: &Store, p: &Published) -> Value {
    let verdicts: serde_json::Map<String, Value> = p
        .engine
        .verdicts()
        .map(|(group, label, n)| (format!("{group}/{label}"), json!(n)))
        .collect();
    let e = &p.engine;
    json!({
        "fleet": {"devices": store.fleet().len(), "eligible": store.fleet().eligible_count()},
        "datagrams": e.datagrams,
        "verdicts": verdicts,
        "answers": {
            "scheduled": e.answers_scheduled,
            "sent": e.answers_sent,
            "cancelled": e.answers_cancelled,
            "shed": e.answers_shed,
            "expired": e.answers_expired,
            "pending": p.pending_answers,
            "pending_sources": p.pending_sources,
            "budget_stretches": e.budget_stretches,
            "source_share_cuts": e.source_share_cuts,
        },
        "responses_sent": e.responses_sent,
        "driver": {
            "received": p.driver.received,
            "truncated": p.driver.truncated,
            "receive_overflows": p.driver.receive_overflows,
            "sent": p.driver.sent,
            "send_failed": p.driver.send_failed,
            "rejoins": p.driver.rejoins,
        },
        "decision_ns": quantiles(&p.decision_ns),
        "answers_per_request": quantiles(&p.answers_per_request),
        "answer_lateness_us": quantiles(&p.lateness_us),
        "update_to_visible_us": quantiles(&store.visible_latency()),
        "journal": store.journal_health().map(|j| json!({
            "writable": j.writable,
            "error": j.error,
            "errors": j.errors,
            "recoveries": j.recoveries,
            "bytes_written": j.bytes_written,
            "bytes_since_snapshot": j.bytes_since_snapshot,
            "last_fsync_us": j.last_fsync_us,
            "last_snapshot_us": j.last_snapshot_us,
        })),
    })
}

fn summary(out: &mut String, name: &str, help: &str, h: &Histogram<u64>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
    for q in QUANTILES {
        let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {}", h.value_at_quantile(q));
    }
    let _ = writeln!(out, "{name}_count {}", h.len());
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// The figures in the Prometheus text exposition format.
pub fn prometheus(store: &Store, p: &Published) -> String {
    let mut out = String::with_capacity(8 << 10);
    let _ = writeln!(
        out,
        "# HELP doxm_gate_datagrams_total Datagrams by outcome and drop reason.\n\
         # TYPE doxm_gate_datagrams_total counter"
    );
    for (group, label, n) in p.engine.verdicts() {
        let _ =
            writeln!(out, "doxm_gate_datagrams_total{{group=\"{group}\",reason=\"{label}\"}} {n}");
    }
    let e = &p.engine;
    let _ = writeln!(
        out,
        "# HELP doxm_gate_answers_total Multicast answers by fate.\n# TYPE doxm_gate_answers_total counter"
    );
    for (fate, n) in e.answer_fates() {
        let _ = writeln!(out, "doxm_gate_answers_total{{fate=\"{fate}\"}} {n}");
    }
    counter(
        &mut out,
        "doxm_gate_budget_stretches_total",
        "Leisure windows stretched by the byte budget.",
        e.budget_stretches,
    );
    counter(
        &mut out,
        "doxm_gate_source_share_cuts_total",
        "Requests cut short because their source already held its share of the byte budget.",
        e.source_share_cuts,
    );
    counter(&mut out, "doxm_gate_responses_total", "Unicast responses sent.", e.responses_sent);
    counter(
        &mut out,
        "doxm_gate_send_failed_total",
        "Datagrams the kernel refused.",
        p.driver.send_failed,
    );
    counter(
        &mut out,
        "doxm_gate_receive_overflows_total",
        "Datagrams the kernel dropped for a full socket receive buffer.",
        p.driver.receive_overflows,
    );
    counter(&mut out, "doxm_gate_rejoins_total", "Group joins after start.", p.driver.rejoins);
    gauge(&mut out, "doxm_gate_fleet_devices", "Devices in the fleet.", store.fleet().len() as u64);
    gauge(
        &mut out,
        "doxm_gate_fleet_eligible",
        "Devices eligible for discovery.",
        store.fleet().eligible_count() as u64,
    );
    gauge(
        &mut out,
        "doxm_gate_pending_answers",
        "Answers waiting for their time.",
        p.pending_answers as u64,
    );
    gauge(
        &mut out,
        "doxm_gate_pending_sources",
        "Sources with answers pending: the answer budget is shared equally among them.",
        p.pending_sources as u64,
    );
    summary(
        &mut out,
        "doxm_gate_decision_ns",
        "Nanoseconds per datagram decision.",
        &p.decision_ns,
    );
    summary(
        &mut out,
        "doxm_gate_answers_per_request",
        "Answers scheduled per request.",
        &p.answers_per_request,
    );
    summary(
        &mut out,
        "doxm_gate_answer_lateness_us",
        "Microseconds answers left after their time.",
        &p.lateness_us,
    );
    summary(
        &mut out,
        "doxm_gate_update_to_visible_us",
        "Microseconds from a control call to the change being visible.",
        &store.visible_latency(),
    );
    if let Some(j) = store.journal_health() {
        journal(&mut out, &j);
    }
    out
}

fn journal(out: &mut String, j: &Health) {
    gauge(
        out,
        "doxm_gate_journal_writable",
        "1 while the journal accepts changes, 0 from a failed write or fsync until it recovers.",
        u64::from(j.writable),
    );
    counter(
        out,
        "doxm_gate_journal_errors_total",
        "Journal write, fsync, snapshot and recovery failures.",
        j.errors,
    );
    counter(
        out,
        "doxm_gate_journal_recoveries_total",
        "Journal recoveries after a failure, without restart.",
        j.recoveries,
    );
    counter(
        out,
        "doxm_gate_journal_bytes_written_total",
        "Journal bytes written and fsynced.",
        j.bytes_written,
    );
    gauge(
        out,
        "doxm_gate_journal_bytes_since_snapshot",
        "Journal bytes a restart would replay.",
        j.bytes_since_snapshot,
    );
    gauge(
        out,
        "doxm_gate_journal_last_fsync_us",
        "Microseconds the last journal fsync took.",
        j.last_fsync_us,
    );
    gauge(
        out,
        "doxm_gate_journal_last_snapshot_us",
        "Microseconds the last snapshot took (write, fsync, rename, journal reset).",
        j.last_snapshot_us,
    );
}

/// `GET /healthz`: 200 `{"status":"ok",..}` while changes can be made durable (or without a
/// journal); 503 `{"status":"journal-failing",..}` with the journal's error while they cannot.
pub fn health(store: &Store) -> (u16, Value) {
    let devices = store.fleet().len();
    match store.journal_health() {
        None => (200, json!({"status": "ok", "devices": devices})),
        Some(j) if j.writable => {
            (200, json!({"status": "ok", "devices": devices, "journal": "ok"}))
        }
        Some(j) => (
            503,
            json!({
                "status": "journal-failing",
                "devices": devices,
                "journal": "failing",
                "error": j.error,
            }),
        ),
    }
}
