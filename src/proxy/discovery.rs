//! Finding the function pods: a [`Resolve`]r (DNS of the headless function
//! Service in a cluster, anything in tests) polled every second and right
//! after a connection failure, feeding the [`Pool`] of endpoints and their
//! connections.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::balance::Endpoints;

/// Re-resolution interval.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// Shortest gap between two look-ups asked for by failures.
pub const MIN_RESOLVE_GAP: Duration = Duration::from_millis(50);

/// Future of one look-up.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// A source of function endpoints.
pub trait Resolve: Send + Sync + 'static {
    /// The current endpoints.
    fn resolve(&self) -> ResolveFuture<'_>;
    /// What is resolved, for logs.
    fn describe(&self) -> String;
}

/// DNS look-up of `host:port` (the system resolver, as `getaddrinfo`):
/// the headless Service `<fn>.<ns>.svc.<cluster domain>` answers with one
/// address per ready pod.
#[derive(Clone, Debug)]
pub struct Dns {
    pub host: String,
    pub port: u16,
}

impl Dns {
    /// The function Service of `function` in `namespace`.
    pub fn function_service(
        function: &str,
        namespace: &str,
        cluster_domain: &str,
        port: u16,
    ) -> Self {
        Self {
            host: format!("{function}.{namespace}.svc.{cluster_domain}"),
            port,
        }
    }

