//! The HTTP/JSON control API, on its own threads (the data path stays on the mio loop).
//!
//! | call | what |
//! |---|---|
//! | `PUT /v1/devices/{uuid}` | create or replace a device (a fleet-file entry as JSON) |
//! | `PATCH /v1/devices/{uuid}` | change `dos`, `owned`, `doc_open`, `devowneruuid`, `rowneruuid`, `oxmsel` |
//! | `POST /v1/devices:batch` | `{"upserts":[..],"patches":[{"uuid":..,..}],"deletes":[..]}`, all or nothing, at most [`MAX_BATCH`] changes; the reply counts them and lists the first [`REPLY_REVISIONS_MAX`] revisions |
//! | `DELETE /v1/devices/{uuid}` | remove a device |
//! | `GET /v1/devices/{uuid}` | the record, its revision (also the ETag), and whether it is eligible or why not (a drop reason, or `bridge-missing`) |
//! | `GET /v1/devices?eligible=true\|false&stale=true&limit=N&cursor=C` | a page of devices |
//! | `GET /v1/export` | the whole fleet as a fleet file (JSON) |
//! | `GET /metrics`, `GET /v1/stats`, `GET /healthz` | Prometheus text, the same as JSON, liveness |
//!
//! Every 2xx mutation is on disk before the reply (see [`super::store`]). Bad input gets a 4xx
//! with `{"error":{"field":..,"reason":..}}` and changes nothing. `field` is the offending
//! field's path in the body: `dos` (or `colour`, an unknown one) in a single-device call;
//! `upserts[3].dos`, `patches[1].owned`, `deletes[0]` in a batch, always with the index. A body
//! is one JSON value: anything after it but whitespace is 400 naming `body`.
//!
//! With a bearer token configured, a call without it gets 401 and changes nothing, before any of
//! its body is read (the connection is then closed): `Authorization: Bearer TOKEN`, the scheme in
//! any case (RFC 9110 s11.1), the token compared in constant time. A body must arrive within the
//! body timeout (else 408 and the connection closes). The connections themselves (cap, header
//! and idle timeouts, accept errors, shutdown) are [`super::transport`]'s.
//!
//! Conditional requests (RFC 9110 s13, see [`super::mutation`]): PUT, PATCH and DELETE take
//! `If-Match` (`"7"`, a list, or `*`) and `If-None-Match` (`*` on PUT: create only); a false
//! condition is 412 naming the header, a malformed one 400. A GET with `If-None-Match` of the
//! current ETag is 304 without a body. The ETag is the revision as a strong entity-tag, `"7"`,
//! and never repeats for a UUID, across deletes and restarts. A batch has no ETag: each item
//! carries its own `if_match` / `if_none_match`, the header's syntax as a string
//! (`"if_match": "\"7\""`) or a revision as a number (`"if_match": 7`); a delete item with
//! conditions is an object, `{"uuid": .., "if_match": 7}`. A false one names the item:
//! `patches[1].if_match`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use parking_lot::RwLock;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::metrics;
use super::mutation::{self, Mutation, PatchBody, Preconditions, Rejection, TagCondition};
use super::store::Store;
use super::transport::{self, Transport, TransportConfig};
use crate::control::fleet_file::{DeviceEntry, FleetFile};
use crate::fleet::DeviceId;
use crate::io::board::Board;
use crate::policy;

/// API settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Where to listen (loopback by default).
    pub listen: SocketAddr,
    /// The bearer token every call must carry, if any.
    pub token: Option<String>,
    /// The largest request body accepted (a 100,000-device batch is about 11 MB of JSON).
    pub max_body: usize,
    /// Calls served at once (concurrent calls share the journal's fsyncs).
    pub threads: usize,
    /// Connection cap and timeouts.
    pub transport: TransportConfig,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8683)),
            token: None,
            max_body: 128 << 20,
            threads: 8,
            transport: TransportConfig::default(),
        }
    }
}

/// The running API: one thread with a single-threaded tokio runtime.
#[derive(Debug)]
pub struct Api {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    handle: ApiHandle,
}

/// What another thread may change of a running API (SIGHUP re-reads the token file).
#[derive(Debug, Clone)]
pub struct ApiHandle {
    token: Arc<RwLock<Option<String>>>,
    transport: Arc<Transport>,
}

impl ApiHandle {
    /// Replaces the bearer token (`None`: no token required) for the calls that follow.
    pub fn set_token(&self, token: Option<String>) {
        *self.token.write() = token;
    }

    /// The transport's figures (connections, accept errors, timeouts).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
}

impl Api {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to change the running API.
    pub fn handle(&self) -> ApiHandle {
        self.handle.clone()
    }

