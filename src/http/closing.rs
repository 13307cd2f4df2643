//! An answer given before the request's body was read to its end (a 401, a 413, a 404…)
//! closes the connection once written, without reading the rest of the body.
//!
//! actix-http decides what to do with an unread body when the answer goes out: if the
//! handler dropped the body's stream, a chunked body is drained to its end, without any
//! bound (an endless one is read for ever, whatever was answered), while a body whose stream
//! is still held makes it close the connection after the answer. So the stream is kept until
//! the answer is written: by [`keep_unread`], a middleware every route goes through, and by
//! [`Closing`], the body of the answers given before any route (the `Expect: 100-continue`
//! check, see `server.rs`). What actix-http still reads after that is bounded by the
//! server's short linger.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{header, StatusCode};
use actix_web::HttpMessage;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::Answer;

/// After the answer's bytes, what is left of the body is read and thrown away, up to this
/// much and this long, while the answer reaches the client; then the connection closes
/// (the payload still unfinished). A client still sending meets a closed connection only
/// once it could read its answer, and nothing reads an endless body for long.
const DRAIN_BYTES: usize = 64 << 10;
const DRAIN_TIME: Duration = Duration::from_millis(200);

/// Reads and throws away what is left of a request's body, within [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`]. Ready when the body ended or a bound was met.
struct Drain {
    payload: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>,
    read: usize,
    until: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Drain {
    fn new(payload: impl Stream<Item = Result<Bytes, PayloadError>> + 'static) -> Drain {
        Drain {
            payload: Box::pin(payload),
            read: 0,
            until: None,
        }
    }

    fn poll_drained(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.read > DRAIN_BYTES {
                return Poll::Ready(());
            }
            match self.payload.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.read += chunk.len(),
                // Its end (every answer to a body read whole comes here at once), or an error.
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => {
                    // The clock only for a body still arriving, which only a refusal has.
                    let until = (self.until)
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(DRAIN_TIME)));
                    return until.as_mut().poll(cx);
                }
            }
        }
    }
}

/// A body that keeps the request's unread payload alive until it has been written.
pub struct Closing {
    bytes: Option<Bytes>,
    len: u64,
    unread: Drain,
}

impl MessageBody for Closing {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.len)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if let Some(bytes) = this.bytes.take() {
            return Poll::Ready(Some(Ok(bytes)));
        }
        this.unread.poll_drained(cx).map(|()| None)
    }
}

impl Answer {
    /// The answer as JSON, closing the connection without reading the rest of `unread`.
    pub fn closing(self, unread: Payload) -> actix_http::Response<BoxBody> {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_REQUEST);
        let bytes = Bytes::from(serde_json::to_vec(&self).unwrap_or_default());
        let body = Closing {
            len: bytes.len() as u64,
            bytes: Some(bytes),
            unread: Drain::new(unread),
        };
        let mut res = actix_http::Response::with_body(code, body);
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        res.map_into_boxed_body()
    }
}

/// The request's payload, shared between the handler (which may read it) and the answer
/// (which keeps it until written).
#[derive(Clone)]
struct Shared(Rc<RefCell<Payload>>);

impl Stream for Shared {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.borrow_mut().poll_next_unpin(cx)
    }
}

/// An answer's body that also keeps the request's payload, and drains a little of it once
/// written (see [`Drain`]).
pub struct KeepsPayload<B> {
    body: B,
    body_done: bool,
    payload: Drain,
}

impl<B: MessageBody + Unpin> MessageBody for KeepsPayload<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if !this.body_done {
            match Pin::new(&mut this.body).poll_next(cx) {
                Poll::Ready(None) => this.body_done = true,
                other => return other,
            }
        }
        this.payload.poll_drained(cx).map(|()| None)
    }
}

/// The middleware (`App::wrap_fn`): the handler reads the payload through a shared handle,
/// and its answer keeps another until written.
pub fn keep_unread<S, B>(
    mut req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<KeepsPayload<B>>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + Unpin,
{
    let shared = Shared(Rc::new(RefCell::new(req.take_payload())));
    req.set_payload(Payload::Stream {
        payload: Box::pin(shared.clone()),
    });
    let answer = srv.call(req);
    async move {
        let res = answer.await?;
        Ok(res.map_body(|_, body| KeepsPayload {
            body,
            body_done: false,
            payload: Drain::new(shared),
        }))
    }
}
