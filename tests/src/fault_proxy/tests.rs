//! Unit tests of the fault proxy: each fault against an echo server, and the PostgreSQL-aware cut against a real server.

use std::time::Instant;

use super::*;

/// A server that sends back whatever it reads, then half-closes when the client does.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

async fn echo_proxy() -> FaultProxy {
    FaultProxy::start(echo_server().await).await.unwrap()
}

async fn round_trip(socket: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
    socket.write_all(bytes).await.unwrap();
    let mut back = vec![0; bytes.len()];
    socket.read_exact(&mut back).await.unwrap();
    back
}

/// Whether the peer closed `socket` (end of stream or a reset) within two seconds.
async fn closed(socket: &mut TcpStream) -> bool {
    let mut byte = [0];
    let read = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut byte)).await;
    matches!(read, Ok(Ok(0) | Err(_)))
}

/// Waits (up to two seconds) until `check` holds: aborted tasks end asynchronously.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

// These tests run on the real clock, briefly: real sockets and tokio's paused clock do
// not mix (the paused clock jumps ahead whenever the runtime waits on the network).

#[tokio::test]
async fn forwards_both_ways_and_passes_a_half_close() {
    let proxy = echo_proxy().await;
    let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
    socket.write_all(b"hello through the proxy").await.unwrap();
    socket.shutdown().await.unwrap();
    let mut back = Vec::new();
    socket.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello through the proxy");
    assert!(eventually(|| proxy.stats().live == 0).await, "{:?}", proxy.stats());
    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.refused, stats.cuts), (1, 0, 0), "{stats:?}");
}

#[tokio::test]
async fn latency_delays_each_direction() {
    let proxy = echo_proxy().await;
    let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
    proxy.latency(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(round_trip(&mut socket, b"ping").await, b"ping");
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    proxy.latency(Duration::ZERO);
    let started = Instant::now();
    round_trip(&mut socket, b"ping").await;
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_blackhole_holds_traffic_and_lifting_it_delivers() {
    let proxy = echo_proxy().await;
    let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut before, b"up").await;
    proxy.blackhole(true);
    before.write_all(b"held").await.unwrap();
    // A connection opened during the blackhole is accepted, then hangs.
    let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
    during.write_all(b"also held").await.unwrap();
    let mut buf = [0; 16];
    let silent = Duration::from_millis(300);
    assert!(tokio::time::timeout(silent, before.read(&mut buf)).await.is_err());
    assert!(tokio::time::timeout(silent, during.read(&mut buf)).await.is_err());
    proxy.blackhole(false);
    let mut held = [0; 4];
    before.read_exact(&mut held).await.unwrap();
    assert_eq!(&held, b"held");
    let mut also = [0; 9];
    during.read_exact(&mut also).await.unwrap();
    assert_eq!(&also, b"also held");
    assert_eq!(proxy.stats().live, 2);
}

#[tokio::test]
async fn refusing_closes_new_connections_only() {
    let proxy = echo_proxy().await;
    let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut before, b"up").await;
    proxy.refuse(true);
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(closed(&mut refused).await);
    assert_eq!(round_trip(&mut before, b"still up").await, b"still up");
    proxy.refuse(false);
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut after, b"back").await;
    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.refused), (3, 1), "{stats:?}");
}

#[tokio::test]
async fn cut_all_closes_every_live_connection() {
    let proxy = echo_proxy().await;
    let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut a, b"a").await;
    round_trip(&mut b, b"b").await;
    proxy.cut_all();
    assert!(closed(&mut a).await);
    assert!(closed(&mut b).await);
    assert!(eventually(|| proxy.stats().live == 0).await, "{:?}", proxy.stats());
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut c, b"new connections still pass").await;
}

#[tokio::test]
async fn dropping_the_proxy_stops_it() {
    let proxy = echo_proxy().await;
    let addr = proxy.addr();
    let mut socket = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut socket, b"up").await;
    let clone = proxy.clone();
    drop(proxy);
    round_trip(&mut socket, b"a clone keeps it running").await;
    drop(clone);
    assert!(closed(&mut socket).await);
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener outlived the proxy");
}

#[test]
fn urls_are_rewritten_to_the_proxy() {
    let parts = UrlParts::split("postgres://u:p%40ss@db.example:6543/app?sslmode=require&x=1");
    assert_eq!(parts.userinfo, "u:p%40ss@");
    assert_eq!(parts.host_port, "db.example:6543");
    assert_eq!((parts.path, parts.query), ("/app", "sslmode=require&x=1"));
    let parts = UrlParts::split("mysql://root@[::1]/test");
    assert_eq!((parts.host_port, parts.path, parts.query), ("[::1]", "/test", ""));
}