    /// Stops accepting calls, closes idle and stalled connections, lets calls in progress
    /// finish within the shutdown grace ([`TransportConfig::shutdown_grace`]), and waits for the
    /// thread.
    pub fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Shared {
    store: Arc<Store>,
    board: Arc<Board>,
    config: ApiConfig,
    token: Arc<RwLock<Option<String>>>,
    transport: Arc<Transport>,
}

/// Starts the API.
///
/// # Errors
/// The listen address cannot be bound, or the runtime cannot start.
pub fn spawn(config: ApiConfig, store: Arc<Store>, board: Arc<Board>) -> std::io::Result<Api> {
    let listener = std::net::TcpListener::bind(config.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    // Timers too: the timeouts and the accept back-off sleep.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(config.threads.max(1))
        .build()?;
    let (tx, rx) = oneshot::channel::<()>();
    let handle = ApiHandle {
        token: Arc::new(RwLock::new(config.token.clone())),
        transport: Arc::new(Transport::default()),
    };
    let shared = Arc::new(Shared {
        store,
        board,
        config,
        token: handle.token.clone(),
        transport: handle.transport.clone(),
    });
    let thread = std::thread::Builder::new().name("control-api".into()).spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let (transport, config) = (shared.transport.clone(), shared.config.transport);
            let handler: transport::Handler =
                Arc::new(move |request| Box::pin(serve_call(State(shared.clone()), request)));
            transport::serve(listener, transport, config, handler, rx).await;
        });
        // A store call still on the blocking pool (an fsync) gets a moment; the process is
        // ending anyway.
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    })?;
    Ok(Api { addr, shutdown: Some(tx), thread: Some(thread), handle })
}

/// Whether `authorization` carries `expected` as a bearer token: the scheme in any case
/// (RFC 9110 s11.1: auth schemes are case-insensitive), one or more spaces, then the token,
/// compared in constant time (only its length can leak).
fn bearer_matches(authorization: Option<&HeaderValue>, expected: &str) -> bool {
    let Some(value) = authorization.and_then(|v| v.to_str().ok()) else { return false };
    let Some((scheme, credentials)) = value.trim().split_once(' ') else { return false };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(credentials.trim_start_matches(' ').as_bytes().ct_eq(expected.as_bytes()))
}

/// 401, or `None` when the call may go on.
fn refuse_unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let token = shared.token.read();
    let expected = token.as_deref()?;
    if bearer_matches(headers.get(header::AUTHORIZATION), expected) {
        return None;
    }
    shared.transport.stats.unauthorized();
    let mut reply = respond(Reply::error(401, "Authorization", "a valid bearer token is required"));
    reply
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"doxm-gate\""));
    Some(closing(reply))
}

/// A reply after which the connection closes (its request body was not read).
fn closing(mut reply: Response) -> Response {
    reply.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    reply
}

/// Every call: the token is checked before anything of the body is read; a declared body over
/// the limit gets 413 at once, without waiting for it or allocating for it; a body is otherwise
/// read up to the limit within the body timeout; the store work, which may wait for an fsync,
/// runs on the blocking pool.
async fn serve_call(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    if let Some(refused) = refuse_unauthorized(&shared, &headers) {
        return refused;
    }
    let max = shared.config.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large =
        || closing(respond(Reply::error(413, "body", &format!("larger than {max} bytes"))));
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let timeout = shared.config.transport.body_timeout;
    let read = tokio::time::timeout(timeout, read_body(body, declared, max));
    let read = tokio::select! {
        read = read => read,
        () = shared.transport.stopping() => {
            return closing(respond(Reply::error(503, "server", "shutting down")));
        }
    };
    let body = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            shared.transport.stats.body_timeout();
            let reason = format!("not received within {} ms", timeout.as_millis());
            return closing(respond(Reply::error(408, "body", &reason)));
        }
    };
    // A list field may come in several lines: one list, joined with ", " (RFC 9110 s5.3). A
    // value that is not visible ASCII is kept as `Err` and refused with 400 naming the field.
    let list = |name: header::HeaderName| -> Option<Result<String, ()>> {
        let mut lines = headers.get_all(name).iter().peekable();
        lines.peek()?;
        let texts: Result<Vec<&str>, _> = lines.map(|v| v.to_str()).collect();
        Some(texts.map(|t| t.join(", ")).map_err(|_| ()))
    };
    let mut call = Call {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        if_match: list(header::IF_MATCH),
        if_none_match: list(header::IF_NONE_MATCH),
        body,
    };
    let reply = tokio::task::spawn_blocking(move || route(&mut call, &shared))
        .await
        .unwrap_or_else(|_| Reply::error(500, "server", "the call failed"));
    respond(reply)
}

