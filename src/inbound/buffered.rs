//! Verifying a body that is already read: one call from headers (or the request head) and
//! bytes, for servers other than axum, serverless handlers and queues.

use std::fmt;
use std::future::Ready;

use bytes::Bytes;
use http::HeaderMap;
use http_body::SizeHint;
use tracing::Instrument;

use super::collect::CollectError;
use super::future::{admit, Duplicate, ReplayGuard};
use super::key::{SecretLookup, SecretSource};
use super::rejection::Rejection;
use super::telemetry::Telemetry;
use super::verifier::WebhookVerifier;
use crate::replay::{ReplayError, Reservation};
use crate::scheme::{head_of, RequestHead, Scheme, Verification, Verified};
use crate::secret::SecretSet;

/// The synchronous calls need the secrets at once: every [`SecretSource`] whose lookup never
/// waits ([`SecretSet`], closures) has this future; an
/// [`AsyncSecretSource`](super::AsyncSecretSource) needs [`WebhookVerifier::verify_bytes`].
type Immediate = Ready<Option<SecretSet>>;

impl<Sc, K> WebhookVerifier<Sc, K>
where
    Sc: Scheme,
    K: SecretSource<Future = Immediate>,
{
    /// Verifies a webhook from its headers and body bytes in one synchronous call, as svix's
    /// `Webhook::verify(&[u8], &HeaderMap)` does, with the checks of
    /// [`WebhookSignatureLayer`](super::WebhookSignatureLayer): the secrets, the headers, the
    /// timestamp window at this verifier's clock, the body limit, the signature, and the
    /// scheme's quotas ([`Scheme::admit`], charged at once as the layer does for a delivery
    /// without a replay key). A failure is the same [`Rejection`] the layer answers with:
    /// render it with [`Rejection::problem`] (or `IntoResponse` in axum) for the same
    /// `application/problem+json`.
    ///
    /// What it cannot do:
    ///
    /// - it sees no method or URI (the secret lookup and the scheme see `POST /`): a
    ///   Valohai query-string condition or a per-tenant lookup by path needs
    ///   [`WebhookVerifier::verify_parts`];
    /// - it does not de-duplicate, even with a [replay store](WebhookVerifier::replay_store):
    ///   the window is checked, but a replay inside it is accepted again. De-duplication
    ///   awaits the store and needs to hear how the handler did:
    ///   [`WebhookVerifier::verify_bytes`] does both;
    /// - it copies the headers into a request head for the scheme: with a request's
    ///   [`Parts`](http::request::Parts) at hand, [`WebhookVerifier::verify_parts`] verifies
    ///   without the copy.
    ///
    /// # Without axum
    ///
    /// hyper alone (no axum in the service; `hyper`, `hyper-util` and `http-body-util`). The
    /// handler reads the body within the verifier's limit, then verifies it; it is generic
    /// over the body, so the example also calls it directly:
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use bytes::Bytes;
    /// use http::{Request, Response, StatusCode};
    /// use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
    /// use tower_webhooks::inbound::{Rejection, RejectionKind, WebhookVerifier};
    /// use tower_webhooks::scheme::{Message, Scheme, Stripe};
    ///
    /// async fn handle<B>(
    ///     verifier: &WebhookVerifier<Stripe>,
    ///     request: Request<B>,
    /// ) -> Result<Response<Full<Bytes>>, Infallible>
    /// where
    ///     B: http_body::Body<Data = Bytes>,
    ///     B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    /// {
    ///     let (head, body) = request.into_parts();
    ///     let body = match Limited::new(body, verifier.body_limit()).collect().await {
    ///         Ok(body) => body.to_bytes(),
    ///         Err(error) => {
    ///             let kind = if error.is::<LengthLimitError>() {
    ///                 RejectionKind::BodyTooLarge
    ///             } else {
    ///                 RejectionKind::BodyError
    ///             };
    ///             let rejection = Rejection::new(kind, "the body was not read");
    ///             return Ok(rejection.problem().into_response_with());
    ///         }
    ///     };
    ///     match verifier.verify_parts(&head, &body) {
    ///         Ok(_verified) => Ok(Response::new(Full::new(Bytes::from_static(b"ok")))),
    ///         // The layer's `application/problem+json` answer (with `Retry-After` where due).
    ///         Err(rejection) => Ok(rejection.problem().into_response_with()),
    ///     }
    /// }
    ///
    /// async fn serve(verifier: WebhookVerifier<Stripe>) -> std::io::Result<()> {
    ///     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    ///     loop {
    ///         let (stream, _) = listener.accept().await?;
    ///         let verifier = verifier.clone();
    ///         let service = hyper::service::service_fn(move |request| {
    ///             let verifier = verifier.clone();
    ///             async move { handle(&verifier, request).await }
    ///         });
    ///         tokio::spawn(
    ///             hyper::server::conn::http1::Builder::new()
    ///                 .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
    ///         );
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let _ = serve;
    /// let verifier = WebhookVerifier::new(Stripe::new(), "whsec_test").clock(|| 1_700_000_000);
    /// let body = Bytes::from_static(br#"{"type":"charge.succeeded"}"#);
    /// let mut request = Request::post("/stripe").body(Full::new(body.clone())).unwrap();
    /// Stripe::new()
    ///     .sign(&Message::new("evt_1", 1_700_000_000, &body), &"whsec_test".into(), request.headers_mut())
    ///     .unwrap();
    /// assert_eq!(handle(&verifier, request).await.unwrap().status(), StatusCode::OK);
    ///
    /// let forged = Request::post("/stripe")
    ///     .header("stripe-signature", "t=1700000000,v1=00")
    ///     .body(Full::new(body))
    ///     .unwrap();
    /// assert_eq!(handle(&verifier, forged).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    /// # }
    /// ```
    ///
    /// actix-web (which has its own header types, so the headers are copied into an
    /// [`http::HeaderMap`]; the dev-dependency builds actix-web without default features):
    ///
    /// ```
    /// use actix_web::{web, HttpRequest, HttpResponse};
    /// use tower_webhooks::inbound::WebhookVerifier;
    /// use tower_webhooks::scheme::GitHub;
    ///
    /// async fn hook(
    ///     request: HttpRequest,
    ///     body: web::Bytes,
    ///     verifier: web::Data<WebhookVerifier<GitHub>>,
    /// ) -> HttpResponse {
    ///     let headers: http::HeaderMap = request
    ///         .headers()
    ///         .iter()
    ///         .filter_map(|(name, value)| {
    ///             Some((
    ///                 http::HeaderName::from_bytes(name.as_str().as_bytes()).ok()?,
    ///                 http::HeaderValue::from_bytes(value.as_bytes()).ok()?,
    ///             ))
    ///         })
    ///         .collect();
    ///     // actix-web's `web::Bytes` is `bytes::Bytes`.
    ///     match verifier.verify_headers(&headers, &body) {
    ///         Ok(_verified) => HttpResponse::Ok().finish(),
    ///         Err(rejection) => HttpResponse::build(
    ///             actix_web::http::StatusCode::from_u16(rejection.status().as_u16())
    ///                 .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    ///         )
    ///         .content_type("application/problem+json")
    ///         .body(rejection.problem().to_bytes()),
    ///     }
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// use actix_web::test::{call_service, init_service, TestRequest};
    /// use tower_webhooks::scheme::{Message, Scheme};
    ///
    /// let verifier = web::Data::new(WebhookVerifier::new(GitHub::new(), "gh-secret"));
    /// let app = init_service(
    ///     actix_web::App::new()
    ///         .app_data(verifier)
    ///         .route("/github", web::post().to(hook)),
    /// )
    /// .await;
    ///
    /// let body = br#"{"zen":"Design for failure."}"#;
    /// let mut signed = http::HeaderMap::new();
    /// GitHub::new()
    ///     .sign(&Message::new("d-1", 0, body), &"gh-secret".into(), &mut signed)
    ///     .unwrap();
    /// let mut request = TestRequest::post().uri("/github").set_payload(&body[..]);
    /// for (name, value) in &signed {
    ///     request = request.insert_header((name.as_str(), value.to_str().unwrap()));
    /// }
    /// let response = call_service(&app, request.to_request()).await;
    /// assert_eq!(response.status().as_u16(), 200);
    ///
    /// let unsigned = TestRequest::post().uri("/github").set_payload(&body[..]);
    /// let response = call_service(&app, unsigned.to_request()).await;
    /// assert_eq!(response.status().as_u16(), 400);
    /// # });
    /// ```
    ///
    /// An AWS Lambda-style handler: the function URL or API Gateway event is taken here as an
    /// `http::Request<Bytes>` (what `lambda_http` hands over after decoding the event), so the
    /// example needs none of the AWS crates:
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Request, Response, StatusCode};
    /// use tower_webhooks::inbound::WebhookVerifier;
    /// use tower_webhooks::scheme::{Message, Scheme, StandardWebhooks};
    ///
    /// fn handler(verifier: &WebhookVerifier<StandardWebhooks>, event: Request<Bytes>) -> Response<Bytes> {
    ///     let (head, body) = event.into_parts();
    ///     match verifier.verify_parts(&head, &body) {
    ///         Ok(verified) => Response::new(Bytes::from(format!("accepted {}", verified.run_id))),
    ///         Err(rejection) => rejection.problem().into_response_with(),
    ///     }
    /// }
    ///
    /// let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    /// let verifier = WebhookVerifier::new(StandardWebhooks::new(), secret).clock(|| 1_700_000_000);
    /// let body = Bytes::from_static(br#"{"type":"user.created"}"#);
    /// let mut event = Request::post("/lambda").body(body.clone()).unwrap();
    /// StandardWebhooks::new()
    ///     .sign(&Message::new("msg_1", 1_700_000_000, &body), &secret.into(), event.headers_mut())
    ///     .unwrap();
    /// assert_eq!(handler(&verifier, event).status(), StatusCode::OK);
    ///
    /// let unsigned = Request::post("/lambda").body(body).unwrap();
    /// let response = handler(&verifier, unsigned);
    /// assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    /// assert_eq!(response.headers()["content-type"], "application/problem+json");
    /// let problem: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    /// assert_eq!(problem["type"], "tag:tower-webhooks,2026:missing-header");
    /// ```
    ///
    /// # Errors
    ///
    /// The [`Rejection`] the layer would answer with.
    pub fn verify_headers(&self, headers: &HeaderMap, body: &Bytes) -> Result<Verified, Rejection> {
        self.verify_parts(&head_of(headers), body)
    }

    /// [`WebhookVerifier::verify_headers`] with the whole request head (method, URI,
    /// headers): a secret lookup by path or a Valohai query-string condition sees them.
    ///
    /// # Errors
    ///
    /// The [`Rejection`] the layer would answer with.
    pub fn verify_parts(&self, head: &RequestHead, body: &Bytes) -> Result<Verified, Rejection> {
        let telemetry = Telemetry::start(self.shared.label);
        let result = {
            let _span = telemetry.enter();
            self.verify_parts_untraced(head, body)
        };
        match &result {
            Ok(verified) => telemetry.accepted(|| Some(verified)),
            Err(rejection) => telemetry.rejected(rejection),
        }
        result
    }

    /// [`WebhookVerifier::verify_parts`] without its span and counters.
    fn verify_parts_untraced(
        &self,
        head: &RequestHead,
        body: &Bytes,
    ) -> Result<Verified, Rejection> {
        let now = self.now();
        let verified = match self.shared.secrets.lookup(head) {
            SecretLookup::Borrowed(secrets) => self.verify_buffered(head, body, secrets, now),
            SecretLookup::Owned(secrets) => self.verify_buffered(head, body, &secrets, now),
            SecretLookup::Pending(lookup) => match lookup.into_inner() {
                Some(secrets) => self.verify_buffered(head, body, &secrets, now),
                None => Err(self.no_secret()),
            },
            SecretLookup::NotFound => Err(self.no_secret()),
        }?;
        admit(self, &verified, now)?;
        Ok(verified)
    }
}

