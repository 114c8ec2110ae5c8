//! Body types that flow through the proxy, and the in-memory copy kept so a request can be resent.

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};

/// Any error a body can fail with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type sent upstream and answered downstream: a streamed peer body, a replayed copy,
/// or a short message from the proxy itself. Boxing keeps one client pool and one server type.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Streams a peer's body through unchanged, trailers included.
pub(crate) fn stream(body: hyper::body::Incoming) -> ProxyBody {
    body.map_err(BoxError::from).boxed_unsync()
}

/// A body holding `text`.
pub(crate) fn text(text: String) -> ProxyBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// `body`, keeping `guard` alive until the body is dropped (when it has been sent, or abandoned).
pub(crate) fn hold<G: Send + Unpin + 'static>(body: ProxyBody, guard: G) -> ProxyBody {
    Holding {
        body,
        _guard: guard,
    }
    .boxed_unsync()
}

/// A body and something that must live exactly as long as it.
struct Holding<G> {
    body: ProxyBody,
    _guard: G,
}

impl<G: Unpin> http_body::Body for Holding<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body read completely into memory so each attempt can send it again.
#[derive(Debug, Clone)]
pub(crate) struct Replayable {
    data: Bytes,
    trailers: Option<HeaderMap>,
}

impl Replayable {
    /// Reads `body` to its end; callers check its declared length against their cap first.
    pub(crate) async fn read(body: hyper::body::Incoming) -> Result<Self, hyper::Error> {
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(Self {
            data: collected.to_bytes(),
            trailers,
        })
    }

    /// A fresh body with the same bytes and trailers.
    pub(crate) fn body(&self) -> ProxyBody {
        match &self.trailers {
            None => Full::new(self.data.clone())
                .map_err(|never| match never {})
                .boxed_unsync(),
            Some(trailers) => {
                let frames = [
                    Frame::data(self.data.clone()),
                    Frame::trailers(trailers.clone()),
                ];
                StreamBody::new(futures::stream::iter(frames.map(Ok::<_, BoxError>))).boxed_unsync()
            }
        }
    }
}
