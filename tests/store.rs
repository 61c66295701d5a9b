//! The `DeliveryStore` contract, run against every store: memory, SQLite (temp files) and
//! PostgreSQL (when `TOWER_WEBHOOKS_POSTGRES_URL` is set; one schema per test, dropped after).

mod support;

use std::time::{Duration, SystemTime};

use tower_webhooks::delivery::{
    Attempt, AttemptOutcome, AttemptResponse, ConversationPosition, ConversationQuery, Decision,
    Delivery, DeliveryState, Next, SigningSpec, Source,
};
use tower_webhooks::scheme::{Cerebrium, StandardWebhooks};
use tower_webhooks::store::{
    AttemptRecord, DeliveryStore, FailRequest, MemoryStore, PurgeRequest, StoreError,
};
use tower_webhooks::{Secret, SecretSet};

const LEASE: Duration = Duration::from_secs(30);

fn later(ms: u64) -> SystemTime {
    SystemTime::now() + Duration::from_millis(ms)
}

fn attempt(number: u32, outcome: AttemptOutcome, decision: Decision) -> Attempt {
    let mut attempt = Attempt::new(number, SystemTime::now(), outcome);
    attempt.decision = decision;
    attempt.latency = Duration::from_micros(1234);
    attempt.body_size = 2;
    attempt.body_sha256 = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a".into();
    attempt.request_headers = [("x-request-id", "a"), ("authorization", "Bearer leaked")]
        .into_iter()
        .collect();
    attempt
}

fn delivered() -> Next {
    Next::Final {
        state: DeliveryState::Delivered,
        reason: None,
    }
}

fn failed(reason: &str) -> Next {
    Next::Final {
        state: DeliveryState::Failed,
        reason: Some(reason.into()),
    }
}