impl<Sc: Scheme, K: SecretSource> WebhookVerifier<Sc, K> {
    /// Verifies a webhook whose body is already read, and de-duplicates it as the layer
    /// does: with a [replay store](WebhookVerifier::replay_store) the delivery's key is
    /// reserved, and a duplicate of a processed one comes back as [`Delivery::Duplicate`]
    /// (answer it `2xx` without handling it again). A fresh delivery holds its reservation
    /// until you report how handling it went ([`FreshDelivery::processed`] or
    /// [`FreshDelivery::failed`]; dropping it counts as failed, so the sender's retry is
    /// handled). The secret lookup may wait ([`secret_source_async`](super::secret_source_async)).
    ///
    /// Without a store every verified delivery is fresh, as with
    /// [`WebhookVerifier::verify_parts`].
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::Request;
    /// use tower_webhooks::inbound::{Delivery, RejectionKind, WebhookVerifier};
    /// use tower_webhooks::replay::MemoryReplayStore;
    /// use tower_webhooks::scheme::{Cerebrium, Message, Scheme};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let verifier = WebhookVerifier::new(Cerebrium::new(), "secret")
    ///     .clock(|| 1_700_000_000)
    ///     .replay_store(MemoryReplayStore::new(1_000));
    /// let body = Bytes::from_static(b"{}");
    /// let mut request = Request::post("/hook").body(()).unwrap();
    /// Cerebrium::new()
    ///     .sign(&Message::new("run-1", 1_700_000_000, &body), &"secret".into(), request.headers_mut())
    ///     .unwrap();
    /// let (head, ()) = request.into_parts();
    ///
    /// let Delivery::Fresh(first) = verifier.verify_bytes(&head, &body).await.unwrap() else {
    ///     panic!("the first delivery is fresh");
    /// };
    /// // While it is handled, the same delivery is refused (409, retry later).
    /// let in_flight = verifier.verify_bytes(&head, &body).await.unwrap_err();
    /// assert_eq!(in_flight.kind(), RejectionKind::InFlight);
    ///
    /// first.processed().await.unwrap();
    /// assert!(matches!(
    ///     verifier.verify_bytes(&head, &body).await.unwrap(),
    ///     Delivery::Duplicate(_)
    /// ));
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The [`Rejection`] the layer would answer with, including
    /// [`InFlight`](super::RejectionKind::InFlight) while the same delivery is being handled
    /// and [`ReplayStoreUnavailable`](super::RejectionKind::ReplayStoreUnavailable) when the
    /// store fails (fail closed).
    pub async fn verify_bytes(
        &self,
        head: &RequestHead,
        body: &Bytes,
    ) -> Result<Delivery, Rejection> {
        let telemetry = Telemetry::start(self.shared.label);
        let result = self
            .verify_bytes_untraced(head, body)
            .instrument(telemetry.span())
            .await;
        match &result {
            Ok(Delivery::Fresh(fresh)) => telemetry.accepted(|| Some(fresh.verified())),
            Ok(Delivery::Duplicate(duplicate)) => telemetry.duplicate(|| Some(&duplicate.verified)),
            Err(rejection) => telemetry.rejected(rejection),
        }
        result
    }

