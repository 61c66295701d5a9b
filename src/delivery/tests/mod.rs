//! The engine's unit tests, on the [`harness`]: a [`ManualClock`] the engine reads instead of
//! the system time, a [`FakeStore`](fake_store::FakeStore) that logs the engine's calls and
//! fails the ones a test picks, and an [`Endpoint`] made with `tower::service_fn` that answers
//! each delivery from a script.
//!
//! Tokio's clock is paused, so timers (the dispatcher's waits, attempt timeouts, the shutdown
//! deadline) fire as soon as every task is idle: no test sleeps in real time. The wall clock
//! moves only when a test advances it, so a due time is exact.

mod fake_store;
mod harness;

use std::io;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use self::fake_store::Call;
use self::harness::*;
use super::{
    AttemptOutcome, Decision, Delivery, DeliveryState, EnqueueError, Next, Policy, SigningSpec,
};
use crate::scheme::{Scheme, StandardWebhooks};
use crate::store::StoreError;
use crate::time::unix_seconds;
use crate::SecretSet;

#[tokio::test(start_paused = true)]
async fn each_retry_is_due_at_the_clock_time_plus_the_policy_delay() {
    let delays = [Duration::from_secs(60), Duration::from_secs(600)];
    let endpoint = Endpoint::default().answer("d1", [Answer::Status(500), Answer::Status(502)]);
    let mut h = harness(endpoint, Policy::custom(delays), |builder| builder);
    h.submit("d1").await;

    h.wait_for_records("d1", 1).await;
    let first = h.store.conversation("d1");
    assert_eq!(first.attempts[0].started_at, t0());
    assert_eq!(
        first.attempts[0].decision,
        Decision::RetryAt(t0() + delays[0])
    );
    assert_eq!(first.delivery.state, DeliveryState::Pending);
    assert_eq!(first.delivery.next_attempt_at, t0() + delays[0]);

    // An hour of timers while the wall clock stands still: the retry is not due yet.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(h.endpoint.requests_for("d1"), 1);

    h.clock.advance(delays[0]);
    h.wait_for_records("d1", 2).await;
    let second = h.store.conversation("d1");
    assert_eq!(second.attempts[1].started_at, t0() + delays[0]);
    assert_eq!(
        second.delivery.next_attempt_at,
        t0() + delays[0] + delays[1]
    );

    h.clock.advance(delays[1]);
    let report = h.finished().await;
    assert_eq!(report.state, DeliveryState::Delivered);
    assert_eq!(report.attempts, 3);
    let third = h.store.conversation("d1").attempts[2].clone();
    assert_eq!(third.started_at, t0() + delays[0] + delays[1]);
    assert_eq!(third.decision, Decision::Delivered);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_the_clamp_and_dates_are_read_on_the_clock() {
    let date = httpdate::fmt_http_date(t0() + Duration::from_secs(900));
    let endpoint = Endpoint::default()
        .answer("seconds", [Answer::RetryAfter(503, "120".into())])
        .answer("date", [Answer::RetryAfter(429, date)])
        .answer("clamped", [Answer::RetryAfter(503, "86400".into())])
        .answer("ignored", [Answer::RetryAfter(500, "120".into())]);
    let policy =
        Policy::custom([Duration::from_secs(10)]).with_retry_after(Some(Duration::from_secs(3600)));
    let h = harness(endpoint, policy, |builder| builder);
    for id in ["seconds", "date", "clamped", "ignored"] {
        h.submit(id).await;
    }
    for id in ["seconds", "date", "clamped", "ignored"] {
        h.wait_for_records(id, 1).await;
    }

    let due = |id: &str| {
        let due = h.store.conversation(id).delivery.next_attempt_at;
        due.duration_since(t0()).expect("due after the attempt")
    };
    assert_eq!(due("seconds"), Duration::from_secs(120));
    assert_eq!(due("date"), Duration::from_secs(900));
    assert_eq!(due("clamped"), Duration::from_secs(3600));
    // Only `429` and `503` answers ask for a delay; the schedule applies to the others.
    assert_eq!(due("ignored"), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn gone_fails_the_delivery_and_gives_up_the_endpoints_queue() {
    let endpoint = Endpoint::default().answer("gone", [Answer::Status(410)]);
    let mut h = harness(endpoint, Policy::standard(), |builder| builder);
    let later = Delivery::new("later", URL, "{}").not_before(t0() + Duration::from_secs(3600));
    h.engine.submit(later).await.unwrap();
    h.submit("gone").await;

    let report = h.finished().await;
    assert_eq!(report.id, "gone");
    assert!(report.disable_endpoint);
    assert_eq!(report.state, DeliveryState::Failed);
    assert_eq!(report.outcome, AttemptOutcome::Status(410));
    assert_eq!(
        h.store.conversation("gone").attempts[0].decision,
        Decision::DisableEndpoint
    );

    assert!(h.store.calls().contains(&Call::FailPending(URL.to_owned())));
    let later = h.store.conversation("later");
    assert_eq!(later.delivery.state, DeliveryState::Failed);
    assert!(later.attempts.is_empty());
    assert!(later.delivery.last_error.unwrap().contains("410"));
    assert_eq!(h.endpoint.requests_for("later"), 0);
    assert_eq!(h.outstanding().await, 0);
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_transport_errors_are_classified() {
    let endpoint = Endpoint::default()
        .answer("hang", [Answer::Hang])
        .answer("io-timeout", [Answer::Fail(io::ErrorKind::TimedOut)])
        .answer("refused", [Answer::Fail(io::ErrorKind::ConnectionRefused)])
        .answer("reset", [Answer::Fail(io::ErrorKind::ConnectionReset)]);
    let no_retries = Policy::custom([]);
    let mut h = harness(endpoint, no_retries, |builder| {
        builder.attempt_timeout(Duration::from_secs(5))
    });
    for id in ["hang", "io-timeout", "refused", "reset"] {
        h.submit(id).await;
    }
    let reports = h.finished_all(4).await;

    assert_eq!(reports["hang"].outcome, AttemptOutcome::Timeout);
    assert_eq!(reports["io-timeout"].outcome, AttemptOutcome::Timeout);
    assert!(
        matches!(&reports["refused"].outcome, AttemptOutcome::Connect(why) if why.contains("transport error")),
        "{:?}",
        reports["refused"].outcome
    );
    assert!(
        matches!(&reports["reset"].outcome, AttemptOutcome::Network(_)),
        "{:?}",
        reports["reset"].outcome
    );
    for report in reports.values() {
        assert_eq!(report.state, DeliveryState::Failed);
        let conversation = h.store.conversation(&report.id);
        assert!(conversation.attempts[0].response.is_none());
        assert_eq!(
            conversation.delivery.last_error.as_deref(),
            Some(format!("1 attempts exhausted, last: {}", report.outcome).as_str())
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_record_keeps_the_delivery_until_its_lease_expires() {
    let lease = Duration::from_secs(30);
    let mut h = harness(Endpoint::default(), Policy::custom([]), |builder| {
        builder.lease(lease)
    });
    h.store.fail_once(
        |call| matches!(call, Call::Record { .. }),
        StoreError::Backend("disk full".into()),
    );
    h.submit("d1").await;
    h.wait_for_records("d1", 1).await;

    // Sent, but the outcome was not stored: the delivery is still claimed and still counts.
    let stuck = h.store.conversation("d1");
    assert_eq!(stuck.delivery.state, DeliveryState::InFlight);
    assert!(stuck.attempts.is_empty());
    assert_eq!(h.outstanding().await, 1);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(h.endpoint.requests_for("d1"), 1);

    // Once the lease has expired on the clock, the claim is taken over and sent again.
    h.clock.advance(lease);
    let report = h.finished().await;
    assert_eq!(report.state, DeliveryState::Delivered);
    assert_eq!(h.endpoint.requests_for("d1"), 2);
    let delivered = h.store.conversation("d1");
    assert_eq!(delivered.attempts.len(), 1);
    assert_eq!(delivered.attempts[0].started_at, t0() + lease);
    assert_eq!(h.outstanding().await, 0);
}

#[tokio::test(start_paused = true)]
async fn an_outcome_recorded_under_a_lost_lease_is_dropped() {
    let mut h = harness(Endpoint::default(), Policy::custom([]), |builder| builder);
    h.store.fail_once(
        |call| matches!(call, Call::Record { .. }),
        StoreError::LeaseLost("d1".into()),
    );
    h.submit("d1").await;
    h.wait_for_records("d1", 1).await;

    // Another worker holds the delivery now: this engine lets go of it without a report.
    let report = h.engine.shutdown(Duration::from_secs(1)).await;
    assert!(report.drained);
    assert_eq!(report.unfinished, 0);
    assert!(h.finished.try_recv().is_err());
    assert!(h.store.conversation("d1").attempts.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_claim_is_tried_again_after_the_poll_interval() {
    let poll = Duration::from_secs(5);
    let mut h = harness(Endpoint::default(), Policy::custom([]), |builder| {
        builder.poll_interval(poll)
    });
    // The dispatcher's first claim (when the engine starts) comes and goes first.
    h.store
        .wait_for_calls(|calls| calls.iter().any(|call| matches!(call, Call::Claim { .. })))
        .await;
    h.store.fail_once(
        |call| matches!(call, Call::Claim { .. }),
        StoreError::Backend("connection reset".into()),
    );
    let submitted = tokio::time::Instant::now();
    h.submit("d1").await;

    let report = h.finished().await;
    assert_eq!(report.state, DeliveryState::Delivered);
    assert!(submitted.elapsed() >= poll, "{:?}", submitted.elapsed());
    let claims = h
        .store
        .calls()
        .iter()
        .filter(|call| matches!(call, Call::Claim { .. }))
        .count();
    assert!(claims >= 3, "{claims} claims");
}

#[tokio::test(start_paused = true)]
async fn shutdown_keeps_sending_retries_that_fall_due_before_its_deadline() {
    let delay = Duration::from_secs(60);
    let endpoint = Endpoint::default().answer("d1", [Answer::Status(503)]);
    let mut h = harness(endpoint, Policy::custom([delay]), |builder| builder);
    h.submit("d1").await;
    h.wait_for_records("d1", 1).await;

    let engine = h.engine.clone();
    let shutdown = tokio::spawn(async move { engine.shutdown(Duration::from_secs(3600)).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(matches!(
        h.engine.submit(Delivery::new("late", URL, "{}")).await,
        Err(EnqueueError::ShuttingDown)
    ));
    assert!(!shutdown.is_finished());

    h.clock.advance(delay);
    let report = shutdown.await.unwrap();
    assert!(report.drained);
    assert_eq!(report.unfinished, 0);
    let delivered = h.finished().await;
    assert_eq!(delivered.state, DeliveryState::Delivered);
    assert_eq!(delivered.attempts, 2);
}

/// An engine whose endpoint never answers the delivery `stuck` (within a day), and answers
/// every other at once; no retries.
fn stuck_harness() -> Harness {
    let endpoint = Endpoint::default().answer("stuck", [Answer::Hang]);
    harness(endpoint, Policy::custom([]), |builder| {
        builder.attempt_timeout(Duration::from_secs(24 * 3600))
    })
}

#[tokio::test(start_paused = true)]
async fn workers_are_reused_and_a_hanging_attempt_holds_up_no_other() {
    let mut h = stuck_harness();
    h.submit("stuck").await;
    h.endpoint.wait_for_requests(1).await;
    for n in 0..20 {
        let id = format!("d{n}");
        h.submit(&id).await;
        assert_eq!(h.finished().await.id, id);
    }
    // One worker holds the hanging attempt; the twenty others ran one after another on a
    // second one, which waited in the pool between them (no task per delivery).
    assert_eq!(h.engine.shared.pool.started(), 2);
    assert_eq!(h.endpoint.requests_for("stuck"), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_workers_end_with_their_engine() {
    let mut h = harness(Endpoint::default(), Policy::custom([]), |builder| builder);
    for id in ["a", "b"] {
        h.submit(id).await;
        assert_eq!(h.finished().await.id, id);
    }
    let pool = h.engine.shared.pool.clone();
    assert!(
        std::sync::Arc::strong_count(&pool) > 1,
        "a worker waits in the pool"
    );
    drop(h);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        std::sync::Arc::strong_count(&pool),
        1,
        "every worker has ended"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_unfinished_deliveries_to_the_store() {
    let mut h = stuck_harness();
    h.submit("quick").await;
    h.submit("stuck").await;
    assert_eq!(h.finished().await.id, "quick");
    h.endpoint.wait_for_requests(2).await;

    let report = h.engine.shutdown(Duration::from_secs(5)).await;
    assert!(!report.drained);
    assert_eq!(report.unfinished, 1);
    h.store
        .wait_for_calls(|calls| calls.contains(&Call::Release("stuck".into())))
        .await;
    let stuck = h.store.conversation("stuck");
    assert_eq!(stuck.delivery.state, DeliveryState::Pending);
    assert!(stuck.attempts.is_empty());
    assert_eq!(
        h.store.conversation("quick").delivery.state,
        DeliveryState::Delivered
    );
    assert!(matches!(
        h.engine.submit(Delivery::new("late", URL, "{}")).await,
        Err(EnqueueError::ShuttingDown)
    ));
}

#[tokio::test(start_paused = true)]
async fn attempts_are_signed_at_the_clock_time_and_the_receiver_can_verify_them() {
    let mut h = harness(Endpoint::default(), Policy::custom([]), |builder| builder);
    let mut extra = HeaderMap::new();
    extra.insert("authorization", HeaderValue::from_static("Bearer t0ken"));
    let delivery = Delivery::new("msg_1", URL, r#"{"type":"invoice.paid"}"#)
        .with_signing(SigningSpec::new(StandardWebhooks::new(), SECRET))
        .with_headers(extra);
    h.engine.submit(delivery).await.unwrap();
    assert_eq!(h.finished().await.state, DeliveryState::Delivered);

    let seen = h.endpoint.requests().remove(0);
    assert_eq!(seen.body, r#"{"type":"invoice.paid"}"#);
    assert_eq!(seen.headers["x-request-id"], "msg_1");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.headers["authorization"], "Bearer t0ken");
    let secrets = SecretSet::from(SECRET);
    let now = unix_seconds(t0());
    let verified = StandardWebhooks::new()
        .verify_headers(&seen.headers, &seen.body, &secrets, now)
        .expect("the receiver verifies the signature");
    assert_eq!(verified.timestamp, Some(now));
    assert_eq!(verified.message_id.as_deref(), Some("msg_1"));
    let tampered = Bytes::from_static(br#"{"type":"invoice.void"}"#);
    assert!(StandardWebhooks::new()
        .verify_headers(&seen.headers, &tampered, &secrets, now)
        .is_err());
    assert!(StandardWebhooks::new()
        .verify_headers(&seen.headers, &seen.body, &secrets, now + 3600)
        .is_err());

    // The conversation keeps the headers sent, secrets and signatures redacted.
    let recorded = h.store.conversation("msg_1").attempts[0]
        .request_headers
        .clone();
    let value = |name: &str| {
        recorded
            .get(name)
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{name} recorded"))
    };
    assert_eq!(value("webhook-id"), "msg_1");
    assert_eq!(value("webhook-timestamp"), now.to_string());
    assert_ne!(
        value("webhook-signature").as_bytes(),
        seen.headers["webhook-signature"].as_bytes()
    );
    assert_ne!(value("authorization"), "Bearer t0ken");
}

#[tokio::test(start_paused = true)]
async fn internal_endpoints_are_refused_without_a_request() {
    let mut h = harness(Endpoint::default(), Policy::standard(), |builder| builder);
    let refused = [
        ("loopback", "http://127.0.0.1:8080/hook"),
        ("metadata", "http://169.254.169.254/latest/meta-data"),
        ("scheme", "ftp://hooks.example.com/in"),
    ];
    for (id, endpoint) in refused {
        h.engine
            .submit(Delivery::new(id, endpoint, "{}"))
            .await
            .unwrap();
    }
    let reports = h.finished_all(refused.len()).await;

    assert!(h.endpoint.requests().is_empty());
    for (id, _) in refused {
        let report = &reports[id];
        assert_eq!(report.state, DeliveryState::Refused);
        assert_eq!(report.attempts, 1);
        assert!(!report.disable_endpoint);
        assert!(
            matches!(report.outcome, AttemptOutcome::Refused(_)),
            "{:?}",
            report.outcome
        );
        let attempt = h.store.conversation(id).attempts[0].clone();
        assert_eq!(attempt.decision, Decision::Refused);
        assert!(attempt.request_headers.is_empty());
    }
    let final_refusals = h
        .store
        .calls()
        .into_iter()
        .filter(|call| {
            matches!(
                call,
                Call::Record {
                    next: Next::Final {
                        state: DeliveryState::Refused,
                        ..
                    },
                    ..
                }
            )
        })
        .count();
    assert_eq!(final_refusals, refused.len());
}

#[tokio::test(start_paused = true)]
async fn a_held_delivery_is_due_a_hold_after_the_clock_and_completes_with_the_result() {
    let hold = Duration::from_secs(30);
    let mut h = harness(Endpoint::default(), Policy::custom([]), |builder| {
        builder.hold(hold)
    });
    let slot = h.engine.try_reserve().unwrap();
    let placeholder = Delivery::new("run-1", URL, r#"{"status":"interrupted"}"#);
    h.engine.hold(slot, placeholder).await.unwrap();
    assert_eq!(
        h.store.conversation("run-1").delivery.next_attempt_at,
        t0() + hold
    );

    h.clock.advance(Duration::from_secs(10));
    h.engine.keep_held("run-1").await.unwrap();
    let kept = Call::UpdatePending {
        id: "run-1".into(),
        due: t0() + Duration::from_secs(10) + hold,
    };
    assert!(h.store.calls().contains(&kept));

    h.engine
        .complete_held("run-1", Bytes::from_static(br#"{"status":"done"}"#))
        .await
        .unwrap();
    let report = h.finished().await;
    assert_eq!(report.state, DeliveryState::Delivered);
    let sent = h.endpoint.requests().remove(0);
    assert_eq!(sent.body, r#"{"status":"done"}"#);
    let attempt = h.store.conversation("run-1").attempts[0].clone();
    assert_eq!(attempt.started_at, t0() + Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn retention_purges_what_is_older_than_its_age_on_the_clock() {
    let day = Duration::from_secs(24 * 3600);
    let h = harness(Endpoint::default(), Policy::custom([]), |builder| {
        builder
            .retain_delivered(day)
            .retain_failed(7 * day)
            .retention_schedule(Duration::from_secs(60), 10)
    });
    let purged = |calls: &[Call]| -> Vec<(DeliveryState, SystemTime)> {
        calls
            .iter()
            .filter_map(|call| match call {
                Call::Purge { state, before } => Some((*state, *before)),
                _ => None,
            })
            .collect()
    };
    h.store
        .wait_for_calls(|calls| purged(calls).len() >= 3)
        .await;
    assert_eq!(
        purged(&h.store.calls())[..3],
        [
            (DeliveryState::Delivered, t0() - day),
            (DeliveryState::Failed, t0() - 7 * day),
            (DeliveryState::Refused, t0() - 7 * day),
        ]
    );
}
