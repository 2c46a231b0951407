//! A real OpenID provider for single sign-on: `oidc-provider` from npm, started from
//! `tests/oidc/provider.mjs` (install it once with `npm ci --prefix tests/oidc`), and killswitch
//! started against it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::TestApp;

pub const CLIENT_ID: &str = "killswitch-console";
pub const CLIENT_SECRET: &str = "oidc-provider-test-secret";
/// The provider signs with this key (and publishes it as [`SIGNING_KID`]), so a test can also
/// make tokens the provider's key set vouches for, such as already expired ones.
pub const SIGNING_KEY: &str = "tests/fake-entra/fixtures/remediation-app.pem";
pub const SIGNING_KID: &str = "test-signing-key";

/// A path in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The node process running oidc-provider; stopped when dropped.
pub struct Provider {
    child: Child,
    pub issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    /// The provider, with killswitch's callback `redirect_uri` as its one client's.
    pub fn start(redirect_uri: &str) -> Provider {
        let dir = repo("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "tests/oidc/node_modules is missing: run npm ci --prefix tests/oidc"
        );
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .args([
                "--port",
                "0",
                "--client-id",
                CLIENT_ID,
                "--client-secret",
                CLIENT_SECRET,
            ])
            .args(["--redirect-uri", redirect_uri])
            .arg("--signing-key")
            .arg(repo(SIGNING_KEY))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node (is Node.js installed?): {e}"));
        // Keep what the provider says on stderr, to explain a failed start.
        let said = Arc::new(Mutex::new(String::new()));
        let (mut stderr, log) = (child.stderr.take().unwrap(), said.clone());
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            log.lock().unwrap().push_str(&text);
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let issuer = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["issuer"].as_str().map(str::to_owned));
        let Some(issuer) = issuer else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "the OpenID provider did not start (stdout: {line:?}); it said: {}",
                said.lock().unwrap()
            );
        };
        Provider { child, issuer }
    }
}

/// killswitch with single sign-on against a fresh provider, with `overrides` after (and so
/// winning over) the server and oidc settings.
pub async fn app_with_provider(overrides: &[(&str, &str)]) -> (TestApp, Provider) {
    // The provider must know killswitch's callback before killswitch starts, so pick the port
    // first (bind, note, release); another test may take it meanwhile, then try another.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let provider = Provider::start(&format!("{base}/auth/callback"));
        let listen = format!("127.0.0.1:{port}");
        let mut settings = vec![
            ("server.listen", listen.as_str()),
            ("server.public_url", base.as_str()),
            ("oidc.issuer_url", provider.issuer.as_str()),
            ("oidc.client_id", CLIENT_ID),
            ("oidc.client_secret", CLIENT_SECRET),
        ];
        settings.extend_from_slice(overrides);
        match TestApp::try_spawn_with(&settings).await {
            Ok(app) => return (app, provider),
            Err(e) if attempts < 5 => eprintln!("port {port} was taken ({e}); trying another"),
            Err(e) => panic!("no free port for killswitch: {e}"),
        }
    }
}
