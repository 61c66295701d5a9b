//! Secrets at rest: the SQLite files are private to their owner, and with encryption keys the
//! bytes on disk (SQLite files, PostgreSQL tables) never hold a signing secret or a custom
//! header value; keys rotate, and a wrong or missing key is a clear error.

mod support;

use std::path::Path;

use base64::Engine as _;
use tower_webhooks::delivery::{Delivery, SigningSpec};
use tower_webhooks::scheme::Cerebrium;
use tower_webhooks::store::{
    DeliveryStore, EncryptionKey, EncryptionKeys, SqliteStore, StoreError,
};
use tower_webhooks::{Secret, SecretSet};

const SIGNING_SECRET: &str = "signing-secret-value-0123456789";
const HEADER_VALUE: &str = "header-credential-value-9876543210";

fn key(id: &str, byte: u8) -> EncryptionKey {
    EncryptionKey::new(id, [byte; 32]).unwrap()
}

fn ring(keys: &[(&str, u8)]) -> EncryptionKeys {
    let mut iter = keys.iter();
    let &(id, byte) = iter.next().unwrap();
    iter.fold(EncryptionKeys::new(key(id, byte)), |ring, &(id, byte)| {
        ring.with_older(key(id, byte))
    })
}

fn secret_delivery(id: &str) -> Delivery {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-tenant-credential", HEADER_VALUE.parse().unwrap());
    Delivery::new(id, "https://example.com/hook", "{}")
        .with_signing(SigningSpec::new(
            Cerebrium::new(),
            SecretSet::from(Secret::new(SIGNING_SECRET)),
        ))
        .with_headers(headers)
}

