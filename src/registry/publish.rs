//! [`WebhookRegistry::publish`]: one event fanned out to every subscribed webhook, each its
//! own signed delivery, and the report of what was queued.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use super::event::{self, rfc3339};
use super::model::{Endpoint, Owner};
use super::{SubscriptionError, WebhookRegistry};
use crate::delivery::EnqueueError;
use crate::delivery::{Delivery, Source};
use crate::store::StoreError;

/// Why [`WebhookRegistry::publish`] did not queue the event for every subscribed webhook.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The event type was not declared on the [`RegistryBuilder`](super::RegistryBuilder).
    UnknownEventType(String),
    /// The payload does not serialise to JSON.
    Payload(serde_json::Error),
    /// The subscription store failed.
    Subscriptions(SubscriptionError),
    /// `publish_in_transaction` (feature `postgres`) was called on a registry without an
    /// outbox (`RegistryBuilder::outbox`).
    NoOutbox,
    /// The delivery rows could not be written through the caller's transaction (the
    /// transaction is then aborted: roll it back).
    Store(StoreError),
    /// The event was queued for some webhooks ([`PublishReport::deliveries`]) but not for the
    /// others ([`PublishReport::rejected`], each with why: the engine was full, the owner held
    /// its share, the store failed). The rejected ones are lost unless published again, to
    /// those webhooks (see [`EnqueueError::retry_after`]).
    NotQueued(Box<PublishReport>),
}

impl PublishError {
    /// The `Retry-After` hint when waiting helps (every rejected webhook's reason said so).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::NotQueued(report) => report
                .rejected
                .iter()
                .map(|rejected| rejected.error.retry_after())
                .try_fold(Duration::ZERO, |longest, wait| Some(longest.max(wait?))),
            _ => None,
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownEventType(name) => write!(f, "unknown event type `{name}`"),
            Self::Payload(err) => write!(f, "the event payload does not serialise: {err}"),
            Self::Subscriptions(err) => fmt::Display::fmt(err, f),
            Self::NoOutbox => f.write_str(
                "publishing in a transaction needs the registry's PostgreSQL outbox \
                 (RegistryBuilder::outbox)",
            ),
            Self::Store(err) => write!(f, "the event was not recorded: {err}"),
            Self::NotQueued(report) => write!(
                f,
                "event {} not queued for {} of {} webhooks: {}",
                report.event_id,
                report.rejected.len(),
                report.rejected.len() + report.deliveries.len(),
                report
                    .rejected
                    .first()
                    .map_or_else(String::new, |rejected| rejected.error.to_string())
            ),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Payload(err) => Some(err),
            Self::Subscriptions(err) => Some(err),
            Self::Store(err) => Some(err),
            Self::NotQueued(report) => report
                .rejected
                .first()
                .map(|rejected| &rejected.error as &(dyn std::error::Error + 'static)),
            Self::UnknownEventType(_) | Self::NoOutbox => None,
        }
    }
}

impl From<SubscriptionError> for PublishError {
    fn from(err: SubscriptionError) -> Self {
        Self::Subscriptions(err)
    }
}

/// One delivery queued by [`WebhookRegistry::publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishedDelivery {
    /// The webhook's owner.
    pub owner: Owner,
    /// The webhook.
    pub webhook_id: String,
    /// The delivery (its conversation id and `X-Request-Id`).
    pub delivery_id: String,
    /// When its first attempt is due, when an [`EndpointRateLimit`](super::EndpointRateLimit) delayed it.
    pub not_before: Option<SystemTime>,
}

/// A webhook the event could not be queued for (the engine was full or shutting down, or
/// its store failed). The application may publish again later.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectedDelivery {
    /// The webhook's owner.
    pub owner: Owner,
    /// The webhook.
    pub webhook_id: String,
    /// Why.
    pub error: EnqueueError,
}

/// What [`WebhookRegistry::publish`] did, per webhook.
///
/// `publish` returns it in `Ok` only when the event is queued for every subscribed webhook
/// (`rejected` is then empty); a partial fan-out is [`PublishError::NotQueued`] carrying it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "a publish report lists the deliveries made"]
pub struct PublishReport {
    /// The event's id (the body's `id`).
    pub event_id: String,
    /// One delivery per enabled subscribed webhook it was queued for.
    pub deliveries: Vec<PublishedDelivery>,
    /// The webhooks it could not be queued for, each with why.
    pub rejected: Vec<RejectedDelivery>,
}

impl PublishReport {
    /// Whether the event was queued for every subscribed webhook.
    pub fn is_complete(&self) -> bool {
        self.rejected.is_empty()
    }
}

