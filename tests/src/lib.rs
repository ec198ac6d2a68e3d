//! Test harness: start the real gateway process on loopback ports, wait until it is
//! ready, and start scripted origin servers for it to proxy to.

pub mod dns;
pub mod h2frame;
pub mod http;
pub mod recording;
pub mod redis;
pub mod tls;
pub mod wire;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use gateway::demo::origin::{Handler, Origin, Reply, Request, WireFault};

/// The gateway binary built for this test run.
pub fn gateway_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/gateway-under-test
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("gateway-under-test")
}

/// A component built from `plugins/` for this test run (by `tests/build.rs`), by crate name.
pub fn plugin_path(crate_name: &str) -> PathBuf {
    Path::new(env!("GATEWAY_PLUGIN_DIR")).join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// A component built by `scripts/build-polyglot-plugins.sh` into `target/polyglot/`
/// (`python_predicate`, `js_fallback`). Panics when it is missing: a test of a plugin
/// in another language must fail, not pass, when its component was not built.
pub fn polyglot_path(component: &str) -> PathBuf {
    let path = Path::new(env!("GATEWAY_POLYGLOT_DIR")).join(format!("{component}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build it with `make plugins` or `bash scripts/build-polyglot-plugins.sh` \
         (`make test` does) before `cargo test`",
        path.display()
    );
    path
}

/// The names a component imports at its outermost level: what the host must provide
/// (e.g. `wasi:http/types@0.2.10`).
pub fn component_imports(path: &Path) -> Vec<String> {
    use wasmparser::Payload;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    // Every module or component, nested or not, starts with a version and ends with an end.
    let mut depth = 0usize;
    let mut names = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.unwrap_or_else(|e| panic!("{}: not a component: {e}", path.display())) {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import =
                        import.unwrap_or_else(|e| panic!("{}: bad import: {e}", path.display()));
                    names.push(import.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    names
}

/// A `plugins:` entry like `plugin_entry`'s, for a component in `target/polyglot/`.
pub fn polyglot_entry(name: &str, component: &str, kind: &str, settings: &str) -> String {
    format!(
        "  {name}: {{ path: \"{}\", kind: {kind}, {settings} }}\n",
        polyglot_path(component).display()
    )
}

/// A `plugins:` entry: `name` loading `crate_name`'s component, plus `settings`
/// (YAML flow-mapping entries such as `config: { a: b }, limits: { timeout: 50ms }`).
pub fn plugin_entry(name: &str, crate_name: &str, kind: &str, settings: &str) -> String {
    let path = plugin_path(crate_name);
    let settings = if settings.is_empty() {
        String::new()
    } else {
        format!(", {settings}")
    };
    format!(
        "  {name}: {{ path: \"{}\", kind: {kind}{settings} }}\n",
        path.display()
    )
}

/// A port that was free a moment ago (the gateway binds it by itself).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An origin that echoes what it received as JSON: which origin, method, path, headers, body.
pub fn echo(name: &'static str) -> Handler {
    Arc::new(move |req: &Request| {
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        Reply::json(
            200,
            &serde_json::json!({
                "origin": name,
                "method": req.method,
                "target": req.target,
                "headers": headers,
                "body": String::from_utf8_lossy(&req.body),
                "connection": req.connection,
            }),
        )
    })
}

/// An origin whose status and delay a test changes while it runs (body: `scripted`).
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: Arc<AtomicU16>,
    pub delay_ms: Arc<AtomicU64>,
}

impl Scripted {
    /// The switches, and the handler to start an origin with.
    pub fn new(status: u16) -> (Self, Handler) {
        let script = Scripted {
            status: Arc::new(AtomicU16::new(status)),
            delay_ms: Arc::new(AtomicU64::new(0)),
        };
        let s = script.clone();
        let handler: Handler = Arc::new(move |_: &Request| {
            Reply::text(s.status.load(Ordering::SeqCst), "scripted")
                .delayed(Duration::from_millis(s.delay_ms.load(Ordering::SeqCst)))
        });
        (script, handler)
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }
}

/// A config body with one upstream `api` (with `settings`, indented four spaces) that
/// every request is routed to.
pub fn one_upstream(endpoints: &[SocketAddr], settings: &str) -> String {
    let list = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "upstreams:\n  api:\n    endpoints: [{list}]\n{settings}routes:\n  - {{ upstream: api }}\n"
    )
}

pub async fn start_origin(handler: Handler) -> Origin {
    Origin::start(handler).await.expect("origin starts")
}

/// A loopback address where nothing listens, and nothing of this suite will: every
/// server here binds 127.0.0.1, so a port free on 127.0.0.2 stays refused. (A port free
/// on 127.0.0.1 a moment ago may be the next origin's, or a closing one's that still
/// completes handshakes and never answers: a 30 s read timeout instead of a refusal.)
pub fn dead_address() -> SocketAddr {
    TcpListener::bind("127.0.0.2:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.2")
}

/// How to start a gateway beyond its config body.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options<'a> {
    /// Arguments before `run` (e.g. `--log-format json`).
    pub args: &'a [&'a str],
    /// Environment variables for the process.
    pub env: &'a [(&'a str, &'a str)],
    /// Extra keys for the generated `admin:` section, e.g. `token_env: ADMIN_TOKEN`.
    pub admin_keys: Option<&'a str>,
    /// Another gateway binary (the benchmarks pass their release build).
    pub binary: Option<&'a Path>,
    /// Extra keys for the generated listener, YAML indented four spaces, e.g.
    /// `"    http2: true\n"`.
    pub listener_keys: Option<&'a str>,
    /// Lay the config out like a Kubernetes ConfigMap volume:
    /// `gateway.yaml -> ..data/gateway.yaml`, `..data -> ..v1/`.
    pub configmap: bool,
}

