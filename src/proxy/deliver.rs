//! Delivery of one event to one function pod, and the acknowledgement rules:
//!
//! - the function answered (success or error): that answer is the result,
//!   never retried here (what the function acknowledged stays acknowledged;
//!   what it rejected goes back to daprd, whose broker redelivers);
//! - the request never got an answer because the connection failed
//!   (refused, reset, pod gone): the endpoint is ejected for a moment,
//!   discovery looks again, and the event goes to another pod;
//! - no pod to send to: wait for one (discovery, the end of an ejection)
//!   up to the event timeout, then fail. Nothing is acknowledged that no
//!   function saw.
//!
//! The [`Gate`] bounds how many events are in flight towards functions
//! (`--max-in-flight`); callers beyond that wait, which is backpressure to
//! daprd. It also refuses new events once draining started.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::discovery::Pool;
use super::metrics::ProxyMetrics;

/// Pause before trying endpoints again that already failed this event.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The outcome of one attempt on one endpoint.
pub enum Attempt<T> {
    /// The function answered (whatever it said).
    Answered(T),
    /// No answer came back: the connection failed. The reason is logged.
    NotDelivered(String),
}

/// Why an event was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no function pod answered within {timeout:?} (tried {tried:?})")]
    Timeout {
        timeout: Duration,
        tried: Vec<SocketAddr>,
    },
    #[error("the proxy is shutting down")]
    Draining,
}

/// What an event is, for logs.
#[derive(Clone, Copy, Debug)]
pub struct EventInfo<'a> {
    pub kind: &'static str,
    pub id: &'a str,
}

/// Delivery settings and shared state.
pub struct Deliverer<C> {
    pub pool: Arc<Pool<C>>,
    pub gate: Gate,
    pub metrics: Arc<ProxyMetrics>,
    /// How long an event waits for a function pod.
    pub event_timeout: Duration,
}

impl<C: Clone> Deliverer<C> {
    /// Delivers one event: takes an in-flight slot (waiting for one), then
    /// runs `attempt` against endpoints until one answers or the event
    /// timeout passes without any pod to send to. Returns the answer and
    /// the endpoint that gave it.
    pub async fn deliver<T, F, Fut>(
        &self,
        event: EventInfo<'_>,
        mut attempt: F,
    ) -> Result<(T, SocketAddr), DeliveryError>
    where
        F: FnMut(C, SocketAddr) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let _slot = self.gate.enter().await?;
        self.metrics.in_flight.inc();
        let _in_flight = OnDrop(|| {
            self.metrics.in_flight.dec();
        });
        let deadline = Instant::now() + self.event_timeout;
        let mut tried: Vec<SocketAddr> = Vec::new();
        // Every pod this event failed on, for the error.
        let mut failed_on: Vec<SocketAddr> = Vec::new();
        let mut changes = self.pool.subscribe();
        loop {
            let now = Instant::now();
            if let Some((addr, conn)) = self.pool.pick(&tried, now.into_std()) {
                let _counted = OnDrop(|| self.pool.finish(addr));
                match attempt(conn, addr).await {
                    Attempt::Answered(answer) => return Ok((answer, addr)),
                    Attempt::NotDelivered(reason) => {
                        tracing::warn!(
                            event_id = event.id,
                            kind = event.kind,
                            pod = %addr,
                            error = %reason,
                            "delivery failed; trying another pod"
                        );
                        self.pool.failed(addr, Instant::now().into_std());
                        self.metrics.retries.inc();
                        tried.push(addr);
                        if !failed_on.contains(&addr) {
                            failed_on.push(addr);
                        }
                        continue;
                    }
                }
            }
            // Nothing to send to: wait for discovery, the end of an
            // ejection, or a pause before trying failed pods again.
            if now >= deadline {
                return Err(DeliveryError::Timeout {
                    timeout: self.event_timeout,
                    tried: failed_on,
                });
            }
            let mut wake = deadline;
            if !tried.is_empty() {
                wake = wake.min(now + RETRY_PAUSE);
            }
            if let Some(t) = self.pool.next_unejection(now.into_std()) {
                wake = wake.min(Instant::from_std(t));
            }
            changes.mark_unchanged();
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
            // Failed pods may be back: give them another chance (they stay
            // ejected for a moment, so this does not spin).
            tried.clear();
        }
    }
}

/// Runs a closure when dropped (also when the delivery future is dropped
/// because daprd gave up).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// The in-flight bound and the drain switch.
#[derive(Clone)]
pub struct Gate {
    slots: Arc<Semaphore>,
    max: usize,
    draining: Arc<AtomicBool>,
}

impl Gate {
    pub fn new(max_in_flight: usize) -> Self {
        let max = max_in_flight.max(1);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Waits for an in-flight slot; fails once draining started.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, DeliveryError> {
        if self.is_draining() {
            return Err(DeliveryError::Draining);
        }
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DeliveryError::Draining)
    }

