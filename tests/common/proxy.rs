//! The proxy in-process, fake function pods (gRPC and HTTP) on 127.0.0.1,
//! and a fake daprd (the generated `AppCallback` client).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dapr::dapr::proto::common::v1::{InvokeRequest, InvokeResponse};
use dapr::dapr::proto::runtime::v1::app_callback_client::AppCallbackClient;
use dapr::dapr::proto::runtime::v1::app_callback_server::{AppCallback, AppCallbackServer};
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use dapr::dapr::proto::runtime::v1::{
    BindingEventRequest, BindingEventResponse, JobEventRequest, JobEventResponse,
    ListInputBindingsResponse, ListTopicSubscriptionsResponse, TopicEventBulkRequest,
    TopicEventBulkResponse, TopicEventRequest, TopicEventResponse,
};
use openfunction_dapr::proxy::{self, Protocol, ProxyConfig, context, discovery};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// How a fake function answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Success (topic: SUCCESS; binding: `data` = "ok from <port>").
    Ok,
    /// This gRPC status.
    Fail(tonic::Code),
    /// Topic answer with this status.
    Reply(TopicEventResponseStatus),
    /// Never answers until [`FakeFunction::release`].
    Stall,
}

/// What one fake function saw.
#[derive(Default)]
pub struct Seen {
    /// Binding names, topic event ids, invoke methods, in arrival order.
    pub events: Vec<String>,
    /// Metadata of each request.
    pub metadata: Vec<BTreeMap<String, String>>,
    /// Topic events' `path`.
    pub paths: Vec<String>,
    pub running: usize,
    pub max_running: usize,
}

#[derive(Clone)]
struct Pod {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
    release: Arc<Notify>,
}

impl Pod {
    async fn handle(&self, what: String, md: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        {
            let mut seen = self.seen.lock().unwrap();
            seen.events.push(what);
            seen.metadata.push(
                openfunction_dapr::proxy::grpc::metadata_map(md)
                    .into_iter()
                    .collect(),
            );
            seen.running += 1;
            seen.max_running = seen.max_running.max(seen.running);
        }
        let mode = self.mode.lock().unwrap().clone();
        let result = match mode {
            Mode::Ok | Mode::Reply(_) => Ok(()),
            Mode::Fail(code) => Err(Status::new(code, "function says no")),
            Mode::Stall => {
                self.release.notified().await;
                Ok(())
            }
        };
        self.seen.lock().unwrap().running -= 1;
        result
    }
}

#[tonic::async_trait]
impl AppCallback for Pod {
    async fn on_invoke(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        let method = request.get_ref().method.clone();
        self.handle(format!("invoke:{method}"), request.metadata())
            .await?;
        Ok(Response::new(InvokeResponse::default()))
    }

    async fn list_topic_subscriptions(
        &self,
        _: Request<()>,
    ) -> Result<Response<ListTopicSubscriptionsResponse>, Status> {
        Ok(Response::new(ListTopicSubscriptionsResponse::default()))
    }

    async fn on_topic_event(
        &self,
        request: Request<TopicEventRequest>,
    ) -> Result<Response<TopicEventResponse>, Status> {
        self.seen
            .lock()
            .unwrap()
            .paths
            .push(request.get_ref().path.clone());
        self.handle(request.get_ref().id.clone(), request.metadata())
            .await?;
        let status = match &*self.mode.lock().unwrap() {
            Mode::Reply(s) => *s,
            _ => TopicEventResponseStatus::Success,
        };
        Ok(Response::new(TopicEventResponse {
            status: status as i32,
        }))
    }

    async fn list_input_bindings(
        &self,
        _: Request<()>,
    ) -> Result<Response<ListInputBindingsResponse>, Status> {
        Ok(Response::new(ListInputBindingsResponse::default()))
    }

    async fn on_binding_event(
        &self,
        request: Request<BindingEventRequest>,
    ) -> Result<Response<BindingEventResponse>, Status> {
        let name = request.get_ref().name.clone();
        self.handle(name, request.metadata()).await?;
        Ok(Response::new(BindingEventResponse {
            data: format!("ok from {}", self.port).into_bytes(),
            ..Default::default()
        }))
    }

    async fn on_bulk_topic_event(
        &self,
        _: Request<TopicEventBulkRequest>,
    ) -> Result<Response<TopicEventBulkResponse>, Status> {
        Err(Status::unimplemented("no bulk here"))
    }

