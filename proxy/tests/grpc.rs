//! gRPC through the mesh: a tonic client calls a tonic server via the caller's outbound proxy and
//! the callee's inbound proxy, as two sidecars would carry it. The unary case uses the OTLP
//! TraceService; the bidirectional streaming case a small echo service on tonic's generic codec API.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::{Buf, BufMut, Bytes};
use futures::{Stream, StreamExt};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{NamedService, StreamingService};

use common::{RunningProxy, bounded, proxy};
use meshscope_proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use meshscope_proto::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use meshscope_proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use meshscope_proto::trace::ResourceSpans;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

/// Counts the resource spans it receives; refuses empty requests with INVALID_ARGUMENT.
struct Receiver;

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let count = request.into_inner().resource_spans.len();
        if count == 0 {
            return Err(Status::invalid_argument("no resource spans"));
        }
        let partial_success = ExportTracePartialSuccess {
            rejected_spans: 0,
            error_message: format!("received {count}"),
        };
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: Some(partial_success),
        }))
    }
}

/// Messages as raw bytes, so the echo service needs no generated code.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `test.Echo/Chat`: answers each message with `echo: <message>` as it arrives; the message `fail`
/// ends the stream with ABORTED.
#[derive(Debug, Clone, Copy)]
struct EchoService;

impl NamedService for EchoService {
    const NAME: &'static str = "test.Echo";
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

impl StreamingService<Bytes> for EchoService {
    type Response = Bytes;
    type ResponseStream = MessageStream;
    type Future = BoxFuture<Response<MessageStream>, Status>;