    /// [`WebhookVerifier::verify_bytes`] without its span and counters.
    async fn verify_bytes_untraced(
        &self,
        head: &RequestHead,
        body: &Bytes,
    ) -> Result<Delivery, Rejection> {
        let now = self.now();
        let (verified, secrets) = match self.shared.secrets.lookup(head) {
            SecretLookup::Borrowed(secrets) => {
                let verified = self.verify_buffered(head, body, secrets, now)?;
                (verified, self.replay.is_some().then(|| secrets.clone()))
            }
            SecretLookup::Owned(secrets) => (
                self.verify_buffered(head, body, &secrets, now)?,
                Some(secrets),
            ),
            SecretLookup::Pending(lookup) => match lookup.await {
                Some(secrets) => (
                    self.verify_buffered(head, body, &secrets, now)?,
                    Some(secrets),
                ),
                None => return Err(self.no_secret()),
            },
            SecretLookup::NotFound => return Err(self.no_secret()),
        };
        let Some((store, key)) = self.replay_target(&verified, secrets.as_ref()) else {
            // Without a replay key every delivery is new: charged at once.
            admit(self, &verified, now)?;
            return Ok(Delivery::Fresh(FreshDelivery {
                verified,
                guard: None,
            }));
        };
        let reservation = store.reserve(&key, now, self.replay_ttl);
        let mut guard = ReplayGuard::new(store, key, self, verified.run_id);
        match reservation.await {
            Ok(Reservation::Fresh) => {
                guard.arm();
                // A refused quota drops the armed guard: the reservation is released.
                admit(self, &verified, now)?;
                Ok(Delivery::Fresh(FreshDelivery {
                    verified,
                    guard: Some(guard),
                }))
            }
            Ok(Reservation::InFlight) => Err(Rejection::in_flight()),
            Ok(Reservation::Done(record)) => {
                let mut verified = verified;
                // The duplicate is answered as the original was.
                verified.run_id = record.run_id;
                Ok(Delivery::Duplicate(Duplicate { verified }))
            }
            Err(error) => {
                tracing::warn!(
                    target: "tower_webhooks::inbound",
                    %error,
                    "replay store unavailable"
                );
                Err(Rejection::replay_store_unavailable())
            }
        }
    }