    async fn on_job_event(
        &self,
        _: Request<JobEventRequest>,
    ) -> Result<Response<JobEventResponse>, Status> {
        Err(Status::unimplemented("no jobs"))
    }
}

/// A fake function pod serving `AppCallback` on 127.0.0.1, stoppable and
/// restartable on the same port.
pub struct FakeFunction {
    pub addr: SocketAddr,
    pod: Pod,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeFunction {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pod = Pod {
            port: addr.port(),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            seen: Arc::default(),
            release: Arc::new(Notify::new()),
        };
        let mut f = FakeFunction {
            addr,
            pod,
            stop: None,
            task: None,
        };
        f.serve(listener);
        f
    }

    fn serve(&mut self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let svc = AppCallbackServer::new(self.pod.clone());
        let task = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        });
        self.stop = Some(tx);
        self.task = Some(task);
    }

    /// Stops serving: the port refuses connections, open ones are closed.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.stop = None;
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.pod.mode.lock().unwrap() = mode;
    }

    /// Lets every stalled request answer (and any that stall later, once).
    pub fn release(&self) {
        self.pod.release.notify_waiters();
    }

    pub fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.pod.seen.lock().unwrap()
    }

    pub fn count(&self) -> usize {
        self.seen().events.len()
    }
}

impl Drop for FakeFunction {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The proxy, in-process, with its admin port.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub resolver: discovery::Fixed,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub struct Options {
    pub protocol: Protocol,
    pub event_timeout: Duration,
    pub max_in_flight: usize,
    pub drain_timeout: Duration,
    pub context: String,
}

/// A context with binding `cron` and `kafka-in`, topic `orders` of `ps`.
pub const CONTEXT: &str = r#"{"name":"fn","version":"v1","port":"8080","runtime":"Async",
  "inputs":{"cron":{"uri":"cron","componentName":"cron","componentType":"bindings.cron"},
            "k":{"uri":"kafka-in","componentName":"kafka-in","componentType":"bindings.kafka"},
            "sub":{"uri":"orders","componentName":"ps","componentType":"pubsub.kafka",
                   "metadata":{"consumerID":"c1"}}}}"#;

impl Default for Options {
    fn default() -> Self {
        Self {
            protocol: Protocol::Grpc,
            event_timeout: Duration::from_secs(5),
            max_in_flight: 256,
            drain_timeout: Duration::from_secs(5),
            context: CONTEXT.to_owned(),
        }
    }
}

impl Proxy {
    pub async fn start(pods: &[SocketAddr], opts: Options) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
        let resolver = discovery::Fixed::new(pods.to_vec());
        let config = ProxyConfig {
            inputs: context::parse(&opts.context).unwrap(),
            protocol: opts.protocol,
            resolver: Arc::new(resolver.clone()),
            event_timeout: opts.event_timeout,
            max_in_flight: opts.max_in_flight,
            drain_timeout: opts.drain_timeout,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(proxy::serve(config, listener, Some(admin), async {
            let _ = rx.await;
        }));
        let p = Proxy {
            addr,
            admin: admin_addr,
            resolver,
            shutdown: Some(tx),
            task: Some(task),
        };
        // Discovery runs at once; give it a moment to list the pods.
        tokio::time::sleep(Duration::from_millis(50)).await;
        p
    }

    /// A fake daprd: the client daprd uses for its app channel.
    pub async fn daprd(&self) -> AppCallbackClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        AppCallbackClient::new(channel)
    }

    /// Sends the shutdown signal (as SIGTERM does).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// The admin port's `/metrics`.
    pub async fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics").await.1
    }

    /// A metric's value (first line starting with `name`).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `GET` on an admin port: (status, body).
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    super::webhook::init_crypto();
    let r = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("admin port answers");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

pub fn binding(name: &str) -> BindingEventRequest {
    BindingEventRequest {
        name: name.to_owned(),
        data: vec![b'x'; 16],
        metadata: Default::default(),
    }
}

pub fn topic_event(id: &str) -> TopicEventRequest {
    TopicEventRequest {
        id: id.to_owned(),
        source: "test".into(),
        r#type: "com.dapr.event.sent".into(),
        spec_version: "1.0".into(),
        data_content_type: "application/json".into(),
        data: br#"{"n":1}"#.to_vec(),
        topic: "orders".into(),
        pubsub_name: "ps".into(),
        path: String::new(),
        extensions: None,
    }
}
