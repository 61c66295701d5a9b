use super::*;
use crate::delivery::model::{AttemptOutcome, ConversationPosition, Decision};

fn attempt(number: u32, status: u16) -> Attempt {
    let mut attempt = Attempt::new(number, SystemTime::now(), AttemptOutcome::Status(status));
    attempt.decision = Decision::Delivered;
    attempt
}

fn block<T>(future: StoreFuture<'_, T>) -> Result<T, StoreError> {
    futures_util::FutureExt::now_or_never(future).expect("memory store is synchronous")
}

#[test]
fn custom_header_values_never_show_in_debug() {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-tenant", "tenant-value-1".parse().unwrap());
    headers.append("x-tenant", "tenant-value-2".parse().unwrap());
    let delivery = Delivery::new("d", "https://example.com/", "{}").with_headers(headers);
    let shown = format!("{delivery:?}");
    assert!(!shown.contains("tenant-value"), "{shown}");
    assert_eq!(delivery.headers.get_all("x-tenant").iter().count(), 2);
    assert_eq!(delivery.headers["x-tenant"], "tenant-value-1");
}

#[test]
fn queue_then_conversation() {
    let store = MemoryStore::new();
    let now = SystemTime::now();
    block(store.enqueue(Delivery::new("a", "http://x/", "1"))).unwrap();
    block(
        store.enqueue(
            Delivery::new("b", "http://x/", "2").not_before(now + Duration::from_secs(60)),
        ),
    )
    .unwrap();
    assert_eq!(
        block(store.enqueue(Delivery::new("a", "http://x/", "1"))).unwrap_err(),
        StoreError::Duplicate("a".into())
    );
    let claims =
        block(store.claim_due(now + Duration::from_millis(1), 10, Duration::from_secs(5))).unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].delivery.id, "a");
    let lease = claims[0].lease;
    let stale = Lease {
        token: lease.token + 7,
        ..lease
    };
    assert!(matches!(
        block(store.record_attempt(AttemptRecord {
            id: "a",
            lease: stale,
            attempt: attempt(1, 200),
            next: Next::Retry { at: now }
        })),
        Err(StoreError::LeaseLost(_))
    ));
    block(store.record_attempt(AttemptRecord {
        id: "a",
        lease,
        attempt: attempt(1, 404),
        next: Next::Retry { at: now },
    }))
    .unwrap();
    let claims =
        block(store.claim_due(now + Duration::from_millis(1), 10, Duration::from_secs(5))).unwrap();
    assert_eq!(claims.len(), 1);
    assert!(claims[0].lease.token > lease.token);
    block(store.record_attempt(AttemptRecord {
        id: "a",
        lease: claims[0].lease,
        attempt: attempt(2, 200),
        next: Next::Final {
            state: DeliveryState::Delivered,
            reason: None,
        },
    }))
    .unwrap();
    let conversation = block(store.get("a")).unwrap().unwrap();
    assert_eq!(conversation.delivery.state, DeliveryState::Delivered);
    assert_eq!(conversation.delivery.attempts, 2);
    assert_eq!(conversation.attempts.len(), 2);
    let stats = block(store.stats()).unwrap();
    assert_eq!((stats.pending, stats.in_flight, stats.finished), (1, 0, 1));
    let listed =
        block(store.list(&ConversationQuery::new().state(DeliveryState::Pending))).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].delivery.id, "b");
    assert_eq!(
        block(store.list(&ConversationQuery::new())).unwrap()[0]
            .delivery
            .id,
        "b"
    );
}

#[test]
fn release_returns_to_queue() {
    let store = MemoryStore::new();
    block(store.enqueue(Delivery::new("a", "http://x/", "1"))).unwrap();
    let later = SystemTime::now() + Duration::from_millis(5);
    let claim = block(store.claim_due(later, 1, Duration::from_secs(5)))
        .unwrap()
        .remove(0);
    block(store.release("a", claim.lease)).unwrap();
    let again = block(store.claim_due(
        SystemTime::now() + Duration::from_millis(5),
        1,
        Duration::from_secs(5),
    ))
    .unwrap();
    assert_eq!(again.len(), 1);
}

