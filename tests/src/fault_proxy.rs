//! A TCP fault proxy for the chaos scenarios: it forwards connections to a real server and injects the faults production sees (a reply lost after the server committed, a blackhole, added latency, cut connections, a server that refuses).
//!
//! The proxy is PostgreSQL-aware in one place only: with
//! [`FaultProxy::cut_after_commit_every`] it reads the server's messages to find the
//! `CommandComplete` of a write and drops the connection instead of delivering it. Every
//! other fault is plain TCP, so the proxy also sits in front of MariaDB or any other server.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// A TCP proxy in front of one server, with faults switchable at run time.
///
/// Clones share one proxy, and every control takes `&self`, so a test can flip a fault
/// from any task or thread while traffic flows. The proxy stops when its last clone is
/// dropped: the listener closes and every proxied connection is cut.
#[derive(Clone)]
pub struct FaultProxy {
    inner: Arc<Running>,
}

/// What a proxy has done so far, from [`FaultProxy::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultStats {
    /// Connections accepted, including those closed at once by [`FaultProxy::refuse`].
    pub accepted: u64,
    /// Connections closed at once because [`FaultProxy::refuse`] was on.
    pub refused: u64,
    /// Connections cut by [`FaultProxy::cut_after_commit_every`] (not by [`FaultProxy::cut_all`]).
    pub cuts: u64,
    /// Proxied connections open now.
    pub live: u64,
    /// PostgreSQL `CommandComplete` messages for `INSERT`, `UPDATE` or `DELETE` seen since
    /// [`FaultProxy::cut_after_commit_every`] was last called, cut or not.
    pub writes_completed: u64,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1` (a port the system picks) forwarding to `target`.
    /// Must be called inside a tokio runtime, which then runs the proxy's tasks.
    ///
    /// # Errors
    /// When the listening socket cannot be bound.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(target));
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&state))).abort_handle();
        Ok(Self { inner: Arc::new(Running { addr, state, accept }) })
    }

    /// The address the proxy listens on; point clients here.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The server the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.inner.state.target
    }

    /// `url` with its host and port replaced by the proxy's, and, for a PostgreSQL URL,
    /// `sslmode=disable` (the proxy must read the messages in clear to find a write's
    /// reply). User, password, database and other parameters are kept.
    pub fn url_through(&self, url: &str) -> String {
        let parts = UrlParts::split(url);
        let mut out = format!("{}://{}{}{}", parts.scheme, parts.userinfo, self.addr(), parts.path);
        let mut params: Vec<&str> = parts.query.split('&').filter(|p| !p.is_empty()).collect();
        if parts.is_postgres() {
            params.retain(|p| !p.starts_with("sslmode="));
            params.push("sslmode=disable");
        }
        if !params.is_empty() {
            out.push('?');
            out.push_str(&params.join("&"));
        }
        out
    }

    /// PostgreSQL only: counts every `CommandComplete` whose tag starts with `INSERT`,
    /// `UPDATE` or `DELETE`, over all of the proxy's connections, from zero; each `n`th one
    /// is not delivered, and its connection is closed on both sides at once. The server
    /// has then finished the statement (and, outside a transaction, committed it) while
    /// the client never learns so. `0` turns the fault off.
    pub fn cut_after_commit_every(&self, n: u32) {
        let state = &self.inner.state;
        state.cut_every.store(n, Ordering::SeqCst);
        state.writes.store(0, Ordering::SeqCst);
    }

    /// While on, nothing is forwarded either way and sockets stay open: new connections
    /// are accepted and then hang, as behind a dropped route. Turning it off resumes
    /// forwarding on every connection still open, data held meanwhile included.
    pub fn blackhole(&self, on: bool) {
        self.inner.state.blackhole.send_replace(on);
    }

    /// Delay added before forwarding each chunk, in each direction (`Duration::ZERO`: none).
    pub fn latency(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.inner.state.latency_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Closes every proxied connection open now; later connections are forwarded as usual.
    pub fn cut_all(&self) {
        for task in self.inner.state.live_tasks() {
            task.abort();
        }
    }

    /// While on, new connections are accepted and closed at once, like a server that is
    /// down; connections already open are left alone.
    pub fn refuse(&self, on: bool) {
        self.inner.state.refuse.store(on, Ordering::SeqCst);
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> FaultStats {
        let state = &self.inner.state;
        FaultStats {
            accepted: state.accepted.load(Ordering::SeqCst),
            refused: state.refused.load(Ordering::SeqCst),
            cuts: state.cuts.load(Ordering::SeqCst),
            live: state.live().len() as u64,
            writes_completed: state.writes.load(Ordering::SeqCst),
        }
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr())
            .field("target", &self.target())
            .field("stats", &self.stats())
            .finish()
    }
}

/// The socket address a database URL points at (port 5432 or 3306 when it names none).
///
/// # Errors
/// When the URL names no TCP host (a Unix socket, a SQLite file) or the host does not resolve.
pub async fn url_target(url: &str) -> io::Result<SocketAddr> {
    let parts = UrlParts::split(url);
    let host = parts.host_port;
    if host.is_empty() || host.starts_with('%') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the URL names no TCP host"));
    }
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    };
    let default_port = if parts.is_postgres() { 5432 } else { 3306 };
    let spec = if has_port { host.to_owned() } else { format!("{host}:{default_port}") };
    tokio::net::lookup_host(spec)
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the URL's host did not resolve"))
}

/// The proxy's tasks; dropping the last clone of the proxy stops them.
struct Running {
    addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.accept.abort();
        // The flag stops an accept already in progress on another thread from spawning a
        // connection after the live ones were collected here.
        self.state.stopped.store(true, Ordering::SeqCst);
        for task in self.state.live_tasks() {
            task.abort();
        }
    }
}

/// What the accept loop and every connection share with the controls.
struct State {
    target: SocketAddr,
    cut_every: AtomicU32,
    writes: AtomicU64,
    latency_nanos: AtomicU64,
    refuse: AtomicBool,
    blackhole: watch::Sender<bool>,
    stopped: AtomicBool,
    accepted: AtomicU64,
    refused: AtomicU64,
    cuts: AtomicU64,
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, AbortHandle>>,
}

impl State {
    fn new(target: SocketAddr) -> Self {
        Self {
            target,
            cut_every: AtomicU32::new(0),
            writes: AtomicU64::new(0),
            latency_nanos: AtomicU64::new(0),
            refuse: AtomicBool::new(false),
            blackhole: watch::Sender::new(false),
            stopped: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<u64, AbortHandle>> {
        // A panic elsewhere must not turn every later control into a second panic.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live connections' handles, copied so that aborting happens outside the lock.
    fn live_tasks(&self) -> Vec<AbortHandle> {
        self.live().values().cloned().collect()
    }

    /// Counts one write's `CommandComplete`; whether this one is to be cut.
    fn count_write(&self) -> bool {
        let every = u64::from(self.cut_every.load(Ordering::SeqCst));
        let seen = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        every > 0 && seen.is_multiple_of(every)
    }

    /// Waits out the blackhole, then the added latency: what every chunk passes before
    /// it is forwarded.
    async fn gate(&self) {
        if *self.blackhole.borrow() {
            let mut on = self.blackhole.subscribe();
            // The sender lives as long as `self`, so the wait cannot fail.
            let _ = on.wait_for(|on| !*on).await;
        }
        let nanos = self.latency_nanos.load(Ordering::SeqCst);
        if nanos > 0 {
            tokio::time::sleep(Duration::from_nanos(nanos)).await;
        }
    }

    fn spawn_connection(self: &Arc<Self>, client: TcpStream) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        // The lock is held across the spawn so that a connection ending at once cannot
        // deregister itself before it is registered.
        let mut live = self.live();
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let registered = Registered { state: Arc::clone(self), id };
        let task = tokio::spawn(async move {
            serve(client, &registered.state).await;
            drop(registered);
        });
        live.insert(id, task.abort_handle());
    }
}

/// Removes a connection from the live set when its task ends, aborted or not.
struct Registered {
    state: Arc<State>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.state.live().remove(&self.id);
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Accept errors (out of file descriptors, a connection reset while queued) pass;
            // the pause keeps the loop from spinning meanwhile.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        if state.refuse.load(Ordering::SeqCst) {
            state.refused.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        state.spawn_connection(client);
    }
}

/// Why a pump stopped the whole connection: an I/O error or a cut.
struct Stopped;

const CHUNK: usize = 16 * 1024;

/// One proxied connection. Returning drops both sockets, which closes them together.
async fn serve(mut client: TcpStream, state: &State) {
    // A connection opened during a blackhole hangs like one to an unreachable host:
    // nothing reaches the server until the blackhole lifts.
    state.gate().await;
    let Ok(mut server) = TcpStream::connect(state.target).await else {
        return;
    };
    // Small protocol messages must not wait for Nagle's algorithm in the proxy when the
    // client and the server each turned it off.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let handshake = Handshake::default();
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    // The first pump to stop with an error or a cut ends the join, and with it both.
    let _ = tokio::try_join!(
        client_to_server(client_read, server_write, state, &handshake),
        server_to_client(server_read, client_write, state, &handshake),
    );
}

async fn client_to_server(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    state: &State,
    handshake: &Handshake,
) -> Result<(), Stopped> {
    let mut sniffer = StartupSniffer::default();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = from.read(&mut buf).await.map_err(|_| Stopped)?;
        if n == 0 {
            // A half-close passes through: the other direction may still carry replies.
            let _ = to.shutdown().await;
            return Ok(());
        }
        // Recorded before forwarding, so the server's answer cannot arrive first.
        sniffer.feed(&buf[..n], handshake);
        state.gate().await;
        to.write_all(&buf[..n]).await.map_err(|_| Stopped)?;
    }
}

async fn server_to_client(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    state: &State,
    handshake: &Handshake,
) -> Result<(), Stopped> {
    let mut parser = BackendParser::default();
    // Bytes read but not forwarded yet: the start of a message still being decided.
    let mut pending = Vec::with_capacity(CHUNK);
    let mut buf = vec![0; CHUNK];
    loop {
        let n = from.read(&mut buf).await.map_err(|_| Stopped)?;
        if n == 0 {
            to.write_all(&pending).await.map_err(|_| Stopped)?;
            let _ = to.shutdown().await;
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        let scan = parser.scan(&pending, handshake, || state.count_write());
        state.gate().await;
        match scan {
            Scan::Forward(k) => {
                to.write_all(&pending[..k]).await.map_err(|_| Stopped)?;
                pending.drain(..k);
            }
            Scan::Cut(k) => {
                // What came before the write's reply is delivered; the reply and
                // everything after it are not.
                let _ = to.write_all(&pending[..k]).await;
                state.cuts.fetch_add(1, Ordering::SeqCst);
                return Err(Stopped);
            }
        }
    }
}

/// What the client's first bytes said about the protocol, shared by a connection's two
/// directions.
#[derive(Default)]
struct Handshake {
    protocol: AtomicU8,
    /// Single-byte answers the server owes (one per SSLRequest or GSSENCRequest).
    answers_owed: AtomicU32,
}

// `Handshake::protocol` starts at 0: nothing recognised yet.
const PROTOCOL_POSTGRES: u8 = 1;
const PROTOCOL_OTHER: u8 = 2;

impl Handshake {
    fn is_postgres(&self) -> bool {
        self.protocol.load(Ordering::SeqCst) == PROTOCOL_POSTGRES
    }

    fn take_answer(&self) -> bool {
        self.answers_owed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Larger startup packets are refused by the server itself (`MAX_STARTUP_PACKET_LENGTH`).
const MAX_STARTUP: usize = 10_000;

/// Reads the client's untyped first messages (each a length and a code): SSLRequest and
/// GSSENCRequest, each answered by one untyped byte, then the StartupMessage (protocol
/// 3.x) or a CancelRequest, after which every message has a type byte. Anything else
/// (another protocol, or TLS sent at once) marks the connection as not PostgreSQL.
#[derive(Default)]
struct StartupSniffer {
    header: [u8; 8],
    have: usize,
    skip: usize,
    done: bool,
}

impl StartupSniffer {
    fn feed(&mut self, mut bytes: &[u8], handshake: &Handshake) {
        while !self.done && !bytes.is_empty() {
            if self.skip > 0 {
                let k = self.skip.min(bytes.len());
                self.skip -= k;
                bytes = &bytes[k..];
                continue;
            }
            let k = (8 - self.have).min(bytes.len());
            self.header[self.have..self.have + k].copy_from_slice(&bytes[..k]);
            self.have += k;
            bytes = &bytes[k..];
            if self.have < 8 {
                return;
            }
            self.have = 0;
            let [l0, l1, l2, l3, c0, c1, c2, c3] = self.header;
            let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
            let code = u32::from_be_bytes([c0, c1, c2, c3]);
            let sane = (8..=MAX_STARTUP).contains(&len);
            let protocol = match code {
                SSL_REQUEST | GSSENC_REQUEST if len == 8 => {
                    handshake.answers_owed.fetch_add(1, Ordering::SeqCst);
                    PROTOCOL_POSTGRES
                }
                CANCEL_REQUEST if sane => {
                    self.done = true;
                    PROTOCOL_POSTGRES
                }
                _ if sane && code >> 16 == 3 => {
                    self.done = true;
                    PROTOCOL_POSTGRES
                }
                _ => {
                    self.done = true;
                    PROTOCOL_OTHER
                }
            };
            handshake.protocol.store(protocol, Ordering::SeqCst);
            self.skip = len.saturating_sub(8);
        }
    }
}

/// What to do with the bytes read from the server and not yet forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Forward the first `n` bytes; keep the rest until more arrive.
    Forward(usize),
    /// Forward the first `n` bytes, then close the connection.
    Cut(usize),
}

/// Follows the server's messages (a type byte, then a big-endian length that counts
/// itself) across reads, without copying them.
#[derive(Default)]
struct BackendParser {
    state: ParseState,
    /// Bytes of the current message's body not seen yet; they pass as they come.
    body_left: usize,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ParseState {
    /// Nothing read from the server yet.
    #[default]
    Start,
    /// PostgreSQL messages in clear.
    Messages,
    /// Not PostgreSQL, or TLS: everything passes unread.
    Opaque,
}

/// The tags' common length: `INSERT`, `UPDATE`, `DELETE`.
const TAG_PREFIX: usize = 6;

impl BackendParser {
    /// Scans `buf`, which starts where the last forwarded byte ended. A message header
    /// (and a `CommandComplete`'s tag) cut by a read is held back until it is whole, so
    /// that a write's reply is either delivered whole or not at all; bodies pass as they
    /// come. `on_write` is called once per write's `CommandComplete` and says whether to
    /// cut before it.
    fn scan(
        &mut self,
        buf: &[u8],
        handshake: &Handshake,
        mut on_write: impl FnMut() -> bool,
    ) -> Scan {
        if self.state == ParseState::Start {
            // PostgreSQL servers never speak first, so bytes before any recognised client
            // message mean another protocol; holding them back could deadlock it.
            self.state =
                if handshake.is_postgres() { ParseState::Messages } else { ParseState::Opaque };
        }
        let mut pos = 0;
        loop {
            if self.state == ParseState::Opaque {
                return Scan::Forward(buf.len());
            }
            if self.body_left > 0 {
                let k = self.body_left.min(buf.len() - pos);
                pos += k;
                self.body_left -= k;
                if self.body_left > 0 {
                    return Scan::Forward(pos);
                }
            }
            let rest = &buf[pos..];
            let Some(&kind) = rest.first() else {
                return Scan::Forward(pos);
            };
            if handshake.take_answer() {
                // 'S' (SSL) or 'G' (GSS encryption) means encrypted bytes follow; 'N'
                // means the client goes on in clear with its StartupMessage.
                if kind == b'S' || kind == b'G' {
                    self.state = ParseState::Opaque;
                }
                pos += 1;
                continue;
            }
            let Some(&[l0, l1, l2, l3]) = rest.get(1..5) else {
                return Scan::Forward(pos);
            };
            let len = i32::from_be_bytes([l0, l1, l2, l3]);
            let Some(body) = usize::try_from(len).ok().and_then(|len| len.checked_sub(4)) else {
                // Not a message after all: stop reading rather than guess.
                self.state = ParseState::Opaque;
                continue;
            };
            if kind == b'C' {
                let Some(tag) = rest.get(5..5 + body.min(TAG_PREFIX)) else {
                    return Scan::Forward(pos);
                };
                if is_write_tag(tag) && on_write() {
                    return Scan::Cut(pos);
                }
            }
            pos += 5;
            self.body_left = body;
        }
    }
}

fn is_write_tag(tag: &[u8]) -> bool {
    matches!(tag, b"INSERT" | b"UPDATE" | b"DELETE")
}

/// A database URL cut where the proxy rewrites it.
struct UrlParts<'a> {
    scheme: &'a str,
    /// `user:password@`, or empty.
    userinfo: &'a str,
    host_port: &'a str,
    /// `/database`, or empty.
    path: &'a str,
    /// After `?`, or empty.
    query: &'a str,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Self {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(i) => authority.split_at(i + 1),
            None => ("", authority),
        };
        Self { scheme, userinfo, host_port, path, query }
    }

    fn is_postgres(&self) -> bool {
        matches!(self.scheme, "postgres" | "postgresql")
    }
}

#[cfg(test)]
mod tests;
