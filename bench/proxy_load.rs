//! Load generator for the Dapr proxy (`bench/proxy.sh` runs it): a fake
//! daprd sending unary gRPC `OnTopicEvent` calls with 1 KB of data over one
//! HTTP/2 connection (as daprd's app channel does), against
//!
//! - `direct`: one fake function pod, and
//! - `proxy`: the real `openfunction-dapr proxy` binary (release build,
//!   separate process) in front of 4 fake function pods,
//!
//! with the same generator in the same run. Prints throughput at a high
//! concurrency, latency percentiles at a low one, the proxy's idle resident
//! memory, and its memory while one stalled function holds many events
//! (bounded by `--max-in-flight`).
//!
//! `cargo run --release --example proxy_load -- [BIN] [SECONDS] [ROUNDS]`

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dapr::dapr::proto::common::v1::{InvokeRequest, InvokeResponse};
use dapr::dapr::proto::runtime::v1::app_callback_client::AppCallbackClient;
use dapr::dapr::proto::runtime::v1::app_callback_server::{AppCallback, AppCallbackServer};
use dapr::dapr::proto::runtime::v1::{
    BindingEventRequest, BindingEventResponse, JobEventRequest, JobEventResponse,
    ListInputBindingsResponse, ListTopicSubscriptionsResponse, TopicEventBulkRequest,
    TopicEventBulkResponse, TopicEventRequest, TopicEventResponse,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

#[derive(Clone)]
struct Pod {
    stall: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl AppCallback for Pod {
    async fn on_invoke(
        &self,
        _: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
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
        _: Request<TopicEventRequest>,
    ) -> Result<Response<TopicEventResponse>, Status> {
        if self.stall.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        Ok(Response::new(TopicEventResponse::default()))
    }
    async fn list_input_bindings(
        &self,
        _: Request<()>,
    ) -> Result<Response<ListInputBindingsResponse>, Status> {
        Ok(Response::new(ListInputBindingsResponse::default()))
    }
    async fn on_binding_event(
        &self,
        _: Request<BindingEventRequest>,
    ) -> Result<Response<BindingEventResponse>, Status> {
        Ok(Response::new(BindingEventResponse::default()))
    }
    async fn on_bulk_topic_event(
        &self,
        _: Request<TopicEventBulkRequest>,
    ) -> Result<Response<TopicEventBulkResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn on_job_event(
        &self,
        _: Request<JobEventRequest>,
    ) -> Result<Response<JobEventResponse>, Status> {
        Err(Status::unimplemented(""))
    }
}

async fn pod(stall: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = AppCallbackServer::new(Pod {
        stall: Arc::new(AtomicBool::new(stall)),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    addr
}

fn free() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

const CONTEXT: &str = r#"{"name":"bench","port":"8080","runtime":"Async","inputs":{"sub":{"uri":"orders","componentName":"ps","componentType":"pubsub.kafka"}}}"#;

struct ProxyProc {
    child: Child,
    addr: SocketAddr,
}

impl ProxyProc {
    fn start(bin: &str, pods: &[SocketAddr], max_in_flight: usize) -> Self {
        let (addr, admin) = (free(), free());
        // PROXY_CPU pins the proxy to one CPU (taskset execs it: same pid).
        let mut cmd = match std::env::var("PROXY_CPU") {
            Ok(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu, bin]);
                c
            }
            Err(_) => Command::new(bin),
        };
        cmd.args([
            "--log-format",
            "json",
            "proxy",
            "--listen",
            &addr.to_string(),
        ])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--max-in-flight", &max_in_flight.to_string()])
        .env("FUNC_CONTEXT", CONTEXT)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for p in pods {
            cmd.args(["--target", &p.to_string()]);
        }
        ProxyProc {
            child: cmd.spawn().expect("start the proxy binary"),
            addr,
        }
    }

    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(addr: SocketAddr) -> AppCallbackClient<Channel> {
    for _ in 0..200 {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
        {
            return AppCallbackClient::new(ch);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} does not listen");
}

fn event() -> TopicEventRequest {
    TopicEventRequest {
        id: "e".into(),
        source: "bench".into(),
        r#type: "com.dapr.event.sent".into(),
        spec_version: "1.0".into(),
        data_content_type: "application/octet-stream".into(),
        data: vec![b'x'; 1024],
        topic: "orders".into(),
        pubsub_name: "ps".into(),
        ..Default::default()
    }
}

/// CPU time (user + system) of a process so far, in µs.
fn cpu_us(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 12th, stime the 13th; in clock ticks (USER_HZ, 100 on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() * 10_000
}

/// One measured run.
struct Run {
    rps: f64,
    p50: u64,
    p99: u64,
    /// CPU µs per event of this process (generator and function pods).
    own_cpu: f64,
    /// CPU µs per event of the proxy process, if any.
    proxy_cpu: f64,
}

/// `concurrency` workers for `secs`; `proxy` is the proxy's pid, if any.
async fn run(
    c: &AppCallbackClient<Channel>,
    concurrency: usize,
    secs: f64,
    proxy: Option<u32>,
) -> Run {
    // Warm-up.
    let mut w = c.clone();
    for _ in 0..200 {
        w.on_topic_event(event()).await.unwrap();
    }
    let proxy = proxy.map(|p| p.to_string());
    let (own0, proxy0) = (cpu_us("self"), proxy.as_deref().map_or(0, cpu_us));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                c.on_topic_event(event()).await.unwrap();
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let own = (cpu_us("self") - own0) as f64;
    let via = (proxy.as_deref().map_or(0, cpu_us) - proxy0) as f64;
    all.sort_unstable();
    let n = all.len();
    let pct = |p: f64| all[((n as f64 * p) as usize).min(n - 1)];
    Run {
        rps: n as f64 / secs,
        p50: pct(0.50),
        p99: pct(0.99),
        own_cpu: own / n as f64,
        proxy_cpu: via / n as f64,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/release/openfunction-dapr".into());
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);

    let direct_pod = pod(false).await;
    let mut pods = Vec::new();
    for _ in 0..4 {
        pods.push(pod(false).await);
    }
    let proxy = ProxyProc::start(&bin, &pods, 256);
    let direct = client(direct_pod).await;
    let via = client(proxy.addr).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("idle RSS of the proxy: {} KB", proxy.rss_kb());

    let pid = Some(proxy.child.id());
    for round in 1..=rounds {
        let d64 = run(&direct, 64, secs, None).await;
        let p64 = run(&via, 64, secs, pid).await;
        let d8 = run(&direct, 8, secs, None).await;
        let p8 = run(&via, 8, secs, pid).await;
        println!(
            "round {round}: c=64 direct {:.0}/s proxy {:.0}/s ratio {:.2} | c=8 p50 direct {} µs proxy {} µs, p99 direct {} µs proxy {} µs, added p99 {} µs",
            d64.rps,
            p64.rps,
            p64.rps / d64.rps,
            d8.p50,
            p8.p50,
            d8.p99,
            p8.p99,
            p8.p99 as i64 - d8.p99 as i64
        );
        println!(
            "  CPU per event at c=64: direct path (daprd + function) {:.1} µs; via proxy: daprd + functions {:.1} µs, proxy {:.1} µs",
            d64.own_cpu, p64.own_cpu, p64.proxy_cpu
        );
    }
    println!("RSS of the proxy after load: {} KB", proxy.rss_kb());
    drop(proxy);

    // One stalled function: 5,000 events sent, 256 in flight, the rest
    // waiting in the proxy.
    let stalled = pod(true).await;
    let proxy = ProxyProc::start(&bin, &[stalled], 256);
    let via = client(proxy.addr).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = proxy.rss_kb();
    let mut held = Vec::new();
    for _ in 0..5000 {
        let mut c = via.clone();
        held.push(tokio::spawn(async move {
            let _ = c.on_topic_event(event()).await;
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "stalled function, 5000 events sent, --max-in-flight 256: RSS {before} KB -> {} KB",
        proxy.rss_kb()
    );
    for h in held {
        h.abort();
    }
}
