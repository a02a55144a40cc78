//! What the benchmark programs share: sizes from the environment, the relay under test, clients,
//! a relay in a child process with its figures from `/proc`, and a TCP proxy that cuts links
//! (`proxy`).
#![allow(dead_code)]

pub mod proxy;

use socketio_p2p::{ClientOptions, P2pClient, RelayOptions, ServerOptions};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_socketio-p2p");
static SERVES: AtomicU64 = AtomicU64::new(0);

/// A size from the environment (`_` allowed as a digit separator), or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The relay under test, for throughput: the per-client event rate and the per-address
/// connection rate limits are off (a public relay keeps them on; see `ServerOptions`).
pub fn unthrottled() -> RelayOptions {
    RelayOptions {
        server: ServerOptions {
            max_events_per_sec: u32::MAX,
            event_burst: u32::MAX,
            max_connects_per_sec: 0,
            ..ServerOptions::default()
        },
        ..RelayOptions::default()
    }
}

/// A client of the relay at `url` whose calls wait at most `timeout`.
pub async fn connect(url: &str, id: &str, timeout: Duration) -> P2pClient {
    let opts = ClientOptions {
        timeout,
        ..ClientOptions::default()
    };
    P2pClient::connect_with(url, id, opts)
        .await
        .unwrap_or_else(|e| panic!("'{id}' connects: {e}"))
}

/// `socketio-p2p serve` on a free port, killed when dropped.
pub struct Serve {
    /// The `serve` process.
    pub child: Child,
    /// Where it listens.
    pub url: String,
    /// Its log (stderr).
    log: PathBuf,
}

impl Serve {
    pub fn start(extra: &[&str]) -> Serve {
        let log = std::env::temp_dir().join(format!(
            "socketio-p2p-bench-serve-{}-{}.log",
            std::process::id(),
            SERVES.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new(BIN)
            .args(["serve", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .expect("serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("serve announces its URL");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(url.starts_with("http://"), "unexpected line: {line}");
        Serve { child, url, log }
    }

    /// Lines of its log at WARN or ERROR.
    pub fn warn_lines(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .count()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory (VmHWM), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// User + system CPU seconds so far.
    pub fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which ends with ')'): state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (ticks(14) + ticks(15)) as f64 / clock_ticks()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `VmRSS:`/`VmHWM:`-style figure of `/proc/<pid>/status`, in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