/// Every byte SQLite keeps for the database at `path` (the file, its WAL and shared memory).
fn bytes_on_disk(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        if let Ok(more) = std::fs::read(&name) {
            bytes.extend(more);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Neither the secrets nor their base64 (how the secrets column encodes them) is there.
fn assert_no_secret(bytes: &[u8]) {
    for secret in [SIGNING_SECRET, HEADER_VALUE] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        assert!(!contains(bytes, secret.as_bytes()), "{secret} is on disk");
        assert!(
            !contains(bytes, b64.as_bytes()),
            "{secret} (base64) is on disk"
        );
    }
}

async fn open(path: &Path, keys: Option<EncryptionKeys>) -> SqliteStore {
    let mut options = SqliteStore::builder(path);
    if let Some(keys) = keys {
        options = options.encryption_keys(keys);
    }
    options.connect().await.unwrap()
}

fn assert_secrets_read_back(delivery: &Delivery) {
    let signing = delivery.signing.as_ref().unwrap();
    assert_eq!(
        signing.secrets().primary().unwrap().expose(),
        SIGNING_SECRET.as_bytes()
    );
    assert_eq!(delivery.headers["x-tenant-credential"], HEADER_VALUE);
}

#[tokio::test]
async fn sqlite_store_keeps_secrets_encrypted_on_disk_and_rotates_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deliveries.db");
    let store = open(&path, Some(ring(&[("k1", 1)]))).await;
    store.enqueue(secret_delivery("d1")).await.unwrap();
    let bytes = bytes_on_disk(&path);
    assert_no_secret(&bytes);
    assert!(contains(&bytes, b"enc1:k1:"), "sealed with k1");
    drop(store);

    // Rotation: k2 is the new key, k1 still opens what it sealed.
    let rotated = open(&path, Some(ring(&[("k2", 2), ("k1", 1)]))).await;
    assert_secrets_read_back(&rotated.get("d1").await.unwrap().unwrap().delivery);
    rotated.enqueue(secret_delivery("d2")).await.unwrap();
    assert!(
        contains(&bytes_on_disk(&path), b"enc1:k2:"),
        "sealed with k2"
    );
    assert_no_secret(&bytes_on_disk(&path));
    drop(rotated);

    // The wrong key under the same id, a ring without k1, no key at all: clear errors.
    for (keys, expected) in [
        (
            Some(ring(&[("k2", 2), ("k1", 9)])),
            "cannot be decrypted with key `k1`",
        ),
        (
            Some(ring(&[("k2", 2)])),
            "key `k1`, which is not in the configured key ring",
        ),
        (None, "no encryption key is configured"),
    ] {
        let store = open(&path, keys).await;
        match store.get("d1").await {
            Err(StoreError::Backend(message)) => {
                assert!(message.contains(expected), "{message}");
                assert!(!message.contains(SIGNING_SECRET));
            }
            other => panic!("expected a decryption error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn values_stored_before_a_key_was_configured_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deliveries.db");
    let plain = open(&path, None).await;
    plain.enqueue(secret_delivery("old")).await.unwrap();
    drop(plain);
    let keyed = open(&path, Some(ring(&[("k1", 1)]))).await;
    assert_secrets_read_back(&keyed.get("old").await.unwrap().unwrap().delivery);
    keyed.enqueue(secret_delivery("new")).await.unwrap();
    assert_secrets_read_back(&keyed.get("new").await.unwrap().unwrap().delivery);
}

thread_local! {
    /// What `tracing` wrote on this thread.
    static LOGGED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A `tracing` writer into the emitting thread's [`LOGGED`].
struct ThreadLog;

impl std::io::Write for ThreadLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOGGED.with(|logged| logged.borrow_mut().extend_from_slice(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// This thread's log so far. A global subscriber (installed once) rather than a scoped one:
/// callsites first hit by parallel tests without a subscriber would stay disabled.
fn thread_log() -> String {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ThreadLog)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
    LOGGED.with(|logged| String::from_utf8_lossy(&logged.borrow()).into_owned())
}

#[tokio::test(flavor = "current_thread")]
async fn a_store_without_keys_warns_at_start_up_and_one_with_keys_does_not() {
    let dir = tempfile::tempdir().unwrap();
    // The runtime is current-thread: the stores log on this thread.
    assert!(!thread_log().contains("unencrypted"));
    let _keyed = open(&dir.path().join("keyed.db"), Some(ring(&[("k1", 1)]))).await;
    assert!(
        !thread_log().contains("unencrypted"),
        "no warning with keys"
    );
    let _plain = open(&dir.path().join("plain.db"), None).await;
    let log = thread_log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("unencrypted")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("WARN"), "{log}");
    assert!(
        warnings[0].contains("TOWER_WEBHOOKS_ENCRYPTION_KEYS"),
        "{log}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn sqlite_files_are_created_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deliveries.db");
    let store = open(&path, None).await;
    store.enqueue(secret_delivery("d")).await.unwrap();
    let mut checked = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        if let Ok(meta) = std::fs::metadata(&name) {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name:?}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "the database and its WAL");

    #[cfg(feature = "registry")]
    {
        let path = dir.path().join("subscriptions.db");
        let _subscriptions = tower_webhooks::registry::SqliteSubscriptions::connect(&path)
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[cfg(feature = "registry")]
mod subscriptions {
    use std::time::SystemTime;

    use tower_webhooks::registry::{
        Endpoint, Owner, SigningScheme, SqliteSubscriptions, SubscriptionError, SubscriptionStore,
        WebhookKey,
    };

    use super::*;

    pub(crate) fn webhook() -> Endpoint {
        let mut webhook = Endpoint::new(
            Owner::new("acme"),
            "w",
            "https://example.com/hook",
            vec!["run.status".into()],
            SigningScheme::Nextmv,
            SystemTime::now(),
        );
        webhook.headers = vec![("x-tenant".into(), HEADER_VALUE.into())];
        webhook
    }

    #[tokio::test]
    async fn sqlite_subscriptions_keep_secrets_encrypted_on_disk_and_rotate_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subscriptions.db");
        let store = SqliteSubscriptions::connect_encrypted(&path, Some(ring(&[("k1", 1)])))
            .await
            .unwrap();
        let webhook = webhook();
        let secret = webhook.secrets[0].secret.expose_str().unwrap().to_owned();
        store.insert(webhook).await.unwrap();
        let bytes = bytes_on_disk(&path);
        assert_no_secret(&bytes);
        for text in [
            secret.clone(),
            base64::engine::general_purpose::STANDARD.encode(&secret),
        ] {
            assert!(
                !contains(&bytes, text.as_bytes()),
                "the signing secret is on disk"
            );
        }
        assert!(contains(&bytes, b"enc1:k1:"));
        drop(store);

        let owner = Owner::new("acme");
        let rotated =
            SqliteSubscriptions::connect_encrypted(&path, Some(ring(&[("k2", 2), ("k1", 1)])))
                .await
                .unwrap();
        let read = rotated
            .get(WebhookKey::new(&owner, "w"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.secrets[0].secret.expose_str().unwrap(), secret);
        assert_eq!(
            read.headers,
            [("x-tenant".to_owned(), HEADER_VALUE.to_owned())]
        );
        drop(rotated);

        let wrong = SqliteSubscriptions::connect_encrypted(&path, Some(ring(&[("k1", 7)])))
            .await
            .unwrap();
        match wrong.get(WebhookKey::new(&owner, "w")).await {
            Err(SubscriptionError::Backend(message)) => {
                assert!(
                    message.contains("cannot be decrypted with key `k1`"),
                    "{message}"
                );
            }
            other => panic!("expected a decryption error, got {other:?}"),
        }
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
#[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
async fn postgres_tables_hold_no_secret_when_keys_are_set() {
    use sqlx::Row;
    use tower_webhooks::store::PostgresStore;
    let url = std::env::var("TOWER_WEBHOOKS_POSTGRES_URL")
        .expect("this test needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL");
    let schema = support::unique_schema("at_rest");
    let connect = |keys: EncryptionKeys| {
        PostgresStore::builder(&url)
            .schema(&schema)
            .encryption_keys(keys)
            .connect()
    };
    let store = connect(ring(&[("k1", 1)])).await.unwrap();
    store.enqueue(secret_delivery("d1")).await.unwrap();
    let mut columns = String::new();
    for row in sqlx::query("SELECT secrets, headers FROM deliveries")
        .fetch_all(store.pool())
        .await
        .unwrap()
    {
        columns.push_str(&row.get::<String, _>("secrets"));
        columns.push_str(&row.get::<String, _>("headers"));
    }

    #[cfg(feature = "registry")]
    {
        use tower_webhooks::registry::{PostgresSubscriptions, SubscriptionStore};
        let subscriptions = PostgresSubscriptions::new(&store);
        let webhook = subscriptions::webhook();
        let secret = webhook.secrets[0].secret.expose_str().unwrap().to_owned();
        subscriptions.insert(webhook).await.unwrap();
        let row = sqlx::query("SELECT secrets, headers FROM webhooks")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let stored = format!(
            "{}{}",
            row.get::<String, _>("secrets"),
            row.get::<String, _>("headers")
        );
        assert!(!stored.contains(&secret));
        assert!(!stored.contains(&base64::engine::general_purpose::STANDARD.encode(&secret)));
        assert!(!stored.contains(HEADER_VALUE));
        assert!(stored.starts_with("enc1:k1:"));
    }
    assert_no_secret(columns.as_bytes());
    assert!(columns.starts_with("enc1:k1:"));
    drop(store);

    let rotated = connect(ring(&[("k2", 2), ("k1", 1)])).await.unwrap();
    assert_secrets_read_back(&rotated.get("d1").await.unwrap().unwrap().delivery);
    drop(rotated);
    let wrong = connect(ring(&[("k1", 5)])).await.unwrap();
    assert!(matches!(wrong.get("d1").await, Err(StoreError::Backend(m)) if m.contains("k1")));
    drop(wrong);
    support::drop_schema(&url, &schema).await;
}
