//! gRPC through the mesh: a tonic client calls a tonic server via the caller's outbound proxy and
//! the callee's inbound proxy, as two sidecars would carry it.

mod common;

use std::net::SocketAddr;

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
