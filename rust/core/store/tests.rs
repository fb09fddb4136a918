//! Tests of the store: LRU order, eviction, expiry at every scale, loads in progress.

use super::*;
type TestStore = Store<u64, &'static str>;

/// Why a test operation failed: a key comparison, or an unbounded store at its limit.
#[derive(Debug, PartialEq)]
enum Failure {
    Eq,
    Full,
}

impl From<Full> for Failure {
    fn from(_: Full) -> Self {
        Failure::Full
    }
}

fn store(max_size: usize) -> TestStore {
    Store::new(
        Some(max_size),
        PolicyKind::Lru,
        Arc::new(Metrics::default()),
        0,
    )
}

fn unbounded() -> TestStore {
    Store::new(None, PolicyKind::Lru, Arc::new(Metrics::default()), 0)
}

fn eq(key: u64) -> impl FnMut(&u64, bool) -> Result<bool, Failure> {
    move |k, _| Ok(*k == key)
}

// Deliberately poor hashes: neighbouring keys collide in low bits.
fn hash(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn set(s: &mut TestStore, key: u64, value: &'static str, expires_at: u64, now: u64) {
    let mut released = Released::new();
    s.insert(
        hash(key),
        || key,
        value,
        expires_at,
        &mut eq(key),
        || now,
        &mut released,
    )
    .unwrap();
}

fn get(s: &mut TestStore, key: u64, now: u64) -> Option<&'static str> {
    let mut released = Released::new();
    s.get(hash(key), &mut eq(key), || now, &mut released)
        .unwrap()
        .copied()
}

fn keys(s: &TestStore, now: u64) -> Vec<u64> {
    s.iter_live(now).map(|(k, _)| *k).collect()
}

#[test]
fn lru_order_is_most_recent_first_and_get_promotes() {
    let mut s = store(10);
    for k in 1..=3 {
        set(&mut s, k, "v", NEVER, 0);
    }
    assert_eq!(keys(&s, 0), vec![3, 2, 1]);
    assert_eq!(get(&mut s, 1, 0), Some("v"));
    assert_eq!(keys(&s, 0), vec![1, 3, 2]);
}

#[test]
fn full_store_evicts_least_recently_used() {
    let mut s = store(2);
    set(&mut s, 1, "a", NEVER, 0);
    set(&mut s, 2, "b", NEVER, 0);
    get(&mut s, 1, 0);
    let mut released = Released::new();
    s.insert(hash(3), || 3, "c", NEVER, &mut eq(3), || 0, &mut released)
        .unwrap();
    assert_eq!(released.into_vec(), vec![Garbage::Entry(2, "b")]);
    assert_eq!(keys(&s, 0), vec![3, 1]);
    assert_eq!(s.metrics().snapshot().evictions, 1);
}

#[test]
fn overwrite_keeps_size_and_releases_old_value() {
    let mut s = store(1);
    set(&mut s, 1, "a", NEVER, 0);
    let mut released = Released::new();
    s.insert(hash(1), || 1, "b", NEVER, &mut eq(1), || 0, &mut released)
        .unwrap();
    assert_eq!(released.into_vec(), vec![Garbage::Value("a")]);
    assert_eq!(s.len(), 1);
    assert_eq!(get(&mut s, 1, 0), Some("b"));
    assert_eq!(s.metrics().snapshot().evictions, 0);
}

#[test]
fn expired_entry_is_a_miss_and_an_expiration() {
    let mut s = store(4);
    set(&mut s, 1, "a", 100, 0);
    assert_eq!(get(&mut s, 1, 99), Some("a"));
    assert_eq!(get(&mut s, 1, 100), None);
    let m = s.metrics().snapshot();
    assert_eq!((m.hits, m.misses, m.expirations, m.size), (1, 1, 1, 0));
}

#[test]
fn lookup_hands_back_an_expired_entry_removed_and_counted() {
    let mut s = store(4);
    set(&mut s, 1, "a", 100, 0);
    let lookup = |s: &mut TestStore, now| match s.lookup(hash(1), &mut eq(1), || now).unwrap() {
        Lookup::Live(value) => Some(Ok(*value)),
        Lookup::Expired(key, value) => Some(Err((key, value))),
        Lookup::Absent => None,
    };
    assert_eq!(lookup(&mut s, 99), Some(Ok("a")));
    assert_eq!(lookup(&mut s, 100), Some(Err((1, "a"))));
    assert_eq!(
        lookup(&mut s, 100),
        None,
        "removed by the lookup that found it expired"
    );
    let m = s.metrics().snapshot();
    assert_eq!((m.hits, m.misses, m.expirations, m.size), (1, 2, 1, 0));
}

#[test]
fn full_store_drops_expired_before_evicting_live() {
    let mut s = store(2);
    set(&mut s, 1, "short", 10, 0);
    set(&mut s, 2, "long", NEVER, 0);
    get(&mut s, 1, 5); // 1 is now most recently used, 2 least
    set(&mut s, 3, "new", NEVER, 20);
    assert_eq!(keys(&s, 20), vec![3, 2]);
    let m = s.metrics().snapshot();
    assert_eq!((m.evictions, m.expirations), (0, 1));
}

