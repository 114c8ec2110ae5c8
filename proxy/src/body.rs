//! Body types that flow through the proxy: the one boxed body type, a body that holds a guard, the
//! whole-body copy a mirror sends, and the teed body retries replay.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
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

impl<G: Unpin> Body for Holding<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body read completely into memory, so a mirror and each attempt can send their own copy.
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

/// A request body streamed to the first attempt while a copy of it is kept, up to a cap, so a retry
/// can send it again (Linkerd's design; written here because Linkerd's lives inside its proxy, not
/// in a published crate, and tower's retry middleware needs a body it can clone up front). Nothing waits for the whole body: a gRPC or chunked request
/// goes out as it arrives. A retry is possible while the copy is complete: the body fitted under the
/// cap so far, and the stream did not fail.
///
/// Each attempt gets its own view (`attempt`) that replays what was kept, then continues reading the
/// original stream, keeping what it reads. Starting a new attempt retires the previous view, whose
/// further reads fail, so two attempts never share the original stream.
#[derive(Debug, Clone)]
pub(crate) struct TeeBody {
    shared: Arc<Mutex<Tee>>,
}

#[derive(Debug)]
struct Tee {
    source: hyper::body::Incoming,
    hint: SizeHint,
    kept: Vec<Frame<Bytes>>,
    kept_bytes: u64,
    cap: u64,
    /// The copy is incomplete (over the cap) or the stream failed: no more attempts.
    spoiled: bool,
    ended: bool,
    /// Which view may read: views of earlier attempts are retired.
    generation: u64,
}

/// One attempt's view of a [`TeeBody`].
struct TeeView {
    shared: Arc<Mutex<Tee>>,
    generation: u64,
    position: usize,
}

impl TeeBody {
    /// Tees `source`, keeping at most `cap` bytes.
    pub(crate) fn new(source: hyper::body::Incoming, cap: u64) -> Self {
        let hint = source.size_hint();
        let tee = Tee {
            source,
            hint,
            kept: Vec::new(),
            kept_bytes: 0,
            cap,
            spoiled: false,
            ended: false,
            generation: 0,
        };
        Self {
            shared: Arc::new(Mutex::new(tee)),
        }
    }

    /// Whether another attempt can still be given the whole body.
    pub(crate) fn replayable(&self) -> bool {
        !self.lock().spoiled
    }

    /// Whether the whole body has arrived and is kept: the caller has nothing more to send.
    pub(crate) fn complete(&self) -> bool {
        let tee = self.lock();
        !tee.spoiled && (tee.ended || tee.source.is_end_stream())
    }

    /// The body for the next attempt; earlier attempts' views stop working.
    pub(crate) fn attempt(&self) -> ProxyBody {
        let generation = {
            let mut tee = self.lock();
            tee.generation += 1;
            tee.generation
        };
        TeeView {
            shared: Arc::clone(&self.shared),
            generation,
            position: 0,
        }
        .boxed_unsync()
    }

    fn lock(&self) -> MutexGuard<'_, Tee> {
        lock(&self.shared)
    }
}

fn lock(shared: &Mutex<Tee>) -> MutexGuard<'_, Tee> {
    match shared.lock() {
        Ok(tee) => tee,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A copy of a data or trailers frame (`Frame` itself is not `Clone`).
fn copy(frame: &Frame<Bytes>) -> Option<Frame<Bytes>> {
    if let Some(data) = frame.data_ref() {
        Some(Frame::data(data.clone()))
    } else {
        frame
            .trailers_ref()
            .map(|trailers| Frame::trailers(trailers.clone()))
    }
}

impl Body for TeeView {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = Arc::clone(&self.shared);
        let mut tee = lock(&shared);
        if tee.generation != self.generation {
            return Poll::Ready(Some(Err(
                "the request body was handed to a newer attempt".into()
            )));
        }
        if let Some(frame) = tee.kept.get(self.position).and_then(copy) {
            self.position += 1;
            return Poll::Ready(Some(Ok(frame)));
        }
        if tee.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut tee.source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                tee.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                tee.spoiled = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if !tee.spoiled {
                    let size = frame.data_ref().map_or(0, |data| data.len() as u64);
                    tee.kept_bytes += size;
                    if tee.kept_bytes > tee.cap {
                        tee.spoiled = true;
                        tee.kept = Vec::new();
                    } else if let Some(kept) = copy(&frame) {
                        tee.kept.push(kept);
                        self.position += 1;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let tee = lock(&self.shared);
        tee.ended && self.position >= tee.kept.len()
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.shared).hint
    }
}
