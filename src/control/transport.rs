//! The control API's transport: its own accept loop and connection registry over hyper, so that
//! no client, however slow or numerous, can take the API (or the gate's memory) away from the
//! bridge.
//!
//! ```text
//!  accept ──> cap reached? ──> close the connection idle the longest (none idle: 503, close)
//!    │ error (EMFILE, ENFILE, ..): counted, the longest-idle connection closed, back-off 10 ms..1 s
//!    v
//!  connection: Idle ─first byte─> Head ─head read─> Busy ─reply ready─> Reply ─written─> Idle
//!              idle_timeout      header_timeout    body_timeout (408,    body_timeout
//!                                                  in the API)
//! ```
//!
//! Every connection is in the registry with its phase. A janitor closes the connections whose
//! phase outlived its timeout: `Idle` (keep-alive, nothing sent) after the idle timeout; `Head`
//! (a request begun but its head not complete: a stalled or trickling client) after the header
//! timeout; `Reply` (a reply its client does not read) after the body timeout. `Busy`
//! connections are in the API's hands: it checks the token before it reads a body, and reads a
//! body within the body timeout or replies 408. A connection's read buffer is capped
//! ([`READ_BUFFER`]), so memory is bounded by the connection cap whatever unauthenticated clients
//! send.
//!
//! Shutdown: the listener closes, idle and stalled (`Head`) connections close at once, a call
//! still waiting for its body gets 503 ([`Transport::stopping`]), calls in progress (the store)
//! get [`TransportConfig::shutdown_grace`] to finish, then whatever is left is closed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tracing::{debug, warn};

/// hyper's read buffer per connection (its default is about 400 KB). A request head must fit
/// (the API's heads are a few hundred bytes; hyper answers 431 past 100 headers).
pub const READ_BUFFER: usize = 64 << 10;

/// The first and the longest pause after a failed `accept`.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Timeouts and limits of the API's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportConfig {
    /// From a request's first byte to the end of its head.
    pub header_timeout: Duration,
    /// From the end of a request's head to the end of its body (the API replies 408); also how
    /// long a client may take to read a reply.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request.
    pub idle_timeout: Duration,
    /// Connections open at once; at the cap the one idle the longest is closed for a new one.
    pub max_connections: usize,
    /// On shutdown, how long calls in progress may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

/// The transport's counters (`/metrics`: `doxm_gate_api_*`; `/v1/stats`: `api`).
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// `accept` failures (EMFILE when the open-file limit is reached, ENFILE, ENOBUFS, ..).
    pub accept_errors: AtomicU64,
    /// Connections closed because they were idle past the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Connections closed because their request head did not arrive within the header timeout.
    pub header_timeouts: AtomicU64,
    /// Requests whose body did not arrive within the body timeout (408).
    pub body_timeouts: AtomicU64,
    /// Connections closed because their client did not take a reply within the body timeout.
    pub reply_timeouts: AtomicU64,
    /// Idle connections closed to make room (the cap, or an accept that ran out of files).
    pub evicted: AtomicU64,
    /// New connections refused (503) because the cap was reached and none was idle.
    pub refused: AtomicU64,
    /// Calls refused for a missing or wrong token (401).
    pub unauthorized: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl TransportStats {
    /// Counts a body that did not arrive in time.
    pub fn body_timeout(&self) {
        bump(&self.body_timeouts);
    }

    /// Counts a refused token.
    pub fn unauthorized(&self) {
        bump(&self.unauthorized);
    }
}

/// What the API reports of its transport: the counters plus the open connections and the cap.
#[derive(Debug, Default)]
pub struct Transport {
    /// The counters.
    pub stats: TransportStats,
    registry: Mutex<Registry>,
    max_connections: AtomicU64,
    stopping: std::sync::atomic::AtomicBool,
    stop: Notify,
}

#[derive(Debug, Default)]
struct Registry {
    next: u64,
    open: HashMap<u64, Arc<Conn>>,
}

/// One connection: its phase and the way to close it.
#[derive(Debug)]
struct Conn {
    phase: Mutex<Phase>,
    close: Notify,
    /// hyper has dropped the reply's body: the reply is idle once its bytes are flushed.
    reply_taken: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request, since.
    Idle(Instant),
    /// A request head begun, since its first byte.
    Head(Instant),
    /// A call in the API's hands (its body, the store).
    Busy,
    /// Its reply being written, since: a client that does not take it within the body timeout
    /// is closed (it would hold a connection that cannot be evicted).
    Reply(Instant),
}

