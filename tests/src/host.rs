//! A real host in this process: `server::run` on `127.0.0.1:0` with a plugins folder of its
//! own and a shutdown the test controls.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde_json::{Value, json};
use switchboard::config::Config;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{PATIENCE, client::Client, eventually, guests};

/// The JWT secret every test host trusts.
pub const SECRET: &str = "test-secret-0123456789abcdef0123";
/// The API key every test host accepts.
pub const API_KEY: &str = "test-api-key";

/// A running host.
#[derive(Debug)]
pub struct TestHost {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its plugins folder.
    pub plugins_dir: PathBuf,
    _dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    http: reqwest::Client,
}

/// A test host's config before `edit`: a secret, an API key, fast debounce, shared code cache.
pub fn base_config(plugins_dir: PathBuf) -> Config {
    let mut config = Config::parse("", []).expect("default config");
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.auth.jwt_secret = Some(SECRET.into());
    config.api.keys = vec![API_KEY.into()];
    config.plugins.dir = plugins_dir;
    config.plugins.watch_debounce_ms = 50;
    config.plugins.cache_dir = Some(guests::guest_target_dir().join("cwasm-cache"));
    config
}

impl TestHost {
    /// A host serving the named guests (see [`guests::all`]).
    pub async fn start(plugins: &[&str]) -> Self {
        Self::start_with(plugins, |_| {}).await
    }

    /// A host serving the named guests with a config changed by `edit`.
    pub async fn start_with(plugins: &[&str], edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let plugins_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins_dir).unwrap();
        for name in plugins {
            std::fs::copy(guests::path(name), plugins_dir.join(format!("{name}.wasm"))).unwrap();
        }
        let mut config = base_config(plugins_dir.clone());
        edit(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(switchboard::server::run(listener, config, async move {
            let _ = rx.await;
        }));
        let host = Self {
            addr,
            plugins_dir,
            _dir: dir,
            shutdown: Some(tx),
            task: Some(task),
            http: reqwest::Client::new(),
        };
        eventually(PATIENCE * 6, "host to answer /readyz", async || {
            let (status, _) = host.get_raw("/readyz", false).await?;
            (status == 200).then_some(())
        })
        .await;
        host
    }

    /// A token for a user.
    pub fn token(&self, user_id: &str, user_type: u32, tenant: Option<&str>) -> String {
        token(SECRET, user_id, user_type, tenant, 3600)
    }

    /// `ws://addr/path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Connects a user to `/ws` with a query token.
    pub async fn connect(&self, user_id: &str, user_type: u32, tenant: Option<&str>) -> Client {
        self.connect_to("/ws", user_id, user_type, tenant).await
    }

    /// Connects a user to `path` with a query token.
    pub async fn connect_to(
        &self,
        path: &str,
        user_id: &str,
        user_type: u32,
        tenant: Option<&str>,
    ) -> Client {
        let url = format!(
            "{}?token={}",
            self.ws_url(path),
            self.token(user_id, user_type, tenant)
        );
        if path == "/ws" {
            Client::connect(&url, &[])
                .await
                .expect("websocket connects")
        } else {
            Client::connect_raw(&url, &[])
                .await
                .expect("websocket connects")
        }
    }

    /// `POST /api/v1/messages` with the API key.
    pub async fn push(&self, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("http://{}/api/v1/messages", self.addr))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .expect("push request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` with the API key; status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_raw(path, true).await.expect("GET answered")
    }

    async fn get_raw(&self, path: &str, with_key: bool) -> Option<(u16, Value)> {
        let mut req = self.http.get(format!("http://{}{}", self.addr, path));
        if with_key {
            req = req.bearer_auth(API_KEY);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// The Prometheus page.
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.addr);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sessions open on the host, from `/healthz`.
    pub async fn session_count(&self) -> u64 {
        self.get("/healthz").await.1["sessions"]
            .as_u64()
            .expect("sessions in /healthz")
    }

    /// Writes `bytes` as plugin `name` atomically (write, then rename into place).
    pub fn install_plugin(&self, name: &str, bytes: &[u8]) {
        let tmp = self.plugins_dir.join(format!(".{name}.wasm.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.plugins_dir.join(format!("{name}.wasm"))).unwrap();
    }

    /// Waits up to `within` until plugin `name` is loaded and serving.
    pub async fn wait_loaded(&self, name: &str, within: Duration) {
        eventually(within, &format!("{name} to load"), async || {
            let list = self.plugins().await;
            list["plugins"]
                .as_array()?
                .iter()
                .any(|p| p["name"] == name)
                .then_some(())
        })
        .await;
    }

    /// The plugin status list from `GET /api/v1/plugins`.
    pub async fn plugins(&self) -> Value {
        let (status, body) = self.get("/api/v1/plugins").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Starts shutdown and waits for `run` to return; returns how long that took.
    pub async fn shutdown(mut self) -> Duration {
        let started = std::time::Instant::now();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(PATIENCE * 3, task)
            .await
            .expect("host stops within its bound")
            .expect("host task")
            .expect("host run");
        started.elapsed()
    }

    /// A copy of the default payload for pushes in tests.
    pub fn message(to: Value, msg_type: &str, content: Value) -> Value {
        json!({ "to": to, "type": msg_type, "content": content })
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An HS256 token with `exp` `ttl_secs` from now (negative: already expired).
pub fn token(
    secret: &str,
    user_id: &str,
    user_type: u32,
    tenant: Option<&str>,
    ttl_secs: i64,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = json!({ "sub": user_id, "user_type": user_type, "exp": now + ttl_secs });
    if let Some(t) = tenant {
        claims["tenant_id"] = json!(t);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
