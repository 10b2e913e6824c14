//! A network fault injector between one worker and an emulator: whole HTTP requests pass through
//! it to the real emulator, and it can hold them (a paused or partitioned worker) or swallow one
//! (a hung call). Not a mock: every answer comes from the emulator.
//!
//! Requests are forwarded whole (headers and `Content-Length` body in one write), so the emulator
//! never waits on half a request: moto serves one request at a time, and a half-sent request
//! would stall every test sharing it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_config::BehaviorVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::common::Aws;

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    /// True while requests are held.
    paused: watch::Sender<bool>,
    /// The next request containing these bytes is swallowed.
    hang: Mutex<Option<Vec<u8>>>,
    hung: AtomicUsize,
    /// Requests that arrived while paused.
    held: AtomicUsize,
}

/// One proxy in front of one emulator endpoint.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultProxy {
    /// A proxy in front of `endpoint` (`http://host:port`).
    pub async fn start(endpoint: &str) -> Self {
        let upstream: SocketAddr = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("emulator endpoint http://ip:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            upstream,
            paused: watch::channel(false).0,
            hang: Mutex::new(None),
            hung: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
        });
        let st = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(serve(client, Arc::clone(&st)));
            }
        });
        Self {
            addr,
            state,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds every request from now on (answers to requests already sent still arrive).
    pub fn pause(&self) {
        self.state.paused.send_replace(true);
    }

    /// Sends the held requests on, in order per connection.
    pub fn resume(&self) {
        self.state.paused.send_replace(false);
    }

    /// The next request whose bytes contain `pattern` is never sent on and never answered; its
    /// connection stays open and silent, as with a call hung in the network.
    pub fn hang_next(&self, pattern: &str) {
        *self.state.hang.lock().unwrap() = Some(pattern.as_bytes().to_vec());
    }

    /// How many requests were swallowed.
    pub fn hung(&self) -> usize {
        self.state.hung.load(Ordering::SeqCst)
    }

    /// How many requests arrived while paused.
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }
}

/// Clients of one worker, through its own Kinesis and DynamoDB proxies.
pub async fn clients_via(kinesis: &FaultProxy, dynamodb: &FaultProxy) -> Aws {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    Aws {
        kinesis: aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(&config)
                .endpoint_url(kinesis.url())
                .build(),
        ),
        dynamodb: aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&config)
                .endpoint_url(dynamodb.url())
                .build(),
        ),
    }
}

/// A worker's pair of proxies.
pub struct WorkerLink {
    pub kinesis: FaultProxy,
    pub dynamodb: FaultProxy,
}

impl WorkerLink {
    pub async fn start() -> Self {
        let endpoint = |name: &str| std::env::var(name).expect(crate::common::START_EMULATORS);
        Self {
            kinesis: FaultProxy::start(&endpoint("AWS_ENDPOINT_URL_KINESIS")).await,
            dynamodb: FaultProxy::start(&endpoint("AWS_ENDPOINT_URL_DYNAMODB")).await,
        }
    }

    pub async fn clients(&self) -> Aws {
        clients_via(&self.kinesis, &self.dynamodb).await
    }

    /// Holds every request of the worker, as if its process were stopped.
    pub fn pause(&self) {
        self.kinesis.pause();
        self.dynamodb.pause();
    }

    pub fn resume(&self) {
        self.kinesis.resume();
        self.dynamodb.resume();
    }
}

async fn serve(client: TcpStream, state: Arc<State>) {
    let Ok(server) = TcpStream::connect(state.upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (mut from_client, to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Answers flow back as they come. On the emulator's end of the connection the client's half
    // is returned, not closed, if the connection was frozen by a hang.
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = Arc::clone(&frozen);
    let answers = tokio::spawn(async move {
        let mut to_client = to_client;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if f.load(Ordering::SeqCst) {
                        break;
                    }
                    if to_client.write_all(&buf[..n]).await.is_err() {
                        return None;
                    }
                }
            }
        }
        f.load(Ordering::SeqCst).then_some(to_client)
    });
    let mut pending = Vec::new();
    while let Some(request) = read_request(&mut from_client, &mut pending).await {
        let mut paused = state.paused.subscribe();
        if *paused.borrow() {
            state.held.fetch_add(1, Ordering::SeqCst);
        }
        let _ = paused.wait_for(|p| !*p).await;
        let hang = {
            let mut pattern = state.hang.lock().unwrap();
            let hit = pattern
                .as_deref()
                .is_some_and(|p| request.windows(p.len()).any(|w| w == p));
            if hit {
                *pattern = None;
            }
            hit
        };
        if hang {
            state.hung.fetch_add(1, Ordering::SeqCst);
            frozen.store(true, Ordering::SeqCst);
            // Close the emulator's side (it never saw this request); keep the client's side
            // open and silent until the client gives up.
            drop(to_server);
            let _held_open = answers.await.ok().flatten();
            drain(&mut from_client).await;
            return;
        }
        if to_server.write_all(&request).await.is_err() {
            break;
        }
    }
    drop(to_server);
    let _ = answers.await;
}

async fn drain(from_client: &mut OwnedReadHalf) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from_client.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Reads one whole HTTP/1.1 request (headers and body by `Content-Length`, or chunked).
async fn read_request(from: &mut OwnedReadHalf, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(len) = request_len(pending) {
            return Some(pending.drain(..len).collect());
        }
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// The length of the first complete request in `bytes`, if it is complete.
fn request_len(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        let end = bytes[head_end..]
            .windows(5)
            .position(|w| w == b"0\r\n\r\n")?;
        return Some(head_end + end + 5);
    }
    let body: usize = header("content-length:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (bytes.len() >= head_end + body).then_some(head_end + body)
}