#[tokio::test]
async fn url_through_keeps_everything_but_the_address() {
    let proxy = echo_proxy().await;
    let addr = proxy.addr();
    assert_eq!(
        proxy.url_through("postgres://u:pw@10.0.0.1:5432/test?sslmode=prefer&application_name=a"),
        format!("postgres://u:pw@{addr}/test?application_name=a&sslmode=disable")
    );
    assert_eq!(
        proxy.url_through("postgresql://localhost/test"),
        format!("postgresql://{addr}/test?sslmode=disable")
    );
    assert_eq!(proxy.url_through("mysql://root@h/test"), format!("mysql://root@{addr}/test"));
    let target = url_target("postgres://postgres@127.0.0.1/test").await.unwrap();
    assert_eq!(target, "127.0.0.1:5432".parse().unwrap());
    assert!(url_target("postgres:///test?host=/run/postgresql").await.is_err());
}

fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A server's side of a session: authentication and parameters, then a prepared
/// INSERT, a SELECT with a row, an UPDATE and a DELETE, as sqlx and tokio-postgres
/// receive them (BindComplete, rows, CommandComplete, CloseComplete, ReadyForQuery).
/// Returns the stream and where each write's CommandComplete starts.
fn session() -> (Vec<u8>, Vec<usize>) {
    let mut s = Vec::new();
    let mut writes = Vec::new();
    s.extend(msg(b'R', &0i32.to_be_bytes()));
    s.extend(msg(b'S', b"server_version\0 17.2\0"));
    s.extend(msg(b'K', &[0, 0, 0, 7, 1, 2, 3, 4]));
    s.extend(msg(b'Z', b"I"));
    s.extend(msg(b'1', b""));
    s.extend(msg(b't', &[0, 1, 0, 0, 0, 25]));
    s.extend(msg(b'n', b""));
    s.extend(msg(b'Z', b"I"));
    for (rows, tag) in [
        (0, &b"INSERT 0 1\0"[..]),
        (1, b"SELECT 1\0"),
        (0, b"UPDATE 3\0"),
        (2, b"DELETE 2\0"),
        (0, b"BEGIN\0"),
    ] {
        s.extend(msg(b'2', b""));
        for _ in 0..rows {
            // A DataRow whose value contains a CommandComplete-looking byte run.
            s.extend(msg(b'D', b"\0\x01\0\0\0\x0bCxxxxINSERT"));
        }
        if is_write_tag(&tag[..TAG_PREFIX]) {
            writes.push(s.len());
        }
        s.extend(msg(b'C', tag));
        s.extend(msg(b'3', b""));
        s.extend(msg(b'Z', b"I"));
    }
    (s, writes)
}

fn postgres() -> Handshake {
    let handshake = Handshake::default();
    handshake.protocol.store(PROTOCOL_POSTGRES, Ordering::SeqCst);
    handshake
}

/// Feeds `stream` to a parser in reads cut at `splits`, as the pump does; returns what
/// was forwarded, how many writes were counted, and whether the connection was cut.
fn pump(
    stream: &[u8],
    splits: &[usize],
    handshake: &Handshake,
    cut_at: u32,
) -> (Vec<u8>, u32, bool) {
    let mut parser = BackendParser::default();
    let (mut pending, mut forwarded, mut seen) = (Vec::new(), Vec::new(), 0);
    let mut from = 0;
    for &to in splits.iter().chain([&stream.len()]) {
        pending.extend_from_slice(&stream[from..to]);
        from = to;
        let scan = parser.scan(&pending, handshake, || {
            seen += 1;
            seen == cut_at
        });
        match scan {
            Scan::Forward(k) => {
                forwarded.extend(pending.drain(..k));
            }
            Scan::Cut(k) => {
                forwarded.extend_from_slice(&pending[..k]);
                return (forwarded, seen, true);
            }
        }
    }
    (forwarded, seen, false)
}

/// Every way of cutting the stream into reads: at each single point, and into
/// fixed-size chunks of every size.
fn every_split(len: usize) -> Vec<Vec<usize>> {
    let single = (1..len).map(|i| vec![i]);
    let chunks = (1..8).map(|size| (size..len).step_by(size).collect());
    single.chain(chunks).collect()
}

#[test]
fn the_parser_counts_writes_whatever_the_reads() {
    let (stream, writes) = session();
    for splits in every_split(stream.len()) {
        let (forwarded, seen, cut) = pump(&stream, &splits, &postgres(), 0);
        assert_eq!((forwarded.len(), seen, cut), (stream.len(), 3, false), "{splits:?}");
    }
    assert_eq!(writes.len(), 3);
}

#[test]
fn the_parser_cuts_just_before_the_nth_write_reply() {
    let (stream, writes) = session();
    for (n, &at) in writes.iter().enumerate() {
        let n = u32::try_from(n).unwrap() + 1;
        for splits in every_split(stream.len()) {
            let (forwarded, seen, cut) = pump(&stream, &splits, &postgres(), n);
            assert!(cut, "{splits:?}");
            assert_eq!(seen, n);
            assert_eq!(forwarded, stream[..at], "write {n}, reads cut at {splits:?}");
        }
    }
}

