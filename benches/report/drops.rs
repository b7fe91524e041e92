//! Workload 1: drop throughput, and the floor.

use super::*;

/// The `recvmmsg` sink's run.
pub(crate) struct Floor {
    pub(crate) label: String,
    pub(crate) blast: Blast,
    pub(crate) processed: u64,
    pub(crate) cpu: f64,
    pub(crate) kernel: Kernel,
}

impl Floor {
    pub(crate) fn per_sec(&self) -> f64 {
        self.processed as f64 / self.blast.secs
    }

    pub(crate) fn per_cpu_second(&self) -> f64 {
        self.processed as f64 / self.cpu.max(1e-9)
    }
}

pub(crate) fn floor_run(lab: &Lab, secs: f64, label: String) -> Floor {
    eprintln!("floor: recvmmsg sink");
    let lab::SinkRun { blast, processed, cpu, kernel } = lab.sink_run(secs);
    Floor { label, blast, processed, cpu, kernel }
}

/// One blast at the gate, read from its `/v1/stats` before and after.
pub(crate) struct DropRow {
    pub(crate) fleet: usize,
    pub(crate) kind: Kind,
    pub(crate) blast: Blast,
    /// The engine's `datagrams` counter.
    pub(crate) processed: u64,
    /// The driver's `received` counter.
    pub(crate) received: u64,
    pub(crate) cpu: f64,
    pub(crate) kernel: Kernel,
    pub(crate) answers: u64,
    /// Datagrams per CPU-second of every blast of this workload (this row is the median one).
    pub(crate) runs: Vec<f64>,
}

impl DropRow {
    pub(crate) fn per_sec(&self) -> f64 {
        self.processed as f64 / self.blast.secs
    }

    pub(crate) fn per_cpu_second(&self) -> f64 {
        self.processed as f64 / self.cpu.max(1e-9)
    }

    pub(crate) fn cpu_us_per_datagram(&self) -> f64 {
        1e6 * self.cpu / self.processed.max(1) as f64
    }

    pub(crate) fn label(&self) -> String {
        let what = match self.kind {
            Kind::Malformed => "malformed mix (4 kinds, 44-46 B)".to_owned(),
            Kind::OwnedTrue => "discovery `owned=TRUE` (44 B)".to_owned(),
            Kind::NoEligible => {
                format!(
                    "discovery `owned=FALSE`, 0 of {} eligible (45 B)",
                    thousands(self.fleet as f64)
                )
            }
        };
        format!("{what}, N = {}", short(self.fleet))
    }

    pub(crate) fn short_label(&self) -> String {
        let kind = match self.kind {
            Kind::Malformed => "malformed",
            Kind::OwnedTrue => "owned=TRUE",
            Kind::NoEligible => "no-eligible",
        };
        format!("{kind} {}", short(self.fleet))
    }
}

/// `plan.blast_reps` blasts of one kind; the one with the median datagrams per CPU-second.
pub(crate) fn drop_runs(lab: &Lab, pid: u32, fleet: usize, kind: Kind, plan: &Plan) -> DropRow {
    let mut rows: Vec<DropRow> =
        (0..plan.blast_reps).map(|_| drop_run(lab, pid, fleet, kind, plan.blast_secs)).collect();
    rows.sort_by(|a, b| a.per_cpu_second().total_cmp(&b.per_cpu_second()));
    let runs = rows.iter().map(DropRow::per_cpu_second).collect();
    let mut row = rows.swap_remove(rows.len() / 2);
    row.runs = runs;
    row
}

pub(crate) fn drop_run(lab: &Lab, pid: u32, fleet: usize, kind: Kind, secs: f64) -> DropRow {
    eprintln!("  blast {} at N={fleet}", kind.name());
    let s0 = stats(lab);
    let (blast, cpu, kernel) = lab.timed_blast(pid, kind, secs);
    std::thread::sleep(PUBLISHED);
    let s1 = stats(lab);
    let delta = |path: &[&str]| counter(&s1, path).saturating_sub(counter(&s0, path));
    DropRow {
        fleet,
        kind,
        blast,
        processed: delta(&["datagrams"]),
        received: delta(&["driver", "received"]),
        cpu,
        kernel,
        answers: delta(&["answers", "sent"]) + delta(&["responses_sent"]),
        runs: Vec::new(),
    }
}
