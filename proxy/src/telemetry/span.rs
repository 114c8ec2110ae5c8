//! The spans the proxy records: one SERVER span per request arriving at the inbound listener, and one
//! CLIENT span per attempt sent from an outbound listener (each retry its own span, all under the
//! caller's span). Attributes follow the OpenTelemetry HTTP and RPC semantic conventions, plus
//! `meshscope.*` attributes for the mesh's own decisions.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use meshscope_proto::trace::{span::SpanKind, status::StatusCode as OtlpStatus};

use super::context::{TRACESTATE, TraceContext};
use super::export::Tracer;
use super::fixed::FixedAttribute;
use super::wire::{self, span as field};
use crate::body::{BoxError, ProxyBody};
use crate::forward::ERROR_HEADER;
use crate::retry::GRPC_STATUS;
use crate::stats::unix_nanos;

/// gRPC codes that make a SERVER span an error (the RPC semantic conventions' list).
const GRPC_SERVER_ERRORS: [i64; 6] = [2, 4, 12, 13, 14, 15];

/// Room for a span's encoding (ids, name, times and about fifteen attributes) without regrowing.
const SPAN_CAPACITY: usize = 768;

/// What to do about one request's trace.
pub(crate) enum Sampling {
    /// The caller's trace is not recorded: pass its headers on untouched.
    PassThrough,
    /// A new trace that is not recorded: tell the next hop so, record nothing.
    Unsampled(TraceContext),
    /// Record this span; the next hop's parent is the context.
    Record(Box<SpanRecord>, TraceContext),
}

/// A span being recorded; finished (and queued for export) by [`SpanRecord::finish`] or, for a
/// response still streaming, when its body ends.
#[derive(Debug)]
pub(crate) struct SpanRecord {
    tracer: Arc<Tracer>,
    /// The OTLP `Span` message's fields written so far: attributes are encoded as they become
    /// known, from borrowed strings, and the end time and status when the span ends (see `wire`).
    encoded: Vec<u8>,
    context: TraceContext,
    kind: SpanKind,
    grpc: bool,
    /// Whether the span is an error: its `error.type` is recorded once, its status at the end.
    failed: bool,
    /// Set by `finish`; a span dropped without it (its request was cancelled, e.g. by a route
    /// timeout or a client going away) is recorded as an error of type `cancelled`.
    ended: bool,
}

/// What is known about the request a span describes.
pub(crate) struct RequestFacts<'a> {
    /// Request method.
    pub(crate) method: &'a Method,
    /// Request URI as received.
    pub(crate) uri: &'a Uri,
    /// Request headers as received.
    pub(crate) headers: &'a HeaderMap,
    /// HTTP version the request arrived with (SERVER) or is sent with (CLIENT).
    pub(crate) version: Version,
}

/// Where an attempt went, for CLIENT spans.
pub(crate) struct AttemptFacts<'a> {
    /// The route that matched, as `meshscope.route`.
    pub(crate) route: &'a FixedAttribute,
    /// The upstream the split chose, as `meshscope.upstream.service`.
    pub(crate) upstream: &'a FixedAttribute,
    /// The endpoint the balancer chose, with its encoded attributes (`FixedAttribute::endpoint`);
    /// `None` when the request was refused before one was picked.
    pub(crate) endpoint: Option<(&'a Authority, &'a FixedAttribute)>,
    /// The upstream's balancer, as `meshscope.balancer`.
    pub(crate) balancer: &'a FixedAttribute,
    /// 0 for the first attempt, then 1, 2, ... for retries.
    pub(crate) retry: u32,
    /// The mesh decision that shaped the attempt, if notable: `overflow` (circuit breaker),
    /// `concurrency-limit` (adaptive concurrency), `no-endpoints` or `all-ejected` (refused), `panic` (ejections ignored under the panic
    /// threshold).
    pub(crate) decision: Option<&'static str>,
    /// Endpoints of the upstream out of balancing (ejected or failing health checks) at the pick.
    pub(crate) ejected: usize,
}

