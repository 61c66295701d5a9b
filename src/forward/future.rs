//! The response future of [`WebhookForward`](super::WebhookForward).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::{wrap_response, ResponseBody};
use super::job::{Job, PendingStore, RunResult};
use super::layer::Config;
use super::trigger::response_trigger;
use crate::secret::Secret;

type BoxResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

pin_project! {
    /// The response future of [`WebhookForward`](super::WebhookForward).
    ///
    /// Sync mode polls the inner future in place (no boxing); only the async mode and the
    /// legacy body-field search, which await before or instead of the inner call, are boxed.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Forward { #[pin] future: F, job: Option<Job> },
        Passthrough { #[pin] future: F, config: Option<Arc<Config>>, secret: Option<Secret> },
        Ready { response: Option<Response<ResponseBody<B>>> },
        Boxed { future: BoxResponseFuture<B, E> },
        // An empty response waits until its delivery is stored.
        Storing { response: Option<Response<ResponseBody<B>>>, stored: PendingStore },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn forward(future: F, job: Job) -> Self {
        Self {
            kind: Kind::Forward {
                future,
                job: Some(job),
            },
        }
    }

    pub(crate) fn passthrough(future: F, config: Arc<Config>, secret: Option<Secret>) -> Self {
        Self {
            kind: Kind::Passthrough {
                future,
                config: Some(config),
                secret,
            },
        }
    }

    pub(crate) fn ready(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn boxed(future: BoxResponseFuture<B, E>) -> Self {
        Self {
            kind: Kind::Boxed { future },
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Forward { .. } => "forward",
            Kind::Passthrough { .. } => "passthrough",
            Kind::Ready { .. } => "ready",
            Kind::Boxed { .. } => "boxed",
            Kind::Storing { .. } => "storing",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
    E: fmt::Display,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = match self.as_mut().project().kind.project() {
            KindProj::Forward { future, job } => {
                let result = ready!(future.poll(cx));
                let job = job.take();
                match result {
                    Ok(response) => wrap_response(response, job),
                    Err(err) => {
                        if let Some(job) = job {
                            job.deliver_in_background(RunResult::failed(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                format!("the service failed: {err}"),
                            ));
                        }
                        return Poll::Ready(Err(err));
                    }
                }
            }
            KindProj::Passthrough {
                future,
                config,
                secret,
            } => match ready!(future.poll(cx)) {
                Ok(response) => {
                    let job = match config.take() {
                        Some(config) => response_trigger(&config, secret.take(), &response),
                        None => Ok(None),
                    };
                    match job {
                        Ok(job) => wrap_response(response, job),
                        Err(problem) => problem.into_response_with(),
                    }
                }
                Err(err) => return Poll::Ready(Err(err)),
            },
            KindProj::Ready { response } => {
                return Poll::Ready(Ok(response
                    .take()
                    .expect("ResponseFuture polled after completion")))
            }
            KindProj::Boxed { future } => return future.as_mut().poll(cx),
            KindProj::Storing { response, stored } => {
                // The store's answer (an error, too) releases the response.
                ready!(Pin::new(stored).poll(cx));
                return Poll::Ready(Ok(response
                    .take()
                    .expect("ResponseFuture polled after completion")));
            }
        };
        match response.body_mut().take_pending_store() {
            Some(stored) => {
                self.as_mut().project().kind.set(Kind::Storing {
                    response: Some(response),
                    stored,
                });
                self.poll(cx)
            }
            None => Poll::Ready(Ok(response)),
        }
    }
}
