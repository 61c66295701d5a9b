//! The `SubscriptionStore` contract, run against every store: memory, SQLite (temp files) and
//! PostgreSQL (when `TOWER_WEBHOOKS_POSTGRES_URL` is set; one schema per test, dropped after),
//! and a restart of the durable ones that must lose nothing a `Endpoint` holds.
#![cfg(feature = "registry")]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_webhooks::registry::{
    Endpoint, EndpointRateLimit, MemorySubscriptions, Owner, SigningScheme, SubscriptionError,
    SubscriptionStore, WebhookKey, WebhookPage,
};

/// A time with whole milliseconds (what the SQL stores keep).
fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn hook(owner: &str, id: &str, types: &[&str]) -> Endpoint {
    Endpoint::new(
        Owner::new(owner),
        id,
        "https://example.com/hook",
        types.iter().map(|t| (*t).to_owned()).collect(),
        SigningScheme::Nextmv,
        at(1_700_000_000_000),
    )
}

/// A webhook using every field: rotated secrets (one in its grace period), custom headers,
/// disabled with a reason, a rate limit, a description, another scheme.
fn full(owner: &str, id: &str) -> Endpoint {
    let t0 = at(1_700_000_000_123);
    let mut webhook = Endpoint::new(
        Owner::new(owner),
        id,
        "https://hooks.example.com/in?tenant=1",
        vec!["run.status".into(), "app.deployed".into()],
        SigningScheme::StandardWebhooks,
        t0,
    );
    webhook.rotate_secret(at(1_700_000_100_456), Duration::from_secs(3600));
    webhook.description = "Ops channel — ünïcode".into();
    webhook.headers = vec![
        ("x-api-key".into(), "k3y-value".into()),
        ("x-tenant".into(), "acme".into()),
    ];
    webhook.enabled = false;
    webhook.disabled_reason = Some("10 failed deliveries within 86400 s".into());
    webhook.rate_limit = Some(EndpointRateLimit::per_second(5).with_burst(9));
    webhook.updated_at = at(1_700_000_200_789);
    webhook
}

/// Every field equal (secrets by value, times to the millisecond).
fn assert_same(a: &Endpoint, b: &Endpoint) {
    assert_eq!(a.owner, b.owner);
    assert_eq!(a.id, b.id);
    assert_eq!(a.endpoint_url, b.endpoint_url);
    assert_eq!(a.event_types, b.event_types);
    assert_eq!(a.description, b.description);
    assert_eq!(a.scheme, b.scheme);
    assert_eq!(a.headers, b.headers);
    assert_eq!(a.enabled, b.enabled);
    assert_eq!(a.disabled_reason, b.disabled_reason);
    assert_eq!(a.rate_limit, b.rate_limit);
    assert_eq!(a.created_at, b.created_at);
    assert_eq!(a.updated_at, b.updated_at);
    assert_eq!(a.secrets.len(), b.secrets.len());
    for (x, y) in a.secrets.iter().zip(&b.secrets) {
        assert_eq!(x.secret.expose(), y.secret.expose());
        assert_eq!(x.created_at, y.created_at);
        assert_eq!(x.expires_at, y.expires_at);
    }
}

fn ids(page: &[Endpoint]) -> Vec<&str> {
    page.iter().map(|w| w.id.as_str()).collect()
}

/// At most `limit` of `owner`'s webhooks after `after`.
fn page<'a>(owner: &'a Owner, after: Option<&'a str>, limit: usize) -> WebhookPage<'a> {
    WebhookPage {
        owner,
        after,
        limit,
    }
}