impl SpanRecord {
    /// The SERVER span for a request from `client`, if its trace is recorded, and what the
    /// application should see as its trace context.
    pub(crate) fn server(
        tracer: &Arc<Tracer>,
        request: &RequestFacts<'_>,
        client: SocketAddr,
        route: &str,
    ) -> Sampling {
        let parent = TraceContext::extract(request.headers);
        let context = match parent {
            Some(parent) if !parent.sampled => return Sampling::PassThrough,
            Some(parent) => parent.child(),
            None => TraceContext::root(tracer.sample_new_trace()),
        };
        if !context.sampled {
            return Sampling::Unsampled(context);
        }
        let mut record = Self::start(
            tracer,
            SpanKind::Server,
            request,
            context,
            parent.map(|p| p.span_id),
        );
        let encoded = &mut record.encoded;
        wire::string_attribute(encoded, "url.path", &[request.uri.path()]);
        if let Some(query) = request.uri.query() {
            wire::string_attribute(encoded, "url.query", &[query]);
        }
        wire::string_attribute(encoded, "url.scheme", &["http"]);
        if let Some(host) = crate::route::request_host(request.uri, request.headers) {
            wire::string_attribute(encoded, "server.address", &[host]);
        }
        let mut ip = [0u8; 64];
        wire::string_attribute(
            encoded,
            "client.address",
            &[format_ip(client.ip(), &mut ip)],
        );
        wire::int_attribute(encoded, "client.port", i64::from(client.port()));
        if let Some(agent) = request
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            wire::string_attribute(encoded, "user_agent.original", &[agent]);
        }
        wire::string_attribute(encoded, "meshscope.route", &[route]);
        Sampling::Record(Box::new(record), context)
    }

    /// A CLIENT span for one attempt, under `parent` (the caller's span; `None` starts a trace whose
    /// id `trace` gives), and the context to send to the endpoint.
    pub(crate) fn attempt(
        tracer: &Arc<Tracer>,
        request: &RequestFacts<'_>,
        trace: TraceContext,
        parent: Option<TraceContext>,
        attempt: &AttemptFacts<'_>,
    ) -> Self {
        let context = trace.child();
        let mut record = Self::start(
            tracer,
            SpanKind::Client,
            request,
            context,
            parent.map(|p| p.span_id),
        );
        let encoded = &mut record.encoded;
        if let Some((address, attributes)) = attempt.endpoint {
            let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
            wire::string_attribute(encoded, "url.full", &["http://", address.as_str(), path]);
            attributes.write(encoded);
        }
        if attempt.retry > 0 {
            wire::int_attribute(
                encoded,
                "http.request.resend_count",
                i64::from(attempt.retry),
            );
        }
        attempt.route.write(encoded);
        attempt.upstream.write(encoded);
        if let Some(decision) = attempt.decision {
            wire::string_attribute(encoded, "meshscope.decision", &[decision]);
        }
        if attempt.ejected > 0 {
            wire::int_attribute(
                encoded,
                "meshscope.ejected_endpoints",
                i64::try_from(attempt.ejected).unwrap_or(i64::MAX),
            );
        }
        attempt.balancer.write(encoded);
        wire::int_attribute(encoded, "meshscope.retry.attempt", i64::from(attempt.retry));
        record
    }

    /// The context this span's children should name as parent.
    pub(crate) fn context(&self) -> TraceContext {
        self.context
    }

    fn start(
        tracer: &Arc<Tracer>,
        kind: SpanKind,
        request: &RequestFacts<'_>,
        context: TraceContext,
        parent: Option<[u8; 8]>,
    ) -> Self {
        let grpc = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let name = if grpc {
            request.uri.path().trim_start_matches('/')
        } else {
            request.method.as_str()
        };
        let mut encoded = Vec::with_capacity(SPAN_CAPACITY);
        wire::bytes(&mut encoded, field::TRACE_ID, &context.trace_id);
        wire::bytes(&mut encoded, field::SPAN_ID, &context.span_id);
        if let Some(trace_state) = request
            .headers
            .get(TRACESTATE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
        {
            wire::bytes(&mut encoded, field::TRACE_STATE, trace_state.as_bytes());
        }
        if let Some(parent) = parent {
            wire::bytes(&mut encoded, field::PARENT_SPAN_ID, &parent);
        }
        // W3C trace flags: sampled.
        wire::fixed32(&mut encoded, field::FLAGS, 1);
        wire::bytes(&mut encoded, field::NAME, name.as_bytes());
        wire::uint(&mut encoded, field::KIND, kind as u64);
        wire::fixed64(
            &mut encoded,
            field::START_TIME,
            unix_nanos(SystemTime::now()),
        );
        FixedAttribute::write_method(&mut encoded, request.method);
        FixedAttribute::write_version(&mut encoded, request.version);
        if grpc {
            wire::string_attribute(&mut encoded, "rpc.system", &["grpc"]);
            if let Some((service, method)) = name.split_once('/') {
                wire::string_attribute(&mut encoded, "rpc.service", &[service]);
                wire::string_attribute(&mut encoded, "rpc.method", &[method]);
            }
        }
        Self {
            tracer: Arc::clone(tracer),
            encoded,
            context,
            kind,
            grpc,
            failed: false,
            ended: false,
        }
    }

    /// Records the response: its status (and a gRPC status sent in headers, as trailers-only answers
    /// do), or, for an answer the proxy made itself, the reason it names. A CLIENT span of an
    /// attempt that got no response records no status code.
    pub(crate) fn response(&mut self, status: StatusCode, headers: &HeaderMap) {
        let proxy_error = headers.get(ERROR_HEADER).and_then(|v| v.to_str().ok());
        if self.is_server() || proxy_error.is_none() {
            wire::int_attribute(
                &mut self.encoded,
                "http.response.status_code",
                i64::from(status.as_u16()),
            );
        }
        if let Some(kind) = proxy_error {
            self.fail(kind);
            return;
        }
        let threshold = if self.is_server() { 500 } else { 400 };
        if status.as_u16() >= threshold {
            self.fail(status.as_str());
        }
        self.grpc_status(headers);
    }

    /// Records a gRPC status from `trailers` that were read before the response was passed on.
    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        self.grpc_status(trailers);
    }

    /// Records that the attempt or request failed without a response from the peer.
    pub(crate) fn failed(&mut self, error_type: &str) {
        self.fail(error_type);
    }

    fn is_server(&self) -> bool {
        self.kind == SpanKind::Server
    }

    fn fail(&mut self, error_type: &str) {
        if !self.failed {
            wire::string_attribute(&mut self.encoded, "error.type", &[error_type]);
            self.failed = true;
        }
    }

    fn grpc_status(&mut self, headers: &HeaderMap) {
        if !self.grpc {
            return;
        }
        let Some(code) = headers
            .get(GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
        else {
            return;
        };
        wire::int_attribute(&mut self.encoded, "rpc.grpc.status_code", code);
        let error = if self.is_server() {
            GRPC_SERVER_ERRORS.contains(&code)
        } else {
            code != 0
        };
        if error {
            self.fail(&code.to_string());
        }
    }

    /// Ends the span now and queues it for export.
    pub(crate) fn finish(mut self) {
        self.ended = true;
    }

    /// `body` wrapped so that the span ends when the body has been sent (or abandoned), picking up a
    /// gRPC status from the trailers on the way.
    pub(crate) fn finish_with(self, body: ProxyBody) -> ProxyBody {
        Traced {
            inner: body,
            span: Some(self),
        }
        .boxed_unsync()
    }
}