/// Reads a request body of at most `max` bytes into one buffer, sized from the declared length
/// when there is one: the body is held once (axum's `to_bytes` holds the received chunks and
/// their copy side by side, twice a 30 MB batch at its peak; issue 13).
///
/// # Errors
/// A body over `max` bytes, or one that failed to arrive.
async fn read_body(mut body: Body, declared: Option<u64>, max: usize) -> Result<Vec<u8>, ()> {
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(max)).min(max);
    let mut buffer = Vec::with_capacity(capacity);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(data) = frame.map_err(|_| ())?.into_data() else { continue };
        if buffer.len() + data.len() > max {
            return Err(());
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer)
}

fn respond(reply: Reply) -> Response {
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.body,
    )
        .into_response();
    let content_type = if reply.json { "application/json" } else { "text/plain; version=0.0.4" };
    if reply.status != 304 {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Some(Ok(etag)) = reply.etag.map(|rev| HeaderValue::from_str(&mutation::etag(rev))) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// What the router needs of one HTTP request.
struct Call {
    method: Method,
    path: String,
    query: String,
    /// `If-Match`, its lines joined; `Err` when it is not text.
    if_match: Option<Result<String, ()>>,
    /// `If-None-Match`, likewise.
    if_none_match: Option<Result<String, ()>>,
    body: Vec<u8>,
}

impl Call {
    /// The request's `If-Match` and `If-None-Match` (RFC 9110 s13.1).
    ///
    /// # Errors
    /// 400 naming the field that does not parse.
    fn preconditions(&self) -> Result<Preconditions, Reply> {
        let parse = |name: &str, value: &Option<Result<String, ()>>| match value {
            None => Ok(None),
            Some(Ok(text)) => TagCondition::parse(text)
                .map(Some)
                .map_err(|reason| Reply::error(400, name, &reason)),
            Some(Err(())) => Err(Reply::error(400, name, "not visible ASCII")),
        };
        Ok(Preconditions {
            if_match: parse("If-Match", &self.if_match)?,
            if_none_match: parse("If-None-Match", &self.if_none_match)?,
        })
    }
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

fn route(call: &mut Call, shared: &Shared) -> Reply {
    // The token was checked before the body was read (`serve_call`).
    let (store, board) = (&*shared.store, &*shared.board);
    let (path, query, method) = (call.path.as_str(), call.query.as_str(), &call.method);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => {
            let (status, body) = metrics::health(store);
            Reply::json(status, &body)
        }
        (&Method::GET, ["metrics"]) => Reply {
            status: 200,
            body: metrics::prometheus(store, &board.read()) + &shared.transport.prometheus(),
            json: false,
            etag: None,
        },
        (&Method::GET, ["v1", "stats"]) => {
            let mut stats = metrics::json(store, &board.read());
            stats["api"] = shared.transport.json();
            Reply::json(200, &stats)
        }
        (&Method::GET, ["v1", "export"]) => {
            let device = store.export().into_iter().map(|(d, _)| d).collect();
            Reply::json(200, &FleetFile { device })
        }
        (&Method::GET, ["v1", "devices"]) => list(store, query),
        (&Method::POST, ["v1", "devices:batch"]) => {
            // The batch resource has no ETag: each item carries its own conditions.
            for (field, given) in
                [("If-Match", &call.if_match), ("If-None-Match", &call.if_none_match)]
            {
                if given.is_some() {
                    let reason = "a batch takes conditions per item (if_match, if_none_match)";
                    return Reply::error(400, field, reason);
                }
            }
            batch(store, std::mem::take(&mut call.body))
        }
        (_, ["v1", "devices", id]) => {
            let Ok(uuid) = Uuid::parse_str(id) else {
                return Reply::error(400, "uuid", &format!("{id:?} is not a UUID"));
            };
            let conditions = match *method {
                Method::GET | Method::PUT | Method::PATCH | Method::DELETE => {
                    match call.preconditions() {
                        Ok(c) => c,
                        Err(reply) => return reply,
                    }
                }
                _ => Preconditions::default(),
            };
            match *method {
                Method::GET => get(store, &uuid, conditions),
                Method::PUT => put(store, &uuid, &call.body, conditions),
                Method::PATCH => patch(store, &uuid, &call.body, conditions),
                Method::DELETE => {
                    mutate(store, vec![Mutation::Delete { uuid }], vec![conditions], 200)
                }
                _ => Reply::error(405, "method", "not allowed on a device"),
            }
        }
        _ => Reply::error(404, "path", &format!("no such call: {method} {path}")),
    }
}

/// Parses a JSON body: one value and nothing after it but whitespace (`{"doc_open":false} xyz`
/// is refused naming `body`, as serde_json's `from_slice` would, not read as its first value).
fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Reply> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value = parse_value(&mut json)?;
    json.end().map_err(|e| Reply::error(400, "body", &e.to_string()))?;
    Ok(value)
}

