//! The HTTP/JSON control API, on its own threads (the data path stays on the mio loop).
//!
//! | call | what |
//! |---|---|
//! | `PUT /v1/devices/{uuid}` | create or replace a device (a fleet-file entry as JSON) |
//! | `PATCH /v1/devices/{uuid}` | change `dos`, `owned`, `doc_open`, `devowneruuid`, `rowneruuid`, `oxmsel`; `If-Match: "rev"` makes it conditional |
//! | `POST /v1/devices:batch` | `{"upserts":[..],"patches":[{"uuid":..,..}],"deletes":[..]}`, all or nothing |
//! | `DELETE /v1/devices/{uuid}` | remove a device |
//! | `GET /v1/devices/{uuid}` | the record, its revision (also the ETag), and whether it is eligible or why not |
//! | `GET /v1/devices?eligible=true\|false&stale=true&limit=N&cursor=C` | a page of devices |
//! | `GET /v1/export` | the whole fleet as a fleet file (JSON) |
//! | `GET /metrics`, `GET /v1/stats`, `GET /healthz` | Prometheus text, the same as JSON, liveness |
//!
//! Every 2xx mutation is on disk before the reply (see [`super::store`]). Bad input gets a 4xx
//! with `{"error":{"field":..,"reason":..}}` and changes nothing. With a bearer token
//! configured, a call without it gets 401 and changes nothing.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tiny_http::{Header, Method, Request, Response, Server};
use uuid::Uuid;

use super::board::Board;
use super::metrics;
use super::mutation::{Mutation, PatchBody, Rejection};
use super::store::Store;
use crate::fleet::file::{DeviceEntry, FleetFile};
use crate::fleet::DeviceId;
use crate::policy;

/// API settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Where to listen (loopback by default).
    pub listen: SocketAddr,
    /// The bearer token every call must carry, if any.
    pub token: Option<String>,
    /// The largest request body accepted (a 100,000-device batch is about 30 MB).
    pub max_body: usize,
    /// Worker threads (concurrent calls share the journal's fsyncs).
    pub threads: usize,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8683)),
            token: None,
            max_body: 128 << 20,
            threads: 4,
        }
    }
}

/// The running API.
pub struct Api {
    server: Arc<Server>,
    workers: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("addr", &self.addr)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Api {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting calls and waits for the workers.
    pub fn stop(self) {
        self.server.unblock();
        for _ in 1..self.workers.len() {
            self.server.unblock();
        }
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// Starts the API.
///
/// # Errors
/// The listen address cannot be bound.
pub fn spawn(config: ApiConfig, store: Arc<Store>, board: Arc<Board>) -> std::io::Result<Api> {
    let server = Arc::new(Server::http(config.listen).map_err(std::io::Error::other)?);
    let addr = server.server_addr().to_ip().unwrap_or(config.listen);
    let config = Arc::new(config);
    let workers = (0..config.threads.max(1))
        .map(|_| {
            let (server, store, board, config) =
                (server.clone(), store.clone(), board.clone(), config.clone());
            std::thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    handle(request, &store, &board, &config);
                }
            })
        })
        .collect();
    Ok(Api { server, workers, addr })
}

/// A reply: status, JSON or text body, extra headers.
struct Reply {
    status: u16,
    body: String,
    json: bool,
    etag: Option<u64>,
}

impl Reply {
    fn json(status: u16, value: &impl Serialize) -> Reply {
        Reply {
            status,
            body: serde_json::to_string(value).unwrap_or_default(),
            json: true,
            etag: None,
        }
    }

    fn rejected(r: &Rejection) -> Reply {
        Reply::json(r.status, &json!({"error": {"field": r.field, "reason": r.reason}}))
    }

    fn error(status: u16, field: &str, reason: &str) -> Reply {
        Reply::rejected(&Rejection::new(status, field, reason))
    }
}

fn handle(mut request: Request, store: &Store, board: &Board, config: &ApiConfig) {
    let reply = route(&mut request, store, board, config);
    let mut response = Response::from_string(reply.body).with_status_code(reply.status);
    let content_type = if reply.json { "application/json" } else { "text/plain; version=0.0.4" };
    if let Ok(h) = Header::from_bytes("Content-Type", content_type) {
        response.add_header(h);
    }
    if let Some(Ok(h)) = reply.etag.map(|rev| Header::from_bytes("ETag", format!("\"{rev}\""))) {
        response.add_header(h);
    }
    let _ = request.respond(response);
}

