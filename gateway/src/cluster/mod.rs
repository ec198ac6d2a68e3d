//! The fleet link: gateways behind one balancer share breaker transitions and operator
//! actions through Redis pub/sub (`cluster:` in the config). Never on the request path:
//! a breaker's transition and an operator's action are queued (bounded, overflow
//! counted) by `EventHub::tell_fleet`, and this background service publishes them and
//! applies what the others say (`adopt.rs`). With Redis down or slow every instance
//! behaves as a lone gateway; the link reconnects with backoff and both sides
//! resynchronise (each (re)connected instance asks the others for what they hold).

mod adopt;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::AsyncCommands;
use tokio::sync::{Mutex, mpsc};

use crate::config::ClusterSpec;
use crate::events::{FleetNote, FleetOutbox};
use crate::operator_modes::now_unix_ms;
use crate::runtime::RuntimeHandle;
use adopt::Fleet;
use wire::{Body, Message};

/// Notes waiting to be published; beyond this they are dropped (and counted).
const OUTBOX: usize = 4096;
/// Connecting, and any one Redis command, give up after this.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the link is checked: a heartbeat is published, and its echo must come back
/// through the subscription within `ECHO_LIMIT`, so a Redis that hangs, or a
/// subscription a middlebox dropped without a word, is noticed.
const HEARTBEAT: Duration = Duration::from_secs(1);
const ECHO_LIMIT: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct FleetLink {
    fleet: Fleet,
    unreadable: crate::throttled_log::ThrottledLog,
    outbox: Mutex<mpsc::Receiver<FleetNote>>,
    channel: String,
}

impl FleetLink {
    /// Connects the gateway's events to a new link; the service does the rest.
    pub fn new(spec: ClusterSpec, runtime: Arc<RuntimeHandle>) -> Self {
        let metrics = runtime.metrics.for_cluster(&spec.name);
        metrics.connected.set(0);
        let (sender, outbox) = mpsc::channel(OUTBOX);
        runtime.events.connect_fleet(FleetOutbox {
            sender,
            dropped: metrics.dropped.clone(),
            connected: metrics.connected.clone(),
        });
        let channel = format!("edge-gateway:{}:events", spec.name);
        Self {
            fleet: Fleet::new(spec, runtime, metrics),
            unreadable: Default::default(),
            outbox: Mutex::new(outbox),
            channel,
        }
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        let spec = &self.fleet.spec;
        let mut info: redis::ConnectionInfo = spec.redis_url.parse()?;
        if spec.username.is_some() {
            info.redis.username.clone_from(&spec.username);
        }
        if spec.password.is_some() {
            info.redis.password.clone_from(&spec.password);
        }
        match &spec.ca {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
    }

    /// One connected period: until Redis fails or the process stops.
    async fn session(
        &self,
        outbox: &mut mpsc::Receiver<FleetNote>,
        shutdown: &mut ShutdownWatch,
        connected: &mut bool,
    ) -> Result<(), String> {
        let client = self.client().map_err(|e| e.to_string())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        let mut publisher = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| "timed out connecting".to_string())?
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(REDIS_TIMEOUT, pubsub.subscribe(&self.channel))
            .await
            .map_err(|_| "timed out subscribing".to_string())?
            .map_err(|e| e.to_string())?;
        let mut messages = pubsub.into_on_message();
        let metrics = &self.fleet.metrics;
        metrics.connected.set(1);
        tracing::info!(
            target: "gateway::cluster",
            cluster = %self.fleet.spec.name,
            instance = %self.fleet.spec.instance,
            "connected to the fleet"
        );
        // What was queued while alone is superseded by the sync that follows.
        let mut stale = 0u64;
        while outbox.try_recv().is_ok() {
            stale += 1;
        }
        metrics.dropped.inc_by(stale);
        let now = now_unix_ms();
        let instance = self.fleet.spec.instance.clone();
        self.publish(
            &mut publisher,
            Message::new(&instance, now, Body::SyncRequest),
        )
        .await?;
        for message in self.fleet.sync() {
            self.publish(&mut publisher, message).await?;
        }
        *connected = true;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut last_echo = tokio::time::Instant::now();
        loop {
            tokio::select! {
                received = messages.next() => {
                    let Some(received) = received else {
                        return Err("the subscription closed".into());
                    };
                    let payload = received.get_payload_bytes();
                    match Message::parse(payload) {
                        Ok(message) if message.instance != instance => {
                            metrics.received.inc();
                            if self.fleet.apply(&message) {
                                for message in self.fleet.sync() {
                                    self.publish(&mut publisher, message).await?;
                                }
                            }
                        }
                        Ok(message) => {
                            if message.body == Body::Heartbeat {
                                last_echo = tokio::time::Instant::now();
                            }
                        }
                        Err(e) => {
                            metrics.dropped.inc();
                            // Another publisher (a newer version, a stranger) could send
                            // thousands a second: at most one line a second.
                            if let Some(skipped) = self.unreadable.admit() {
                                tracing::warn!(target: "gateway::cluster", error = %e, skipped, "unreadable fleet message dropped");
                            }
                        }
                    }
                }
                note = outbox.recv() => {
                    let Some(note) = note else { return Ok(()) };
                    let message = Message::from_note(&instance, now_unix_ms(), note);
                    if self.fleet.shared(&message) {
                        self.publish(&mut publisher, message).await?;
                    }
                }
                _ = heartbeat.tick() => {
                    if last_echo.elapsed() > ECHO_LIMIT {
                        return Err("no echo of this instance's heartbeat: the subscription is dead".into());
                    }
                    let beat = Message::new(&instance, now_unix_ms(), Body::Heartbeat);
                    self.publish(&mut publisher, beat).await?;
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    async fn publish(
        &self,
        publisher: &mut redis::aio::MultiplexedConnection,
        message: Message,
    ) -> Result<(), String> {
        let payload = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        let _: i64 = publisher
            .publish(&self.channel, payload)
            .await
            .map_err(|e| format!("publish: {e}"))?;
        self.fleet.metrics.sent.inc();
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for FleetLink {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut outbox = self.outbox.lock().await;
        let mut backoff = BACKOFF_FIRST;
        // Loud once per outage, quiet while it lasts.
        let mut reported = false;
        loop {
            let mut connected = false;
            let ended = self
                .session(&mut outbox, &mut shutdown, &mut connected)
                .await;
            self.fleet.metrics.connected.set(0);
            if *shutdown.borrow() {
                return;
            }
            if connected {
                backoff = BACKOFF_FIRST;
                reported = false;
            }
            match ended {
                Err(e) if !reported => {
                    tracing::error!(
                        target: "gateway::cluster",
                        cluster = %self.fleet.spec.name,
                        redis = %self.fleet.spec.redis_url,
                        error = %e,
                        "cannot reach the fleet's Redis: this instance stands alone (its breakers work as without a cluster) and retries"
                    );
                    reported = true;
                }
                Err(e) => {
                    tracing::debug!(target: "gateway::cluster", error = %e, "fleet link still down");
                }
                Ok(()) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}
