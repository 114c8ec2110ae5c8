//! HTTP/2 over cleartext reached by an HTTP/1.1 `Upgrade: h2c` request (RFC 7540 §3.2), on the
//! inbound and outbound listeners; prior-knowledge h2c is served by hyper-util's auto builder.
//!
//! ```text
//! client: GET / HTTP/1.1, Upgrade: h2c, HTTP2-Settings ─► 101 Switching Protocols
//! client: preface + SETTINGS ─► [injected: HEADERS stream 1 = the upgrade request] ─► hyper h2 server
//!                                                 the answer to stream 1 ─► client, then more streams
//! ```
//!
//! The upgrade request becomes stream 1 of the new connection and is answered there. hyper's HTTP/2
//! server cannot be handed a stream it did not read, so the request is fed to it as if the client
//! had sent it: a HEADERS frame (HPACK literals, which need no table state) inserted right after the
//! client's first SETTINGS frame. Only requests without a body are upgraded (a body would have to be
//! read first); others are served as HTTP/1.1, which RFC 7540 allows. The client's `HTTP2-Settings`
//! are not applied separately: every client sends the same values in the SETTINGS frame that opens
//! the connection, and the server reads that frame before stream 1.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, HOST, HeaderValue, UPGRADE};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::body::{self, ProxyBody};

/// The client connection preface that opens every HTTP/2 connection.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of an HTTP/2 frame header.
const FRAME_HEADER: usize = 9;
/// The largest frame a peer must accept before settings say otherwise (SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 16_384;
/// Headers that belong to the HTTP/1.1 connection and may not appear in HTTP/2.
const CONNECTION_SPECIFIC: [&str; 7] = [
    "connection",
    "upgrade",
    "http2-settings",
    "host",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
];

/// The HEADERS frame carrying `request` as stream 1, if `request` asks for `Upgrade: h2c` and can
/// be upgraded: HTTP/1.1, `Connection: Upgrade, HTTP2-Settings`, one `HTTP2-Settings` header, no
/// body, and headers that fit one frame.
pub(crate) fn upgrade_frame(request: &Request<Incoming>) -> Option<Bytes> {
    let headers = request.headers();
    if !headers.contains_key(UPGRADE) {
        return None;
    }
    let tokens = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value: &HeaderValue| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
    };
    let connection = tokens(CONNECTION);
    let wanted = request.version() == Version::HTTP_11
        && tokens(UPGRADE).iter().any(|token| token == "h2c")
        && connection.iter().any(|token| token == "upgrade")
        && connection.iter().any(|token| token == "http2-settings")
        && headers.get_all("http2-settings").iter().count() == 1
        && request.body().size_hint().exact() == Some(0);
    if !wanted {
        return None;
    }
    let block = header_block(request);
    (block.len() <= MAX_FRAME).then(|| headers_frame(&block))
}

/// How an upgraded connection takes part in shutdown: `stop` starts its graceful close (GOAWAY),
/// `force` cuts it, and `tracker` lets the drain wait for it.
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    /// Raised when the listeners stop accepting.
    pub(crate) stop: watch::Receiver<bool>,
    /// Raised when the drain timeout has passed.
    pub(crate) force: watch::Receiver<bool>,
    /// Upgraded connections the drain waits for.
    pub(crate) tracker: TaskTracker,
}

/// Answers `101 Switching Protocols` and, once the client has switched, serves HTTP/2 on the
/// connection with `service`, `request` (framed as `frame`) being its stream 1.
pub(crate) fn switch<S>(
    mut request: Request<Incoming>,
    frame: Bytes,
    service: S,
    lifecycle: Lifecycle,
) -> Response<ProxyBody>
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let upgrade = hyper::upgrade::on(&mut request);
    let Lifecycle {
        mut stop,
        mut force,
        tracker,
    } = lifecycle;
    tracker.spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "h2c upgrade did not complete");
                return;
            }
        };
        let io = Injecting::new(TokioIo::new(upgraded), frame);
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        let mut connection = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
        let served = async {
            tokio::select! {
                result = connection.as_mut() => return result,
                _ = stop.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
            }
            connection.await
        };
        tokio::select! {
            result = served => if let Err(e) = result {
                tracing::debug!(error = %e, "h2c connection ended with an error");
            },
            _ = force.wait_for(|force| *force) => {}
        }
    });
    let mut response = Response::new(body::text(String::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("h2c"));
    response
}