fn header<'a>(request: &'a Request, name: &'static str) -> Option<&'a str> {
    request.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str())
}

fn route(request: &mut Request, store: &Store, board: &Board, config: &ApiConfig) -> Reply {
    if let Some(token) = &config.token {
        let given = header(request, "Authorization").and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return Reply::error(401, "Authorization", "a valid bearer token is required");
        }
    }
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (Method::Get, ["healthz"]) => {
            Reply::json(200, &json!({"status": "ok", "devices": store.fleet().len()}))
        }
        (Method::Get, ["metrics"]) => Reply {
            status: 200,
            body: metrics::prometheus(store, &board.read()),
            json: false,
            etag: None,
        },
        (Method::Get, ["v1", "stats"]) => Reply::json(200, &metrics::json(store, &board.read())),
        (Method::Get, ["v1", "export"]) => {
            let device = store.export().into_iter().map(|(d, _)| d).collect();
            Reply::json(200, &FleetFile { device })
        }
        (Method::Get, ["v1", "devices"]) => list(store, query),
        (Method::Post, ["v1", "devices:batch"]) => match body(request, config.max_body) {
            Ok(bytes) => batch(store, &bytes),
            Err(r) => r,
        },
        (_, ["v1", "devices", id]) => {
            let Ok(uuid) = Uuid::parse_str(id) else {
                return Reply::error(400, "uuid", &format!("{id:?} is not a UUID"));
            };
            match method {
                Method::Get => get(store, &uuid),
                Method::Put => match body(request, config.max_body) {
                    Ok(bytes) => put(store, &uuid, &bytes),
                    Err(r) => r,
                },
                Method::Patch => {
                    let expected = match header(request, "If-Match").map(parse_etag) {
                        None => None,
                        Some(Some(rev)) => Some(rev),
                        Some(None) => return Reply::error(400, "If-Match", "not a revision ETag"),
                    };
                    match body(request, config.max_body) {
                        Ok(bytes) => patch(store, &uuid, &bytes, expected),
                        Err(r) => r,
                    }
                }
                Method::Delete => mutate(store, vec![Mutation::Delete { uuid }], None, 200),
                _ => Reply::error(405, "method", "not allowed on a device"),
            }
        }
        _ => Reply::error(404, "path", &format!("no such call: {method} {path}")),
    }
}

fn parse_etag(value: &str) -> Option<u64> {
    value.trim().trim_start_matches("W/").trim_matches('"').parse().ok()
}

fn body(request: &mut Request, max: usize) -> Result<Vec<u8>, Reply> {
    if request.body_length().is_some_and(|n| n > max) {
        return Err(Reply::error(413, "body", &format!("larger than {max} bytes")));
    }
    let mut bytes = Vec::new();
    let read = request.as_reader().take(max as u64 + 1).read_to_end(&mut bytes);
    match read {
        Err(e) => Err(Reply::error(400, "body", &e.to_string())),
        Ok(_) if bytes.len() > max => {
            Err(Reply::error(413, "body", &format!("larger than {max} bytes")))
        }
        Ok(_) => Ok(bytes),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde names the unknown or bad field in its message.
        let field = e.to_string().split('`').nth(1).unwrap_or("body").to_owned();
        Reply::error(400, &field, &e.to_string())
    })
}

fn mutate(store: &Store, batch: Vec<Mutation>, expected: Option<u64>, status: u16) -> Reply {
    match store.mutate(batch, expected) {
        Ok(revisions) => {
            let mut reply = Reply::json(
                status,
                &json!({"applied": revisions.iter().map(|(u, r)| json!({"uuid": u, "revision": r})).collect::<Vec<_>>()}),
            );
            if let [(_, rev)] = revisions.as_slice() {
                reply.etag = Some(*rev);
            }
            reply
        }
        Err(r) => Reply::rejected(&r),
    }
}

fn put(store: &Store, uuid: &Uuid, bytes: &[u8]) -> Reply {
    let device: DeviceEntry = match parse(bytes) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if device.uuid != *uuid {
        return Reply::error(400, "uuid", "the body's uuid differs from the path's");
    }
    let status = if store.fleet().lookup(uuid).is_some() { 200 } else { 201 };
    mutate(store, vec![Mutation::Upsert { device }], None, status)
}