#[test]
fn finished_conversations_are_bounded() {
    let store = MemoryStore::new().max_finished(3);
    for i in 0..10 {
        let id = format!("d{i}");
        block(store.enqueue(Delivery::new(id.clone(), "http://x/", "body"))).unwrap();
        let claim = block(store.claim_due(
            SystemTime::now() + Duration::from_secs(1),
            1,
            Duration::from_secs(5),
        ))
        .unwrap()
        .remove(0);
        block(store.record_attempt(AttemptRecord {
            id: &id,
            lease: claim.lease,
            attempt: attempt(1, 200),
            next: Next::Final {
                state: DeliveryState::Delivered,
                reason: None,
            },
        }))
        .unwrap();
    }
    let all = block(store.list(&ConversationQuery::new())).unwrap();
    let ids: Vec<_> = all.iter().map(|c| c.delivery.id.as_str()).collect();
    assert_eq!(ids, ["d9", "d8", "d7"]);
    let store = MemoryStore::new().max_unfinished(1);
    block(store.enqueue(Delivery::new("a", "http://x/", "1"))).unwrap();
    assert_eq!(
        block(store.enqueue(Delivery::new("b", "http://x/", "1"))).unwrap_err(),
        StoreError::Full
    );
}

/// One step of [`the_indexes_stay_in_step_with_the_entries`]; the `u8`s pick among the
/// deliveries, tenants and endpoints of the run.
#[derive(Debug, Clone)]
enum Step {
    Enqueue {
        tenant: u8,
        endpoint: u8,
        later: bool,
    },
    EnqueueClaimed {
        tenant: u8,
        endpoint: u8,
    },
    Claim(u8),
    Retry(u8),
    Finish(u8, u8),
    Release(u8),
    Resend(u8),
    ResendFailed(Option<u8>),
    FailPending(u8),
    Cancel(u8),
    Purge(u8, u8),
    UpdatePending(u8),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..4u8, 0..3u8, any::<bool>())
            .prop_map(|(tenant, endpoint, later)| Step::Enqueue { tenant, endpoint, later }),
        1 => (0..4u8, 0..3u8).prop_map(|(tenant, endpoint)| Step::EnqueueClaimed { tenant, endpoint }),
        2 => (1..4u8).prop_map(Step::Claim),
        1 => any::<u8>().prop_map(Step::Retry),
        3 => (any::<u8>(), 0..3u8).prop_map(|(pick, state)| Step::Finish(pick, state)),
        1 => any::<u8>().prop_map(Step::Release),
        1 => any::<u8>().prop_map(Step::Resend),
        1 => proptest::option::of(0..4u8).prop_map(Step::ResendFailed),
        1 => (0..3u8).prop_map(Step::FailPending),
        1 => (0..4u8).prop_map(Step::Cancel),
        1 => (0..3u8, 1..4u8).prop_map(|(state, limit)| Step::Purge(state, limit)),
        1 => any::<u8>().prop_map(Step::UpdatePending),
    ]
}

const FINAL: [DeliveryState; 3] = [
    DeliveryState::Delivered,
    DeliveryState::Failed,
    DeliveryState::Refused,
];

fn tenant(n: u8) -> Option<String> {
    // The fourth tenant stands for deliveries without an endpoint id.
    (n < 3).then(|| format!("tenant-{n}"))
}

fn endpoint(n: u8) -> String {
    format!("http://endpoint-{n}.test/")
}