    fn call(&mut self, request: Request<tonic::Streaming<Bytes>>) -> Self::Future {
        Box::pin(async move {
            let replies = request.into_inner().map(|message| match message {
                Ok(message) if message.as_ref() == b"fail" => Err(Status::aborted("asked to fail")),
                Ok(message) => Ok(Bytes::from(
                    [b"echo: ".as_slice(), message.as_ref()].concat(),
                )),
                Err(status) => Err(status),
            });
            Ok(Response::new(Box::pin(replies) as MessageStream))
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for EchoService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            Ok(tonic::server::Grpc::new(RawCodec)
                .streaming(EchoService, request)
                .await)
        })
    }
}

async fn grpc_server() -> SocketAddr {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => panic!("cannot bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => panic!("no address: {e}"),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver))
            .add_service(EchoService)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// The callee's sidecar (inbound → app) and the caller's sidecar (outbound → callee's inbound).
async fn two_sidecars(app: SocketAddr) -> (RunningProxy, RunningProxy) {
    let callee = proxy(&format!(
        "[service]\nname = \"receiver\"\n\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\nprotocol = \"http2\"\n"
    ))
    .await;
    let caller = proxy(&format!(
        r#"
[service]
name = "sender"

[[outbound]]
listen = "127.0.0.1:0"

[[outbound.route]]
name = "traces"
match = {{ path_prefix = "/opentelemetry.proto.collector.trace.v1.TraceService/" }}
upstream = "receiver"
timeout = "5s"

[[outbound.route]]
name = "echo"
match = {{ path_exact = "/test.Echo/Chat", method = "POST" }}
upstream = "receiver"
timeout = "5s"

[[upstream]]
name = "receiver"
protocol = "http2"
balancer = "peak_ewma"
endpoints = [{{ address = "{}" }}]
"#,
        callee.inbound()
    ))
    .await;
    (callee, caller)
}

#[tokio::test]
async fn unary_grpc_through_two_proxies_keeps_status_and_messages() {
    bounded(async {
        let app = grpc_server().await;
        let (_callee, caller) = two_sidecars(app).await;
        let mut client =
            match TraceServiceClient::connect(format!("http://{}", caller.outbound())).await {
                Ok(client) => client,
                Err(e) => panic!("cannot connect: {e}"),
            };

        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans::default(), ResourceSpans::default()],
        };
        let response = match client.export(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => panic!("export failed: {status}"),
        };
        let message = response.partial_success.map(|p| p.error_message);
        assert_eq!(message.as_deref(), Some("received 2"));

        // A gRPC error travels in trailers (grpc-status, grpc-message): both proxies must pass them.
        let status = match client.export(ExportTraceServiceRequest::default()).await {
            Ok(_) => panic!("an empty export must be refused"),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "no resource spans");

        for _ in 0..20 {
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans::default()],
            };
            if let Err(status) = client.export(request).await {
                panic!("export failed: {status}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn bidirectional_streaming_grpc_through_two_proxies() {
    bounded(async {
        let app = grpc_server().await;
        let (_callee, caller) = two_sidecars(app).await;
        let channel = match tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            caller.outbound()
        )) {
            Ok(endpoint) => match endpoint.connect().await {
                Ok(channel) => channel,
                Err(e) => panic!("cannot connect: {e}"),
            },
            Err(e) => panic!("bad endpoint: {e}"),
        };
        let mut grpc = tonic::client::Grpc::new(channel);
        let path = http::uri::PathAndQuery::from_static("/test.Echo/Chat");

        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        if let Err(e) = grpc.ready().await {
            panic!("channel not ready: {e}");
        }
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
        let response = match grpc
            .streaming(Request::new(requests), path.clone(), RawCodec)
            .await
        {
            Ok(response) => response,
            Err(status) => panic!("call failed: {status}"),
        };
        let mut replies = response.into_inner();
        // Each reply arrives before the next message is sent: the stream is live end to end.
        for message in ["one", "two", "three"] {
            if tx.send(Bytes::from(message)).await.is_err() {
                panic!("request stream closed early");
            }
            match replies.message().await {
                Ok(Some(reply)) => assert_eq!(reply, format!("echo: {message}")),
                other => panic!("expected a reply to {message}, got {other:?}"),
            }
        }
        drop(tx);
        match replies.message().await {
            Ok(None) => {}
            other => panic!("expected a clean end of stream (grpc-status 0), got {other:?}"),
        }

        // An error status sent after messages travels in the trailers through both proxies.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        if let Err(e) = grpc.ready().await {
            panic!("channel not ready: {e}");
        }
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
        let _ = tx.send(Bytes::from_static(b"hello")).await;
        let _ = tx.send(Bytes::from_static(b"fail")).await;
        let mut replies = match grpc.streaming(Request::new(requests), path, RawCodec).await {
            Ok(response) => response.into_inner(),
            Err(status) => panic!("call failed: {status}"),
        };
        match replies.message().await {
            Ok(Some(reply)) => assert_eq!(reply, "echo: hello"),
            other => panic!("expected the first reply, got {other:?}"),
        }
        match replies.message().await {
            Err(status) => assert_eq!(
                (status.code(), status.message()),
                (Code::Aborted, "asked to fail")
            ),
            other => panic!("expected ABORTED, got {other:?}"),
        }
    })
    .await;
}

/// Answers UNAVAILABLE to its first call, then OK.
#[derive(Default)]
struct FlakyReceiver {
    calls: std::sync::atomic::AtomicUsize,
}

#[tonic::async_trait]
impl TraceService for FlakyReceiver {
    async fn export(
        &self,
        _: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return Err(Status::unavailable("warming up"));
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn grpc_unavailable_is_retried_with_the_teed_request() {
    bounded(async {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(e) => panic!("cannot bind: {e}"),
        };
        let app = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("no address: {e}"),
        };
        let receiver = std::sync::Arc::new(FlakyReceiver::default());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::from_arc(std::sync::Arc::clone(
                    &receiver,
                )))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let caller = proxy(&format!(
            r#"
[service]
name = "sender"

[[outbound]]
listen = "127.0.0.1:0"

[[outbound.route]]
name = "traces"
upstream = "receiver"

[outbound.route.retry]
attempts = 2
on = ["unavailable"]
retry_non_idempotent = true
backoff_base = "5ms"

[[upstream]]
name = "receiver"
protocol = "http2"
endpoints = [{{ address = "{app}" }}]
"#
        ))
        .await;
        let mut client =
            match TraceServiceClient::connect(format!("http://{}", caller.outbound())).await {
                Ok(client) => client,
                Err(e) => panic!("cannot connect: {e}"),
            };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans::default()],
        };
        if let Err(status) = client.export(request).await {
            panic!("the retry should have hidden the first UNAVAILABLE: {status}");
        }
        assert_eq!(receiver.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    })
    .await;
}

/// `test.Flaky/Call`: its first call answers a message and then UNAVAILABLE in the trailers; later
/// calls answer `ok`. A request message `big` makes the first answer 100 KB long.
#[derive(Debug, Clone, Default)]
struct FlakyStream {
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl NamedService for FlakyStream {
    const NAME: &'static str = "test.Flaky";
}

impl StreamingService<Bytes> for FlakyStream {
    type Response = Bytes;
    type ResponseStream = MessageStream;
    type Future = BoxFuture<Response<MessageStream>, Status>;