#[test]
fn expire_removes_exactly_the_due_entries_at_every_scale() {
    // TTLs from a nanosecond to months land on every wheel level.
    let ttls: Vec<u64> = (0..60).map(|p| 1u64 << p).collect();
    let mut s = store(ttls.len());
    for (k, ttl) in ttls.iter().enumerate() {
        set(&mut s, k as u64, "v", *ttl, 0);
    }
    let mut now = 0u64;
    let mut expected = ttls.len();
    // Advance in irregular steps, checking the exact count each time.
    let mut step = 1u64;
    while now < (1u64 << 60) {
        now = now.saturating_add(step);
        step = step.saturating_mul(3) / 2 + 1;
        let mut released = Released::new();
        let removed = s.expire(now, &mut released);
        let due_now = ttls.iter().filter(|&&t| t <= now).count();
        let still = ttls.len() - due_now;
        assert_eq!(removed, expected - still, "at now={now}");
        assert_eq!(s.len(), still);
        expected = still;
    }
    assert_eq!(s.len(), 0);
}

#[test]
fn expire_is_exact_for_many_random_deadlines() {
    let mut s = store(5000);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut deadlines = Vec::new();
    for k in 0..5000u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let ttl = 1 + seed % 400_000_000_000; // up to ~400 s
        deadlines.push(ttl);
        set(&mut s, k, "v", ttl, 0);
    }
    let mut now = 0;
    while !s.is_empty() {
        now += 7_919_000_000; // ~8 s steps
        let mut released = Released::new();
        s.expire(now, &mut released);
        let alive = deadlines.iter().filter(|&&d| d > now).count();
        assert_eq!(s.len(), alive, "at now={now}");
    }
}

#[test]
fn reset_ttl_on_overwrite_moves_the_deadline() {
    let mut s = store(4);
    set(&mut s, 1, "a", 100, 0);
    set(&mut s, 1, "b", 300, 50);
    let mut released = Released::new();
    assert_eq!(s.expire(200, &mut released), 0);
    assert_eq!(s.expire(300, &mut released), 1);
}

#[test]
fn remove_reports_live_expired_and_absent() {
    let mut s = store(4);
    set(&mut s, 1, "a", NEVER, 0);
    set(&mut s, 2, "b", 10, 0);
    let mut released = Released::new();
    assert!(matches!(
        s.remove(hash(1), &mut eq(1), 20, &mut released),
        Ok(Removed::Live(1, "a"))
    ));
    assert!(matches!(
        s.remove(hash(2), &mut eq(2), 20, &mut released),
        Ok(Removed::Expired)
    ));
    assert!(matches!(
        s.remove(hash(3), &mut eq(3), 20, &mut released),
        Ok(Removed::Absent)
    ));
    assert_eq!(s.len(), 0);
    assert_eq!(s.metrics().snapshot().expirations, 1);
}

#[test]
fn failing_equality_changes_nothing() {
    let mut s = store(4);
    set(&mut s, 1, "a", NEVER, 0);
    let mut failing = |_: &u64, _| -> Result<bool, Failure> { Err(Failure::Eq) };
    let mut released = Released::new();
    let result = s.insert(hash(1), || 1, "b", NEVER, &mut failing, || 0, &mut released);
    assert_eq!(result, Err(Failure::Eq));
    assert_eq!(get(&mut s, 1, 0), Some("a"));
    assert_eq!(s.len(), 1);
    // The value never stored is handed back to be released after the lock.
    assert_eq!(released.into_vec(), vec![Garbage::Value("b")]);
}

#[test]
fn freed_slots_are_reused() {
    let mut s = store(100);
    for round in 0..10u64 {
        for k in 0..100 {
            set(&mut s, round * 1000 + k, "v", NEVER, 0);
        }
    }
    assert_eq!(s.len(), 100);
    assert_eq!(s.nodes.len(), FIRST_ENTRY as usize + 100);
    assert_eq!(s.metrics().snapshot().evictions, 900);
}

#[test]
fn clear_keeps_counters_and_empties() {
    let mut s = store(4);
    set(&mut s, 1, "a", 10, 0);
    get(&mut s, 1, 0);
    let taken = s.clear(0);
    assert_eq!(taken.iter().filter(|n| n.entry.is_some()).count(), 1);
    assert_eq!(s.len(), 0);
    assert_eq!(s.metrics().snapshot().hits, 1);
    assert_eq!(get(&mut s, 1, 0), None);
    set(&mut s, 2, "b", 10, 0);
    let mut released = Released::new();
    assert_eq!(s.expire(10, &mut released), 1);
}

