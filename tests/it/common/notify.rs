//! What notifications reach: a real SMTP server (`smtp-server` from npm, started from
//! `tests/notify/smtp-sink.mjs`; install it once with `npm ci --prefix tests/notify`) and a
//! webhook receiver on loopback that records every request.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::oidc::repo;

pub const SMTP_USER: &str = "killswitch";
pub const SMTP_PASSWORD: &str = "smtp-test-password";
pub const FROM: &str = "killswitch <soc@provider.example>";
pub const SOC_MAILBOX: &str = "soc@provider.example";
/// The `whsec_` secret the SOC's standard webhook is signed with in tests.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The node process running the SMTP server; stopped when dropped.
pub struct SmtpSink {
    child: Option<Child>,
    pub port: u16,
    messages: Arc<Mutex<Vec<Value>>>,
    tls: Option<Tls>,
}

/// A TLS server's mode and its certificate (self-signed for 127.0.0.1, made with openssl).
pub struct Tls {
    pub mode: &'static str,
    pub dir: tempfile::TempDir,
}

impl Tls {
    pub fn new(mode: &'static str) -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(
            path("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        // A certificate authority, and the server's certificate it signs.
        let steps: [Vec<String>; 3] = [
            [
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=killswitch test CA",
            ]
            .into_iter()
            .chain(key)
            .map(str::to_owned)
            .chain([
                "-keyout".into(),
                path("ca.key"),
                "-out".into(),
                path("ca.pem"),
            ])
            .collect(),
            ["req", "-subj", "/CN=127.0.0.1"]
                .into_iter()
                .chain(key)
                .map(str::to_owned)
                .chain([
                    "-keyout".into(),
                    path("key.pem"),
                    "-out".into(),
                    path("leaf.csr"),
                ])
                .collect(),
            ["x509", "-req", "-days", "1", "-CAcreateserial"]
                .into_iter()
                .map(str::to_owned)
                .chain(["-in".into(), path("leaf.csr"), "-CA".into(), path("ca.pem")])
                .chain([
                    "-CAkey".into(),
                    path("ca.key"),
                    "-out".into(),
                    path("cert.pem"),
                ])
                .chain(["-extfile".into(), path("leaf.ext")])
                .collect(),
        ];
        for args in steps {
            let made = Command::new("openssl")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl");
            assert!(made.success(), "openssl {args:?} failed");
        }
        Tls { mode, dir }
    }

    /// The certificate authority's certificate (for `notify.smtp_ca_file`).
    pub fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    pub fn cert(&self) -> String {
        self.dir.path().join("cert.pem").display().to_string()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SmtpSink {
    /// A server on `port` (0: any free one) requiring [`SMTP_USER`]'s password.
    pub fn start(port: u16) -> SmtpSink {
        SmtpSink::start_with(port, None)
    }

    /// A server speaking TLS as `tls` says (STARTTLS offered, or TLS from the first byte).
    pub fn start_with(port: u16, tls: Option<Tls>) -> SmtpSink {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (child, port) = spawn(port, messages.clone(), tls.as_ref());
        SmtpSink {
            child: Some(child),
            port,
            messages,
            tls,
        }
    }

    /// `notify.smtp_url` for this server.
    pub fn url(&self) -> String {
        let mode = self.tls.as_ref().map_or("none", |t| t.mode);
        format!(
            "smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{}?tls={mode}",
            self.port
        )
    }

    /// Stops the server (the port is then refused).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, keeping what it received before.
    pub fn restart(&mut self) {
        self.stop();
        let (child, _) = spawn(self.port, self.messages.clone(), self.tls.as_ref());
        self.child = Some(child);
    }

    pub fn messages(&self) -> Vec<Value> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits (in real time, up to `within`) until at least `count` messages arrived.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Value> {
        let start = Instant::now();
        while self.messages().len() < count && start.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.messages()
    }
}

fn spawn(port: u16, messages: Arc<Mutex<Vec<Value>>>, tls: Option<&Tls>) -> (Child, u16) {
    let dir = repo("tests/notify");
    assert!(
        dir.join("node_modules/smtp-server").is_dir(),
        "tests/notify/node_modules is missing: run npm ci --prefix tests/notify"
    );
    let mut child = Command::new("node")
        .arg(dir.join("smtp-sink.mjs"))
        .args(["--port", &port.to_string()])
        .args(["--user", SMTP_USER, "--password", SMTP_PASSWORD])
        .args(tls.map_or_else(Vec::new, |t| {
            let dir = t.dir.path();
            vec![
                "--tls".to_owned(),
                t.mode.to_owned(),
                "--key".to_owned(),
                dir.join("key.pem").display().to_string(),
                "--cert".to_owned(),
                dir.join("cert.pem").display().to_string(),
            ]
        }))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node (is Node.js installed?): {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for line in lines.map_while(Result::ok) {
            if let Ok(message) = serde_json::from_str::<Value>(&line) {
                messages.lock().unwrap().push(message);
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let port = serde_json::from_str::<Value>(&first)
        .ok()
        .and_then(|v| v["port"].as_u64())
        .unwrap_or_else(|| panic!("the SMTP server did not start: {first:?}"));
    (child, u16::try_from(port).unwrap())
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> String {
        self.headers[name].to_str().unwrap().to_owned()
    }
}

/// A webhook receiver on loopback answering every POST with `status` (200 unless changed).
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub status: Arc<AtomicU16>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (log, answer) = (received.clone(), status.clone());
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (log, answer) = (log.clone(), answer.clone());
            async move {
                let status = answer.load(Ordering::SeqCst);
                log.lock().unwrap().push(Received {
                    headers,
                    body,
                    status,
                });
                StatusCode::from_u16(status).unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/soc", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url,
            received,
            status,
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests answered with success: the deliveries.
    pub fn accepted(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits (in real time, up to `within`) until at least `count` deliveries were accepted.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let start = Instant::now();
        while self.accepted().len() < count && start.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.accepted()
    }
}

/// Settings that send SOC e-mail and customer notices through `smtp` and the SOC's standard
/// webhook to `hook`, polling often so tests do not wait.
pub fn settings(smtp: &SmtpSink, hook: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("notify.smtp_url", smtp.url()),
        ("notify.from", FROM.to_owned()),
        ("notify.soc_webhook_url", hook.url.clone()),
        ("notify.soc_webhook_kind", "standard".to_owned()),
        ("notify.soc_webhook_secret", WEBHOOK_SECRET.to_owned()),
        ("notify.poll_interval_ms", "20".to_owned()),
    ]
}
