//! The least an HTTP/1.1 reverse proxy built on hyper 1 can do per request: the floor of the
//! Meshscope proxy's own stack, measured beside it and HAProxy by `bench/proxy_floor.sh`.
//!
//! `hyper_floor LISTEN UPSTREAM [h2]`: accepts HTTP/1.1 (with `h2`: HTTP/2 cleartext, prior
//! knowledge) on `LISTEN` and forwards every request, as it is, over one upstream connection of the
//! same protocol per downstream connection (opened when the downstream connection is accepted),
//! answering with the upstream's response as it is. No routing, pool, balancer, header rewrite,
//! timer or metric. The upstream connection is driven on a task of its own, as hyper documents and
//! as the Meshscope proxy does. (Driving it in the downstream connection's task instead, so that a
//! request never changes task, measured no better: bench/README.md, "The floor of the stack".)
//!
//! Run it on one worker (`TOKIO_WORKER_THREADS=1`) for a per-core figure.

use std::sync::{Arc, Mutex};

use hyper::Request;
use hyper::body::Incoming;
use hyper::client::conn::{http1 as client, http2 as client2};
use hyper::server::conn::{http1 as server, http2 as server2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: hyper_floor LISTEN UPSTREAM [h2]";
    let listen = args.next().ok_or(usage)?;
    let upstream = args.next().ok_or(usage)?;
    let h2 = match args.next().as_deref() {
        None => false,
        Some("h2") => true,
        Some(_) => return Err(usage.into()),
    };
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let (downstream, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let served = if h2 {
                serve_h2(downstream, &upstream).await
            } else {
                serve(downstream, &upstream).await
            };
            if let Err(e) = served {
                eprintln!("connection: {e}");
            }
        });
    }
}

/// The upstream connection for `downstream`, both without Nagle's delay (as the proxy sets them).
async fn connect(downstream: &TcpStream, upstream: &str) -> Result<TcpStream, Error> {
    downstream.set_nodelay(true)?;
    let upstream = TcpStream::connect(upstream).await?;
    upstream.set_nodelay(true)?;
    Ok(upstream)
}

/// Serves one downstream HTTP/1.1 connection until it closes.
async fn serve(downstream: TcpStream, upstream: &str) -> Result<(), Error> {
    let upstream = connect(&downstream, upstream).await?;
    let (sender, connection) = client::handshake(TokioIo::new(upstream)).await?;
    tokio::spawn(connection);
    // hyper's server calls the service for one request at a time on an HTTP/1.1 connection, so
    // the lock is never contended; it only makes the sender shareable with the service closure.
    let sender = Arc::new(Mutex::new(sender));
    let service = service_fn(move |request: Request<Incoming>| {
        sender
            .lock()
            .expect("the sender's lock is never poisoned")
            .send_request(request)
    });
    server::Builder::new()
        .serve_connection(TokioIo::new(downstream), service)
        .await?;
    Ok(())
}

/// Serves one downstream HTTP/2 connection until it closes; its streams share one upstream
/// HTTP/2 connection.
async fn serve_h2(downstream: TcpStream, upstream: &str) -> Result<(), Error> {
    let upstream = connect(&downstream, upstream).await?;
    let (sender, connection) =
        client2::handshake(TokioExecutor::new(), TokioIo::new(upstream)).await?;
    tokio::spawn(connection);
    let service = service_fn(move |request: Request<Incoming>| {
        let mut sender = sender.clone();
        async move { sender.send_request(request).await }
    });
    server2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(downstream), service)
        .await?;
    Ok(())
}