/// The contract. `durable_takeover`: an expired lease is claimable again (the SQL stores;
/// the memory store keeps a slow worker's claim).
async fn contract(store: &dyn DeliveryStore, durable_takeover: bool) {
    // Enqueue, duplicates, signing and headers survive the round trip.
    let mut headers = http::HeaderMap::new();
    headers.insert("x-tenant", "acme".parse().unwrap());
    let signing = SigningSpec::new(
        StandardWebhooks::new(),
        SecretSet::from(vec![
            Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").with_id("v2"),
            Secret::new("whsec_dGVzdA=="),
        ]),
    );
    store
        .enqueue(
            Delivery::new("a", "http://x.test/hook", r#"{"n":1}"#)
                .with_signing(signing.clone())
                .with_headers(headers.clone())
                .with_endpoint_id("ep-1")
                .with_source(Source::Event("run.status".into())),
        )
        .await
        .unwrap();
    store
        .enqueue(Delivery::new("b", "http://x.test/hook", "2").not_before(later(60_000)))
        .await
        .unwrap();
    assert_eq!(
        store
            .enqueue(Delivery::new("a", "http://y.test/", "1"))
            .await
            .unwrap_err(),
        StoreError::Duplicate("a".into())
    );
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight, stats.finished), (2, 0, 0));
    assert!(stats.oldest_due.is_some());
    assert!(store.next_due().await.unwrap().unwrap() <= later(10));

    // Claim: only what is due, under a lease.
    let claims = store.claim_due(later(5), 10, LEASE).await.unwrap();
    assert_eq!(claims.len(), 1, "only `a` is due");
    let claim = &claims[0];
    assert_eq!(claim.delivery.id, "a");
    assert_eq!(claim.delivery.state, DeliveryState::InFlight);
    assert_eq!(claim.delivery.headers, headers);
    assert_eq!(claim.delivery.endpoint_id.as_deref(), Some("ep-1"));
    assert_eq!(claim.delivery.source, Source::Event("run.status".into()));
    let restored = claim.delivery.signing.as_ref().expect("signing restored");
    assert_eq!(restored.scheme().name(), "standard_webhooks");
    assert_eq!(restored.secrets(), signing.secrets());
    assert!(store
        .claim_due(later(5), 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    let lease = claim.lease;

    // Fencing: a stale token is refused, the current one renews and records.
    let stale = tower_webhooks::delivery::Lease {
        token: lease.token.wrapping_add(1000),
        ..lease
    };
    assert!(matches!(
        store
            .record_attempt(AttemptRecord {
                id: "a",
                lease: stale,
                attempt: attempt(1, AttemptOutcome::Status(500), Decision::GaveUp),
                next: delivered()
            })
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        store.renew("a", stale, later(60_000)).await,
        Err(StoreError::LeaseLost(_))
    ));
    let lease = store.renew("a", lease, later(60_000)).await.unwrap();
    let retry_at = later(1);
    store
        .record_attempt(AttemptRecord {
            id: "a",
            lease,
            attempt: attempt(
                1,
                AttemptOutcome::Connect("refused".into()),
                Decision::RetryAt(retry_at),
            ),
            next: Next::Retry { at: retry_at },
        })
        .await
        .unwrap();
    // The old lease is spent.
    assert!(matches!(
        store.release("a", lease).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        store.release("nope", lease).await,
        Err(StoreError::NotFound(_))
    ));

    // Claimed again with a larger token; released (shutdown) and claimed once more.
    let again = store.claim_due(later(10), 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].lease.token > lease.token);
    assert_eq!(again[0].delivery.attempts, 1);
    store.release("a", again[0].lease).await.unwrap();
    let third = store
        .claim_due(later(10), 10, LEASE)
        .await
        .unwrap()
        .remove(0);

    if durable_takeover {
        // Takeover: another worker claims once the lease has expired; the first one's
        // outcome is then refused.
        let taken = store
            .claim_due(third.lease.until + Duration::from_millis(1), 10, LEASE)
            .await
            .unwrap();
        assert_eq!(taken.len(), 1, "an expired lease is due again");
        assert!(taken[0].lease.token > third.lease.token);
        assert!(matches!(
            store
                .record_attempt(AttemptRecord {
                    id: "a",
                    lease: third.lease,
                    attempt: attempt(2, AttemptOutcome::Status(200), Decision::Delivered),
                    next: delivered()
                })
                .await,
            Err(StoreError::LeaseLost(_))
        ));
        store.release("a", taken[0].lease).await.unwrap();
    } else {
        store.release("a", third.lease).await.unwrap();
    }
    let claim = store
        .claim_due(later(10), 10, LEASE)
        .await
        .unwrap()
        .remove(0);
    let mut answer = attempt(2, AttemptOutcome::Status(200), Decision::Delivered);
    answer.response = Some(AttemptResponse::new(
        200,
        [("content-type", "text/plain")].into_iter().collect(),
        bytes::Bytes::from_static(b"thanks"),
        false,
    ));
    store
        .record_attempt(AttemptRecord {
            id: "a",
            lease: claim.lease,
            attempt: answer,
            next: delivered(),
        })
        .await
        .unwrap();

    // The conversation: every attempt, redacted headers, the response.
    let conversation = store.get("a").await.unwrap().unwrap();
    assert_eq!(conversation.delivery.state, DeliveryState::Delivered);
    assert_eq!(conversation.delivery.attempts, 2);
    assert_eq!(conversation.attempts.len(), 2);
    assert_eq!(
        conversation.attempts[0].outcome,
        AttemptOutcome::Connect("refused".into())
    );
    assert!(matches!(
        conversation.attempts[0].decision,
        Decision::RetryAt(_)
    ));
    assert_eq!(
        conversation.attempts[0].latency,
        Duration::from_micros(1234)
    );
    let response = conversation.attempts[1].response.as_ref().unwrap();
    assert_eq!((response.status, &response.body[..]), (200, &b"thanks"[..]));
    if durable_takeover {
        // The SQL stores redact again on the way in.
        assert!(!format!("{:?}", conversation.attempts[0].request_headers).contains("leaked"));
    }
    assert!(store.get("nope").await.unwrap().is_none());

    // Re-send: only final deliveries; one manual attempt, optionally with a new secret.
    assert!(matches!(
        store.resend("b", None).await,
        Err(StoreError::NotFinal(_))
    ));
    assert!(matches!(
        store.resend("nope", None).await,
        Err(StoreError::NotFound(_))
    ));
    let rotated = SigningSpec::new(Cerebrium::new(), "rotated");
    store.resend("a", Some(rotated)).await.unwrap();
    let manual = store
        .claim_due(later(10), 10, LEASE)
        .await
        .unwrap()
        .remove(0);
    assert!(manual.delivery.manual);
    assert_eq!(
        manual.delivery.signing.as_ref().unwrap().scheme().name(),
        "cerebrium"
    );
    let mut one = attempt(3, AttemptOutcome::Status(500), Decision::GaveUp);
    one.manual = true;
    store
        .record_attempt(AttemptRecord {
            id: "a",
            lease: manual.lease,
            attempt: one,
            next: failed("manual re-send failed"),
        })
        .await
        .unwrap();
    let conversation = store.get("a").await.unwrap().unwrap();
    assert_eq!(conversation.delivery.state, DeliveryState::Failed);
    assert!(!conversation.delivery.manual);
    assert!(conversation.attempts[2].manual);

    // Dead letters by endpoint since a time, re-sent in bulk.
    let since = SystemTime::now() - Duration::from_secs(3600);
    let dead = store
        .list(
            &ConversationQuery::new()
                .state(DeliveryState::Failed)
                .endpoint("http://x.test/hook")
                .since(since),
        )
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let queued = store
        .resend_matching(
            &ConversationQuery::new()
                .endpoint("http://x.test/hook")
                .since(since),
            None,
        )
        .await
        .unwrap();
    assert_eq!(queued, 1);
    assert!(matches!(
        store
            .resend_matching(
                &ConversationQuery::new().state(DeliveryState::Pending),
                None
            )
            .await,
        Err(StoreError::NotFinal(_))
    ));

    // 410: the pending deliveries to the endpoint are given up.
    let mut ids = store
        .fail_queued(FailRequest::gone("http://x.test/hook", "410 Gone", 100))
        .await
        .unwrap();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    let b = store.get("b").await.unwrap().unwrap();
    assert_eq!(b.delivery.state, DeliveryState::Failed);
    assert_eq!(b.delivery.last_error.as_deref(), Some("410 Gone"));
    assert!(store
        .claim_due(later(120_000), 10, LEASE)
        .await
        .unwrap()
        .is_empty());

    // Listing: newest first, filters, limits.
    for i in 0..5 {
        store
            .enqueue(Delivery::new(format!("c{i}"), "http://z.test/", "c"))
            .await
            .unwrap();
    }
    let listed = store
        .list(&ConversationQuery::new().limit(3))
        .await
        .unwrap();
    let listed: Vec<_> = listed.iter().map(|c| c.delivery.id.as_str()).collect();
    assert_eq!(listed, ["c4", "c3", "c2"]);
    let by_id = store
        .list(&ConversationQuery::new().endpoint_id("ep-1"))
        .await
        .unwrap();
    assert_eq!(by_id.len(), 1);

    // Keyset pages: after the last conversation of a page come the ones stored before it.
    let z = || ConversationQuery::new().endpoint("http://z.test/").limit(2);
    let names = |page: &[tower_webhooks::delivery::Conversation]| -> Vec<String> {
        page.iter().map(|c| c.delivery.id.clone()).collect()
    };
    let mut pages = Vec::new();
    let mut query = z();
    loop {
        let page = store.list(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        query = z().after(ConversationPosition::of(&last.delivery));
        pages.push(names(&page));
    }
    assert_eq!(pages, [vec!["c4", "c3"], vec!["c2", "c1"], vec!["c0"]]);
    // An anchor that was purged meanwhile: its creation time decides.
    let gone = |at: SystemTime| {
        ConversationQuery::new()
            .endpoint("http://z.test/")
            .after(ConversationPosition::new("purged", at))
    };
    assert_eq!(store.list(&gone(later(60_000))).await.unwrap().len(), 5);
    assert!(store
        .list(&gone(SystemTime::UNIX_EPOCH))
        .await
        .unwrap()
        .is_empty());

    // Retention: only old final rows of the given state, in batches.
    for i in 0..5 {
        let claim = store
            .claim_due(later(10), 1, LEASE)
            .await
            .unwrap()
            .remove(0);
        store
            .record_attempt(AttemptRecord {
                id: &claim.delivery.id,
                lease: claim.lease,
                attempt: attempt(1, AttemptOutcome::Status(200), Decision::Delivered),
                next: delivered(),
            })
            .await
            .unwrap_or_else(|err| panic!("c{i}: {err}"));
    }
    assert_eq!(
        store
            .purge(PurgeRequest {
                state: DeliveryState::Delivered,
                before: SystemTime::now() - Duration::from_secs(60),
                limit: 10,
            })
            .await
            .unwrap(),
        0,
        "nothing old enough"
    );
    assert_eq!(
        store
            .purge(PurgeRequest {
                state: DeliveryState::Delivered,
                before: later(1000),
                limit: 2,
            })
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .purge(PurgeRequest {
                state: DeliveryState::Delivered,
                before: later(1000),
                limit: 10,
            })
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .purge(PurgeRequest {
                state: DeliveryState::Pending,
                before: later(1000),
                limit: 10,
            })
            .await
            .unwrap(),
        0
    );
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight, stats.finished), (0, 0, 2));
    assert!(store.get("c0").await.unwrap().is_none());
    assert!(
        store.get("a").await.unwrap().is_some(),
        "dead letters are kept"
    );

    // Concurrent writes share batches: a duplicate fails alone, and of two recorded outcomes
    // for one delivery only the current lease's applies.
    let (first, second, other) = tokio::join!(
        store.enqueue(Delivery::new("z", "http://z.test/", "1")),
        store.enqueue(Delivery::new("z", "http://z.test/", "2")),
        store.enqueue(Delivery::new("y", "http://z.test/", "3")),
    );
    assert!(first.is_ok() ^ second.is_ok(), "{first:?} {second:?}");
    other.unwrap();
    let claims = store.claim_due(later(10), 10, LEASE).await.unwrap();
    assert_eq!(claims.len(), 2);
    let z = claims.iter().find(|c| c.delivery.id == "z").unwrap();
    let y = claims.iter().find(|c| c.delivery.id == "y").unwrap();
    let stale = tower_webhooks::delivery::Lease {
        token: z.lease.token.wrapping_sub(1),
        ..z.lease
    };
    let ok = || attempt(1, AttemptOutcome::Status(200), Decision::Delivered);
    let (current, old, y_done) = tokio::join!(
        store.record_attempt(AttemptRecord {
            id: "z",
            lease: z.lease,
            attempt: ok(),
            next: delivered()
        }),
        store.record_attempt(AttemptRecord {
            id: "z",
            lease: stale,
            attempt: ok(),
            next: delivered()
        }),
        store.record_attempt(AttemptRecord {
            id: "y",
            lease: y.lease,
            attempt: ok(),
            next: delivered()
        }),
    );
    current.unwrap();
    y_done.unwrap();
    assert!(matches!(old, Err(StoreError::LeaseLost(_))), "{old:?}");
    assert_eq!(store.get("z").await.unwrap().unwrap().attempts.len(), 1);

    // Enqueues and recorded attempts submitted together (one batch, one statement, where the
    // store batches them): each gets its own outcome.
    store
        .enqueue(Delivery::new("w", "http://w.test/", "1"))
        .await
        .unwrap();
    let claims = store.claim_due(later(10), 10, LEASE).await.unwrap();
    let w = claims.iter().find(|c| c.delivery.id == "w").unwrap();
    let stale = tower_webhooks::delivery::Lease {
        token: w.lease.token.wrapping_sub(1),
        ..w.lease
    };
    let (fresh, again, recorded, refused) = tokio::join!(
        store.enqueue(Delivery::new("v", "http://v.test/", "1")),
        store.enqueue(Delivery::new("y", "http://y.test/", "2")),
        store.record_attempt(AttemptRecord {
            id: "w",
            lease: w.lease,
            attempt: ok(),
            next: delivered()
        }),
        store.record_attempt(AttemptRecord {
            id: "w",
            lease: stale,
            attempt: ok(),
            next: delivered()
        }),
    );
    fresh.unwrap();
    assert_eq!(again.unwrap_err(), StoreError::Duplicate("y".into()));
    recorded.unwrap();
    assert!(
        matches!(refused, Err(StoreError::LeaseLost(_))),
        "{refused:?}"
    );
    let w = store.get("w").await.unwrap().unwrap();
    assert_eq!(w.delivery.state, DeliveryState::Delivered);
    assert_eq!(w.attempts.len(), 1);
    assert!(store.get("v").await.unwrap().is_some());

    // Claimed as it is stored (the engine's claim on insert): in flight under a fencing token
    // at once, not claimed again while the lease holds, recorded only with that lease.
    let before = store.stats().await.unwrap();
    let claim = store
        .enqueue_claimed(
            Delivery::new("c", "http://c.test/", "1").with_signing(signing.clone()),
            later(30_000),
        )
        .await
        .unwrap();
    let Some(claim) = claim else {
        // A store that does not claim on insert stores the delivery pending.
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.pending, before.pending + 1);
        return;
    };
    assert_eq!(claim.delivery.id, "c");
    assert_eq!(claim.delivery.state, DeliveryState::InFlight);
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.in_flight),
        (before.pending, before.in_flight + 1)
    );
    assert_eq!(
        store.get("c").await.unwrap().unwrap().delivery.state,
        DeliveryState::InFlight
    );
    assert!(store
        .claim_due(later(5), 10, LEASE)
        .await
        .unwrap()
        .iter()
        .all(|c| c.delivery.id != "c"));
    assert_eq!(
        store
            .enqueue_claimed(Delivery::new("c", "http://c.test/", "2"), later(30_000))
            .await
            .unwrap_err(),
        StoreError::Duplicate("c".into())
    );
    let stale = tower_webhooks::delivery::Lease {
        token: claim.lease.token.wrapping_add(1000),
        ..claim.lease
    };
    assert!(matches!(
        store
            .record_attempt(AttemptRecord {
                id: "c",
                lease: stale,
                attempt: ok(),
                next: delivered()
            })
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    store
        .record_attempt(AttemptRecord {
            id: "c",
            lease: claim.lease,
            attempt: ok(),
            next: delivered(),
        })
        .await
        .unwrap();
    let c = store.get("c").await.unwrap().unwrap();
    assert_eq!(c.delivery.state, DeliveryState::Delivered);
    assert_eq!(c.attempts.len(), 1);
    if durable_takeover {
        // A lease that runs out is taken over with a larger token; the old one is fenced off.
        let first = store
            .enqueue_claimed(Delivery::new("d", "http://d.test/", "1"), later(0))
            .await
            .unwrap()
            .unwrap();
        let taken = store.claim_due(later(10), 10, LEASE).await.unwrap();
        let taken = taken
            .iter()
            .find(|c| c.delivery.id == "d")
            .expect("taken over");
        assert!(taken.lease.token > first.lease.token);
        assert!(matches!(
            store
                .record_attempt(AttemptRecord {
                    id: "d",
                    lease: first.lease,
                    attempt: ok(),
                    next: delivered()
                })
                .await,
            Err(StoreError::LeaseLost(_))
        ));
        store
            .record_attempt(AttemptRecord {
                id: "d",
                lease: taken.lease,
                attempt: ok(),
                next: delivered(),
            })
            .await
            .unwrap();
    }
}

/// `fail_queued` of a deleted endpoint: its pending deliveries (and, in the SQL stores, its
/// abandoned claims) end failed with the reason and are never claimed again; a live claim,
/// final deliveries and other endpoints' deliveries are left alone.
async fn cancel_contract(store: &dyn DeliveryStore, durable_takeover: bool) {
    const REASON: &str = "webhook deleted";
    let to = |id: &str, endpoint_id: Option<&str>| {
        let delivery = Delivery::new(id, "http://cancel.test/hook", "x");
        match endpoint_id {
            Some(key) => delivery.with_endpoint_id(key),
            None => delivery,
        }
    };
    let mine = Some("acme/wh-1");
    store.enqueue(to("due", mine)).await.unwrap();
    store
        .enqueue(to("later", mine).not_before(later(3_600_000)))
        .await
        .unwrap();
    store.enqueue(to("other", Some("acme/wh-2"))).await.unwrap();
    store
        .enqueue(to("other-tenant", Some("beta/wh-1")))
        .await
        .unwrap();
    store.enqueue(to("no-id", None)).await.unwrap();
    let claim = |id: &'static str, until: SystemTime| {
        let delivery = to(id, mine);
        async move {
            store
                .enqueue_claimed(delivery, until)
                .await
                .unwrap()
                .expect("claimed on insert")
        }
    };
    let live = claim("live", later(60_000)).await;
    let done = claim("done", later(60_000)).await;
    store
        .record_attempt(AttemptRecord {
            id: "done",
            lease: done.lease,
            attempt: attempt(1, AttemptOutcome::Status(200), Decision::Delivered),
            next: delivered(),
        })
        .await
        .unwrap();
    let abandoned = claim("abandoned", SystemTime::now() - Duration::from_secs(1)).await;

    // Batches: the limit holds.
    let mut ids = store
        .fail_queued(FailRequest::deleted("acme/wh-1", REASON, 1))
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    ids.extend(
        store
            .fail_queued(FailRequest::deleted("acme/wh-1", REASON, 100))
            .await
            .unwrap(),
    );
    ids.sort();
    let mut expected = vec!["due", "later"];
    if durable_takeover {
        // An expired lease is an abandoned claim (the memory store keeps a slow worker's).
        expected.insert(0, "abandoned");
    }
    assert_eq!(ids, expected);
    for id in &expected {
        let conversation = store.get(id).await.unwrap().expect("still queryable");
        assert_eq!(conversation.delivery.state, DeliveryState::Failed, "{id}");
        assert_eq!(conversation.delivery.last_error.as_deref(), Some(REASON));
    }
    let state =
        |id: &'static str| async move { store.get(id).await.unwrap().unwrap().delivery.state };
    assert_eq!(state("other").await, DeliveryState::Pending);
    assert_eq!(state("other-tenant").await, DeliveryState::Pending);
    assert_eq!(state("no-id").await, DeliveryState::Pending);
    assert_eq!(state("live").await, DeliveryState::InFlight);
    assert_eq!(state("done").await, DeliveryState::Delivered);

    // The abandoned claim's old worker is fenced out.
    if durable_takeover {
        assert!(matches!(
            store
                .record_attempt(AttemptRecord {
                    id: "abandoned",
                    lease: abandoned.lease,
                    attempt: attempt(1, AttemptOutcome::Status(500), Decision::GaveUp),
                    next: failed("late")
                })
                .await,
            Err(StoreError::LeaseLost(_))
        ));
    }

    // The live claim finishes its attempt; its retry is caught by cancelling again.
    let retry_at = later(1_000);
    store
        .record_attempt(AttemptRecord {
            id: "live",
            lease: live.lease,
            attempt: attempt(1, AttemptOutcome::Status(503), Decision::RetryAt(retry_at)),
            next: Next::Retry { at: retry_at },
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .fail_queued(FailRequest::deleted("acme/wh-1", REASON, 100))
            .await
            .unwrap(),
        ["live"]
    );
    let live = store.get("live").await.unwrap().unwrap();
    assert_eq!(live.delivery.state, DeliveryState::Failed);
    assert_eq!(live.attempts.len(), 1);

    // Nothing cancelled is claimed again, even much later.
    let claimed = store.claim_due(later(7_200_000), 100, LEASE).await.unwrap();
    let mut claimed: Vec<_> = claimed.iter().map(|c| c.delivery.id.clone()).collect();
    claimed.sort();
    assert_eq!(claimed, ["no-id", "other", "other-tenant"]);
    assert!(store
        .fail_queued(FailRequest::deleted("acme/wh-404", REASON, 100))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn memory_store_cancels_an_endpoint() {
    cancel_contract(&MemoryStore::new(), false).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_store_cancels_an_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = tower_webhooks::store::SqliteStore::connect(dir.path().join("cancel.db"))
        .await
        .unwrap();
    cancel_contract(&store, true).await;
}

/// Under a steady stream of commits the WAL is written from its start again, so its file stays
/// within a few checkpoint rounds of writes instead of growing with every delivery.
///
/// Without the restart the WAL holds every page ever written: about ten times the database
/// here (85 MB for 8.5 MB). With it, it holds SQLite's checkpoint threshold (1000 pages) plus
/// what the writer commits before the next checkpoint round restarts it, which grows with the
/// machine's write rate: 9.5 to 14 MB for the same 8.5 MB database on a two-core machine. The
/// bound sits between the two, at three times the database.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_starts_over_under_a_steady_stream_of_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let store = std::sync::Arc::new(
        tower_webhooks::store::SqliteStore::connect(&path)
            .await
            .unwrap(),
    );
    const WRITERS: usize = 64;
    const PER_WRITER: usize = 150;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let body = "x".repeat(512);
                    let delivery = Delivery::new(format!("w{writer}-{i}"), "http://x.test/", body);
                    let claim = store
                        .enqueue_claimed(delivery, later(30_000))
                        .await
                        .unwrap()
                        .expect("claimed on insert");
                    let attempt = attempt(1, AttemptOutcome::Status(200), Decision::Delivered);
                    store
                        .record_attempt(AttemptRecord {
                            id: &claim.delivery.id,
                            lease: claim.lease,
                            attempt,
                            next: delivered(),
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let wal = std::fs::metadata(dir.path().join("wal.db-wal")).map_or(0, |m| m.len());
    let database = std::fs::metadata(&path).unwrap().len();
    assert!(
        wal < 3 * database,
        "the WAL holds {wal} bytes for a database of {database} bytes"
    );
}

#[cfg(feature = "postgres")]
#[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
#[tokio::test]
async fn postgres_store_cancels_an_endpoint() {
    let url = support::postgres_url();
    let schema = support::unique_schema("cancel");
    let store = tower_webhooks::store::PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    cancel_contract(&store, true).await;
    drop(store);
    support::drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn memory_store_contract() {
    contract(&MemoryStore::new(), false).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = tower_webhooks::store::SqliteStore::connect(dir.path().join("contract.db"))
        .await
        .unwrap();
    contract(&store, true).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_recovers_in_flight_deliveries_at_open_and_migrates_on_request() {
    use tower_webhooks::store::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recover.db");
    {
        let store = SqliteStore::builder(&path).migrate(false).connect().await;
        // Without migrations there is no table yet.
        let store = match store {
            Ok(store) => store,
            Err(err) => panic!("{err}"),
        };
        assert!(store.stats().await.is_err());
        store.migrate().await.unwrap();
        store
            .enqueue(Delivery::new("x", "http://x.test/", "1"))
            .await
            .unwrap();
        let claims = store.claim_due(later(5), 10, LEASE).await.unwrap();
        assert_eq!(claims.len(), 1);
        // Claimed as it was stored: in flight too.
        assert!(store
            .enqueue_claimed(Delivery::new("y", "http://x.test/", "2"), later(60_000))
            .await
            .unwrap()
            .is_some());
        // The process "dies" with the deliveries in flight.
    }
    let store = SqliteStore::connect(&path).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (2, 0));
    let mut claims = store.claim_due(later(5), 10, LEASE).await.unwrap();
    claims.sort_by(|a, b| a.delivery.id.cmp(&b.delivery.id));
    let ids: Vec<&str> = claims.iter().map(|c| c.delivery.id.as_str()).collect();
    assert_eq!(ids, ["x", "y"]);
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_group_commit_keeps_every_concurrent_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        tower_webhooks::store::SqliteStore::builder(dir.path().join("group.db"))
            .max_batch(32)
            .connect()
            .await
            .unwrap(),
    );
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .enqueue(Delivery::new(format!("g{i}"), "http://x.test/", "1"))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // A duplicate in a batch fails alone.
    let (dup, fresh) = tokio::join!(
        store.enqueue(Delivery::new("g1", "http://x.test/", "1")),
        store.enqueue(Delivery::new("g400", "http://x.test/", "1")),
    );
    assert_eq!(dup.unwrap_err(), StoreError::Duplicate("g1".into()));
    fresh.unwrap();
    assert_eq!(store.stats().await.unwrap().pending, 401);
    // Claims are batches, never the whole queue.
    assert_eq!(
        store.claim_due(later(5), 64, LEASE).await.unwrap().len(),
        64
    );
}

#[cfg(feature = "postgres")]
#[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
#[tokio::test]
async fn postgres_store_contract() {
    let url = support::postgres_url();
    let schema = support::unique_schema("contract");
    let store = tower_webhooks::store::PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    contract(&store, true).await;
    drop(store);
    support::drop_schema(&url, &schema).await;
}

/// Migration 0005 counts the rows already there when it runs (an upgraded database), and
/// `stats` reads those counts afterwards as the rows change.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_stats_count_the_rows_stored_before_the_counts_existed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upgraded.db");
    let store = tower_webhooks::store::SqliteStore::connect(&path)
        .await
        .unwrap();
    for id in ["a", "b", "c"] {
        store
            .enqueue(Delivery::new(id, "https://example.com/hook", "{}"))
            .await
            .unwrap();
    }
    let claims = store.claim_due(later(10), 2, LEASE).await.unwrap();
    let first = &claims[0];
    store
        .record_attempt(AttemptRecord {
            id: &first.delivery.id,
            lease: first.lease,
            attempt: attempt(1, AttemptOutcome::Status(200), Decision::Delivered),
            next: delivered(),
        })
        .await
        .unwrap();
    drop(store);
    // The database as 0.x before migration 0005 left it.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql(
        "DROP TRIGGER delivery_counts_insert; DROP TRIGGER delivery_counts_update; \
         DROP TRIGGER delivery_counts_delete; DROP TABLE delivery_counts; \
         DELETE FROM tower_webhooks_migrations WHERE version = 5",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = tower_webhooks::store::SqliteStore::builder(&path)
        .recover_in_flight(false)
        .connect()
        .await
        .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight, stats.finished), (1, 1, 1));
    store
        .enqueue(Delivery::new("d", "https://example.com/hook", "{}"))
        .await
        .unwrap();
    let purged = store
        .purge(PurgeRequest {
            state: DeliveryState::Delivered,
            before: later(1000),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight, stats.finished), (2, 1, 0));
}

