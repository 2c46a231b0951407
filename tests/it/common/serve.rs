//! `killswitch serve` as a real child process, for the tests that kill it with SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::TestDb;

/// A running `killswitch serve`, killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    /// Every line it wrote on stderr so far.
    lines: Arc<Mutex<Vec<String>>>,
    /// Reads stderr until the process closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `section.key` settings as the environment variables `killswitch` reads.
pub fn env_of<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    settings
        .into_iter()
        .map(|(k, v)| {
            (
                format!("KILLSWITCH_{}", k.to_uppercase().replace('.', "__")),
                v.to_owned(),
            )
        })
        .collect()
}

impl Server {
    /// Starts on a free loopback port with the database and data folder of `db`, and waits
    /// until it listens.
    pub fn start(db: &TestDb, env: &[(String, String)]) -> Server {
        Self::start_on(db, "127.0.0.1:0", env)
    }

    pub fn start_on(db: &TestDb, listen: &str, env: &[(String, String)]) -> Server {
        Self::start_at(&db.url, db.dir.path(), listen, env)
    }

    /// [`start_on`](Self::start_on) with the database URL and data folder given apart.
    pub fn start_at(
        url: &str,
        data_dir: &std::path::Path,
        listen: &str,
        env: &[(String, String)],
    ) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_killswitch"))
            .arg("serve")
            .current_dir(data_dir)
            .env("KILLSWITCH_DATA_DIR", data_dir)
            .env("KILLSWITCH_DATABASE__URL", url)
            .env("KILLSWITCH_SERVER__LISTEN", listen)
            .env("KILLSWITCH_LOG__FORMAT", "text")
            .env_remove("RUST_LOG")
            .env_remove("KILLSWITCH_FAULT_POINT")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let listen = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "serve exited: {seen}"
            );
            seen.push_str(&line);
            if let Some(at) = line.find("listen=") {
                break line[at + 7..].split_whitespace().next().unwrap().to_owned();
            }
        };
        let lines = Arc::new(Mutex::new(
            seen.lines().map(str::to_owned).collect::<Vec<_>>(),
        ));
        // Keep reading, so a chatty log never blocks the server on a full pipe.
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            base: format!("http://{listen}"),
            lines,
            reader: Some(reader),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until a stderr line contains `needle`.
    pub async fn wait_for_line(&self, needle: &str, within: Duration) {
        let start = Instant::now();
        while start.elapsed() < within {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "no line with `{needle}` within {within:?}:\n{}",
            self.lines.lock().unwrap().join("\n")
        );
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until the process exits on its own; panics after `within`.
    pub async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("still running after {within:?}:\n{}", self.log());
    }

    /// SIGTERM, as an operator stops the service; returns every line it wrote, once it exited.
    pub async fn terminate(mut self) -> String {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.exited(Duration::from_secs(30)).await;
        assert!(status.success(), "a graceful stop: {status:?}");
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.log()
    }

    /// SIGKILL: no shutdown, no flush, no goodbye. Returns once the process is gone.
    pub fn kill(mut self) {
        use std::os::unix::process::ExitStatusExt;
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    }
}

/// A lead of every customer enrolled beside a server, as an operator would with the CLI.
pub async fn enroll_lead(services: &killswitch::app::Services, email: &str) -> super::Analyst {
    use killswitch::auth::{Role, Scope};
    super::enroll(
        &services.auth,
        &services.store,
        email,
        Role::Lead,
        Scope::All,
    )
    .await
}