fn patch(store: &Store, uuid: &Uuid, bytes: &[u8], expected: Option<u64>) -> Reply {
    match parse::<PatchBody>(bytes) {
        Ok(patch) => mutate(store, vec![Mutation::Patch { uuid: *uuid, patch }], expected, 200),
        Err(r) => r,
    }
}

/// One entry of a batch's `patches`: the device and the fields to change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchItem {
    uuid: Uuid,
    dos: Option<u8>,
    owned: Option<bool>,
    doc_open: Option<bool>,
    devowneruuid: Option<Uuid>,
    rowneruuid: Option<Uuid>,
    oxmsel: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    #[serde(default)]
    upserts: Vec<DeviceEntry>,
    #[serde(default)]
    patches: Vec<PatchItem>,
    #[serde(default)]
    deletes: Vec<Uuid>,
}

fn batch(store: &Store, bytes: &[u8]) -> Reply {
    let body: BatchBody = match parse(bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut batch: Vec<Mutation> =
        body.upserts.into_iter().map(|device| Mutation::Upsert { device }).collect();
    batch.extend(body.patches.into_iter().map(|p| Mutation::Patch {
        uuid: p.uuid,
        patch: PatchBody {
            dos: p.dos,
            owned: p.owned,
            doc_open: p.doc_open,
            devowneruuid: p.devowneruuid,
            rowneruuid: p.rowneruuid,
            oxmsel: p.oxmsel,
        },
    }));
    batch.extend(body.deletes.into_iter().map(|uuid| Mutation::Delete { uuid }));
    if batch.is_empty() {
        return Reply::error(400, "body", "an empty batch");
    }
    mutate(store, batch, None, 200)
}

/// A device as `GET` shows it.
fn view(store: &Store, id: DeviceId) -> Option<(serde_json::Value, u64)> {
    let fleet = store.fleet();
    let record = fleet.record(id)?;
    let word = fleet.word(id);
    let revision = fleet.revision(id);
    let reason = match policy::eligibility(&word.facts(record.uuid)) {
        Ok(()) => "ok",
        Err(r) => r.as_str(),
    };
    let entry = DeviceEntry::from_record(&record, word.state());
    Some((
        json!({
            "uuid": record.uuid,
            "revision": revision,
            "eligible": reason == "ok",
            "reason": reason,
            "stale": word.state().is_none(),
            "device": entry,
        }),
        revision,
    ))
}

fn get(store: &Store, uuid: &Uuid) -> Reply {
    match store.fleet().lookup(uuid).and_then(|id| view(store, id)) {
        Some((value, revision)) => {
            let mut reply = Reply::json(200, &value);
            reply.etag = Some(revision);
            reply
        }
        None => Reply::error(404, "uuid", &format!("no device {uuid}")),
    }
}

fn list(store: &Store, query: &str) -> Reply {
    let mut eligible = None;
    let mut stale = None;
    let mut limit = 1_000usize;
    let mut cursor = 0u32;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |field: &str| Reply::error(400, field, &format!("{value:?} is not valid"));
        match key {
            "eligible" => match value.parse::<bool>() {
                Ok(v) => eligible = Some(v),
                Err(_) => return bad("eligible"),
            },
            "stale" => match value.parse::<bool>() {
                Ok(v) => stale = Some(v),
                Err(_) => return bad("stale"),
            },
            "limit" => match value.parse::<usize>() {
                Ok(v) if (1..=100_000).contains(&v) => limit = v,
                _ => return bad("limit"),
            },
            "cursor" => match value.parse::<u32>() {
                Ok(v) => cursor = v,
                Err(_) => return bad("cursor"),
            },
            _ => return Reply::error(400, key, "unknown query parameter"),
        }
    }
    let mut devices = Vec::new();
    let mut next = None;
    for id in store.fleet().ids_from(cursor) {
        let Some((value, _)) = view(store, id) else { continue };
        if eligible.is_some_and(|e| value["eligible"] != e)
            || stale.is_some_and(|s| value["stale"] != s)
        {
            continue;
        }
        if devices.len() == limit {
            next = Some(id.0);
            break;
        }
        devices.push(value);
    }
    Reply::json(200, &json!({"devices": devices, "next_cursor": next}))
}