fn parse_value<T: for<'de> Deserialize<'de>>(
    json: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
) -> Result<T, Reply> {
    parse_seed(json, std::marker::PhantomData::<T>)
}

/// [`parse_value`] with a seed (a batch body decoded with a capacity hint).
fn parse_seed<'de, S: DeserializeSeed<'de>>(
    json: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
    seed: S,
) -> Result<S::Value, Reply> {
    let mut track = serde_path_to_error::Track::new();
    let value = seed.deserialize(serde_path_to_error::Deserializer::new(json, &mut track));
    value.map_err(|inner| {
        let reason = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            return Reply::error(400, "body", &reason);
        }
        // The path of an unknown field ends in the field itself (`upserts[42].colour`); that of
        // a missing field names the object that lacks it, and serde's message names the field.
        let path = track.path().to_string();
        let missing = reason.strip_prefix("missing field `").and_then(|r| r.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_owned(),
            (".", None) => "body".to_owned(),
            (path, Some(name)) => format!("{path}.{name}"),
            (path, None) => path.to_owned(),
        };
        Reply::error(400, &field, &reason)
    })
}

/// Applies `batch`. A refused change of a batch call is named by its path in the batch body
/// (`upserts[3].dos`); that of a single-device call by its field alone (`dos`).
fn mutate(
    store: &Store,
    batch: Vec<Mutation>,
    conditions: Vec<Preconditions>,
    status: u16,
) -> Reply {
    mutate_as(store, batch, &conditions, status, false)
}

fn mutate_as(
    store: &Store,
    batch: Vec<Mutation>,
    conditions: &[Preconditions],
    status: u16,
    batch_call: bool,
) -> Reply {
    mutate_in(store, batch, conditions, status, batch_call, Vec::new())
}

/// [`mutate_as`], with a buffer the journal's record may be written into ([`Store::mutate_in`]).
fn mutate_in(
    store: &Store,
    batch: Vec<Mutation>,
    conditions: &[Preconditions],
    status: u16,
    batch_call: bool,
    buffer: Vec<u8>,
) -> Reply {
    let counts = batch_call.then(|| {
        let mut counts = [0usize; 3];
        for m in &batch {
            counts[match m {
                Mutation::Upsert { .. } => 0,
                Mutation::Patch { .. } => 1,
                Mutation::Delete { .. } => 2,
            }] += 1;
        }
        counts
    });
    let deletion = matches!(batch.as_slice(), [Mutation::Delete { .. }]);
    match store.mutate_in(batch, conditions, buffer) {
        Ok(revisions) => {
            let listed = revisions.len().min(REPLY_REVISIONS_MAX);
            let applied: Vec<_> = revisions[..listed]
                .iter()
                .map(|(u, r)| json!({"uuid": u, "revision": r}))
                .collect();
            let body = match counts {
                Some([upserts, patches, deletes]) => json!({
                    "count": revisions.len(),
                    "upserts": upserts,
                    "patches": patches,
                    "deletes": deletes,
                    "applied": applied,
                    "applied_omitted": revisions.len() - listed,
                }),
                None => json!({"applied": applied}),
            };
            let mut reply = Reply::json(status, &body);
            // A deleted device has no ETag.
            if let ([(_, rev)], false) = (revisions.as_slice(), deletion) {
                reply.etag = Some(*rev);
            }
            reply
        }
        Err(mut r) => {
            if batch_call {
                // A batch item's conditions are its fields `if_match` and `if_none_match`.
                if r.field == "If-Match" {
                    r.field = "if_match".to_owned();
                } else if r.field == "If-None-Match" {
                    r.field = "if_none_match".to_owned();
                }
                r.field = r.path();
            }
            Reply::rejected(&r)
        }
    }
}

fn put(store: &Store, uuid: &Uuid, bytes: &[u8], conditions: Preconditions) -> Reply {
    let device: DeviceEntry = match parse(bytes) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if device.uuid != *uuid {
        return Reply::error(400, "uuid", "the body's uuid differs from the path's");
    }
    let status = if store.fleet().lookup(uuid).is_some() { 200 } else { 201 };
    mutate(store, vec![Mutation::Upsert { device }], vec![conditions], status)
}

fn patch(store: &Store, uuid: &Uuid, bytes: &[u8], conditions: Preconditions) -> Reply {
    match parse::<PatchBody>(bytes) {
        Ok(patch) => {
            mutate(store, vec![Mutation::Patch { uuid: *uuid, patch }], vec![conditions], 200)
        }
        Err(r) => r,
    }
}