    fn call(&mut self, request: Request<tonic::Streaming<Bytes>>) -> Self::Future {
        let first = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        Box::pin(async move {
            let mut messages = request.into_inner();
            let big = matches!(messages.message().await, Ok(Some(m)) if m.as_ref() == b"big");
            let replies: Vec<Result<Bytes, Status>> = if first {
                let partial = if big {
                    vec![b'x'; 100_000]
                } else {
                    b"partial".to_vec()
                };
                vec![
                    Ok(Bytes::from(partial)),
                    Err(Status::unavailable("went away mid-call")),
                ]
            } else {
                vec![Ok(Bytes::from_static(b"ok"))]
            };
            Ok(Response::new(
                Box::pin(futures::stream::iter(replies)) as MessageStream
            ))
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for FlakyStream {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            Ok(tonic::server::Grpc::new(RawCodec)
                .streaming(service, request)
                .await)
        })
    }
}

/// Calls `test.Flaky/Call` once with `message` through a proxy whose route retries UNAVAILABLE
/// under `budget`; returns the replies (or the status), the server's call count and the metrics.
async fn flaky_call(
    message: &'static [u8],
    budget: &str,
) -> (Result<Vec<Bytes>, Status>, usize, String) {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => panic!("cannot bind: {e}"),
    };
    let app = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => panic!("no address: {e}"),
    };
    let service = FlakyStream::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.clone())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let caller = proxy(&format!(
        r#"
[service]
name = "sender"

[admin]
listen = "127.0.0.1:0"

[[outbound]]
listen = "127.0.0.1:0"

[[outbound.route]]
name = "flaky"
upstream = "flaky"

[outbound.route.retry]
attempts = 2
on = ["unavailable"]
retry_non_idempotent = true
backoff_base = "5ms"

[[upstream]]
name = "flaky"
protocol = "http2"
endpoints = [{{ address = "{app}" }}]

[upstream.retry_budget]
{budget}
"#
    ))
    .await;
    let channel =
        match tonic::transport::Endpoint::from_shared(format!("http://{}", caller.outbound())) {
            Ok(endpoint) => match endpoint.connect().await {
                Ok(channel) => channel,
                Err(e) => panic!("cannot connect: {e}"),
            },
            Err(e) => panic!("bad endpoint: {e}"),
        };
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        panic!("channel not ready: {e}");
    }
    let path = http::uri::PathAndQuery::from_static("/test.Flaky/Call");
    let requests = futures::stream::iter([Bytes::from_static(message)]);
    let outcome = async {
        let mut replies = grpc
            .streaming(Request::new(requests), path, RawCodec)
            .await?
            .into_inner();
        let mut received = Vec::new();
        while let Some(reply) = replies.message().await? {
            received.push(reply);
        }
        Ok(received)
    }
    .await;
    let Some(admin) = caller.addresses.admin else {
        panic!("no admin listener")
    };
    let (_, _, metrics) = common::get(&common::client(), &format!("http://{admin}/metrics")).await;
    (
        outcome,
        service.calls.load(std::sync::atomic::Ordering::SeqCst),
        metrics,
    )
}

#[tokio::test]
async fn grpc_status_in_trailers_after_a_message_is_retried() {
    bounded(async {
        let (outcome, calls, metrics) = flaky_call(b"small", "min_per_second = 10").await;
        match outcome {
            Ok(replies) => assert_eq!(
                replies,
                vec![Bytes::from_static(b"ok")],
                "the failed attempt's message is not passed on"
            ),
            Err(status) => panic!("the retry should have hidden UNAVAILABLE: {status}"),
        }
        assert_eq!(calls, 2);
        assert!(
            metrics
                .lines()
                .any(|l| l == "meshscope_proxy_upstream_retries_total{upstream=\"flaky\"} 1"),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn grpc_trailers_retries_are_paid_from_the_retry_budget() {
    bounded(async {
        let (outcome, calls, metrics) =
            flaky_call(b"small", "ratio = 0.0\nmin_per_second = 0").await;
        match outcome {
            Err(status) => assert_eq!(status.code(), Code::Unavailable),
            Ok(replies) => panic!("no budget, no retry: got {replies:?}"),
        }
        assert_eq!(calls, 1);
        assert!(
            metrics.lines().any(|l| l
                == "meshscope_proxy_upstream_retry_budget_exhausted_total{upstream=\"flaky\"} 1"),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_grpc_answer_larger_than_the_replay_cap_streams_through_unretried() {
    bounded(async {
        let (outcome, calls, _) = flaky_call(b"big", "min_per_second = 10").await;
        match outcome {
            Err(status) => assert_eq!(
                (status.code(), status.message()),
                (Code::Unavailable, "went away mid-call")
            ),
            Ok(replies) => panic!(
                "expected UNAVAILABLE after the big message, got {} replies",
                replies.len()
            ),
        }
        assert_eq!(
            calls, 1,
            "past the cap the answer was already being passed on"
        );
    })
    .await;
}
