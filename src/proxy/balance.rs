//! The set of known function endpoints and the choice among them: least
//! outstanding requests by power of two choices (pick two endpoints at
//! random, send to the one with fewer requests in flight). Pure: the caller
//! brings the clock and the random numbers.
//!
//! tower's `balance::p2c` is not used: it balances a `Discover` stream of
//! services and fails or waits inside `poll_ready`, while the proxy needs,
//! per event, "any endpoint but the ones this event already failed on",
//! a wait bounded by the event timeout when there is none, and ejection of
//! an endpoint whose connection failed until discovery lists it again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long an endpoint whose connection failed is left out.
pub const EJECT_FOR: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
struct Slot {
    addr: SocketAddr,
    outstanding: usize,
    ejected_until: Option<Instant>,
}

/// Known endpoints with their outstanding request counts.
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    slots: Vec<Slot>,
    /// Counts of endpoints no longer listed whose requests still run.
    gone: HashMap<SocketAddr, usize>,
    /// Bumped on every change of the listed set.
    generation: u64,
}

/// What [`Endpoints::set`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
}

impl Endpoints {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the listed endpoints with `addrs` (from discovery). Counts of
    /// endpoints that stay are kept; an endpoint listed again is no longer
    /// ejected only once its ejection has run out.
    pub fn set(&mut self, addrs: &[SocketAddr]) -> Change {
        let mut change = Change::default();
        let mut next: Vec<Slot> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if next.iter().any(|s| s.addr == *addr) {
                continue;
            }
            match self.slots.iter().position(|s| s.addr == *addr) {
                Some(i) => next.push(self.slots[i].clone()),
                None => {
                    change.added.push(*addr);
                    next.push(Slot {
                        addr: *addr,
                        outstanding: self.gone.remove(addr).unwrap_or(0),
                        ejected_until: None,
                    });
                }
            }
        }
        for slot in &self.slots {
            if !next.iter().any(|s| s.addr == slot.addr) {
                change.removed.push(slot.addr);
                if slot.outstanding > 0 {
                    self.gone.insert(slot.addr, slot.outstanding);
                }
            }
        }
        self.slots = next;
        if !change.added.is_empty() || !change.removed.is_empty() {
            self.generation += 1;
        }
        change
    }

    /// Listed endpoints.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.slots.iter().map(|s| s.addr)
    }

    /// Number of listed endpoints.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Changes whenever the listed set changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Requests in flight to `addr`.
    pub fn outstanding(&self, addr: SocketAddr) -> usize {
        self.slots
            .iter()
            .find(|s| s.addr == addr)
            .map(|s| s.outstanding)
            .or_else(|| self.gone.get(&addr).copied())
            .unwrap_or(0)
    }

    /// Picks an endpoint not in `exclude` and not ejected at `now`, by power
    /// of two choices over `rand` (any source of uniform random numbers:
    /// `rand(n)` returns a value in `0..n`). Returns `None` when there is
    /// no candidate.
    pub fn pick(
        &self,
        exclude: &[SocketAddr],
        now: Instant,
        mut rand: impl FnMut(usize) -> usize,
    ) -> Option<SocketAddr> {
        let candidates: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| !exclude.contains(&s.addr))
            .filter(|s| s.ejected_until.is_none_or(|t| t <= now))
            .collect();
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0].addr),
            n => {
                let a = rand(n);
                let mut b = rand(n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (candidates[a], candidates[b]);
                Some(if b.outstanding < a.outstanding {
                    b.addr
                } else {
                    a.addr
                })
            }
        }
    }

    /// A request to `addr` starts.
    pub fn start(&mut self, addr: SocketAddr) {
        match self.slots.iter_mut().find(|s| s.addr == addr) {
            Some(slot) => slot.outstanding += 1,
            None => *self.gone.entry(addr).or_default() += 1,
        }
    }

    /// A request to `addr` ended (answered or not).
    pub fn finish(&mut self, addr: SocketAddr) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.addr == addr) {
            slot.outstanding = slot.outstanding.saturating_sub(1);
        } else if let Some(n) = self.gone.get_mut(&addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.gone.remove(&addr);
            }
        }
    }

    /// The connection to `addr` failed: leave it out until `now + EJECT_FOR`.
    pub fn eject(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.addr == addr) {
            slot.ejected_until = Some(now + EJECT_FOR);
        }
    }

    /// Number of listed endpoints not ejected at `now`.
    pub fn available(&self, now: Instant) -> usize {
        self.slots
            .iter()
            .filter(|s| s.ejected_until.is_none_or(|t| t <= now))
            .count()
    }

    /// When the earliest ejection ends, if any endpoint is ejected at `now`.
    pub fn next_unejection(&self, now: Instant) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.ejected_until)
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn set(ports: &[u16]) -> Endpoints {
        let mut e = Endpoints::new();
        e.set(&ports.iter().map(|p| addr(*p)).collect::<Vec<_>>());
        e
    }

    /// A deterministic "random" source returning the given values in turn.
    fn seq(values: &'static [usize]) -> impl FnMut(usize) -> usize {
        let mut i = 0;
        move |n| {
            let v = values[i % values.len()] % n;
            i += 1;
            v
        }
    }

    #[test]
    fn empty_set_picks_nothing() {
        let e = Endpoints::new();
        assert_eq!(e.pick(&[], Instant::now(), seq(&[0])), None);
        assert!(e.is_empty());
    }

    #[test]
    fn single_endpoint_is_always_picked() {
        let e = set(&[1]);
        assert_eq!(e.pick(&[], Instant::now(), seq(&[0])), Some(addr(1)));
        assert_eq!(e.pick(&[addr(1)], Instant::now(), seq(&[0])), None);
    }

    #[rstest]
    // (outstanding of 1, 2, 3), the two random draws, expected pick
    #[case([0, 0, 0], [0, 0], 1)] // tie: the first choice
    #[case([5, 0, 0], [0, 0], 2)] // draws 0 and (0 -> skip a) 1
    #[case([0, 5, 0], [1, 0], 1)]
    #[case([3, 3, 1], [0, 1], 3)] // draws 0 and 2
    #[case([3, 3, 9], [2, 0], 1)]
    fn less_loaded_of_two_wins(
        #[case] load: [usize; 3],
        #[case] draws: [usize; 2],
        #[case] want: u16,
    ) {
        let mut e = set(&[1, 2, 3]);
        for (i, n) in load.iter().enumerate() {
            for _ in 0..*n {
                e.start(addr(i as u16 + 1));
            }
        }
        let mut it = draws.into_iter();
        let got = e.pick(&[], Instant::now(), |n| it.next().unwrap() % n);
        assert_eq!(got, Some(addr(want)));
    }

    #[test]
    fn the_two_choices_are_distinct() {
        // With two candidates, whatever the draws, both are compared: the
        // idle one always wins.
        let mut e = set(&[1, 2]);
        e.start(addr(1));
        for a in 0..2 {
            for b in 0..2 {
                let mut d = [a, b].into_iter();
                assert_eq!(
                    e.pick(&[], Instant::now(), |n| d.next().unwrap() % n),
                    Some(addr(2))
                );
            }
        }
    }

    #[test]
    fn excluded_and_ejected_endpoints_are_skipped() {
        let now = Instant::now();
        let mut e = set(&[1, 2, 3]);
        e.eject(addr(2), now);
        assert_eq!(e.available(now), 2);
        for _ in 0..20 {
            let got = e.pick(&[addr(1)], now, fastrand_like());
            assert_eq!(got, Some(addr(3)));
        }
        assert_eq!(e.next_unejection(now), Some(now + EJECT_FOR));
        // The ejection runs out.
        let later = now + EJECT_FOR;
        assert_eq!(e.available(later), 3);
        assert_eq!(e.next_unejection(later), None);
        assert_eq!(e.pick(&[addr(1), addr(3)], later, seq(&[0])), Some(addr(2)));
    }

    fn fastrand_like() -> impl FnMut(usize) -> usize {
        let mut x: usize = 0x9e37_79b9;
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }

    #[test]
    fn counts_survive_rediscovery_and_removal() {
        let mut e = set(&[1, 2]);
        e.start(addr(1));
        e.start(addr(1));
        let g = e.generation();
        // Same set: nothing changes, not even the generation.
        assert_eq!(e.set(&[addr(2), addr(1)]), Change::default());
        assert_eq!(e.generation(), g);
        assert_eq!(e.outstanding(addr(1)), 2);
        // 1 leaves while its requests still run, 3 arrives.
        let change = e.set(&[addr(2), addr(3)]);
        assert_eq!(change.added, [addr(3)]);
        assert_eq!(change.removed, [addr(1)]);
        assert!(e.generation() > g);
        assert_eq!(e.outstanding(addr(1)), 2);
        e.finish(addr(1));
        assert_eq!(e.outstanding(addr(1)), 1);
        // 1 comes back with the count of the request still running.
        e.set(&[addr(1), addr(2), addr(3)]);
        assert_eq!(e.outstanding(addr(1)), 1);
        e.finish(addr(1));
        e.finish(addr(1)); // never below zero
        assert_eq!(e.outstanding(addr(1)), 0);
        assert_eq!(e.addrs().collect::<Vec<_>>(), [addr(1), addr(2), addr(3)]);
    }

    #[test]
    fn duplicates_in_discovery_are_listed_once() {
        let mut e = Endpoints::new();
        e.set(&[addr(1), addr(1), addr(2)]);
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn ejection_survives_rediscovery() {
        let now = Instant::now();
        let mut e = set(&[1, 2]);
        e.eject(addr(1), now);
        e.set(&[addr(1), addr(2)]);
        assert_eq!(e.available(now), 1);
        // Leaving and coming back clears it.
        e.set(&[addr(2)]);
        e.set(&[addr(1), addr(2)]);
        assert_eq!(e.available(now), 2);
    }

    /// Largest difference of outstanding counts seen over 10,000 requests,
    /// each finishing after the 64 started after it, with picks by `pick`.
    fn max_spread(mut pick: impl FnMut(&Endpoints) -> SocketAddr) -> usize {
        let mut e = set(&[1, 2, 3, 4]);
        let mut running = std::collections::VecDeque::new();
        let mut max_spread = 0;
        for _ in 0..10_000 {
            let a = pick(&e);
            e.start(a);
            running.push_back(a);
            if running.len() > 64
                && let Some(done) = running.pop_front()
            {
                e.finish(done);
            }
            let loads: Vec<usize> = e.addrs().map(|a| e.outstanding(a)).collect();
            let spread = loads.iter().max().unwrap() - loads.iter().min().unwrap();
            max_spread = max_spread.max(spread);
        }
        max_spread
    }

    #[test]
    fn spread_under_load_stays_even() {
        let now = Instant::now();
        let mut rng = fastrand_like();
        let p2c = max_spread(|e| e.pick(&[], now, &mut rng).unwrap());
        let mut rng = fastrand_like();
        let random = max_spread(|e| e.addrs().nth(rng(4)).unwrap());
        assert!(p2c <= 12, "p2c spread {p2c} (random {random})");
        assert!(p2c * 2 < random, "p2c {p2c} vs random {random}");
    }
}
