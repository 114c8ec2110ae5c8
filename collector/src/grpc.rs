//! OTLP/gRPC receiver: `TraceService/Export` and `MetricsService/Export`.
//!
//! The generated tonic servers decode on the async worker and map a decode failure to INTERNAL; the OTLP
//! spec asks for INVALID_ARGUMENT, and Meshscope decodes on the blocking pool (so a huge request cannot
//! stall other connections). So these services take the message as raw bytes through [`RawCodec`] and
//! hand them to [`Ingest`], which decodes.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use futures::future::BoxFuture;
use meshscope_proto::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use meshscope_proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::ingest::{Encoding, Ingest, Signal};
use crate::validate::Rejections;

/// Passes gRPC messages through as bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// Encoder and decoder halves of [`RawCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCoder;

impl Encoder for RawCoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

/// What distinguishes the trace and metrics services.
pub trait OtlpSignal: Send + Sync + 'static {
    /// Fully qualified gRPC service name.
    const NAME: &'static str;
    /// The signal carried.
    const SIGNAL: Signal;
    /// The encoded `Export*ServiceResponse` for a (possibly partial) success.
    fn response(rejections: &Rejections) -> Bytes;
}

/// Marker for `opentelemetry.proto.collector.trace.v1.TraceService`.
#[derive(Debug, Clone, Copy)]
pub struct Traces;

/// Marker for `opentelemetry.proto.collector.metrics.v1.MetricsService`.
#[derive(Debug, Clone, Copy)]
pub struct Metrics;

impl OtlpSignal for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;

    fn response(rejections: &Rejections) -> Bytes {
        let partial_success = (rejections.count > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejections.count,
            error_message: rejections.message.clone(),
        });
        ExportTraceServiceResponse { partial_success }
            .encode_to_vec()
            .into()
    }
}

impl OtlpSignal for Metrics {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;

    fn response(rejections: &Rejections) -> Bytes {
        let partial_success = (rejections.count > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejections.count,
            error_message: rejections.message.clone(),
        });
        ExportMetricsServiceResponse { partial_success }
            .encode_to_vec()
            .into()
    }
}

/// A tonic service answering `Export` for one signal.
pub struct OtlpGrpcService<S> {
    ingest: Arc<Ingest>,
    signal: PhantomData<fn() -> S>,
}

impl<S> Clone for OtlpGrpcService<S> {
    fn clone(&self) -> Self {
        OtlpGrpcService {
            ingest: self.ingest.clone(),
            signal: PhantomData,
        }
    }
}

impl<S: OtlpSignal> OtlpGrpcService<S> {
    /// A service storing through `ingest`.
    pub fn new(ingest: Arc<Ingest>) -> Self {
        OtlpGrpcService {
            ingest,
            signal: PhantomData,
        }
    }
}

impl<S: OtlpSignal> NamedService for OtlpGrpcService<S> {
    const NAME: &'static str = S::NAME;
}

struct ExportMethod<S> {
    ingest: Arc<Ingest>,
    signal: PhantomData<fn() -> S>,
}

impl<S: OtlpSignal> UnaryService<Bytes> for ExportMethod<S> {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingest = self.ingest.clone();
        Box::pin(async move {
            match ingest
                .export(S::SIGNAL, Encoding::Protobuf, request.into_inner())
                .await
            {
                Ok(rejections) => Ok(Response::new(S::response(&rejections))),
                Err(error) => Err(error.to_status()),
            }
        })
    }
}

impl<S: OtlpSignal> Service<http::Request<Body>> for OtlpGrpcService<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let ingest = self.ingest.clone();
        let expected = format!("/{}/Export", S::NAME);
        Box::pin(async move {
            if request.uri().path() != expected {
                return Ok(
                    Status::unimplemented(format!("no method {}", request.uri().path()))
                        .into_http(),
                );
            }
            let limit = Some(ingest.max_request_bytes);
            let mut grpc = Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .apply_max_message_size_config(limit, None);
            let method = ExportMethod::<S> {
                ingest,
                signal: PhantomData,
            };
            Ok(grpc.unary(method, request).await)
        })
    }
}