    /// `HOST:PORT` (`[v6]:PORT` for IPv6 literals).
    pub fn parse(target: &str) -> Result<Self, String> {
        let (host, port) = target
            .rsplit_once(':')
            .ok_or_else(|| format!("{target:?} is not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{target:?}: {port:?} is not a port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{target:?} names no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl Resolve for Dns {
    fn resolve(&self) -> ResolveFuture<'_> {
        Box::pin(async move {
            let mut addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((self.host.as_str(), self.port))
                    .await?
                    .collect();
            addrs.sort();
            addrs.dedup();
            Ok(addrs)
        })
    }

    fn describe(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Several fixed targets, each looked up as [`Dns`]; the union of what
/// resolves (an error only when none does).
#[derive(Clone, Debug)]
pub struct Many(pub Vec<Dns>);

impl Resolve for Many {
    fn resolve(&self) -> ResolveFuture<'_> {
        Box::pin(async move {
            let mut all = Vec::new();
            let mut last_err = None;
            for d in &self.0 {
                match d.resolve().await {
                    Ok(a) => all.extend(a),
                    Err(e) => last_err = Some(e),
                }
            }
            match last_err {
                Some(e) if all.is_empty() => Err(e),
                _ => {
                    all.sort();
                    all.dedup();
                    Ok(all)
                }
            }
        })
    }

    fn describe(&self) -> String {
        self.0
            .iter()
            .map(Dns::describe)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A resolver whose answer the caller sets (tests, fixed targets).
#[derive(Clone, Debug)]
pub struct Fixed(Arc<Mutex<io::Result<Vec<SocketAddr>>>>);

impl Fixed {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Self(Arc::new(Mutex::new(Ok(addrs))))
    }

    /// What the next look-ups return.
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        *lock(&self.0) = Ok(addrs);
    }

    /// Make the next look-ups fail.
    pub fn fail(&self, message: &str) {
        *lock(&self.0) = Err(io::Error::other(message.to_owned()));
    }
}

impl Resolve for Fixed {
    fn resolve(&self) -> ResolveFuture<'_> {
        let answer = match &*lock(&self.0) {
            Ok(a) => Ok(a.clone()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        Box::pin(std::future::ready(answer))
    }

    fn describe(&self) -> String {
        "fixed endpoints".into()
    }
}

/// Known endpoints, one connection handle `C` each, and the signals the
/// delivery path and discovery exchange.
pub struct Pool<C> {
    inner: Mutex<Inner<C>>,
    connect: Box<dyn Fn(SocketAddr) -> C + Send + Sync>,
    generation: watch::Sender<u64>,
    refresh: Notify,
}

struct Inner<C> {
    endpoints: Endpoints,
    conns: HashMap<SocketAddr, C>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C: Clone> Pool<C> {
    /// `connect` makes the connection handle of a new endpoint (lazily
    /// connecting: it must not block).
    pub fn new(connect: impl Fn(SocketAddr) -> C + Send + Sync + 'static) -> Self {
        Self {
            inner: Mutex::new(Inner {
                endpoints: Endpoints::new(),
                conns: HashMap::new(),
            }),
            connect: Box::new(connect),
            generation: watch::channel(0).0,
            refresh: Notify::new(),
        }
    }

    /// Replaces the endpoint set; returns the number of endpoints.
    pub fn set(&self, addrs: &[SocketAddr]) -> usize {
        let mut inner = lock(&self.inner);
        let change = inner.endpoints.set(addrs);
        for addr in &change.removed {
            inner.conns.remove(addr);
        }
        for addr in &change.added {
            let conn = (self.connect)(*addr);
            inner.conns.insert(*addr, conn);
        }
        if !change.added.is_empty() || !change.removed.is_empty() {
            tracing::info!(added = ?change.added, removed = ?change.removed, "function endpoints changed");
        }
        let generation = inner.endpoints.generation();
        let len = inner.endpoints.len();
        drop(inner);
        self.generation.send_if_modified(|g| {
            let changed = *g != generation;
            *g = generation;
            changed
        });
        len
    }

    /// Picks an endpoint not in `exclude` and counts a request to it.
    pub fn pick(&self, exclude: &[SocketAddr], now: Instant) -> Option<(SocketAddr, C)> {
        let mut inner = lock(&self.inner);
        let addr = inner
            .endpoints
            .pick(exclude, now, |n| fastrand::usize(..n))?;
        let conn = inner.conns.get(&addr)?.clone();
        inner.endpoints.start(addr);
        Some((addr, conn))
    }

    /// A request counted by [`Pool::pick`] ended.
    pub fn finish(&self, addr: SocketAddr) {
        lock(&self.inner).endpoints.finish(addr);
    }

    /// The connection to `addr` failed: leave it out for a while and look
    /// the Service up again now.
    pub fn failed(&self, addr: SocketAddr, now: Instant) {
        lock(&self.inner).endpoints.eject(addr, now);
        self.refresh.notify_one();
    }

    /// When the earliest ejection ends.
    pub fn next_unejection(&self, now: Instant) -> Option<Instant> {
        lock(&self.inner).endpoints.next_unejection(now)
    }

    /// Number of listed endpoints.
    pub fn len(&self) -> usize {
        lock(&self.inner).endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests in flight to `addr`.
    pub fn outstanding(&self, addr: SocketAddr) -> usize {
        lock(&self.inner).endpoints.outstanding(addr)
    }

    /// Changes whenever the endpoint set changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// Keeps `pool` up to date from `resolver` until `stop` completes: a look-up
/// every [`RESOLVE_EVERY`] and one as soon as a delivery reports a failed
/// connection. A failed look-up keeps the last known endpoints (a DNS hiccup
/// must not stop deliveries to healthy pods; dead ones are ejected by the
/// delivery path).
pub async fn run<C: Clone>(
    resolver: Arc<dyn Resolve>,
    pool: Arc<Pool<C>>,
    on_resolved: impl Fn(Result<usize, &io::Error>),
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut failing = false;
    loop {
        match resolver.resolve().await {
            Ok(addrs) => {
                let n = pool.set(&addrs);
                if failing {
                    tracing::info!(target = %resolver.describe(), endpoints = n, "function Service resolves again");
                    failing = false;
                }
                on_resolved(Ok(n));
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(target = %resolver.describe(), error = %e, "cannot resolve the function Service; keeping the last known endpoints");
                    failing = true;
                }
                on_resolved(Err(&e));
            }
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(RESOLVE_EVERY) => {}
            () = pool.refresh.notified() => {
                tokio::time::sleep(MIN_RESOLVE_GAP).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn parses_targets() {
        let d = Dns::parse("fn.ns.svc.cluster.local:8080").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("fn.ns.svc.cluster.local", 8080));
        let d = Dns::parse("[::1]:9000").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("::1", 9000));
        assert!(Dns::parse("nohost").is_err());
        assert!(Dns::parse(":80").is_err());
        assert!(Dns::parse("h:x").is_err());
        let d = Dns::function_service("f", "ns", "example.org", 81);
        assert_eq!(d.describe(), "f.ns.svc.example.org:81");
    }

    #[tokio::test]
    async fn dns_resolves_literals_and_localhost() {
        let d = Dns::parse("127.0.0.1:81").unwrap();
        assert_eq!(d.resolve().await.unwrap(), [addr(81)]);
        let many = Many(vec![d.clone(), Dns::parse("127.0.0.1:82").unwrap(), d]);
        assert_eq!(many.resolve().await.unwrap(), [addr(81), addr(82)]);
        assert_eq!(many.describe(), "127.0.0.1:81,127.0.0.1:82,127.0.0.1:81");
    }

    #[test]
    fn pool_keeps_one_connection_per_endpoint() {
        let made = Arc::new(Mutex::new(Vec::new()));
        let m = made.clone();
        let pool = Pool::new(move |a| {
            lock(&m).push(a);
            a.port()
        });
        let mut rx = pool.subscribe();
        assert_eq!(pool.set(&[addr(1), addr(2)]), 2);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        pool.set(&[addr(2), addr(1)]);
        assert!(!rx.has_changed().unwrap());
        pool.set(&[addr(2)]);
        pool.set(&[addr(2), addr(1)]);
        // 1 was dropped and made again; 2 was made once.
        assert_eq!(*lock(&made), [addr(1), addr(2), addr(1)]);
        let (a, conn) = pool.pick(&[addr(1)], Instant::now()).unwrap();
        assert_eq!((a, conn), (addr(2), 2));
        assert_eq!(pool.outstanding(addr(2)), 1);
        pool.finish(addr(2));
        assert_eq!(pool.outstanding(addr(2)), 0);
        let now = Instant::now();
        pool.failed(addr(2), now);
        assert_eq!(pool.pick(&[addr(1)], now), None);
        assert!(pool.next_unejection(now).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn discovery_follows_the_resolver_and_wakes_on_failure() {
        let fixed = Fixed::new(vec![addr(1)]);
        let pool = Arc::new(Pool::new(|a: SocketAddr| a.port()));
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            Arc::new(fixed.clone()),
            pool.clone(),
            |_| {},
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pool.len(), 1);
        fixed.set(vec![addr(1), addr(2)]);
        // A failure asks for a look-up before the next period.
        pool.failed(addr(1), Instant::now());
        tokio::time::sleep(MIN_RESOLVE_GAP * 2).await;
        assert_eq!(pool.len(), 2);
        // A failing look-up keeps what is known.
        fixed.fail("SERVFAIL");
        tokio::time::sleep(RESOLVE_EVERY * 2).await;
        assert_eq!(pool.len(), 2);
        fixed.set(vec![]);
        tokio::time::sleep(RESOLVE_EVERY * 2).await;
        assert!(pool.is_empty());
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