/// A batch item's condition: the header's syntax as a string (`"\"7\""`, `"*"`,
/// `"W/\"7\", \"8\""`), or a revision as a number (`7`, the same as `"\"7\""`).
#[derive(Debug)]
struct Condition(TagCondition);

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Condition, D::Error> {
        struct ConditionVisitor;
        impl Visitor<'_> for ConditionVisitor {
            type Value = Condition;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a revision or an If-Match value (\"\\\"7\\\"\" or \"*\")")
            }
            fn visit_u64<E: de::Error>(self, revision: u64) -> Result<Condition, E> {
                Ok(Condition(TagCondition::revision(revision)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Condition, E> {
                TagCondition::parse(text).map(Condition).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(ConditionVisitor)
    }
}

fn preconditions(if_match: Option<Condition>, if_none_match: Option<Condition>) -> Preconditions {
    Preconditions { if_match: if_match.map(|c| c.0), if_none_match: if_none_match.map(|c| c.0) }
}

/// One entry of a batch's `upserts`: a device entry, plus optional `if_match` and
/// `if_none_match` keys (read here, so that the entry keeps its own schema and error paths).
#[derive(Debug)]
struct UpsertItem {
    device: DeviceEntry,
    conditions: Preconditions,
}

impl<'de> Deserialize<'de> for UpsertItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UpsertItem, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = UpsertItem;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a device entry")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UpsertItem, A::Error> {
                let mut found = (None, None);
                let access = ConditionKeys { map, found: &mut found, uuid: None };
                let mut device = DeviceEntry::deserialize(MapAccessDeserializer::new(access))?;
                // A decoded list has room for 4 (serde cannot know its length): a batch holds
                // 100k of these until it is applied.
                device.types.shrink_to_fit();
                device.oxms.shrink_to_fit();
                device.eps.shrink_to_fit();
                Ok(UpsertItem { device, conditions: preconditions(found.0, found.1) })
            }
        }
        deserializer.deserialize_map(ItemVisitor)
    }
}

/// A map that takes the keys `if_match` and `if_none_match` (and, for a patch item, `uuid`)
/// out of another one and passes every other key on, so that the item's own schema
/// ([`DeviceEntry`], [`PatchBody`]) is written once and still refuses unknown keys. Keys are
/// classified while they are read, so that an unknown key's error has its path
/// (`upserts[3].colour`).
struct ConditionKeys<'a, A> {
    map: A,
    found: &'a mut (Option<Condition>, Option<Condition>),
    /// `Some` when the map's `uuid` key is taken out too (patch items).
    uuid: Option<&'a mut Option<Uuid>>,
}

/// A key as [`KeySeed`] read it: one taken out (with the seed it did not use), or another key.
enum Key<K, T> {
    IfMatch(K),
    IfNoneMatch(K),
    Uuid(K),
    Other(T),
}

struct KeySeed<K> {
    seed: K,
    seen: (bool, bool),
    /// `Some(seen)` when `uuid` is taken out.
    uuid: Option<bool>,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<K> {
    type Value = Key<K, K::Value>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for KeySeed<K> {
    type Value = Key<K, K::Value>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        match key {
            "if_match" if self.seen.0 => Err(E::duplicate_field("if_match")),
            "if_none_match" if self.seen.1 => Err(E::duplicate_field("if_none_match")),
            "if_match" => Ok(Key::IfMatch(self.seed)),
            "if_none_match" => Ok(Key::IfNoneMatch(self.seed)),
            "uuid" if self.uuid == Some(true) => Err(E::duplicate_field("uuid")),
            "uuid" if self.uuid.is_some() => Ok(Key::Uuid(self.seed)),
            _ => self.seed.deserialize(key.into_deserializer()).map(Key::Other),
        }
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ConditionKeys<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = seed;
        loop {
            let seen = (self.found.0.is_some(), self.found.1.is_some());
            let uuid = self.uuid.as_ref().map(|u| u.is_some());
            seed = match self.map.next_key_seed(KeySeed { seed, seen, uuid })? {
                None => return Ok(None),
                Some(Key::Other(key)) => return Ok(Some(key)),
                Some(Key::IfMatch(unused)) => {
                    self.found.0 = Some(self.map.next_value()?);
                    unused
                }
                Some(Key::IfNoneMatch(unused)) => {
                    self.found.1 = Some(self.map.next_value()?);
                    unused
                }
                Some(Key::Uuid(unused)) => {
                    let value = self.map.next_value()?;
                    if let Some(slot) = self.uuid.as_mut() {
                        **slot = Some(value);
                    }
                    unused
                }
            };
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// One entry of a batch's `patches`: the device, the fields to change (a [`PatchBody`], the
/// schema of `PATCH /v1/devices/{uuid}`), and its conditions.
#[derive(Debug)]
struct PatchItem {
    uuid: Uuid,
    patch: PatchBody,
    conditions: Preconditions,
}

impl<'de> Deserialize<'de> for PatchItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PatchItem, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = PatchItem;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a device's uuid and the fields to change")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PatchItem, A::Error> {
                let (mut found, mut uuid) = ((None, None), None);
                let access = ConditionKeys { map, found: &mut found, uuid: Some(&mut uuid) };
                let patch = PatchBody::deserialize(MapAccessDeserializer::new(access))?;
                let uuid = uuid.ok_or_else(|| de::Error::missing_field("uuid"))?;
                Ok(PatchItem { uuid, patch, conditions: preconditions(found.0, found.1) })
            }
        }
        deserializer.deserialize_map(ItemVisitor)
    }
}