#[test]
fn the_parser_reads_past_a_refused_ssl_request_and_not_into_tls() {
    let (stream, _) = session();
    let mut refused = b"N".to_vec();
    refused.extend_from_slice(&stream);
    for splits in every_split(refused.len()) {
        let handshake = postgres();
        handshake.answers_owed.store(1, Ordering::SeqCst);
        let (forwarded, seen, _) = pump(&refused, &splits, &handshake, 0);
        assert_eq!((forwarded.len(), seen), (refused.len(), 3), "{splits:?}");
    }
    let mut tls = b"S".to_vec();
    tls.extend_from_slice(&stream);
    let handshake = postgres();
    handshake.answers_owed.store(1, Ordering::SeqCst);
    assert_eq!(pump(&tls, &[3, 40], &handshake, 1), (tls.clone(), 0, false));
}

#[test]
fn another_protocol_passes_unread_and_unheld() {
    let handshake = Handshake::default();
    let mut parser = BackendParser::default();
    // A partial "header" would be held back if it were read as PostgreSQL.
    assert_eq!(parser.scan(b"C\0\0", &handshake, || true), Scan::Forward(3));
}

#[test]
fn the_sniffer_recognises_postgres_startups() {
    let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut startup = vec![0, 0, 0, 23, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0postgres\0\0");
    let mut first = ssl.to_vec();
    first.extend_from_slice(&startup);
    for split in 1..first.len() {
        let (handshake, mut sniffer) = (Handshake::default(), StartupSniffer::default());
        sniffer.feed(&first[..split], &handshake);
        sniffer.feed(&first[split..], &handshake);
        sniffer.feed(b"Q\0\0\0\x0dSELECT 1\0", &handshake);
        assert!(handshake.is_postgres() && sniffer.done, "split at {split}");
        assert_eq!(handshake.answers_owed.load(Ordering::SeqCst), 1);
    }
    for other in [&b"hello world"[..], &[0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc]] {
        let (handshake, mut sniffer) = (Handshake::default(), StartupSniffer::default());
        sniffer.feed(other, &handshake);
        assert_eq!(handshake.protocol.load(Ordering::SeqCst), PROTOCOL_OTHER);
    }
}

/// The cut against a real PostgreSQL: the write's reply is lost, yet the row is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_postgres_write_is_committed_and_its_reply_lost() {
    use ucm_kernel::{ConnectionManagerProtocol, ConnectionMode, DatabaseKind, ManagerMode};
    let Some(target) = crate::Target::find(DatabaseKind::Postgres) else {
        return;
    };
    let pool = |app: &str| {
        ucm_kernel::PoolConfiguration::builder(ManagerMode::AsyncModern)
            .pool_size(1)
            .max_overflow(0)
            .application_name(app)
            .build()
            .unwrap()
    };
    let config = target.config(ManagerMode::AsyncModern, pool("ucm_t_proxy_direct"));
    let direct = ucm_sqlx::SqlxManager::connect(config).await.unwrap();
    let table = crate::unique_table("proxy");
    let rw = ConnectionMode::ReadWrite;
    direct.execute(rw, &format!("CREATE TABLE {table} (id INT PRIMARY KEY)"), &[]).await.unwrap();

    let proxy = FaultProxy::start(url_target(&target.url).await.unwrap()).await.unwrap();
    proxy.cut_after_commit_every(2);
    let via = crate::Target { kind: target.kind, url: proxy.url_through(&target.url) };
    let config = via.config(ManagerMode::AsyncModern, pool("ucm_t_proxy"));
    let proxied = ucm_sqlx::SqlxManager::connect(config).await.unwrap();
    let insert = format!("INSERT INTO {table} (id) VALUES ($1)");
    let first = proxied.execute(rw, &insert, &[1.into()]).await;
    let second = proxied.execute(rw, &insert, &[2.into()]).await;
    let select = proxied.fetch_all(rw, "SELECT 1 AS one", &[]).await;
    let stats = proxy.stats();
    let rows =
        direct.fetch_all(rw, &format!("SELECT id FROM {table} ORDER BY id"), &[]).await.unwrap();
    direct.execute(rw, &format!("DROP TABLE {table}"), &[]).await.unwrap();

    assert_eq!(first.unwrap(), 1);
    assert!(second.is_err(), "the second write's reply was to be lost");
    assert!(select.is_ok(), "a new connection goes through: {select:?}");
    assert_eq!((stats.cuts, stats.writes_completed), (1, 2), "{stats:?}");
    let ids: Vec<i64> = rows.iter().map(|r| r.try_get("id").unwrap()).collect();
    assert_eq!(ids, [1, 2], "the server committed the write whose reply was cut");
}