/// A running gateway process; killed on drop.
pub struct Gateway {
    child: Option<Child>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    binary: PathBuf,
    /// The generated listeners/admin sections, prepended to every config body.
    head: String,
    configmap_versions: u32,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the gateway with `body` (upstreams, routes, ...) plus generated
    /// `listeners` and `admin` sections on free loopback ports.
    pub async fn start(body: &str) -> Gateway {
        Self::start_with_args(body, &[]).await
    }

    /// Like `start`, with extra command-line arguments (e.g. `--log-format json`).
    pub async fn start_with_args(body: &str, args: &[&str]) -> Gateway {
        Self::start_with(
            body,
            Options {
                args,
                ..Options::default()
            },
        )
        .await
    }

    /// Like `start`, with extra keys for the listener (`Options::listener_keys`).
    pub async fn start_with_listener(body: &str, listener_keys: &str) -> Gateway {
        Self::start_with(
            body,
            Options {
                listener_keys: Some(listener_keys),
                ..Options::default()
            },
        )
        .await
    }

    /// Like `start`, with options.
    pub async fn start_with(body: &str, options: Options<'_>) -> Gateway {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(body, &options).await {
                Ok(gateway) => return gateway,
                // Another test may have taken the port between our probe and the bind.
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => panic!("gateway did not start:\n{e}"),
            }
        }
        panic!("gateway did not start after 3 tries:\n{last_error}")
    }

    async fn try_start(body: &str, options: &Options<'_>) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // Two probes in a row may return the same free port; the config would be refused.
        let admin = loop {
            let port = free_port();
            if port != listen.port() {
                break SocketAddr::from(([127, 0, 0, 1], port));
            }
        };
        let admin_extra = options
            .admin_keys
            .map_or(String::new(), |keys| format!("  {keys}\n"));
        let listener_extra = options.listener_keys.unwrap_or("");
        let head = format!(
            "listeners:\n  - address: \"{listen}\"\n{listener_extra}admin:\n  address: \"{admin}\"\n{admin_extra}"
        );
        let yaml = format!("{head}{body}");
        let config_path = dir.path().join("gateway.yaml");
        if options.configmap {
            let version = dir.path().join("..v1");
            std::fs::create_dir(&version).map_err(|e| e.to_string())?;
            std::fs::write(version.join("gateway.yaml"), yaml).map_err(|e| e.to_string())?;
            std::os::unix::fs::symlink("..v1", dir.path().join("..data"))
                .map_err(|e| e.to_string())?;
            std::os::unix::fs::symlink("..data/gateway.yaml", &config_path)
                .map_err(|e| e.to_string())?;
        } else {
            std::fs::write(&config_path, yaml).map_err(|e| e.to_string())?;
        }
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let binary = options
            .binary
            .map_or_else(gateway_binary, Path::to_path_buf);
        let child = Command::new(&binary)
            .args(options.args)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .envs(options.env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut gateway = Gateway {
            child: Some(child),
            listen,
            admin,
            config_path,
            binary,
            head,
            configmap_versions: 1,
            stderr_path,
            _dir: dir,
        };
        gateway.wait_ready().await?;
        Ok(gateway)
    }

    /// Waits until both the admin listener answers /ready and the traffic port accepts.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("exited with {status}:\n{}", self.logs()));
            }
            let admin_ready = matches!(
                self.try_admin("GET", "/ready", &[], b"").await,
                Ok(r) if r.status == 200
            );
            if admin_ready && tokio::net::TcpStream::connect(self.listen).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 30s:\n{}", self.logs()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `body` with this gateway's listeners and admin sections: a complete config.
    pub fn config_with(&self, body: &str) -> String {
        format!("{}{body}", self.head)
    }

    /// Replaces the config the way Kubernetes updates a ConfigMap volume: a new
    /// directory, then one atomic rename of the `..data` symlink.
    pub fn configmap_swap(&mut self, body: &str) {
        let dir = self.config_path.parent().expect("config dir").to_path_buf();
        self.configmap_versions += 1;
        let version = format!("..v{}", self.configmap_versions);
        std::fs::create_dir(dir.join(&version)).expect("new version dir");
        std::fs::write(
            dir.join(&version).join("gateway.yaml"),
            self.config_with(body),
        )
        .expect("write");
        std::os::unix::fs::symlink(&version, dir.join("..data_tmp")).expect("symlink");
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    }

    /// A sample's value from a fresh scrape (e.g. `gateway_config_reloads_total{result="error"}`;
    /// labels in any order). Panics, naming the series and what the scrape has of the
    /// same family, when the gateway does not export it: a renamed metric or label must
    /// fail the test, not read as 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let scrape = self.scrape().await;
        sample(&scrape, series).unwrap_or_else(|| panic!("{}", missing_series(&scrape, series)))
    }

    /// The sample's value, or None when the gateway does not export the series (yet).
    pub async fn try_metric(&self, series: &str) -> Option<f64> {
        sample(&self.scrape().await, series)
    }

    /// Asserts that the scrape has no sample for `series` (a counter never created).
    pub async fn metric_absent(&self, series: &str) {
        let scrape = self.scrape().await;
        if let Some(value) = sample(&scrape, series) {
            panic!("{series} is exported (= {value}), expected it absent");
        }
    }

    /// Waits (up to 10 s) until `series` exists and equals `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        let mut last = None;
        let reached = poll_until(Duration::from_secs(10), async || {
            last = self.try_metric(series).await;
            last == Some(value)
        })
        .await;
        assert!(
            reached,
            "{series} did not reach {value} in 10 s (last: {last:?})"
        );
    }

    /// Waits (up to 10 s) until `series` exists and is at least `value` (a counter that
    /// may move on by more than one step at a time); returns it.
    pub async fn wait_metric_at_least(&self, series: &str, value: f64) -> f64 {
        let mut last = None;
        let reached = poll_until(Duration::from_secs(10), async || {
            last = self.try_metric(series).await;
            last.is_some_and(|v| v >= value)
        })
        .await;
        assert!(
            reached,
            "{series} did not reach {value} in 10 s (last: {last:?})"
        );
        last.unwrap_or_default()
    }

    /// An operator's `PUT /api/v1/breakers/{upstream}/state` with `{"state": mode}`.
    pub async fn set_mode(&self, upstream: &str, mode: &str) -> http::Response {
        let body = format!("{{\"state\":\"{mode}\"}}");
        self.admin(
            "PUT",
            &format!("/api/v1/breakers/{upstream}/state"),
            &[],
            body.as_bytes(),
        )
        .await
    }

    /// The breaker of `upstream` as the admin API shows it.
    pub async fn breaker(&self, upstream: &str) -> serde_json::Value {
        self.admin("GET", &format!("/api/v1/breakers/{upstream}"), &[], b"")
            .await
            .json()
    }

    /// Waits (at most `limit`) until `check` holds for the breaker of `upstream`;
    /// returns the view it held for. Polls every millisecond: for measuring how soon.
    pub async fn wait_breaker(
        &self,
        upstream: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let view = self.breaker(upstream).await;
            if check(&view) {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "{upstream}: never {what}: {view}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits (up to 10 s) until `upstream`'s breaker has no open period left, as its admin
    /// API reports it: the next call will be a probe. For tests of what happens after
    /// an open period, without a sleep guessing at its length.
    pub async fn wait_open_period_over(&self, upstream: &str) {
        let mut last = serde_json::Value::Null;
        let over = poll_until(Duration::from_secs(10), async || {
            last = self.breaker(upstream).await;
            last["state"] != "open" || last["open_remaining_ms"] == 0
        })
        .await;
        assert!(over, "{upstream}: open period not over in 10 s: {last}");
        // `open_remaining_ms` is rounded down: 0 may still be up to 1 ms.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    /// Starts a second gateway process on the same config with `--upgrade`: it takes the
    /// listening sockets once this one gets SIGQUIT. Its stderr goes to `upgrade.log`.
    pub fn spawn_upgrade(&self) -> Child {
        let log = self.config_path.with_file_name("upgrade.log");
        let stderr = std::fs::File::create(&log).expect("upgrade log");
        Command::new(&self.binary)
            .args(["run", "--upgrade", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start upgraded gateway")
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits (up to 10 s) until a log line contains every one of `fragments`; returns it.
    pub async fn wait_for_log(&self, fragments: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if let Some(line) = logs
                .lines()
                .find(|l| fragments.iter().all(|f| l.contains(f)))
            {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {fragments:?} in:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal by name (TERM, HUP, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One request to the admin listener, sent the way an operator's client does: with
    /// `Host` set to the admin address and, on a state change (POST, PUT, DELETE,
    /// PATCH), `Content-Type: application/json`, unless `headers` give their own.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> http::Response {
        self.try_admin(method, path, headers, body)
            .await
            .expect("admin request")
    }

    /// Like `admin`, for when the admin listener may be unreachable (during an upgrade).
    pub async fn try_admin(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<http::Response> {
        let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let host = self.admin.to_string();
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 2);
        if !given("host") {
            all.push(("host", &host));
        }
        if matches!(method, "POST" | "PUT" | "DELETE" | "PATCH") && !given("content-type") {
            all.push(("content-type", "application/json"));
        }
        all.extend_from_slice(headers);
        http::Conn::connect(self.admin)
            .await?
            .request(method, path, &all, body)
            .await
    }

    /// The current `/metrics` scrape.
    pub async fn scrape(&self) -> String {
        self.admin("GET", "/metrics", &[], b"").await.text()
    }

    pub async fn conn(&self) -> http::Conn {
        http::Conn::connect(self.listen)
            .await
            .expect("connect to gateway")
    }

    pub async fn get(&self, path: &str) -> http::Response {
        self.conn()
            .await
            .get(path)
            .await
            .expect("request through gateway")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Calls `check` every 10 ms until it returns true (then true) or `limit` passed (then false).
pub async fn poll_until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `check` holds, at most `limit`; panics naming `what` otherwise. For
/// events a test cannot be told about directly (an origin's counter, a file's state).
pub async fn wait_until(what: &str, limit: Duration, check: impl AsyncFnMut() -> bool) {
    assert!(
        poll_until(limit, check).await,
        "not within {limit:?}: {what}"
    );
}

/// A series written as Prometheus exposes it, labels sorted by name, so that a test
/// may write them in any order: `name{a="1",b="2"}`.
fn canonical_series(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.trim().to_string();
    };
    let labels = labels.trim_end().trim_end_matches('}');
    let mut pairs = Vec::new();
    let mut rest = labels;
    // Split on the commas between pairs, not those inside a quoted value.
    while !rest.is_empty() {
        let mut in_quotes = false;
        let mut escaped = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let pair = rest[..end].trim();
        if !pair.is_empty() {
            pairs.push(pair.to_string());
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    pairs.sort();
    format!("{}{{{}}}", name.trim(), pairs.join(","))
}

/// The value of `series` in a Prometheus text scrape, or None when it has no such sample.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    let wanted = canonical_series(series);
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            // The value is the last field; label values may hold spaces.
            let (head, value) = line.trim_end().rsplit_once(' ')?;
            (canonical_series(head) == wanted).then(|| value.parse().ok())?
        })
}

/// Why `series` is not in `scrape`: the samples of the same metric family, or the
/// family names that share its first words.
fn missing_series(scrape: &str, series: &str) -> String {
    let name = series.split('{').next().unwrap_or(series).trim();
    let family: Vec<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name))
        .collect();
    if !family.is_empty() {
        return format!(
            "no sample {series} in the scrape; {name} has:\n{}",
            family.join("\n")
        );
    }
    let stem: String = name.split('_').take(2).collect::<Vec<_>>().join("_");
    let mut near: Vec<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&stem))
        .collect();
    near.dedup();
    format!("no metric {name} in the scrape; families starting with {stem}: {near:?}")
}

/// Runs `gateway check` on `yaml` written to a file named `name`; returns (exit code, stdout, stderr).
pub fn check_config(name: &str, yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, yaml).expect("write config");
    check_config_file(&path)
}

pub fn check_config_file(path: &Path) -> (i32, String, String) {
    let out = Command::new(gateway_binary())
        .args(["check", "--config"])
        .arg(path)
        .output()
        .expect("gateway check runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A subscriber of the admin's Server-Sent Events (`GET /api/v1/events`), reading as a
/// client would: everything received so far is kept, to wait on and to search.
pub struct EventStream {
    stream: tokio::net::TcpStream,
    pub received: String,
}

impl EventStream {
    /// Subscribes and waits for the stream's opening `: connected`.
    pub async fn open(gw: &Gateway) -> EventStream {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(gw.admin)
            .await
            .expect("connect to the admin");
        stream
            .write_all(
                format!("GET /api/v1/events HTTP/1.1\r\nhost: {}\r\n\r\n", gw.admin).as_bytes(),
            )
            .await
            .expect("subscribe");
        let mut events = EventStream {
            stream,
            received: String::new(),
        };
        events.read_until(": connected").await;
        events
    }

    /// Reads (each read within 10 s) until `needle` has been received.
    pub async fn read_until(&mut self, needle: &str) {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        while !self.received.contains(needle) {
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("no `{needle}` within 10 s; got:\n{}", self.received))
                .expect("read");
            assert!(n > 0, "stream closed; got:\n{}", self.received);
            self.received
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    }
}