/// One entry of a batch's `deletes`: a UUID, or `{"uuid": .., "if_match": ..}`.
#[derive(Debug)]
struct DeleteItem {
    uuid: Uuid,
    conditions: Preconditions,
}

impl<'de> Deserialize<'de> for DeleteItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DeleteItem, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Conditional {
            uuid: Uuid,
            if_match: Option<Condition>,
            if_none_match: Option<Condition>,
        }
        struct DeleteVisitor;
        impl<'de> Visitor<'de> for DeleteVisitor {
            type Value = DeleteItem;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a UUID, or an object with uuid and if_match or if_none_match")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<DeleteItem, E> {
                let uuid = Uuid::parse_str(text).map_err(E::custom)?;
                Ok(DeleteItem { uuid, conditions: Preconditions::default() })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DeleteItem, A::Error> {
                let c = Conditional::deserialize(MapAccessDeserializer::new(map))?;
                Ok(DeleteItem {
                    uuid: c.uuid,
                    conditions: preconditions(c.if_match, c.if_none_match),
                })
            }
        }
        deserializer.deserialize_any(DeleteVisitor)
    }
}

/// A batch body, decoded item by item straight into the changes the store takes: no list of
/// decoded items is held beside the list of changes, items past [`MAX_BATCH`] are read (the
/// body must still be valid JSON) but not kept, and conditions take room only when some item
/// has one. With the body dropped once it is decoded, a 100k-upsert batch peaks at under 3x its
/// body (issue 13; `tests/control_api.rs` holds the gate to it).
#[derive(Debug, Default)]
struct BatchBody {
    /// Upserts, then patches, then deletes, as the body's order of kinds is not the batch's.
    kinds: [Vec<Mutation>; 3],
    /// Each kind's conditions, as (index within the kind, conditions); only non-empty ones.
    conditions: [Vec<(usize, Preconditions)>; 3],
    /// Items of each kind, kept or not.
    counts: [usize; 3],
    /// Room to reserve for the first list of changes read (see [`BatchBody::decode`]).
    hint: usize,
}

impl BatchBody {
    /// Decodes a batch body. The first list of changes is given room up front for as many
    /// changes as the body could hold (at 40 bytes each, the smallest, up to [`MAX_BATCH`]):
    /// room never written costs no memory, while growing a list of 100k changes by doubling
    /// copies it, which holds it twice.
    ///
    /// # Errors
    /// 400 naming the field, as [`parse`].
    fn decode(bytes: &[u8]) -> Result<BatchBody, Reply> {
        let mut json = serde_json::Deserializer::from_slice(bytes);
        let hint = (bytes.len() / 40).min(MAX_BATCH);
        let body = parse_seed(&mut json, BodySeed(hint))?;
        json.end().map_err(|e| Reply::error(400, "body", &e.to_string()))?;
        Ok(body)
    }
}

/// A [`BatchBody`] with its capacity hint.
struct BodySeed(usize);

impl<'de> DeserializeSeed<'de> for BodySeed {
    type Value = BatchBody;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<BatchBody, D::Error> {
        deserializer.deserialize_struct("BatchBody", BATCH_FIELDS, BodyVisitor(self.0))
    }
}

/// Reads a batch body's keys and lists; `.0` is the capacity hint.
struct BodyVisitor(usize);

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = BatchBody;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("struct BatchBody")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BatchBody, A::Error> {
        let mut body = BatchBody { hint: self.0, ..BatchBody::default() };
        let mut seen = [false; 3];
        while let Some(field) = map.next_key::<BatchField>()? {
            let kind = field as usize;
            if seen[kind] {
                return Err(de::Error::duplicate_field(BATCH_FIELDS[kind]));
            }
            seen[kind] = true;
            map.next_value_seed(Items { kind, body: &mut body })?;
        }
        Ok(body)
    }
}