/// `request` as an HPACK header block of literal fields without indexing.
fn header_block(request: &Request<Incoming>) -> BytesMut {
    let mut block = BytesMut::new();
    let uri = request.uri();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    literal(&mut block, b":method", request.method().as_str().as_bytes());
    literal(&mut block, b":scheme", b"http");
    let authority = request
        .headers()
        .get(HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| uri.authority().map(|a| a.as_str().as_bytes()));
    if let Some(authority) = authority {
        literal(&mut block, b":authority", authority);
    }
    literal(&mut block, b":path", path.as_bytes());
    for (name, value) in request.headers() {
        let name = name.as_str();
        let te_other_than_trailers = name == "te" && value.as_bytes() != b"trailers";
        if CONNECTION_SPECIFIC.contains(&name) || te_other_than_trailers {
            continue;
        }
        literal(&mut block, name.as_bytes(), value.as_bytes());
    }
    block
}

/// One "literal header field without indexing — new name" (RFC 7541 §6.2.2), no Huffman coding.
fn literal(block: &mut BytesMut, name: &[u8], value: &[u8]) {
    block.put_u8(0);
    for string in [name, value] {
        integer(block, string.len(), 7);
        block.put_slice(string);
    }
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1), the flag bits above it zero.
fn integer(block: &mut BytesMut, value: usize, prefix: u32) {
    let max = (1usize << prefix) - 1;
    if value < max {
        block.put_u8(value as u8);
        return;
    }
    block.put_u8(max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        block.put_u8((rest % 128 + 128) as u8);
        rest /= 128;
    }
    block.put_u8(rest as u8);
}

/// A HEADERS frame on stream 1 with END_STREAM and END_HEADERS.
fn headers_frame(block: &[u8]) -> Bytes {
    const HEADERS: u8 = 0x1;
    const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;
    let mut frame = BytesMut::with_capacity(FRAME_HEADER + block.len());
    frame.put_uint(block.len() as u64, 3);
    frame.put_u8(HEADERS);
    frame.put_u8(END_STREAM_AND_HEADERS);
    frame.put_u32(1);
    frame.put_slice(block);
    frame.freeze()
}

/// The upgraded connection, with the stream-1 HEADERS frame slipped into what the client sends,
/// right after its preface and first frame (which must be SETTINGS).
struct Injecting {
    io: TokioIo<Upgraded>,
    /// What the client sent until the injection point, and the frame to inject.
    head: BytesMut,
    frame: Option<Bytes>,
    /// Bytes ready for the reader: the head, the frame, then anything read past the head.
    ready: BytesMut,
}

impl Injecting {
    fn new(io: TokioIo<Upgraded>, frame: Bytes) -> Self {
        Self {
            io,
            head: BytesMut::new(),
            frame: Some(frame),
            ready: BytesMut::new(),
        }
    }

    /// Once the preface and the first frame have been read, queues them, the injected frame, and
    /// whatever came after. Returns whether reading can go on unchanged.
    fn try_inject(&mut self) -> bool {
        let Some(frame) = &self.frame else {
            return true;
        };
        let header_end = PREFACE.len() + FRAME_HEADER;
        if self.head.len() < header_end {
            return false;
        }
        let length = usize::from(self.head[PREFACE.len()]) << 16
            | usize::from(self.head[PREFACE.len() + 1]) << 8
            | usize::from(self.head[PREFACE.len() + 2]);
        let is_settings = self.head[PREFACE.len() + 3] == 0x4;
        if !self.head.starts_with(PREFACE) || !is_settings {
            // Not what an upgraded client must send: let the HTTP/2 server reject it as it is.
            self.ready = std::mem::take(&mut self.head);
            self.frame = None;
            return true;
        }
        if self.head.len() < header_end + length {
            return false;
        }
        let after = self.head.split_off(header_end + length);
        self.ready.extend_from_slice(&self.head);
        self.ready.extend_from_slice(frame);
        self.ready.extend_from_slice(&after);
        self.head = BytesMut::new();
        self.frame = None;
        true
    }
}

impl AsyncRead for Injecting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while !this.try_inject() {
            let mut chunk = [0u8; 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // The client closed before its first frame: hand over what there is.
                    this.ready = std::mem::take(&mut this.head);
                    this.frame = None;
                }
                Poll::Ready(Ok(())) => this.head.extend_from_slice(read.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if !this.ready.is_empty() {
            let n = this.ready.len().min(buf.remaining());
            buf.put_slice(&this.ready.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Injecting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers_follow_rfc_7541_examples() {
        let mut out = BytesMut::new();
        integer(&mut out, 10, 5);
        assert_eq!(&out[..], &[10]);
        let mut out = BytesMut::new();
        integer(&mut out, 1337, 5);
        assert_eq!(&out[..], &[31, 154, 10]);
        let mut out = BytesMut::new();
        integer(&mut out, 127, 7);
        assert_eq!(&out[..], &[127, 0]);
    }

    #[test]
    fn a_headers_frame_is_on_stream_one_and_ends_the_stream() {
        let frame = headers_frame(b"abc");
        assert_eq!(&frame[..9], &[0, 0, 3, 1, 5, 0, 0, 0, 1]);
        assert_eq!(&frame[9..], b"abc");
    }
}