impl WebhookRegistry {
    /// Publishes an event of `event_type` with `payload` as its `data` to every enabled
    /// webhook of `owner` subscribed to it (the tenant whose run, order or document
    /// changed). [`broadcast`](Self::broadcast) sends to the subscribed webhooks of every
    /// owner.
    ///
    /// The body is serialised once ([`Event`](super::Event)); each webhook gets its own delivery, signed
    /// with its own secrets in its own scheme, with its custom headers, recorded under its
    /// key so that its conversations list it.
    ///
    /// Every matching webhook gets the event or the caller learns which did not: with a
    /// durable store the engine writes every delivery (the disk is the buffer); with a memory
    /// store a full engine (or an owner holding its share) refuses some.
    ///
    /// # Errors
    ///
    /// [`PublishError`] when the event was not queued for every webhook: before any
    /// delivery (an unknown type, a payload or subscription store failure), or
    /// [`PublishError::NotQueued`] with the per-webhook report when the engine refused some.
    pub async fn publish<T>(
        &self,
        owner: &Owner,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        self.publish_inner(Some(owner), event_type, payload).await
    }

    /// [`publish`](Self::publish) to the subscribed webhooks of **every** owner: for events
    /// that concern all tenants alike (a maintenance notice), never for one tenant's data.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn broadcast<T>(
        &self,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        self.publish_inner(None, event_type, payload).await
    }

    /// The webhooks `event_type` goes to, the event's id and its body.
    pub(super) async fn prepare<T>(
        &self,
        owner: Option<&Owner>,
        event_type: &str,
        payload: &T,
        now: SystemTime,
    ) -> Result<(Vec<Endpoint>, String, Bytes), PublishError>
    where
        T: Serialize + ?Sized,
    {
        if !self.inner.events.contains_key(event_type) {
            return Err(PublishError::UnknownEventType(event_type.to_owned()));
        }
        let webhooks = self
            .inner
            .subscriptions
            .subscribed(event_type, owner)
            .await?;
        let event_id = event::new_id("evt_");
        let body = envelope(&event_id, event_type, now, payload).map_err(PublishError::Payload)?;
        Ok((webhooks, event_id, body))
    }

    async fn publish_inner<T>(
        &self,
        owner: Option<&Owner>,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        let now = self.now();
        let (webhooks, event_id, body) = self.prepare(owner, event_type, payload, now).await?;
        let sends = webhooks
            .iter()
            .map(|webhook| self.deliver(webhook, event_type, body.clone(), now));
        let results = futures_util::future::join_all(sends).await;
        let mut report = PublishReport {
            event_id,
            deliveries: Vec::with_capacity(webhooks.len()),
            rejected: Vec::new(),
        };
        for (webhook, result) in webhooks.into_iter().zip(results) {
            match result {
                Ok(delivery) => report.deliveries.push(delivery),
                Err(error) => report.rejected.push(RejectedDelivery {
                    owner: webhook.owner,
                    webhook_id: webhook.id,
                    error,
                }),
            }
        }
        if report.is_complete() {
            Ok(report)
        } else {
            Err(PublishError::NotQueued(Box::new(report)))
        }
    }

    /// The delivery of `body` to `webhook` (its rate limit applied).
    pub(super) async fn delivery(
        &self,
        webhook: &Endpoint,
        event_type: &str,
        body: Bytes,
        now: SystemTime,
    ) -> (Delivery, PublishedDelivery) {
        let delivery_id = event::new_id("dlv_");
        let key = webhook.key();
        let mut delivery = Delivery::new(delivery_id.clone(), webhook.endpoint_url.clone(), body)
            .with_signing(webhook.signing(now))
            .with_source(Source::Event(event_type.to_owned()))
            .with_headers(webhook.header_map());
        let not_before = self.not_before(webhook).await;
        if let Some(at) = not_before {
            delivery = delivery.not_before(at);
        }
        let published = PublishedDelivery {
            owner: webhook.owner.clone(),
            webhook_id: webhook.id.clone(),
            delivery_id,
            not_before,
        };
        (delivery.with_endpoint_id(key), published)
    }

    /// Queues one delivery of `body` to `webhook`.
    pub(crate) async fn deliver(
        &self,
        webhook: &Endpoint,
        event_type: &str,
        body: Bytes,
        now: SystemTime,
    ) -> Result<PublishedDelivery, EnqueueError> {
        let (delivery, published) = self.delivery(webhook, event_type, body, now).await;
        self.inner.engine.submit(delivery).await?;
        Ok(published)
    }

    pub(crate) fn body(
        &self,
        event_type: &str,
        data: &serde_json::Value,
        now: SystemTime,
    ) -> (String, Bytes) {
        let id = event::new_id("evt_");
        // A `Value` always serialises.
        let body = envelope(&id, event_type, now, data).unwrap_or_default();
        (id, body)
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: ?Sized> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    created_at: String,
    data: &'a T,
}

fn envelope<T: Serialize + ?Sized>(
    id: &str,
    event_type: &str,
    created_at: SystemTime,
    data: &T,
) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(&Envelope {
        id,
        event_type,
        created_at: rfc3339::format(created_at),
        data,
    })
    .map(Bytes::from)
}