#[test]
fn loads_in_progress_are_found_by_key_and_ended_by_handle() {
    let mut s: Store<u64, &str, u32> =
        Store::new(Some(4), PolicyKind::Lru, Arc::new(Metrics::default()), 0);
    s.begin_load(hash(7), 7, 70);
    assert_eq!(s.find_load(hash(7), &mut eq(7)).unwrap(), Some(&70));
    assert_eq!(s.find_load(hash(8), &mut eq(8)).unwrap(), None);
    assert_eq!(s.end_load(|h| *h == 70), Some(7));
    assert_eq!(s.find_load(hash(7), &mut eq(7)).unwrap(), None);
}

#[test]
fn unbounded_store_never_evicts() {
    let mut s = unbounded();
    assert_eq!(s.max_size(), None);
    for k in 0..20_000 {
        set(&mut s, k, "v", NEVER, 0);
    }
    assert_eq!(s.len(), 20_000);
    assert_eq!(s.metrics().snapshot().evictions, 0);
    assert_eq!(store(3).max_size(), Some(3));
}

#[test]
fn unbounded_store_at_its_limit_refuses_a_new_key_and_changes_nothing() {
    let mut s = unbounded();
    s.limit = 2; // MAX_CAPACITY entries would take hundreds of GiB
    set(&mut s, 1, "a", NEVER, 0);
    set(&mut s, 2, "b", NEVER, 0);
    let mut released = Released::new();
    let result = s.insert(hash(3), || 3, "c", NEVER, &mut eq(3), || 0, &mut released);
    assert_eq!(result, Err(Failure::Full));
    assert_eq!(released.into_vec(), vec![Garbage::Value("c")]);
    assert_eq!(keys(&s, 0), vec![2, 1]);
    // Overwriting a present key still works, and expired entries make room.
    set(&mut s, 1, "a2", 10, 0);
    assert_eq!(get(&mut s, 1, 0), Some("a2"));
    set(&mut s, 3, "c", NEVER, 10);
    assert_eq!(keys(&s, 10), vec![3, 2]);
    assert_eq!(s.metrics().snapshot().evictions, 0);
}

#[test]
fn find_key_sees_expired_entries_and_changes_nothing() {
    let mut s = store(4);
    set(&mut s, 1, "a", 10, 0);
    set(&mut s, 2, "b", NEVER, 0);
    let before = s.metrics().snapshot();
    assert_eq!(s.find_key(hash(1), &mut eq(1)), Ok(Some(&1)));
    assert_eq!(s.find_key(hash(3), &mut eq(3)), Ok(None));
    assert_eq!(s.metrics().snapshot(), before);
    assert_eq!(keys(&s, 0), vec![2, 1]);
    let mut failing = |_: &u64, _| -> Result<bool, Failure> { Err(Failure::Eq) };
    assert_eq!(s.find_key(hash(1), &mut failing), Err(Failure::Eq));
}

#[test]
fn make_room_is_free_when_bounded_and_expires_first_when_unbounded() {
    let mut released = Released::new();
    let mut bounded = store(1);
    set(&mut bounded, 1, "a", NEVER, 0);
    assert_eq!(bounded.make_room(5, 0, &mut released), Ok(()));
    let mut s = unbounded();
    s.limit = 3;
    set(&mut s, 1, "a", 10, 0);
    set(&mut s, 2, "b", NEVER, 0);
    assert_eq!(s.make_room(1, 0, &mut released), Ok(()));
    assert_eq!(s.len(), 2, "nothing removed while there is room");
    assert_eq!(s.make_room(2, 5, &mut released), Err(Full));
    assert_eq!(s.make_room(2, 10, &mut released), Ok(()));
    assert_eq!(released.into_vec(), vec![Garbage::Entry(1, "a")]);
}

#[test]
fn held_lists_every_entry_and_loading_key() {
    let mut s: Store<u64, &str, u32> =
        Store::new(Some(4), PolicyKind::Lru, Arc::new(Metrics::default()), 0);
    let mut released = Released::new();
    s.insert(hash(1), || 1, "a", 10, &mut eq(1), || 0, &mut released)
        .unwrap();
    s.insert(hash(2), || 2, "b", NEVER, &mut eq(2), || 0, &mut released)
        .unwrap();
    s.begin_load(hash(3), 3, 30);
    let mut held: Vec<String> = s
        .held()
        .map(|h| match h {
            Held::Entry(k, v) => format!("{k}={v}"),
            Held::Loading(k) => format!("loading {k}"),
        })
        .collect();
    held.sort();
    assert_eq!(held, ["1=a", "2=b", "loading 3"]);
}

#[test]
fn abandon_loads_keeps_only_the_chosen_ones() {
    let mut s: Store<u64, &str, u32> =
        Store::new(Some(4), PolicyKind::Lru, Arc::new(Metrics::default()), 0);
    s.begin_load(hash(7), 7, 70);
    s.begin_load(hash(8), 8, 80);
    assert_eq!(s.abandon_loads(|h| *h == 80), vec![(7, 70)]);
    assert_eq!(s.find_load(hash(7), &mut eq(7)).unwrap(), None);
    assert_eq!(s.find_load(hash(8), &mut eq(8)).unwrap(), Some(&80));
}
