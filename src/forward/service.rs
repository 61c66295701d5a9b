//! [`WebhookForward`]: finds the trigger, reserves a delivery slot, and runs the inner service in
//! sync mode (in place, through [`ResponseFuture`]) or hands it to async mode or the legacy
//! body-field search.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::async_run::{accept_async, AsyncStyle};
use super::body::{RequestBody, ResponseBody};
use super::future::ResponseFuture;
use super::job::Job;
use super::layer::{Config, WebhookForwardLayer};
use super::legacy;
use super::problems::unavailable;
use super::trigger::{new_run_id, take_secret};
use super::trigger::{FORWARD, FORWARD_ASYNC};
use super::RunId;
use crate::delivery::{endpoint_host, BoxError, DeliveryEngine};

/// The service produced by [`WebhookForwardLayer`].
pub struct WebhookForward<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: Clone> Clone for WebhookForward<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for WebhookForward<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookForward")
            .field("inner", &self.inner)
            .field("engine", &self.config.engine)
            .finish_non_exhaustive()
    }
}

impl<S> WebhookForward<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// A layer forwarding through `engine` ([`WebhookForwardLayer::new`]).
    pub fn layer(engine: DeliveryEngine) -> WebhookForwardLayer {
        WebhookForwardLayer::new(engine)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WebhookForward<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: fmt::Display,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let header_secret = take_secret(&mut parts.headers);
        let config = self.config.clone();

        let Some(trigger) = config.find_trigger(&parts) else {
            if config.legacy_body_field
                && legacy::may_carry_legacy_field(&parts, config.legacy_body_limit)
            {
                let inner = self.take_ready_inner();
                return ResponseFuture::boxed(Box::pin(legacy::call(
                    config,
                    inner,
                    parts,
                    body,
                    header_secret,
                )));
            }
            let future = self
                .inner
                .call(Request::from_parts(parts, RequestBody::stream(body)));
            return ResponseFuture::passthrough(future, config, header_secret);
        };

        let uri = match config.validate(&trigger.endpoint, trigger.asynchronous) {
            Ok(uri) => uri,
            Err(problem) => return ResponseFuture::ready(problem.into_response_with()),
        };
        let reservation = match config
            .engine
            .try_reserve_for(&endpoint_host(&trigger.endpoint))
        {
            Ok(reservation) => reservation,
            Err(err) => return ResponseFuture::ready(unavailable(&err).into_response_with()),
        };
        let run_id = new_run_id();
        parts.extensions.insert(RunId(run_id.clone()));
        let signing = config.signing(trigger.secret, header_secret);
        let source = if trigger.asynchronous {
            FORWARD_ASYNC
        } else {
            FORWARD
        };
        let job = Job::new(
            &config,
            reservation,
            run_id,
            trigger.endpoint,
            signing,
            source,
        );
        let request = Request::from_parts(parts, RequestBody::stream(body));

        if trigger.asynchronous {
            let inner = self.take_ready_inner();
            return ResponseFuture::boxed(Box::pin(async move {
                Ok(accept_async(&config, inner, request, job, &uri, AsyncStyle::V4).await)
            }));
        }
        ResponseFuture::forward(self.inner.call(request), job)
    }
}

impl<S: Clone> WebhookForward<S> {
    /// The service that was polled ready, leaving a fresh clone in its place.
    fn take_ready_inner(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}
