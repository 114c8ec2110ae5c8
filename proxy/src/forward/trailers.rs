//! Reading a gRPC response up to its trailers before passing it on, so that a `grpc-status` sent
//! after the response messages can still be retried.
//!
//! ```text
//! upstream ─► headers (200, no grpc-status) ─► frames kept (≤ cap) ─► trailers: grpc-status = 14?
//!                                                  │ over the cap            │ yes: retry (the kept
//!                                                  ▼                         │ frames are dropped)
//!                                      kept frames + the rest, streamed      ▼ no: kept frames replayed
//! ```
//!
//! Only a response that is still retryable is read this way (the route retries gRPC codes, retries
//! are left, the whole request body has arrived and is kept), and only for a while: a stream that
//! outgrows the cap or the hold time, a bidirectional stream whose caller is still sending, and
//! every response that cannot be retried anyway, stream through as before.

use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use http::{HeaderMap, Response};
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Incoming;

use crate::body::{BoxError, ProxyBody};

/// A response read as far as it was worth reading.
pub(super) struct Peeked {
    /// The response, with every frame that was read put back in front of the rest.
    pub(super) response: Response<ProxyBody>,
    /// The response's trailers, when the whole response fit under the cap.
    pub(super) trailers: Option<HeaderMap>,
}

/// Reads `response`'s body until its trailers, keeping at most `cap` bytes of data for at most
/// `hold`; past either it stops and hands back what it read followed by the rest of the stream.
pub(super) async fn read_to_trailers(
    response: Response<Incoming>,
    cap: u64,
    hold: Duration,
) -> Result<Peeked, hyper::Error> {
    let deadline = tokio::time::Instant::now() + hold;
    let (parts, mut body) = response.into_parts();
    let mut kept: Vec<Frame<Bytes>> = Vec::new();
    let mut size = 0u64;
    let mut trailers = None;
    let mut ended = true;
    loop {
        // Dropping the pending read at the deadline loses nothing: no frame was taken yet.
        let Ok(next) = tokio::time::timeout_at(deadline, body.frame()).await else {
            ended = false;
            break;
        };
        let Some(frame) = next else { break };
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            size += data.remaining() as u64;
        }
        if let Some(found) = frame.trailers_ref() {
            trailers = Some(found.clone());
        }
        kept.push(frame);
        if size > cap {
            ended = false;
            break;
        }
    }
    let kept = futures::stream::iter(kept.into_iter().map(Ok::<_, BoxError>));
    let body = if ended {
        StreamBody::new(kept).boxed_unsync()
    } else {
        let rest = BodyStream::new(body).map(|frame| frame.map_err(BoxError::from));
        StreamBody::new(kept.chain(rest)).boxed_unsync()
    };
    Ok(Peeked {
        response: Response::from_parts(parts, body),
        trailers,
    })
}