impl Drop for SpanRecord {
    fn drop(&mut self) {
        if !self.ended {
            self.fail("cancelled");
        }
        wire::fixed64(
            &mut self.encoded,
            field::END_TIME,
            unix_nanos(SystemTime::now()),
        );
        if self.failed {
            wire::status(&mut self.encoded, OtlpStatus::Error as u64);
        }
        self.tracer.record(&self.encoded);
    }
}

/// A response body carrying the span it ends.
struct Traced {
    inner: ProxyBody,
    span: Option<SpanRecord>,
}

impl Body for Traced {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(trailers), Some(span)) = (frame.trailers_ref(), self.span.as_mut()) {
                    span.grpc_status(trailers);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut span) = self.span.take() {
                    span.failed("response_body");
                    span.finish();
                }
            }
            Poll::Ready(None) => {
                if let Some(span) = self.span.take() {
                    span.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Traced {
    /// hyper drops a body it will not read (a HEAD response, say) unpolled: that is an ordinary end.
    fn drop(&mut self) {
        if let Some(span) = self.span.take() {
            span.finish();
        }
    }
}

/// `ip` as text, written into `buffer` (long enough for any IPv6 address) rather than a `String`.
fn format_ip(ip: IpAddr, buffer: &mut [u8; 64]) -> &str {
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    let _ = write!(cursor, "{ip}");
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    std::str::from_utf8(&buffer[..len]).unwrap_or_default()
}