/// Applies `step` to `store`; `held` are the leases the run holds, `ids` every id it stored.
fn apply(
    store: &MemoryStore,
    step: &Step,
    now: SystemTime,
    held: &mut Vec<(String, Lease)>,
    ids: &mut Vec<(String, SystemTime)>,
) {
    let pick = |n: u8, len: usize| usize::from(n) % len;
    let new_delivery = |tenant_n: u8, endpoint_n: u8, ids: &mut Vec<(String, SystemTime)>| {
        let mut delivery = Delivery::new(format!("d{}", ids.len()), endpoint(endpoint_n), "{}");
        if let Some(tenant) = tenant(tenant_n) {
            delivery = delivery.with_endpoint_id(tenant);
        }
        ids.push((delivery.id.clone(), delivery.created_at));
        delivery
    };
    let due = now + Duration::from_secs(60);
    match *step {
        Step::Enqueue {
            tenant,
            endpoint,
            later,
        } => {
            let mut delivery = new_delivery(tenant, endpoint, ids);
            if later {
                delivery = delivery.not_before(now + Duration::from_secs(86_400));
            }
            block(store.enqueue(delivery)).unwrap();
        }
        Step::EnqueueClaimed { tenant, endpoint } => {
            let delivery = new_delivery(tenant, endpoint, ids);
            let claim = block(store.enqueue_claimed(delivery, due))
                .unwrap()
                .unwrap();
            held.push((claim.delivery.id, claim.lease));
        }
        Step::Claim(limit) => {
            let claims = block(store.claim_due(due, limit.into(), Duration::from_secs(5))).unwrap();
            held.extend(claims.into_iter().map(|c| (c.delivery.id, c.lease)));
        }
        Step::Retry(n) | Step::Finish(n, _) | Step::Release(n) if !held.is_empty() => {
            let (id, lease) = held.remove(pick(n, held.len()));
            let result = match *step {
                Step::Retry(_) => block(store.record_attempt(AttemptRecord {
                    id: &id,
                    lease,
                    attempt: attempt(1, 503),
                    next: Next::Retry { at: now },
                })),
                Step::Finish(_, state) => block(store.record_attempt(AttemptRecord {
                    id: &id,
                    lease,
                    attempt: attempt(1, 200),
                    next: Next::Final {
                        state: FINAL[usize::from(state)],
                        reason: None,
                    },
                })),
                _ => block(store.release(&id, lease)),
            };
            result.unwrap();
        }
        Step::Resend(n) if !ids.is_empty() => {
            let (id, _) = &ids[pick(n, ids.len())];
            // Not found (evicted, purged) and not final are answers too.
            let _ = block(store.resend(id, None));
        }
        Step::ResendFailed(tenant_n) => {
            let mut query = ConversationQuery::new().limit(2);
            query.endpoint_id = tenant_n.and_then(tenant);
            block(store.resend_matching(&query, None)).unwrap();
        }
        Step::FailPending(endpoint_n) => {
            block(store.fail_queued(FailRequest::gone(&endpoint(endpoint_n), "gone", 2))).unwrap();
        }
        Step::Cancel(tenant_n) => {
            if let Some(tenant) = tenant(tenant_n) {
                block(store.fail_queued(FailRequest::deleted(&tenant, "deleted", 2))).unwrap();
            }
        }
        Step::Purge(state, limit) => {
            let before = now + Duration::from_secs(3600);
            let state = FINAL[usize::from(state)];
            let limit = limit.into();
            block(store.purge(PurgeRequest {
                state,
                before,
                limit,
            }))
            .unwrap();
        }
        Step::UpdatePending(n) if !ids.is_empty() => {
            let (id, _) = &ids[pick(n, ids.len())];
            let update = PendingUpdate {
                id,
                body: None,
                due: now,
            };
            let _ = block(store.update_pending(update));
        }
        _ => {}
    }
}

/// What `list` answers, found by walking every entry.
fn list_by_scan(store: &MemoryStore, query: &ConversationQuery) -> Vec<String> {
    let inner = store.lock();
    let (before, created_before) = inner.keyset(query);
    inner
        .order
        .range(..before)
        .rev()
        .filter_map(|(_, id)| inner.entries.get(id))
        .filter(|entry| created_before.is_none_or(|at| entry.delivery.created_at < at))
        .filter(|entry| query.matches(&entry.delivery))
        .take(query.limit)
        .map(|entry| entry.delivery.id.clone())
        .collect()
}