const BATCH_FIELDS: &[&str] = &["upserts", "patches", "deletes"];

/// A key of a batch body (an unknown key is refused while it is read, so that its error names
/// it: `upsert`).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum BatchField {
    Upserts,
    Patches,
    Deletes,
}

impl<'de> Deserialize<'de> for BatchBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<BatchBody, D::Error> {
        BodySeed(0).deserialize(deserializer)
    }
}

/// The items of one kind (`kind`: 0 upserts, 1 patches, 2 deletes), added to `body` as read.
struct Items<'a> {
    kind: usize,
    body: &'a mut BatchBody,
}

impl<'de> DeserializeSeed<'de> for Items<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        let kind = self.kind;
        let body = self.body;
        loop {
            let (change, conditions) = match kind {
                0 => match seq.next_element::<UpsertItem>()? {
                    Some(item) => (Mutation::Upsert { device: item.device }, item.conditions),
                    None => break,
                },
                1 => match seq.next_element::<PatchItem>()? {
                    Some(item) => {
                        (Mutation::Patch { uuid: item.uuid, patch: item.patch }, item.conditions)
                    }
                    None => break,
                },
                _ => match seq.next_element::<DeleteItem>()? {
                    Some(item) => (Mutation::Delete { uuid: item.uuid }, item.conditions),
                    None => break,
                },
            };
            let index = body.counts[kind];
            body.counts[kind] += 1;
            // Past the limit the call is refused (413) once the body is read: keep nothing.
            if body.counts.iter().sum::<usize>() > MAX_BATCH {
                body.kinds = Default::default();
                body.conditions = Default::default();
                continue;
            }
            if body.hint > 0 {
                body.kinds[kind].reserve_exact(std::mem::take(&mut body.hint));
            }
            body.kinds[kind].push(change);
            if !conditions.is_empty() {
                body.conditions[kind].push((index, conditions));
            }
        }
        Ok(())
    }
}

