//! A minimal OTLP/gRPC receiver for benchmarks: accepts trace and metric exports, counts them and
//! throws them away, so span export can be measured without a collector's storage costs.
//!
//! It counts the spans of a trace export by walking the protobuf framing (request → ResourceSpans →
//! ScopeSpans → Span) without decoding any span. In `bench/proxy.sh` the sink shares a CPU with the
//! load generator; decoding every span into prost messages (about fifteen attribute allocations each)
//! cost that CPU enough to lower the closed-loop request rate it measures.
//!
//! `cargo run --release -p meshscope-proxy --example otlp_sink -- 127.0.0.1:4317`; on SIGTERM or
//! Ctrl-C it prints `spans=N metric_exports=M` and exits.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Buf;
use meshscope_proto::prost::encoding::decode_varint;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// What arrived so far.
#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    metric_exports: AtomicU64,
}

/// One OTLP service's `Export`: `Sink<true>` is the TraceService and adds each request's spans to the
/// count, `Sink<false>` the MetricsService and counts requests.
#[derive(Clone)]
struct Sink<const TRACES: bool>(Arc<Counts>);

impl NamedService for Sink<true> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl NamedService for Sink<false> {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<const TRACES: bool> tower::Service<http::Request<Body>> for Sink<TRACES> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// Runs the one unary method `Export`; other paths are unimplemented.
    fn call(&mut self, request: http::Request<Body>) -> Answer {
        let sink = self.clone();
        Box::pin(async move {
            if !request.uri().path().ends_with("/Export") {
                return Ok(Status::unimplemented("only Export").into_http());
            }
            Ok(Grpc::new(SinkCodec::<TRACES>).unary(sink, request).await)
        })
    }
}

impl<const TRACES: bool> UnaryService<u64> for Sink<TRACES> {
    type Response = ();
    type Future = std::future::Ready<Result<Response<()>, Status>>;

    fn call(&mut self, request: Request<u64>) -> Self::Future {
        if TRACES {
            self.0
                .spans
                .fetch_add(request.into_inner(), Ordering::Relaxed);
        } else {
            self.0.metric_exports.fetch_add(1, Ordering::Relaxed);
        }
        std::future::ready(Ok(Response::new(())))
    }
}

/// Decodes a request into a count of its spans (a metrics request, unread, into 0), and encodes the
/// empty response message (an `Export*ServiceResponse` without partial success is zero bytes).
#[derive(Clone, Copy)]
struct SinkCodec<const TRACES: bool>;

impl<const TRACES: bool> Codec for SinkCodec<TRACES> {
    type Encode = ();
    type Decode = u64;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl<const TRACES: bool> Encoder for SinkCodec<TRACES> {
    type Item = ();
    type Error = Status;

    fn encode(&mut self, (): (), _: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}

impl<const TRACES: bool> Decoder for SinkCodec<TRACES> {
    type Item = u64;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<u64>, Status> {
        if !TRACES {
            src.advance(src.remaining());
            return Ok(Some(0));
        }
        let message = src.copy_to_bytes(src.remaining());
        let spans = count_spans(&message)
            .ok_or_else(|| Status::invalid_argument("malformed ExportTraceServiceRequest"))?;
        Ok(Some(spans))
    }
}

/// Spans in an encoded `ExportTraceServiceRequest`: field 1 holds ResourceSpans, whose field 2 holds
/// ScopeSpans, whose field 2 holds one Span each. `None` if the framing is broken.
fn count_spans(request: &[u8]) -> Option<u64> {
    let mut spans = 0;
    for_each_field(request, 1, |resource| {
        for_each_field(resource, 2, |scope| {
            for_each_field(scope, 2, |_| {
                spans += 1;
                Some(())
            })
        })
    })?;
    Some(spans)
}

/// Calls `each` with the contents of every length-delimited field `tag` of `message`, skipping the
/// others.
fn for_each_field(
    mut message: &[u8],
    tag: u64,
    mut each: impl FnMut(&[u8]) -> Option<()>,
) -> Option<()> {
    while !message.is_empty() {
        let key = decode_varint(&mut message).ok()?;
        let length = match key & 7 {
            0 => {
                decode_varint(&mut message).ok()?;
                0
            }
            1 => 8,
            2 => usize::try_from(decode_varint(&mut message).ok()?).ok()?,
            5 => 4,
            _ => return None,
        };
        let contents = message.get(..length)?;
        if key >> 3 == tag && key & 7 == 2 {
            each(contents)?;
        }
        message = &message[length..];
    }
    Some(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4317".to_owned())
        .parse()?;
    let counts = Arc::new(Counts::default());
    let shutdown = async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| e.to_string());
        match terminate.as_mut() {
            Ok(terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tonic::transport::Server::builder()
        .add_service(Sink::<true>(Arc::clone(&counts)))
        .add_service(Sink::<false>(Arc::clone(&counts)))
        .serve_with_shutdown(address, shutdown)
        .await?;
    println!(
        "spans={} metric_exports={}",
        counts.spans.load(Ordering::Relaxed),
        counts.metric_exports.load(Ordering::Relaxed)
    );
    Ok(())
}