    /// Stop taking new events (waiting ones are refused too).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.slots.close();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Events holding a slot.
    pub fn in_flight(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Waits until no event is in flight.
    pub async fn idle(&self) {
        while self.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn deliverer(addrs: &[u16], timeout: Duration) -> Deliverer<u16> {
        let pool = Arc::new(Pool::new(|a: SocketAddr| a.port()));
        pool.set(&addrs.iter().map(|p| addr(*p)).collect::<Vec<_>>());
        Deliverer {
            pool,
            gate: Gate::new(4),
            metrics: Arc::new(ProxyMetrics::new()),
            event_timeout: timeout,
        }
    }

    const EV: EventInfo<'static> = EventInfo {
        kind: "binding",
        id: "e1",
    };

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_final_even_an_error() {
        let d = deliverer(&[1, 2], Duration::from_secs(5));
        let mut calls = 0;
        let got = d
            .deliver(EV, |_, _| {
                calls += 1;
                async { Attempt::Answered(Err::<(), _>("function error")) }
            })
            .await
            .unwrap();
        assert!(got.0.is_err());
        assert_eq!(calls, 1, "a function's answer is never retried");
        assert_eq!(d.gate.in_flight(), 0);
        assert_eq!(d.pool.outstanding(got.1), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn connection_failure_moves_to_another_pod() {
        let d = deliverer(&[1, 2, 3], Duration::from_secs(5));
        let mut seen = Vec::new();
        let (_, by) = d
            .deliver(EV, |port, _| {
                seen.push(port);
                let down = seen.len() < 3;
                async move {
                    if down {
                        Attempt::NotDelivered("refused".into())
                    } else {
                        Attempt::Answered(())
                    }
                }
            })
            .await
            .unwrap();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3, "each pod tried once: {seen:?}");
        assert_eq!(d.metrics.retries.get(), 2);
        assert!(seen.contains(&by.port()));
    }

    #[tokio::test(start_paused = true)]
    async fn no_pod_waits_then_fails() {
        let d = deliverer(&[], Duration::from_secs(3));
        let start = Instant::now();
        let err = d
            .deliver(EV, |_, _| async { Attempt::Answered(()) })
            .await
            .unwrap_err();
        assert!(matches!(err, DeliveryError::Timeout { .. }));
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_that_appears_gets_the_waiting_event() {
        let d = Arc::new(deliverer(&[], Duration::from_secs(60)));
        let d2 = d.clone();
        let task = tokio::spawn(async move {
            d2.deliver(EV, |port, _| async move { Attempt::Answered(port) })
                .await
                .map(|(p, _)| p)
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!task.is_finished());
        d.pool.set(&[addr(7)]);
        assert_eq!(task.await.unwrap().unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn all_down_then_back() {
        // The only pod refuses for a while, then answers: the event waits
        // (retrying after each ejection) instead of failing.
        let d = deliverer(&[1], Duration::from_secs(10));
        let start = Instant::now();
        let (_, _) = d
            .deliver(EV, |_, _| {
                let up = start.elapsed() > Duration::from_secs(4);
                async move {
                    if up {
                        Attempt::Answered(())
                    } else {
                        Attempt::NotDelivered("refused".into())
                    }
                }
            })
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_secs(4));
        // Not hammered: about one attempt per ejection period.
        assert!(d.metrics.retries.get() <= 6, "{}", d.metrics.retries.get());
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_is_bounded_and_draining_refuses() {
        let d = Arc::new(deliverer(&[1], Duration::from_secs(60)));
        let release = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (d, release) = (d.clone(), release.clone());
            tasks.push(tokio::spawn(async move {
                d.deliver(EV, |_, _| {
                    let release = release.clone();
                    async move {
                        release.notified().await;
                        Attempt::Answered(())
                    }
                })
                .await
                .map(|_| ())
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(d.gate.in_flight(), 4);
        assert_eq!(d.pool.outstanding(addr(1)), 4, "two wait for a slot");
        // Draining: the two waiting are refused, the four running finish.
        d.gate.drain();
        assert!(matches!(
            d.deliver(EV, |_, _| async { Attempt::Answered(()) }).await,
            Err(DeliveryError::Draining)
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        for _ in 0..4 {
            release.notify_one();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut ok = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(DeliveryError::Draining) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((ok, refused), (4, 2));
        d.gate.idle().await;
        assert_eq!(d.gate.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_canceled_delivery_releases_its_slot_and_count() {
        let d = Arc::new(deliverer(&[1], Duration::from_secs(60)));
        let d2 = d.clone();
        let task = tokio::spawn(async move {
            d2.deliver(EV, |_, _| async {
                std::future::pending::<()>().await;
                Attempt::Answered(())
            })
            .await
            .map(|_| ())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(d.pool.outstanding(addr(1)), 1);
        task.abort();
        let _ = task.await;
        assert_eq!(d.pool.outstanding(addr(1)), 0);
        assert_eq!(d.gate.in_flight(), 0);
        assert_eq!(d.metrics.in_flight.get(), 0);
    }
}