impl Conn {
    fn new(now: Instant) -> Conn {
        Conn {
            phase: Mutex::new(Phase::Idle(now)),
            close: Notify::new(),
            reply_taken: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock() = phase;
    }

    /// A flush completed: once the reply's body is taken, its bytes are all written.
    fn flushed(&self) {
        if self.reply_taken.swap(false, Ordering::AcqRel) {
            let mut phase = self.phase.lock();
            if let Phase::Reply(_) = *phase {
                *phase = Phase::Idle(Instant::now());
            }
        }
    }

    /// Bytes arrived: an idle connection has begun a request.
    fn bytes_arrived(&self) {
        let mut phase = self.phase.lock();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
        }
    }
}

impl Transport {
    /// Resolves once shutdown has begun: a call still waiting for its body gives up (503) rather
    /// than hold the process for the shutdown grace.
    pub async fn stopping(&self) {
        let notified = self.stop.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_waiters();
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.registry.lock().open.len()
    }

    /// The figures as JSON (`/v1/stats`'s `api`).
    pub fn json(&self) -> Value {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "connections": self.open(),
            "max_connections": n(&self.max_connections),
            "accepted": n(&s.accepted),
            "accept_errors": n(&s.accept_errors),
            "closed": {
                "idle_timeout": n(&s.idle_timeouts),
                "header_timeout": n(&s.header_timeouts),
                "reply_timeout": n(&s.reply_timeouts),
                "evicted": n(&s.evicted),
                "refused": n(&s.refused),
            },
            "body_timeouts": n(&s.body_timeouts),
            "unauthorized": n(&s.unauthorized),
        })
    }

    /// The figures in Prometheus text format.
    pub fn prometheus(&self) -> String {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let one = |value: u64| vec![("", value)];
        let metrics = [
            ("connections", "gauge", "Control API connections open.", one(self.open() as u64)),
            ("connections_max", "gauge", "The control API's connection cap.", one(n(&self.max_connections))),
            ("accepted_total", "counter", "Control API connections accepted.", one(n(&s.accepted))),
            (
                "accept_errors_total",
                "counter",
                "Failed accepts of the control API (EMFILE, ENFILE, ..), each followed by a back-off.",
                one(n(&s.accept_errors)),
            ),
            (
                "connections_closed_total",
                "counter",
                "Control API connections closed by the gate, by reason.",
                vec![
                    ("{reason=\"idle-timeout\"}", n(&s.idle_timeouts)),
                    ("{reason=\"header-timeout\"}", n(&s.header_timeouts)),
                    ("{reason=\"reply-timeout\"}", n(&s.reply_timeouts)),
                    ("{reason=\"evicted\"}", n(&s.evicted)),
                    ("{reason=\"refused\"}", n(&s.refused)),
                ],
            ),
            (
                "body_timeouts_total",
                "counter",
                "Control API requests whose body did not arrive within the body timeout (408).",
                one(n(&s.body_timeouts)),
            ),
            (
                "unauthorized_total",
                "counter",
                "Control API calls refused for a missing or wrong token (401).",
                one(n(&s.unauthorized)),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, lines) in metrics {
            let name = format!("doxm_gate_api_{name}");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }

    fn register(&self) -> (u64, Arc<Conn>) {
        let mut registry = self.registry.lock();
        let id = registry.next;
        registry.next += 1;
        let conn = Arc::new(Conn::new(Instant::now()));
        registry.open.insert(id, conn.clone());
        (id, conn)
    }

    fn unregister(&self, id: u64) {
        self.registry.lock().open.remove(&id);
    }

    /// Closes the connection that has waited the longest without a call in progress (idle, or a
    /// head begun and not finished); false when every connection is busy.
    fn evict_one(&self) -> bool {
        let registry = self.registry.lock();
        let oldest = registry
            .open
            .values()
            .filter_map(|c| match *c.phase.lock() {
                Phase::Idle(since) | Phase::Head(since) => Some((since, c)),
                Phase::Busy | Phase::Reply(_) => None,
            })
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, conn)) => {
                // Busy from here on, so that it is not chosen twice before its task closes it.
                conn.set(Phase::Busy);
                conn.close.notify_one();
                bump(&self.stats.evicted);
                true
            }
            None => false,
        }
    }

    /// Closes the connections whose phase outlived its timeout; with `shutting_down`, every
    /// connection that has no call in progress.
    fn sweep(&self, config: &TransportConfig, now: Instant, shutting_down: bool) {
        let registry = self.registry.lock();
        for conn in registry.open.values() {
            let phase = *conn.phase.lock();
            let expired = match phase {
                Phase::Idle(since) if now.duration_since(since) >= config.idle_timeout => {
                    Some(&self.stats.idle_timeouts)
                }
                Phase::Head(since) if now.duration_since(since) >= config.header_timeout => {
                    Some(&self.stats.header_timeouts)
                }
                Phase::Reply(since) if now.duration_since(since) >= config.body_timeout => {
                    Some(&self.stats.reply_timeouts)
                }
                _ => None,
            };
            if let Some(counter) = expired {
                bump(counter);
                conn.set(Phase::Busy);
                conn.close.notify_one();
            } else if shutting_down && matches!(phase, Phase::Idle(_) | Phase::Head(_)) {
                conn.close.notify_one();
            }
        }
    }

    fn close_all(&self) {
        for conn in self.registry.lock().open.values() {
            conn.close.notify_one();
        }
    }
}