/// The contract every store must meet.
async fn contract(store: &dyn SubscriptionStore) {
    let (a, b, c) = (Owner::new("a"), Owner::new("b"), Owner::new("org/c"));
    store.insert(hook("a", "x", &["run.status"])).await.unwrap();
    store.insert(hook("b", "x", &["run.status"])).await.unwrap();
    store.insert(hook("a", "y", &["other"])).await.unwrap();
    store
        .insert(hook("a", "z", &["run.status", "other"]))
        .await
        .unwrap();
    assert_eq!(
        store.insert(hook("a", "x", &[])).await,
        Err(SubscriptionError::Duplicate("x".into()))
    );

    // Scoped by owner.
    assert!(store.get(WebhookKey::new(&a, "x")).await.unwrap().is_some());
    assert!(store.get(WebhookKey::new(&c, "x")).await.unwrap().is_none());
    assert!(store
        .get(WebhookKey::new(&a, "missing"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        ids(&store.list(page(&a, None, 10)).await.unwrap()),
        ["x", "y", "z"]
    );
    assert_eq!(ids(&store.list(page(&b, None, 10)).await.unwrap()), ["x"]);
    assert!(store.list(page(&c, None, 10)).await.unwrap().is_empty());
    // Keyset pages.
    assert_eq!(
        ids(&store.list(page(&a, None, 2)).await.unwrap()),
        ["x", "y"]
    );
    assert_eq!(
        ids(&store.list(page(&a, Some("y"), 2)).await.unwrap()),
        ["z"]
    );
    assert!(store.list(page(&a, Some("z"), 2)).await.unwrap().is_empty());

    // Fan-out: enabled subscribers of the type, of every owner or one.
    let mut all = store.subscribed("run.status", None).await.unwrap();
    all.sort_by(|p, q| (&p.owner, &p.id).cmp(&(&q.owner, &q.id)));
    assert_eq!(
        all.iter()
            .map(|w| format!("{}/{}", w.owner, w.id))
            .collect::<Vec<_>>(),
        ["a/x", "a/z", "b/x"]
    );
    assert_eq!(
        ids(&store.subscribed("run.status", Some(&b)).await.unwrap()),
        ["x"]
    );
    assert!(store.subscribed("run", None).await.unwrap().is_empty());

    // Modify: atomic, scoped, cannot move a webhook to another owner or id.
    let changed = store
        .modify(
            WebhookKey::new(&a, "x"),
            Box::new(|w| {
                w.enabled = false;
                w.owner = Owner::new("b");
                w.id = "stolen".into();
            }),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!changed.enabled);
    assert_eq!((changed.owner.as_str(), changed.id.as_str()), ("a", "x"));
    assert!(
        !store
            .get(WebhookKey::new(&a, "x"))
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    assert!(store
        .get(WebhookKey::new(&b, "stolen"))
        .await
        .unwrap()
        .is_none());
    assert!(
        store
            .get(WebhookKey::new(&b, "x"))
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    assert_eq!(
        ids(&store.subscribed("run.status", Some(&a)).await.unwrap()),
        ["z"]
    );
    assert!(store
        .modify(WebhookKey::new(&c, "x"), Box::new(|w| w.enabled = false))
        .await
        .unwrap()
        .is_none());

    // Every field round-trips, through insert and through modify.
    let original = full("org/c", "full");
    store.insert(original.clone()).await.unwrap();
    assert_same(
        &store
            .get(WebhookKey::new(&c, "full"))
            .await
            .unwrap()
            .unwrap(),
        &original,
    );
    let mut expected = original.clone();
    let now = at(1_700_000_300_000);
    expected.rotate_secret(now, Duration::from_secs(60));
    let rotated = store
        .modify(
            WebhookKey::new(&c, "full"),
            Box::new(move |w| w.rotate_secret(now, Duration::from_secs(60))),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.secrets.len(), expected.secrets.len());
    let stored = store
        .get(WebhookKey::new(&c, "full"))
        .await
        .unwrap()
        .unwrap();
    assert_same(&stored, &rotated);
    assert_eq!(stored.secrets[1].secret, original.secrets[0].secret);
    assert_eq!(
        stored.secrets[1].expires_at,
        Some(now + Duration::from_secs(60))
    );
    let debug = format!("{stored:?}");
    for secret in &stored.secrets {
        assert!(
            !debug.contains(secret.secret.expose_str().unwrap()),
            "{debug}"
        );
    }
    assert!(!debug.contains("k3y-value"), "{debug}");

    // Delete: scoped.
    assert!(!store.delete(WebhookKey::new(&b, "y")).await.unwrap());
    assert!(store.delete(WebhookKey::new(&a, "y")).await.unwrap());
    assert!(!store.delete(WebhookKey::new(&a, "y")).await.unwrap());
    assert_eq!(
        ids(&store.list(page(&a, None, 10)).await.unwrap()),
        ["x", "z"]
    );
}

#[tokio::test]
async fn memory_subscriptions_contract() {
    contract(&MemorySubscriptions::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_subscriptions_contract_and_restart() {
    use tower_webhooks::registry::SqliteSubscriptions;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subscriptions.db");
    let store = SqliteSubscriptions::connect(&path).await.unwrap();
    contract(&store).await;
    let debug = format!("{store:?}");
    assert!(debug.contains("subscriptions.db"), "{debug}");
    drop(store);

    // A restart loses nothing.
    let reopened = SqliteSubscriptions::connect(&path).await.unwrap();
    let c = Owner::new("org/c");
    let stored = reopened
        .get(WebhookKey::new(&c, "full"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.secrets.len(), 3);
    assert_eq!(stored.headers.len(), 2);
    assert!(!stored.enabled);
    assert_eq!(
        ids(&reopened
            .list(page(&Owner::new("a"), None, 10))
            .await
            .unwrap()),
        ["x", "z"]
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_subscriptions_share_the_delivery_store_file() {
    use tower_webhooks::registry::SqliteSubscriptions;
    use tower_webhooks::store::SqliteStore;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhooks.db");
    let deliveries = SqliteStore::connect(&path).await.unwrap();
    let store = SqliteSubscriptions::connect(&path).await.unwrap();
    let original = full("acme", "hook");
    store.insert(original.clone()).await.unwrap();
    drop((store, deliveries));
    let store = SqliteSubscriptions::connect(&path).await.unwrap();
    assert_same(
        &store
            .get(WebhookKey::new(&Owner::new("acme"), "hook"))
            .await
            .unwrap()
            .unwrap(),
        &original,
    );
}

#[cfg(feature = "postgres")]
#[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
#[tokio::test]
async fn postgres_subscriptions_contract_and_restart() {
    use tower_webhooks::registry::PostgresSubscriptions;
    use tower_webhooks::store::PostgresStore;

    let url = support::postgres_url();
    let schema = support::unique_schema("subs");
    let store = PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    let subscriptions = PostgresSubscriptions::new(&store);
    contract(&subscriptions).await;
    drop((subscriptions, store));

    // Another replica (or a restart) sees everything.
    let store = PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    let reopened = PostgresSubscriptions::new(&store);
    let stored = reopened
        .get(WebhookKey::new(&Owner::new("org/c"), "full"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.secrets.len(), 3);
    assert!(!stored.enabled);
    assert!(format!("{reopened:?}").contains(&schema));
    drop((reopened, store));
    support::drop_schema(&url, &schema).await;
}