fn batch(store: &Store, bytes: Vec<u8>) -> Reply {
    let body = match BatchBody::decode(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let count: usize = body.counts.iter().sum();
    if count == 0 {
        return Reply::error(400, "body", "an empty batch");
    }
    if count > MAX_BATCH {
        let reason = format!(
            "a batch holds at most {MAX_BATCH} changes and this one has {count}: split it into \
             several calls"
        );
        return Reply::error(413, "body", &reason);
    }
    let BatchBody { kinds: [mut batch, patches, deletes], conditions: listed, counts, .. } = body;
    let mut conditions: Vec<Preconditions> = Vec::new();
    let mut offset = 0;
    for (kind, listed) in listed.into_iter().enumerate() {
        for (index, c) in listed {
            conditions.resize_with(offset + index, Preconditions::default);
            conditions.push(c);
        }
        offset += counts[kind];
    }
    batch.reserve_exact(patches.len() + deletes.len());
    batch.extend(patches);
    batch.extend(deletes);
    // The body's buffer becomes the journal's record (or is freed, in memory): a 30 MB buffer
    // is held once across decoding and journaling, and never freed and taken again.
    mutate_in(store, batch, &conditions, 200, true, bytes)
}

/// The most changes (upserts + patches + deletes) one batch call may carry: more get 413 and
/// change nothing; load a larger fleet in several calls. (The body limit, 128 MiB by default,
/// bounds it too: 100,000 upserts of typical devices take about 30 MB.)
pub const MAX_BATCH: usize = 100_000;

/// A batch reply lists the revisions of at most this many changes (the first ones, in the
/// order of the body: upserts, patches, deletes); its counts cover the whole batch. So the
/// reply does not grow with the batch.
pub const REPLY_REVISIONS_MAX: usize = 1_000;

/// The `reason` of a VOD whose bridge is not in the fleet: it answers nothing (fail closed, as
/// for an unowned bridge: the data path counts its drops as `bridge-unowned`) until the bridge
/// is added and owned.
pub const BRIDGE_MISSING: &str = "bridge-missing";

/// A device as `GET` shows it.
fn view(store: &Store, id: DeviceId) -> Option<(serde_json::Value, u64)> {
    let fleet = store.fleet();
    let record = fleet.record(id)?;
    let word = fleet.word(id);
    let revision = fleet.revision(id);
    let reason = match policy::eligibility(&word.facts(record.uuid())) {
        Ok(()) => "ok",
        // The data path sees only "not owned"; the control plane can tell why.
        Err(policy::Reason::BridgeUnowned)
            if record.bridge().is_some_and(|b| fleet.lookup(&b).is_none()) =>
        {
            BRIDGE_MISSING
        }
        Err(r) => r.as_str(),
    };
    let entry = DeviceEntry::from_record(&record, word.state());
    Some((
        json!({
            "uuid": record.uuid(),
            "revision": revision,
            "eligible": reason == "ok",
            "reason": reason,
            "stale": word.state().is_none(),
            "device": entry,
        }),
        revision,
    ))
}

/// A device; with `If-None-Match` of its ETag, 304 and no body (RFC 9110 s13.1.2), with an
/// `If-Match` that does not match, 412.
fn get(store: &Store, uuid: &Uuid, conditions: Preconditions) -> Reply {
    match store.fleet().lookup(uuid).and_then(|id| view(store, id)) {
        Some((value, revision)) => {
            let current = Some(Some(revision));
            let Preconditions { if_match, if_none_match } = conditions;
            let if_match = Preconditions { if_match, if_none_match: None };
            if let Err(r) = if_match.check(current) {
                return Reply::rejected(&r);
            }
            if if_none_match.is_some_and(|c| c.matches(current, false)) {
                return Reply {
                    status: 304,
                    body: String::new(),
                    json: false,
                    etag: Some(revision),
                };
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of<T: for<'de> Deserialize<'de> + std::fmt::Debug>(body: &str) -> String {
        let reply = parse::<T>(body.as_bytes()).unwrap_err();
        let value: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        value["error"]["field"].as_str().unwrap().to_owned()
    }

    #[test]
    fn test_bearer_scheme_in_any_case_token_exact() {
        let ok = |v: &str| bearer_matches(Some(&HeaderValue::from_str(v).unwrap()), "s3cret");
        for good in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "Bearer   s3cret"] {
            assert!(ok(good), "{good}");
        }
        for bad in ["Bearer s3cre", "Bearer s3cret2", "Bearer S3CRET", "Basic s3cret", "s3cret"] {
            assert!(!ok(bad), "{bad}");
        }
        assert!(!ok("Bearer"));
        assert!(!bearer_matches(None, "s3cret"));
    }

    #[test]
    fn test_error_paths_name_the_field_once() {
        let u = r#""uuid":"0d0c0000-0000-4000-8000-000000000001""#;
        let device = |extra: &str| format!("{{{u},\"name\":\"x\"{extra}}}");
        assert_eq!(field_of::<DeviceEntry>(&device(r#","colour":1"#)), "colour");
        assert_eq!(field_of::<DeviceEntry>(r#"{"name":"x"}"#), "uuid");
        assert_eq!(field_of::<DeviceEntry>(&device(r#","dos":-1"#)), "dos");
        assert_eq!(field_of::<PatchBody>(r#"{"colour":1}"#), "colour");
        let upserts = |entry: String| format!(r#"{{"upserts":[{},{entry}]}}"#, device(""));
        assert_eq!(field_of::<BatchBody>(&upserts(device(r#","colour":1"#))), "upserts[1].colour");
        assert_eq!(field_of::<BatchBody>(&upserts(r#"{"name":"x"}"#.into())), "upserts[1].uuid");
        assert_eq!(
            field_of::<BatchBody>(&format!(r#"{{"patches":[{{{u},"dos":-1}}]}}"#)),
            "patches[0].dos"
        );
        // A patch item is a PatchBody plus its uuid and conditions: the same field names.
        let patch = |fields: &str| format!(r#"{{"patches":[{{{u},"dos":1}},{{{fields}}}]}}"#);
        assert_eq!(
            field_of::<BatchBody>(&patch(&format!(r#"{u},"colour":1"#))),
            "patches[1].colour"
        );
        assert_eq!(field_of::<BatchBody>(&patch(r#""dos":1"#)), "patches[1].uuid");
        assert_eq!(field_of::<BatchBody>(&patch(&format!(r#"{u},{u}"#))), "patches[1].uuid");
        assert_eq!(
            field_of::<BatchBody>(&patch(&format!(r#"{u},"owned":"no""#))),
            "patches[1].owned"
        );
        assert_eq!(field_of::<BatchBody>(r#"{"deletes":["x"]}"#), "deletes[0]");
        assert_eq!(field_of::<BatchBody>(r#"{"upsert":[]}"#), "upsert");
        assert_eq!(field_of::<BatchBody>("["), "body");
    }

    #[test]
    fn test_trailing_bytes_after_the_body_are_refused() {
        for body in [r#"{"doc_open":false} xyz"#, r#"{"doc_open":false}{}"#, "{}]", "{} 1"] {
            assert_eq!(field_of::<PatchBody>(body), "body", "{body}");
        }
        for body in ["{}", " {} ", "{}\r\n", "\n{\"doc_open\":false}\n\n"] {
            assert!(parse::<PatchBody>(body.as_bytes()).is_ok(), "{body:?}");
        }
    }
}
