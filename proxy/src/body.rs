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
