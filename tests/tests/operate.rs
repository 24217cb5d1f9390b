//! Operating the host as a service: the install script and its systemd unit, `config check`
//! and `config defaults`, reloading the config live (SIGHUP and the admin API) with sessions
//! kept, and draining a node of a two-node cluster.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use switchboard_tests::{
    PATIENCE,
    client::Client,
    cluster::{Node, free_port, host_binary, require_redis},
    eventually,
    guests::repo_root,
    host::token,
};

const OLD_SECRET: &str = "old-secret-0123456789abcdef01234";
const NEW_SECRET: &str = "new-secret-0123456789abcdef01234";

/// A `switchboard serve --config FILE` process, configured by its file only.
struct Service {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    http: reqwest::Client,
}

impl Service {
    async fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        write_config(dir.path(), port, config);
        let child = Command::new(host_binary())
            .args(["serve", "--config"])
            .arg(dir.path().join("switchboard.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("host.log")).unwrap())
            .spawn()
            .expect("switchboard starts");
        Self {
            child,
            dir,
            port,
            http: reqwest::Client::new(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchboard.toml")
    }

    fn write(&self, extra: &str) {
        write_config(self.dir.path(), self.port, extra);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        eventually(PATIENCE * 6, "the service to be ready", async || {
            let r = self.http.get(self.url("/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    async fn push(&self, key: &str, user_id: &str) -> u16 {
        self.http
            .post(self.url("/api/v1/messages"))
            .bearer_auth(key)
            .json(&json!({"to": {"user": {"user_type": 2, "user_id": user_id}}, "type": "notice", "content": {"n": 1}}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn admin(&self, key: &str, action: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(&format!("/api/v1/admin/{action}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn connect(&self, secret: &str, user_id: &str) -> Result<Client, u16> {
        let t = token(secret, user_id, 2, None, 3600);
        Client::connect(&format!("ws://127.0.0.1:{}/ws?token={t}", self.port), &[])
            .await
            .map_err(|refused| refused.status)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `dir/switchboard.toml`: listening on `port`, plugins in `dir/plugins`, then `extra`.
fn write_config(dir: &Path, port: u16, extra: &str) {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n[plugins]\ndir = {:?}\n",
        plugins.display().to_string()
    );
    std::fs::write(dir.join("switchboard.toml"), text).unwrap();
}

fn keys(api_key: &str, secret: &str, previous: Option<&str>) -> String {
    let previous = previous
        .map(|p| format!("jwt_previous_secret = {p:?}\n"))
        .unwrap_or_default();
    format!("[api]\nkeys = [{api_key:?}]\n[auth]\njwt_secret = {secret:?}\n{previous}")
}

/// Runs `switchboard` with `args`: exit code, stdout, stderr.
fn switchboard(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(host_binary()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_reports_every_problem_with_its_line_and_an_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nmax_connections = 0\nlisen = \"127.0.0.1:1\"\n[api]\nkeys = \"one\"\n\
         [cluster]\nbroker = \"kafka\"\n",
    )
    .unwrap();
    let (code, _, stderr) = switchboard(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let file = bad.display().to_string();
    for expected in [
        format!("{file}:3: server.lisen: unknown field"),
        format!("{file}:5: api.keys: invalid type"),
        format!("{file}:7: cluster.broker: unknown variant"),
        format!("{file}:2: server.max_connections: 0 is out of range; set it between 1 and"),
    ] {
        assert!(
            stderr.contains(&expected),
            "{expected:?} missing from:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 4, "one line per problem:\n{stderr}");

    let (code, _, stderr) = switchboard(&["config", "check", "/nonexistent/switchboard.toml"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot be read"), "{stderr}");

    // The defaults file is complete and checks clean.
    let (code, defaults, stderr) = switchboard(&["config", "defaults"]);
    assert_eq!(code, 0, "{stderr}");
    for key in [
        "listen = \"127.0.0.1:48080\"",
        "max_connections = 19000",
        "call_timeout_ms = 1000",
        "broker = \"local\"",
    ] {
        assert!(defaults.contains(key), "{key} missing from the defaults");
    }
    let good = dir.path().join("defaults.toml");
    std::fs::write(&good, defaults).unwrap();
    let (code, stdout, stderr) = switchboard(&["config", "check", good.to_str().unwrap()]);
    assert_eq!(
        (code, stdout.trim()),
        (0, format!("{}: ok", good.display()).as_str()),
        "{stderr}"
    );
}

#[test]
fn the_install_script_installs_a_unit_that_systemd_accepts() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(repo_root().join("scripts/install.sh"))
        .args(["--root"])
        .arg(root.path())
        .arg("--binary")
        .arg(host_binary())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = |p: &str| root.path().join(p);
    for file in [
        "usr/local/bin/switchboard",
        "etc/systemd/system/switchboard.service",
        "etc/switchboard/switchboard.toml",
    ] {
        assert!(installed(file).is_file(), "{file} was not installed");
    }
    // The installed config was checked by the installed binary.
    assert!(String::from_utf8_lossy(&out.stdout).contains("switchboard.toml: ok"));

    // systemd checks the unit as it would load it; the binary is the installed one.
    let unit =
        std::fs::read_to_string(installed("etc/systemd/system/switchboard.service")).unwrap();
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LimitNOFILE=",
        "Restart=on-failure",
        "User=switchboard",
    ] {
        assert!(
            unit.contains(hardening),
            "{hardening} missing from the unit"
        );
    }
    let probe = root.path().join("switchboard.service");
    std::fs::write(
        &probe,
        unit.replace(
            "/usr/local/bin/switchboard",
            &installed("usr/local/bin/switchboard").display().to_string(),
        ),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&probe)
        .output()
        .expect("systemd-analyze is installed");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );

    // A reinstall keeps the operator's config.
    std::fs::write(
        installed("etc/switchboard/switchboard.toml"),
        "[api]\nkeys = [\"mine\"]\n",
    )
    .unwrap();
    let again = Command::new(repo_root().join("scripts/install.sh"))
        .arg("--root")
        .arg(root.path())
        .arg("--binary")
        .arg(host_binary())
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(
        std::fs::read_to_string(installed("etc/switchboard/switchboard.toml"))
            .unwrap()
            .contains("mine")
    );
}

#[tokio::test]
async fn a_reload_rotates_keys_with_an_overlap_and_keeps_sessions() {
    let service = Service::start(&keys("old-key", OLD_SECRET, None)).await;
    service.wait_ready().await;
    let mut session = service
        .connect(OLD_SECRET, "1")
        .await
        .expect("old token admitted");
    assert_eq!(service.push("old-key", "1").await, 202);
    session.expect("notice").await;

    // Rotation, step 1 (SIGHUP): the new key signs, the old one is still accepted.
    service.write(&keys("new-key", NEW_SECRET, Some(OLD_SECRET)));
    service.signal("HUP");
    eventually(PATIENCE, "the new API key to be accepted", async || {
        (service.push("new-key", "1").await == 202).then_some(())
    })
    .await;
    assert_eq!(
        service.push("old-key", "1").await,
        401,
        "the removed API key is refused"
    );
    session.expect("notice").await;
    let mut with_new = service
        .connect(NEW_SECRET, "2")
        .await
        .expect("new token admitted");
    let with_old = service.connect(OLD_SECRET, "3").await;
    assert!(
        with_old.is_ok(),
        "during the overlap an old token is admitted"
    );

    // Step 2 (admin API): the previous key is removed; old tokens are refused from now on,
    // and the session admitted with one stays connected.
    service.write(&keys("new-key", NEW_SECRET, None));
    let (status, report) = service.admin("new-key", "reload").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["applied"],
        json!(["auth.jwt_previous_secret"]),
        "{report}"
    );
    assert_eq!(service.connect(OLD_SECRET, "4").await.err(), Some(401));
    assert_eq!(service.push("new-key", "1").await, 202);
    session.expect("notice").await;
    assert_eq!(service.push("new-key", "2").await, 202);
    with_new.expect("notice").await;

    // What cannot change live is reported, and keeps its running value.
    std::fs::write(
        service.config_path(),
        std::fs::read_to_string(service.config_path())
            .unwrap()
            .replace("[cluster]", "")
            + "[cluster]\nname = \"elsewhere\"\n",
    )
    .unwrap();
    let (status, report) = service.admin("new-key", "reload").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["needs_restart"], json!(["cluster.name"]), "{report}");

    // A file that does not load changes nothing.
    std::fs::write(service.config_path(), "[server]\nlisten = 5\n").unwrap();
    let (status, error) = service.admin("new-key", "reload").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("config_invalid")),
        "{error}"
    );
    assert_eq!(
        service.push("new-key", "1").await,
        202,
        "the running config is untouched"
    );
    session.expect("notice").await;
    service.signal("HUP");
    eventually(
        PATIENCE,
        "the refused SIGHUP reload in the log",
        async || {
            service
                .log()
                .contains("config reload refused")
                .then_some(())
        },
    )
    .await;
    assert_eq!(service.push("new-key", "1").await, 202);
    session.expect("notice").await;
}

#[tokio::test]
async fn a_drained_node_sends_its_clients_to_the_other_node_spread_over_the_period() {
    if !require_redis() {
        return;
    }
    let redis = "redis://127.0.0.1:6379";
    let period = [("SWITCHBOARD_SERVER__DRAIN_PERIOD_SECS", "2")];
    let a = Node::start("drain-a", redis, &[], &period).await;
    let b = Node::start("drain-b", redis, &[], &period).await;
    let mut clients = Vec::new();
    for i in 0..10 {
        clients.push(a.connect(&format!("u{i}"), 2, None).await);
    }

    let began = Instant::now();
    a.signal("USR1");
    eventually(PATIENCE, "a's /readyz to say draining", async || {
        let r = reqwest::get(a.url("/readyz")).await.ok()?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.ok()?;
        (status == 503 && body["draining"] == true).then_some(())
    })
    .await;
    let refused = Client::connect(
        &format!(
            "ws://{}/ws?token={}",
            a.addr,
            token(switchboard_tests::host::SECRET, "late", 2, None, 60)
        ),
        &[],
    )
    .await;
    let refused = refused.expect_err("a draining node takes no new connection");
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (503, Some("draining"))
    );

    // Every client watched at once, each noting when its own close arrived (the node closes
    // them in its own order, not the order they connected in).
    let closes = clients.iter_mut().map(async |client| {
        let code = client.closed().await;
        (code, began.elapsed())
    });
    let mut closed_at = Vec::new();
    for (code, at) in futures_util::future::join_all(closes).await {
        assert_eq!(code, Some(1012), "closed with 'reconnect at once'");
        closed_at.push(at);
    }
    closed_at.sort();
    let spread = closed_at.last().unwrap().saturating_sub(closed_at[0]);
    assert!(
        spread >= Duration::from_millis(1000),
        "closes are spread over the 2 s period, not all at once: {closed_at:?}"
    );
    assert!(closed_at.last().unwrap() < &(Duration::from_secs(2) + PATIENCE));

    // Every client reconnects to the other node and is reached there, even through the
    // draining one (which still forwards to the cluster).
    for i in 0..10 {
        let mut c = b.connect(&format!("u{i}"), 2, None).await;
        a.wait_sees(2, &format!("u{i}"), None, 1).await;
        let (status, body) = a.push(json!({"to": {"user": {"user_type": 2, "user_id": format!("u{i}")}}, "type": "after", "content": {}})).await;
        assert_eq!(status, 202, "{body}");
        c.expect("after").await;
    }
    let page = a.metrics().await;
    assert_eq!(
        switchboard_tests::metric(&page, "switchboard_draining"),
        Some(1.0)
    );
}

#[tokio::test]
async fn json_log_lines_about_a_session_name_it_its_user_tenant_and_plugin() {
    let node = Node::start_local(&["targets"], &[("SWITCHBOARD_SERVER__LOG_FORMAT", "json")]).await;
    let mut client = node.connect("u7", 2, Some("t9")).await;
    let session_id = client.session_id().to_owned();
    client
        .send(
            "log",
            json!({"lines": 0, "text": "a line from the listener"}),
        )
        .await;
    client.expect("logged").await;
    let line: Value = eventually(PATIENCE, "the listener's log line", async || {
        let log = node.log();
        let line = log
            .lines()
            .find(|l| l.contains("a line from the listener"))?;
        serde_json::from_str(line).ok()
    })
    .await;
    let plugin = line["fields"]["plugin"].as_str().unwrap_or_default();
    assert!(plugin.starts_with("targets@"), "{line}");
    let span = &line["span"];
    assert_eq!(
        (
            &span["name"],
            &span["session"],
            &span["user"],
            &span["tenant"]
        ),
        (
            &json!("session"),
            &json!(session_id),
            &json!("u7"),
            &json!("t9")
        ),
        "{line}"
    );
    assert_eq!(span["user_type"], 2, "{line}");
}