/// Where connections come from: a TCP listener (a trait so that a test can make `accept` fail).
pub(crate) trait Acceptor {
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>>;
}

impl Acceptor for tokio::net::TcpListener {
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> {
        tokio::net::TcpListener::accept(self)
    }
}

/// The handler of one call (the API's `serve_call`).
pub(crate) type Handler = Arc<
    dyn Fn(Request<Body>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// Serves connections from `listener` until `shutdown` fires (or its sender is dropped), then
/// shuts down as the module doc says.
pub(crate) async fn serve(
    listener: impl Acceptor,
    transport: Arc<Transport>,
    config: TransportConfig,
    handler: Handler,
    mut shutdown: oneshot::Receiver<()>,
) {
    transport.max_connections.store(config.max_connections as u64, Ordering::Relaxed);
    let shortest = config.header_timeout.min(config.idle_timeout).min(config.body_timeout);
    let tick = (shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut janitor = tokio::time::interval(tick);
    janitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = BACKOFF.0;
    let mut last_warning: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = janitor.tick() => transport.sweep(&config, Instant::now(), false),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = BACKOFF.0;
                    bump(&transport.stats.accepted);
                    if transport.open() >= config.max_connections {
                        if !transport.evict_one() {
                            bump(&transport.stats.refused);
                            debug!(%peer, "control API: connection cap reached, all busy: 503");
                            let _ = stream.try_write(
                                b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
                                  content-length: 0\r\n\r\n",
                            );
                            continue;
                        }
                        // Let the evicted connection's task close its socket (and leave the
                        // registry) before the next accept.
                        tokio::task::yield_now().await;
                    }
                    let _ = stream.set_nodelay(true);
                    // Registered before its task runs, so that the cap counts it at once.
                    let (id, conn) = transport.register();
                    tokio::spawn(connection(stream, id, conn, transport.clone(), handler.clone()));
                }
                Err(e) => {
                    bump(&transport.stats.accept_errors);
                    // A descriptor freed by closing an idle connection lets the next accept
                    // through; the others keep theirs.
                    let evicted = out_of_files(&e) && transport.evict_one();
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_warning = Some(Instant::now());
                        warn!(
                            error = %e,
                            errors = transport.stats.accept_errors.load(Ordering::Relaxed),
                            connections = transport.open(),
                            evicted_idle = evicted,
                            "control API: accept failed; backing off (at most one warning per 10 s)"
                        );
                    }
                    tokio::select! {
                        _ = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            },
        }
    }
    drop(listener);
    transport.begin_stopping();
    let deadline = Instant::now() + config.shutdown_grace;
    while transport.open() > 0 && Instant::now() < deadline {
        transport.sweep(&config, Instant::now(), true);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = transport.open();
    if left > 0 {
        warn!(connections = left, "control API: calls still in progress at shutdown, closed");
        transport.close_all();
        // Let the connection tasks see it (the runtime's end would drop them anyway).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn out_of_files(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Serves one connection until it ends or the registry closes it.
async fn connection(
    stream: TcpStream,
    id: u64,
    conn: Arc<Conn>,
    transport: Arc<Transport>,
    handler: Handler,
) {
    let io = hyper_util::rt::TokioIo::new(Tracked { inner: stream, conn: conn.clone() });
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            conn.set(Phase::Busy);
            let reply = handler(request.map(Body::new));
            let conn = conn.clone();
            async move {
                let reply = reply.await;
                conn.set(Phase::Reply(Instant::now()));
                // Idle once hyper has written the reply's body (and dropped it).
                let reply = reply.map(|body| Body::new(Written { inner: body, conn: Some(conn) }));
                Ok::<_, std::convert::Infallible>(reply)
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(READ_BUFFER).header_read_timeout(None);
    let served = http.serve_connection(io, service);
    tokio::select! {
        result = served => {
            if let Err(e) = result {
                debug!(error = %e, "control API connection ended");
            }
        }
        () = conn.close.notified() => {}
    }
    transport.unregister(id);
}

/// The connection's socket, which marks the start of a request head when bytes arrive.
struct Tracked {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes once its write buffer is empty: the reply has left.
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            self.conn.flushed();
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A reply body that tells its connection when hyper has taken all of it (then the next flush
/// marks the connection idle: hyper may still hold the bytes in its write buffer).
struct Written {
    inner: Body,
    conn: Option<Arc<Conn>>,
}

impl Drop for Written {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.reply_taken.store(true, Ordering::Release);
        }
    }
}

impl http_body::Body for Written {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;

    /// A listener whose first `failures` accepts fail with EMFILE.
    struct Failing {
        inner: tokio::net::TcpListener,
        failures: AtomicUsize,
    }

    impl Acceptor for Failing {
        async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
            if self.failures.load(Ordering::Relaxed) > 0 {
                self.failures.fetch_sub(1, Ordering::Relaxed);
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
            self.inner.accept().await
        }
    }

    fn ok_handler() -> Handler {
        Arc::new(|_request| Box::pin(async { Response::new(Body::from("ok")) }))
    }

    fn get(addr: SocketAddr) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    }

    /// Runs `serve` on a runtime of its own thread with `failures` failing accepts; returns the
    /// address, the transport and the shutdown sender.
    fn start(
        failures: usize,
        config: TransportConfig,
    ) -> (SocketAddr, Arc<Transport>, oneshot::Sender<()>, std::thread::JoinHandle<()>) {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let transport = Arc::new(Transport::default());
        let (tx, rx) = oneshot::channel();
        let t = transport.clone();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let inner = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let listener = Failing { inner, failures: AtomicUsize::new(failures) };
                serve(listener, t, config, ok_handler(), rx).await;
            });
        });
        (addr, transport, tx, thread)
    }

    #[test]
    fn test_accept_errors_backed_off_counted_and_survived() {
        let (addr, transport, stop, thread) = start(5, TransportConfig::default());
        let started = Instant::now();
        assert!(get(addr).ends_with("ok"), "the loop serves after 5 failed accepts");
        // 10 + 20 + 40 + 80 + 160 ms of back-off.
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
        assert_eq!(transport.stats.accept_errors.load(Ordering::Relaxed), 5);
        assert!(transport.prometheus().contains("doxm_gate_api_accept_errors_total 5\n"));
        stop.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn test_cap_closes_the_longest_idle_first() {
        let config = TransportConfig { max_connections: 2, ..TransportConfig::default() };
        let (addr, transport, stop, thread) = start(0, config);
        let first = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let _second = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(get(addr).ends_with("ok"), "a third connection is served at a cap of 2");
        first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!((&first).read(&mut [0; 16]).unwrap(), 0, "the oldest idle one was closed");
        assert_eq!(transport.stats.evicted.load(Ordering::Relaxed), 1);
        stop.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn test_timeouts_close_idle_and_stalled_connections() {
        let config = TransportConfig {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
            ..TransportConfig::default()
        };
        let (addr, transport, stop, thread) = start(0, config);
        let idle = std::net::TcpStream::connect(addr).unwrap();
        let mut stalled = std::net::TcpStream::connect(addr).unwrap();
        stalled.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").unwrap();
        let started = Instant::now();
        for (conn, within) in [(&stalled, 300..1_000), (&idle, 600..1_500)] {
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = (&*conn).read(&mut [0; 16]);
            let ms = started.elapsed().as_millis();
            assert!(within.contains(&ms), "closed after {ms} ms, expected within {within:?}");
        }
        assert_eq!(transport.stats.header_timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(transport.stats.idle_timeouts.load(Ordering::Relaxed), 1);
        stop.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn test_a_reply_not_taken_is_closed_after_the_body_timeout() {
        let config = TransportConfig {
            body_timeout: Duration::from_millis(300),
            ..TransportConfig::default()
        };
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let transport = Arc::new(Transport::default());
        let (stop, rx) = oneshot::channel();
        let t = transport.clone();
        let big: Handler = Arc::new(|_request| {
            Box::pin(async { Response::new(Body::from(vec![b'x'; 64 << 20])) })
        });
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                serve(listener, t, config, big, rx).await;
            });
        });
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        // Never read: 64 MB cannot fit in the socket buffers.
        let started = Instant::now();
        while transport.stats.reply_timeouts.load(Ordering::Relaxed) == 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "the reply was never given up");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
        stop.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn test_shutdown_closes_stalled_connections_at_once() {
        let (addr, _transport, stop, thread) = start(0, TransportConfig::default());
        let mut stalled = std::net::TcpStream::connect(addr).unwrap();
        stalled.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").unwrap();
        // A keep-alive connection after a reply: idle once the reply is flushed.
        let mut kept = std::net::TcpStream::connect(addr).unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut reply = [0u8; 256];
        assert!(kept.read(&mut reply).unwrap() > 0);
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        stop.send(()).unwrap();
        thread.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }
}
