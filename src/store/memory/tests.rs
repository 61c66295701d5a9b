use super::*;
use crate::delivery::model::{AttemptOutcome, Decision};

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
        block(store.record_attempt("a", stale, attempt(1, 200), Next::Retry { at: now })),
        Err(StoreError::LeaseLost(_))
    ));
    block(store.record_attempt("a", lease, attempt(1, 404), Next::Retry { at: now })).unwrap();
    let claims =
        block(store.claim_due(now + Duration::from_millis(1), 10, Duration::from_secs(5))).unwrap();
    assert_eq!(claims.len(), 1);
    assert!(claims[0].lease.token > lease.token);
    block(store.record_attempt(
        "a",
        claims[0].lease,
        attempt(2, 200),
        Next::Final {
            state: DeliveryState::Delivered,
            reason: None,
        },
    ))
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
        block(store.record_attempt(
            &id,
            claim.lease,
            attempt(1, 200),
            Next::Final {
                state: DeliveryState::Delivered,
                reason: None,
            },
        ))
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