/// Beyond 10,000 final deliveries PostgreSQL estimates the finished figure from its
/// statistics (no count of the table), while the unfinished figures stay exact.
#[cfg(feature = "postgres")]
#[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
#[tokio::test]
async fn postgres_stats_estimate_the_finished_rows_beyond_ten_thousand() {
    use sqlx::Connection as _;

    const FINISHED: usize = 15_000;
    let url = support::postgres_url();
    let schema = support::unique_schema("stats");
    let store = tower_webhooks::store::PostgresStore::builder(&url)
        .schema(&schema)
        .listen(false)
        .connect()
        .await
        .unwrap();
    for id in ["a", "b", "c"] {
        store
            .enqueue(Delivery::new(id, "https://example.com/hook", "{}"))
            .await
            .unwrap();
    }
    let claim = store.claim_due(later(10), 1, LEASE).await.unwrap();
    assert_eq!(claim.len(), 1);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!(
        "SET search_path = \"{schema}\"; \
         INSERT INTO deliveries (id, endpoint, source, headers, body, state, attempts, \
           next_attempt_at, created_at, updated_at) \
         SELECT 'old-' || i, 'https://example.com/hook', 'forward', '[]', '\\x7b7d'::bytea, \
           'delivered', 1, i, i, i FROM generate_series(1, {FINISHED}) AS i; \
         ANALYZE deliveries"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (2, 1));
    assert!(
        stats.finished > 10_000 && stats.finished < 2 * FINISHED,
        "{stats:?}"
    );
    drop(store);
    support::drop_schema(&url, &schema).await;
}
