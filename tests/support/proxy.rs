//! A small HTTP/1.1 fault proxy in front of the emulator, for the faults moto cannot show: a call
//! answered with an error for a while (EBS's "snapshot not visible yet" after StartSnapshot,
//! throttling), a call never answered (a stalled PutSnapshotBlock). It forwards everything else
//! and records every request (action, body), so a test can also check what bakery sent.
//! Threads only; stopped (stalled connections closed) when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The API action: EBS direct's from the method and path, the others' from `Action=`.
    pub action: String,
}

impl Request {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What to do with a request.
pub enum Action {
    Forward,
    /// Answer this instead of forwarding: status, headers, body.
    Respond(u16, Vec<(String, String)>, Vec<u8>),
    /// Read it, never answer (until the proxy is dropped).
    Stall,
}

/// A throttling answer of the right shape for the service of `r` (EC2's 503
/// RequestLimitExceeded, EBS's ThrottlingException, the query services' Throttling).
pub fn throttled(r: &Request) -> Action {
    if r.path.starts_with("/snapshots") {
        return Action::Respond(
            429,
            vec![
                ("Content-Type".into(), "application/json".into()),
                ("x-amzn-ErrorType".into(), "ThrottlingException".into()),
            ],
            br#"{"message":"Rate exceeded"}"#.to_vec(),
        );
    }
    let form = r.body_text();
    if form.contains("Version=2016-11-15") {
        return Action::Respond(
            503,
            vec![("Content-Type".into(), "text/xml".into())],
            b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>proxy</RequestID></Response>".to_vec(),
        );
    }
    Action::Respond(
        400,
        vec![("Content-Type".into(), "text/xml".into())],
        b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>proxy</RequestId></ErrorResponse>".to_vec(),
    )
}

type Rule = dyn Fn(&Request) -> Action + Send + Sync;
/// Called with each forwarded request and the upstream's answer (status, body).
type Observer = dyn Fn(&Request, u16, &[u8]) + Send + Sync;

pub struct Proxy {
    pub port: u16,
    pub log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listen on a free 127.0.0.1 port, forward to `upstream` (`http://127.0.0.1:PORT`) unless
    /// `rule` says otherwise; `observe` sees every forwarded answer.
    pub fn start(
        upstream: &str,
        rule: impl Fn(&Request) -> Action + Send + Sync + 'static,
        observe: impl Fn(&Request, u16, &[u8]) + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let rule: Arc<Rule> = Arc::new(rule);
        let observe: Arc<Observer> = Arc::new(observe);
        let (l2, s2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let (up, log, stop, rule, observe) = (
                            up.clone(),
                            l2.clone(),
                            s2.clone(),
                            rule.clone(),
                            observe.clone(),
                        );
                        std::thread::spawn(move || {
                            serve(sock, &up, &log, &stop, &*rule, &*observe)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy { port, log, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The actions of the requests seen so far, in order.
    pub fn actions(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.action.clone())
            .collect()
    }

    pub fn requests(&self, action: &str) -> Vec<Request> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.action == action)
            .cloned()
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn action_of(method: &str, path: &str, body: &[u8]) -> String {
    let p = path.split('?').next().unwrap_or(path);
    if p.starts_with("/snapshots") {
        let parts: Vec<&str> = p.trim_matches('/').split('/').collect();
        return match (method, parts.as_slice()) {
            ("POST", ["snapshots"]) => "StartSnapshot",
            ("POST", ["snapshots", "completion", _]) => "CompleteSnapshot",
            ("PUT", ["snapshots", _, "blocks", _]) => "PutSnapshotBlock",
            ("GET", ["snapshots", _, "blocks", _]) => "GetSnapshotBlock",
            ("GET", ["snapshots", _, "blocks"]) => "ListSnapshotBlocks",
            ("GET", ["snapshots", _, "changedblocks"]) => "ListChangedBlocks",
            _ => "Ebs?",
        }
        .to_string();
    }
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("?")
        .to_string()
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut it = line.split_whitespace();
    let (method, path) = (it.next()?.to_string(), it.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")),
        "the test proxy does not read chunked bodies ({method} {path})"
    );
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let action = action_of(&method, &path, &body);
    Some(Request {
        method,
        path,
        headers,
        body,
        action,
    })
}

/// An HTTP answer: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

fn forward(up: &str, req: &Request) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect(up)?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        if !k.eq_ignore_ascii_case("connection") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(&req.body)?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let mut headers = Vec::new();
    let mut len = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse::<usize>().ok();
            } else if !k.eq_ignore_ascii_case("connection")
                && !k.eq_ignore_ascii_case("transfer-encoding")
            {
                headers.push((k.to_string(), v.to_string()));
            }
        }
    }
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        None => {
            r.read_to_end(&mut body)?;
        }
    }
    Ok((code, headers, body))
}

fn respond(out: &mut TcpStream, status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
    let mut head = format!("HTTP/1.1 {status} X\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    out.write_all(head.as_bytes())
        .and_then(|_| out.write_all(body))
        .is_ok()
}

fn serve(
    sock: TcpStream,
    up: &str,
    log: &Mutex<Vec<Request>>,
    stop: &AtomicBool,
    rule: &Rule,
    observe: &Observer,
) {
    let _ = sock.set_nonblocking(false);
    let mut out = sock.try_clone().unwrap();
    let mut r = BufReader::new(sock);
    while let Some(req) = read_request(&mut r) {
        log.lock().unwrap().push(req.clone());
        match rule(&req) {
            Action::Stall => {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Action::Respond(status, headers, body) => {
                if !respond(&mut out, status, &headers, &body) {
                    return;
                }
            }
            Action::Forward => match forward(up, &req) {
                Ok((status, headers, body)) => {
                    observe(&req, status, &body);
                    if !respond(&mut out, status, &headers, &body) {
                        return;
                    }
                }
                Err(_) => return,
            },
        }
    }
}