fn listed(store: &MemoryStore, query: &ConversationQuery) -> Vec<String> {
    block(store.list(query))
        .unwrap()
        .into_iter()
        .map(|c| c.delivery.id)
        .collect()
}

/// The indexes equal ones built afresh from the entries, and every filtered page (and the
/// page after it, also after a purged delivery) equals a walk over every entry.
fn assert_in_step(store: &MemoryStore, ids: &[(String, SystemTime)]) {
    {
        let inner = store.lock();
        let mut rebuilt = Indexes::default();
        for entry in inner.entries.values() {
            rebuilt.add(&entry.delivery, entry.seq);
        }
        assert_eq!(inner.index, rebuilt);
        assert_eq!(inner.order.len(), inner.entries.len());
    }
    let states = [
        None,
        Some(DeliveryState::Pending),
        Some(DeliveryState::InFlight),
        Some(DeliveryState::Delivered),
        Some(DeliveryState::Failed),
        Some(DeliveryState::Refused),
    ];
    for tenant_n in [None, Some(0), Some(1), Some(2)] {
        for endpoint_n in [None, Some(0), Some(1)] {
            for state in states {
                let mut query = ConversationQuery::new().limit(3);
                query.endpoint_id = tenant_n.and_then(tenant);
                query.endpoint = endpoint_n.map(endpoint);
                query.state = state;
                let first = listed(store, &query);
                assert_eq!(first, list_by_scan(store, &query), "{query:?}");
                let mut positions: Vec<ConversationPosition> = ids
                    .iter()
                    .rev()
                    .take(2)
                    .map(|(id, at)| ConversationPosition::new(id.clone(), *at))
                    .collect();
                if let Some(last) = first.last() {
                    let (id, at) = ids.iter().find(|(id, _)| id == last).unwrap();
                    positions.push(ConversationPosition::new(id.clone(), *at));
                }
                for position in positions {
                    let next = query.clone().after(position);
                    assert_eq!(listed(store, &next), list_by_scan(store, &next), "{next:?}");
                }
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// The endpoint, endpoint-id and state indexes follow every insert, state change,
    /// re-send, eviction and purge: `list` through them answers what a walk over every entry
    /// answers.
    #[test]
    fn the_indexes_stay_in_step_with_the_entries(
        steps in proptest::collection::vec(step(), 1..48),
    ) {
        let store = MemoryStore::new().max_finished(6);
        let now = SystemTime::now();
        let mut held = Vec::new();
        let mut ids = Vec::new();
        for step in &steps {
            apply(&store, step, now, &mut held, &mut ids);
            assert_in_step(&store, &ids);
        }
    }
}

/// A tenant's page skips the other tenants' deliveries without looking at them: the index
/// hands `list` that tenant's entries only.
#[test]
fn a_tenant_page_walks_only_that_tenants_entries() {
    let store = MemoryStore::new();
    for i in 0..50 {
        let tenant = if i % 10 == 0 { "rare" } else { "busy" };
        let delivery =
            Delivery::new(format!("d{i}"), "http://x.test/", "{}").with_endpoint_id(tenant);
        block(store.enqueue(delivery)).unwrap();
    }
    let inner = store.lock();
    let rare = ConversationQuery::new().endpoint_id("rare");
    let seqs = inner.index.candidates(&rare).unwrap();
    assert_eq!(seqs.len(), 5);
    // The narrowest filter wins: "rare" among pending deliveries is the tenant's set.
    let rare_pending = rare.clone().state(DeliveryState::Pending);
    assert_eq!(inner.index.candidates(&rare_pending).unwrap().len(), 5);
    assert!(inner.index.candidates(&ConversationQuery::new()).is_none());
    assert!(inner
        .index
        .candidates(&ConversationQuery::new().endpoint_id("nobody"))
        .unwrap()
        .is_empty());
    drop(inner);
    let ids = listed(&store, &rare);
    assert_eq!(ids, ["d40", "d30", "d20", "d10", "d0"]);
}
