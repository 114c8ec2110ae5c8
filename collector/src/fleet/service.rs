//! The `FleetSignals` gRPC service: each subscriber gets an update at once, then every
//! `update_interval` and whenever arriving spans eject an endpoint, for the services it named.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::{BoxFuture, Shared};
use futures::{Stream, StreamExt};
use meshscope_proto::signals::fleet_signals_server::{FleetSignals, FleetSignalsServer};
use meshscope_proto::signals::{SignalsUpdate, SubscribeRequest};
use tokio_stream::wrappers::IntervalStream;
use tonic::{Request, Response, Status};

use crate::fleet::FleetHealth;

/// Serves [`FleetHealth`] to proxies.
#[derive(Clone)]
pub struct SignalsService {
    fleet: Arc<FleetHealth>,
    /// Resolves at shutdown and ends every subscription, so a graceful stop does not wait on streams
    /// that never end by themselves.
    stop: Shared<BoxFuture<'static, ()>>,
}

impl SignalsService {
    /// The tonic service to add to the collector's gRPC server; subscriptions end when `stop` resolves.
    pub fn server(
        fleet: Arc<FleetHealth>,
        stop: Shared<BoxFuture<'static, ()>>,
    ) -> FleetSignalsServer<SignalsService> {
        FleetSignalsServer::new(SignalsService { fleet, stop })
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<SignalsUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl FleetSignals for SignalsService {
    type SubscribeStream = UpdateStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        if request.services.iter().any(|service| service.is_empty()) {
            return Err(Status::invalid_argument(
                "an empty service name was asked for",
            ));
        }
        tracing::info!(proxy = %request.proxy_id, services = ?request.services, "signals subscriber");
        let fleet = self.fleet.clone();
        let mut interval = tokio::time::interval(fleet.options().update_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ticks = IntervalStream::new(interval).map(|_| ());
        let ejections = futures::stream::unfold(fleet.ejections(), |mut ejections| async move {
            ejections.changed().await.ok()?;
            Some(((), ejections))
        });
        let services = request.services;
        let updates = futures::stream::select(ticks, ejections)
            .map(move |()| Ok(fleet.update(&services, SystemTime::now())))
            .take_until(self.stop.clone());
        Ok(Response::new(Box::pin(updates)))
    }
}
