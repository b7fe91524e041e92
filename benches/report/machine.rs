//! The machine, and the load on it while the bench ran.

use super::*;

pub(crate) struct Machine {
    pub(crate) host: String,
    pub(crate) cpus: usize,
    pub(crate) model: String,
    pub(crate) mem_total: String,
    pub(crate) kernel: String,
    pub(crate) loadavg_start: String,
    pub(crate) rmem_max: String,
    pub(crate) wmem_max: String,
    pub(crate) rustc: String,
    pub(crate) commit: String,
    /// Processes (other than this bench) using CPU in a one-second sample at the start.
    pub(crate) busy_at_start: String,
}

impl Machine {
    pub(crate) fn read() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_owned();
        let model = lab::cpu_model();
        let mem_total = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or("?".to_owned(), |kb| format!("{:.1} GiB", kb / (1024.0 * 1024.0)));
        let command = |args: &[&str]| {
            Command::new(args[0])
                .args(&args[1..])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let dir = env!("CARGO_MANIFEST_DIR");
        let commit = command(&["git", "-C", dir, "rev-parse", "--short", "HEAD"]).map_or(
            "?".to_owned(),
            |c| {
                let dirty = |paths: &[&str]| {
                    let mut args = vec!["git", "-C", dir, "status", "--porcelain", "--"];
                    args.extend(paths);
                    command(&args).is_some_and(|s| !s.is_empty())
                };
                if dirty(&["src", "Cargo.toml", "Cargo.lock"]) {
                    format!("{c}, with uncommitted changes to the gate's sources")
                } else if dirty(&["."]) {
                    format!("{c} (the gate's sources as committed; other files changed)")
                } else {
                    c
                }
            },
        );
        Machine {
            host: read("/proc/sys/kernel/hostname"),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            model,
            mem_total,
            kernel: read("/proc/sys/kernel/osrelease"),
            loadavg_start: loadavg(),
            rmem_max: read("/proc/sys/net/core/rmem_max"),
            wmem_max: read("/proc/sys/net/core/wmem_max"),
            rustc: command(&["rustc", "-V"]).unwrap_or_else(|| "?".to_owned()),
            commit,
            busy_at_start: busy_processes(),
        }
    }
}

pub(crate) fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// (busy, total) jiffies of all CPUs.
pub(crate) fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU ticks of every process, by pid: (name, utime + stime).
pub(crate) fn process_ticks() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_owned();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| f.get(i)?.parse::<u64>().ok()).sum();
        out.insert(pid, (name, ticks));
    }
    out
}

/// The processes that used the most CPU during one second, as "name 95%, name 12%".
pub(crate) fn busy_processes() -> String {
    let before = process_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let after = process_ticks();
    let hz = lab::clock_ticks();
    let me = std::process::id();
    let mut busy: Vec<(String, f64)> = after
        .iter()
        .filter(|(pid, _)| **pid != me)
        .filter_map(|(pid, (name, t))| {
            let t0 = before.get(pid).map_or(0, |b| b.1);
            let pct = 100.0 * t.saturating_sub(t0) as f64 / hz;
            (pct >= 5.0).then(|| (name.clone(), pct))
        })
        .collect();
    busy.sort_by(|a, b| b.1.total_cmp(&a.1));
    if busy.is_empty() {
        return "none above 5% of a CPU".to_owned();
    }
    busy.iter().take(6).map(|(n, p)| format!("{n} {p:.0}%")).collect::<Vec<_>>().join(", ")
}

/// Samples the 1-minute load average and the host's CPU use every second.
pub(crate) struct Monitor {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) handle: Option<JoinHandle<HostLoad>>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct HostLoad {
    pub(crate) load1: Vec<f64>,
    /// Fraction of all CPUs busy, per second.
    pub(crate) busy: Vec<f64>,
    pub(crate) loadavg_end: String,
}

impl Monitor {
    pub(crate) fn start() -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut load = HostLoad::default();
            let mut last = cpu_jiffies();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let now = cpu_jiffies();
                let (busy, total) = (now.0 - last.0, now.1 - last.1);
                if total > 0 {
                    load.busy.push(busy as f64 / total as f64);
                }
                last = now;
                if let Some(l1) = loadavg().split(' ').next().and_then(|v| v.parse().ok()) {
                    load.load1.push(l1);
                }
            }
            load.loadavg_end = loadavg();
            load
        });
        Monitor { stop, handle: Some(handle) }
    }

    pub(crate) fn stop(mut self) -> HostLoad {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
