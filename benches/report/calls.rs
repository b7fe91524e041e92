//! Talking to the roles and the gate from the orchestrator.

use super::*;

/// A role process running in the background; killed if it is dropped unfinished.
pub(crate) struct Running(pub(crate) Option<Child>);

impl Running {
    pub(crate) fn finish(mut self, what: &str) -> String {
        let child = self.0.take().expect("running");
        let out = child.wait_with_output().expect(what);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{what} failed: {text}");
        text
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn role_output(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run the {what} role: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the {what} role failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// One control-API call from the OBT namespace: status, body, seconds (client-timed).
pub(crate) fn api(lab: &Lab, method: &str, path: &str, body: Option<&Path>) -> (u16, String, f64) {
    let mut cmd = lab.role(&lab.obt_ns, "api");
    cmd.env("DOXM_BENCH_API", format!("{GATE_V4}:8683"))
        .env("DOXM_BENCH_METHOD", method)
        .env("DOXM_BENCH_PATH", path);
    if let Some(body) = body {
        cmd.env("DOXM_BENCH_BODY", body);
    }
    let text = role_output(&mut cmd, "api");
    let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
    let f = fields(head);
    (number(&f, "status") as u16, body.to_owned(), float(&f, "secs"))
}

pub(crate) fn stats(lab: &Lab) -> Value {
    let (status, body, _) = api(lab, "GET", "/v1/stats", None);
    assert_eq!(status, 200, "/v1/stats: {body}");
    serde_json::from_str(&body).expect("/v1/stats JSON")
}

pub(crate) fn counter(v: &Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

pub(crate) fn float(f: &HashMap<String, String>, key: &str) -> f64 {
    f.get(key).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// Resident memory of a process, bytes.
pub(crate) fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