    /// The checks of the layer on a body already read, before the quotas: the headers and
    /// window, the limit (as a declared length), the signature.
    fn verify_buffered(
        &self,
        head: &RequestHead,
        body: &Bytes,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<Verified, Rejection> {
        let length = u64::try_from(body.len()).unwrap_or(u64::MAX);
        let (mut verification, _buffer) =
            self.start(head, secrets, now, &SizeHint::with_exact(length))?;
        verification.update(body);
        verification
            .finish(body)
            .map_err(|error| self.collect_rejection(CollectError::Verify(error)))
    }
}

/// What [`WebhookVerifier::verify_bytes`] found.
#[derive(Debug)]
#[must_use = "a fresh delivery must be handled, then reported processed or failed"]
pub enum Delivery {
    /// Not seen before (or no replay store): handle it, then report the outcome.
    Fresh(FreshDelivery),
    /// A duplicate of a delivery already processed: answer `2xx` without handling it (the
    /// layer answers `{"status":"duplicate"}`).
    Duplicate(Duplicate),
}

impl Delivery {
    /// The verification metadata, fresh or duplicate.
    pub fn verified(&self) -> &Verified {
        match self {
            Self::Fresh(fresh) => &fresh.verified,
            Self::Duplicate(duplicate) => &duplicate.verified,
        }
    }
}

/// A verified delivery not seen before, holding its replay reservation (if any) until it is
/// reported [`processed`](FreshDelivery::processed) or [`failed`](FreshDelivery::failed).
/// Dropped unreported, it releases the reservation as a failure.
#[must_use = "report the outcome with `processed` or `failed`"]
pub struct FreshDelivery {
    verified: Verified,
    guard: Option<ReplayGuard>,
}

impl fmt::Debug for FreshDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreshDelivery")
            .field("verified", &self.verified)
            .field("reserved", &self.guard.is_some())
            .finish()
    }
}

impl FreshDelivery {
    /// The verification metadata.
    pub fn verified(&self) -> &Verified {
        &self.verified
    }

    /// Handling succeeded: later duplicates are answered without handling (within the
    /// verifier's replay TTL).
    ///
    /// # Errors
    ///
    /// The store could not record it; the delivery was handled all the same (the layer logs
    /// this and answers the handler's response).
    pub async fn processed(mut self) -> Result<(), ReplayError> {
        match self.guard.take() {
            Some(guard) => guard.processed().await,
            None => Ok(()),
        }
    }

    /// Handling failed: the key is released, so the sender's retry is handled.
    ///
    /// # Errors
    ///
    /// The store could not release it (the reservation then expires with the replay TTL).
    pub async fn failed(mut self) -> Result<(), ReplayError> {
        match self.guard.take() {
            Some(guard) => guard.failed().await,
            None => Ok(()),
        }
    }
}
