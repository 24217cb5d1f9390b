//! Auth providers with the real parts: a real Redis holding keys exactly as yudao and
//! Sa-Token write them, a real HTTP server answering like yudao's `check-token`, Sa-Token
//! jwt-simple tokens without `exp`; sessions that end with their credentials (4003, 4004) and
//! stay refused; back ends that are down (503, other endpoints keep serving); both front
//! ends' providers on one host; an identity provider's JWKS picked by `kid`.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::HeaderMap,
    routing::{get, post},
};
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::{Value, json};
use switchboard::{
    config::{AuthConfig, EndpointConfig, Preset, TransportKind},
    envelope::Profile,
};
use switchboard_tests::{
    client::Client,
    cluster::{RedisServer, free_port, require_redis},
    host::TestHost,
    metric,
    sse::SseClient,
};

/// RuoYi-Vue-Plus's stock `sa-token.jwt-secret-key`.
const SA_SECRET: &str = "abcdefghijklmnopqrstuvwxyz";
/// RuoYi-Vue-Plus's stock PC client id.
const CLIENT_ID: &str = "e5cd7e4891bf95d1d19206ce24a7b32e";

/// A stand-in for yudao's `POST /admin-api/system/oauth2/check-token`: HTTP Basic with the
/// stock `default` client, 200 with `CommonResult` whatever the outcome.
#[derive(Clone, Default)]
struct CheckToken {
    /// Tokens it knows (refresh tokens included, as yudao's `getAccessToken` does).
    valid: Arc<Mutex<HashSet<String>>>,
    /// Calls answered.
    calls: Arc<AtomicUsize>,
    /// Answer 500 to everything.
    broken: Arc<std::sync::atomic::AtomicBool>,
}

async fn check_token(
    State(s): State<CheckToken>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> (axum::http::StatusCode, Json<Value>) {
    s.calls.fetch_add(1, Ordering::SeqCst);
    if s.broken.load(Ordering::SeqCst) {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({})),
        );
    }
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("default:admin123")
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return (
            axum::http::StatusCode::OK,
            Json(json!({"code": 401, "msg": "客户端不存在", "data": null})),
        );
    }
    let token = q.get("token").cloned().unwrap_or_default();
    if !s.valid.lock().contains(&token) {
        return (
            axum::http::StatusCode::OK,
            Json(json!({"code": 401, "msg": "访问令牌不存在", "data": null})),
        );
    }
    let exp = now() + 1800;
    (
        axum::http::StatusCode::OK,
        Json(json!({"code": 0, "msg": "", "data": {
            "userId": 1, "userType": 2, "tenantId": 1, "clientId": "default",
            "scopes": ["user.read", "user.write"], "accessToken": token, "exp": exp
        }})),
    )
}

async fn start_check_token(state: CheckToken) -> SocketAddr {
    let app = Router::new()
        .route("/admin-api/system/oauth2/check-token", post(check_token))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A 32-hex token like yudao's `IdUtil.fastSimpleUUID()`.
fn uuid_token() -> String {
    (0..4)
        .map(|_| format!("{:08x}", rand_u32()))
        .collect::<String>()
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

/// Writes an access token exactly as yudao's `OAuth2AccessTokenRedisDAO.set` does: the JSON of
/// `OAuth2AccessTokenDO` (expiry in epoch milliseconds), with the token's remaining life as TTL.
fn yudao_login(redis: &RedisServer, access: &str, refresh: &str, ttl_secs: u64) {
    let value = json!({
        "id": 1024, "accessToken": access, "refreshToken": refresh, "userId": 1, "userType": 2,
        "userInfo": {"nickname": "芋道源码", "deptId": "103"}, "clientId": "default",
        "scopes": null, "expiresTime": (now() + ttl_secs) * 1000, "tenantId": 1,
        "createTime": now() * 1000, "updateTime": now() * 1000, "creator": null,
        "updater": null, "deleted": false
    });
    let key = format!("oauth2_access_token:{access}");
    redis.cli(&["SET", &key, &value.to_string(), "EX", &ttl_secs.to_string()]);
}

/// A Sa-Token jwt-simple token (no `exp`) for `sys_user:<id>`, and its liveness key written as
/// Sa-Token writes it.
fn sa_token_login(redis: &RedisServer, user_id: u64, client_id: &str) -> String {
    let claims = json!({
        "loginType": "login", "loginId": format!("sys_user:{user_id}"), "rnStr": uuid_token(),
        "clientid": client_id, "tenantId": "000000", "userId": user_id, "userName": "admin",
        "deptId": 103, "deptName": "研发部门", "deptCategory": ""
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SA_SECRET.as_bytes()),
    )
    .unwrap();
    let key = format!("Authorization:login:token:{token}");
    redis.cli(&["SET", &key, &format!("sys_user:{user_id}"), "EX", "3600"]);
    token
}

fn endpoint(path: &str, transport: TransportKind, profile: Profile, auth: &str) -> EndpointConfig {
    EndpointConfig {
        path: path.into(),
        transport,
        profile,
        text_type: "ruoyi-text".into(),
        single_session: false,
        heartbeat_secs: None,
        auth: Some(auth.into()),
        reply_via: None,
    }
}

/// A host with both front ends' providers: yudao (Redis, then check-token) and ruoyi-plus
/// (Sa-Token JWT + liveness key), each on its own endpoints, plus the native `/ws` with
/// `[auth]`. Re-checks every second.
async fn both(redis_url: &str, check_token: SocketAddr) -> TestHost {
    let redis_url = redis_url.to_owned();
    TestHost::start_with(&["ruoyi-echo"], move |c| {
        c.auth.recheck_interval_secs = 1;
        c.auth.providers.insert(
            "yudao".into(),
            AuthConfig {
                preset: Some(Preset::Yudao),
                redis_url: Some(redis_url.clone()),
                http_url: Some(format!(
                    "http://{check_token}/admin-api/system/oauth2/check-token"
                )),
                http_basic_user: Some("default".into()),
                http_basic_password: Some("admin123".into()),
                recheck_interval_secs: 1,
                ..Default::default()
            },
        );
        c.auth.providers.insert(
            "ruoyi".into(),
            AuthConfig {
                preset: Some(Preset::RuoyiPlus),
                jwt_secret: Some(SA_SECRET.into()),
                redis_url: Some(redis_url),
                recheck_interval_secs: 1,
                ..Default::default()
            },
        );
        c.endpoints = vec![
            endpoint("/ws", TransportKind::Websocket, Profile::Native, "default"),
            endpoint(
                "/infra/ws",
                TransportKind::Websocket,
                Profile::Yudao,
                "yudao",
            ),
            endpoint(
                "/resource/websocket",
                TransportKind::Websocket,
                Profile::RuoyiPlus,
                "ruoyi",
            ),
            endpoint(
                "/resource/sse",
                TransportKind::Sse,
                Profile::RuoyiPlus,
                "ruoyi",
            ),
        ];
    })
    .await
}

fn ruoyi_query(token: &str, client_id: &str) -> String {
    format!("Authorization=Bearer%20{token}&clientid={client_id}")
}

async fn refused(url: &str) -> (u16, Value) {
    let r = Client::connect_raw(url, &[]).await.expect_err("refused");
    (r.status, r.body)
}

#[tokio::test]
async fn yudao_access_and_refresh_tokens_logout_and_stay_refused() {
    if !require_redis() {
        return;
    }
    let redis = RedisServer::start().await;
    let backend = CheckToken::default();
    let host = both(&redis.url(), start_check_token(backend.clone()).await).await;
    let (access, refresh) = (uuid_token(), uuid_token());
    yudao_login(&redis, &access, &refresh, 1800);
    backend.valid.lock().insert(refresh.clone());
    let url = |token: &str| format!("{}?token={token}", host.ws_url("/infra/ws"));

    // The access token is found in Redis: no call to check-token.
    let mut by_access = Client::connect_raw(&url(&access), &[]).await.unwrap();
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
    // The refresh token (what yudao's clients put in the URL) is answered by check-token.
    let mut by_refresh = Client::connect_raw(&url(&refresh), &[]).await.unwrap();
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
    let (status, body) = host
        .push(json!({"to": {"user": {"user_type": 2, "user_id": "1"}}, "tenant_id": "1", "type": "notice", "content": {"a": 1}}))
        .await;
    assert_eq!((status, body["local_deliveries"].clone()), (202, json!(2)));
    for c in [&mut by_access, &mut by_refresh] {
        let frame = c.next_json().await;
        assert_eq!(frame, json!({"type": "notice", "content": "{\"a\":1}"}));
    }

    // An unknown token: 401, and the refusal is cached (the back end is asked once).
    let unknown = uuid_token();
    assert_eq!(refused(&url(&unknown)).await.0, 401);
    assert_eq!(refused(&url(&unknown)).await.0, 401);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2);

    // Logout deletes the Redis key: the session closes with 4004 within the re-check
    // interval (the key is gone and check-token does not know the access token either).
    redis.cli(&["DEL", &format!("oauth2_access_token:{access}")]);
    assert_eq!(by_access.closed().await, Some(4004));
    assert_eq!(refused(&url(&access)).await.0, 401);
    // The refresh token is revoked at the back end: closed, and a reconnect stays refused.
    backend.valid.lock().remove(&refresh);
    assert_eq!(by_refresh.closed().await, Some(4004));
    let (status, body) = refused(&url(&refresh)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let page = host.metrics().await;
    assert!(
        metric(
            &page,
            "switchboard_auth_sessions_closed_total{reason=\"revoked\"}"
        )
        .unwrap()
            >= 2.0
    );
}

#[tokio::test]
async fn ruoyi_plus_sa_token_without_exp_clientid_liveness_and_channels() {
    if !require_redis() {
        return;
    }
    let redis = RedisServer::start().await;
    let host = both(&redis.url(), start_check_token(CheckToken::default()).await).await;
    let (phone, laptop) = (
        sa_token_login(&redis, 1, CLIENT_ID),
        sa_token_login(&redis, 1, CLIENT_ID),
    );
    let ws = |token: &str, cid: &str| {
        format!(
            "{}?{}",
            host.ws_url("/resource/websocket"),
            ruoyi_query(token, cid)
        )
    };
    let sse = |token: &str| {
        format!(
            "http://{}/resource/sse?{}",
            host.addr,
            ruoyi_query(token, CLIENT_ID)
        )
    };

    // A token whose clientid differs from the request's is refused, as RuoYi's interceptor does.
    let (status, body) = refused(&ws(&phone, "another-client")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_claims"))
    );
    assert_eq!(
        refused(&format!(
            "{}?Authorization=Bearer%20{phone}",
            host.ws_url("/resource/websocket")
        ))
        .await
        .0,
        401
    );
    // A well-signed token whose liveness key does not exist (never logged in, or logged out).
    let stale = sa_token_login(&redis, 9, CLIENT_ID);
    redis.cli(&["DEL", &format!("Authorization:login:token:{stale}")]);
    assert_eq!(refused(&ws(&stale, CLIENT_ID)).await.0, 401);

    // The same page with WebSocket and SSE on: each message arrives once per channel.
    let mut socket = Client::connect_raw(&ws(&phone, CLIENT_ID), &[])
        .await
        .unwrap();
    let mut stream = SseClient::connect(&sse(&phone)).await.unwrap();
    let mut other_device = SseClient::connect(&sse(&laptop)).await.unwrap();
    for s in [&mut stream, &mut other_device] {
        assert_eq!(s.next_block().await.unwrap().comments, vec!["connected"]);
    }
    socket.send_text("hello").await;
    assert_eq!(socket.next_text().await, "hello");
    let push = |via: Value, text: &str| json!({"to": {"user": {"user_type": 1, "user_id": "1"}}, "tenant_id": "000000", "type": "t", "content": text, "via": via});
    let (status, _) = host
        .push(push(json!({"transports": ["sse"]}), "to sse"))
        .await;
    assert_eq!(status, 202);
    // The SSE streams get the push and not the WebSocket echo.
    assert_eq!(stream.next_message().await, "to sse");
    assert_eq!(other_device.next_message().await, "to sse");
    host.push(push(json!({"endpoints": ["/resource/websocket"]}), "to ws"))
        .await;
    assert_eq!(socket.next_text().await, "to ws");

    // `/resource/sse/close` with the phone's token ends the phone's stream only.
    let closed: Value = reqwest::get(sse(&phone).replace("/resource/sse?", "/resource/sse/close?"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(closed["closed"], json!(1));
    while stream.next_block().await.is_some() {}
    host.push(push(json!({"transports": ["sse"]}), "still here"))
        .await;
    assert_eq!(other_device.next_message().await, "still here");

    // Logout on the phone (Sa-Token deletes its key): its WebSocket closes with 4004 within
    // the re-check interval, its reconnects are refused, the laptop keeps its stream.
    redis.cli(&["DEL", &format!("Authorization:login:token:{phone}")]);
    assert_eq!(socket.closed().await, Some(4004));
    assert_eq!(refused(&ws(&phone, CLIENT_ID)).await.0, 401);
    assert_eq!(
        SseClient::connect(&sse(&phone)).await.err().map(|e| e.0),
        Some(401)
    );
    host.push(push(json!({"transports": ["sse"]}), "laptop"))
        .await;
    assert_eq!(other_device.next_message().await, "laptop");
    // Kick-out of the laptop ends its stream too.
    redis.cli(&["DEL", &format!("Authorization:login:token:{laptop}")]);
    while other_device.next_block().await.is_some() {}
}

#[tokio::test]
async fn back_ends_down_answer_503_and_other_endpoints_keep_serving() {
    let backend = CheckToken::default();
    let addr = start_check_token(backend.clone()).await;
    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let dead_http = format!("http://127.0.0.1:{}/check", free_port());
    let host = TestHost::start_with(&[], move |c| {
        let provider = |http_url: String, redis: Option<String>| AuthConfig {
            preset: Some(Preset::Yudao),
            redis_url: redis,
            http_url: Some(http_url),
            http_basic_user: Some("default".into()),
            http_basic_password: Some("admin123".into()),
            http_timeout_ms: 500,
            ..Default::default()
        };
        c.auth
            .providers
            .insert("down".into(), provider(dead_http, Some(dead_redis)));
        c.auth.providers.insert(
            "failing".into(),
            provider(
                format!("http://{addr}/admin-api/system/oauth2/check-token"),
                None,
            ),
        );
        c.endpoints = vec![
            endpoint("/ws", TransportKind::Websocket, Profile::Native, "default"),
            endpoint("/down", TransportKind::Websocket, Profile::Yudao, "down"),
            endpoint(
                "/failing",
                TransportKind::Websocket,
                Profile::Yudao,
                "failing",
            ),
        ];
    })
    .await;
    backend.broken.store(true, Ordering::SeqCst);
    for path in ["/down", "/failing"] {
        let (status, body) =
            refused(&format!("{}?token={}", host.ws_url(path), uuid_token())).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("auth_unavailable")),
            "{path}"
        );
    }
    // Not cached: the back end is asked again, and a recovered one is believed.
    let token = uuid_token();
    backend.valid.lock().insert(token.clone());
    let url = format!("{}?token={token}", host.ws_url("/failing"));
    assert_eq!(refused(&url).await.0, 503);
    backend.broken.store(false, Ordering::SeqCst);
    Client::connect_raw(&url, &[]).await.unwrap();
    // The native endpoint with `[auth]` never noticed.
    host.connect("7", 2, None).await;
    let page = host.metrics().await;
    assert!(metric(&page, "switchboard_auth_total{result=\"unavailable\"}").unwrap() >= 3.0);
}

#[tokio::test]
async fn an_expired_jwt_session_closes_with_4003() {
    let host = TestHost::start_with(&[], |c| {
        c.auth.recheck_interval_secs = 1;
        c.auth.leeway_secs = 0;
    })
    .await;
    let token = switchboard_tests::host::token(switchboard_tests::host::SECRET, "3", 2, None, 2);
    let mut c = Client::connect(&format!("{}?token={token}", host.ws_url("/ws")), &[])
        .await
        .unwrap();
    assert_eq!(c.closed().await, Some(4003));
    assert_eq!(
        refused(&format!("{}?token={token}", host.ws_url("/ws")))
            .await
            .0,
        401
    );
    let page = host.metrics().await;
    assert!(
        metric(
            &page,
            "switchboard_auth_sessions_closed_total{reason=\"expired\"}"
        )
        .unwrap()
            >= 1.0
    );
}

/// The test-only EC keys and the JWKS publishing both (host/tests/fixtures/jwks).
fn fixture(name: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../host/tests/fixtures/jwks/");
    std::fs::read_to_string(format!("{dir}{name}")).unwrap()
}

fn sso_token(pem: &str, kid: &str, user_id: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    let claims = json!({"sub": user_id, "user_type": 2, "exp": now() + 600});
    let key = jsonwebtoken::EncodingKey::from_ec_pem(fixture(pem).as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[tokio::test]
async fn tokens_of_an_identity_provider_verify_with_its_jwks_by_kid() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let jwks = fixture("k1-k2.jwks.json");
    let counted = fetches.clone();
    let app = Router::new().route(
        "/realms/main/protocol/openid-connect/certs",
        get(move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            jwks
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dead = format!("http://127.0.0.1:{}/certs", free_port());
    let host = TestHost::start_with(&[], move |c| {
        let sso = |url: String| AuthConfig {
            jwks_url: Some(url),
            algorithms: vec!["ES256".into()],
            http_timeout_ms: 500,
            ..Default::default()
        };
        c.auth.providers.insert(
            "sso".into(),
            sso(format!(
                "http://{idp}/realms/main/protocol/openid-connect/certs"
            )),
        );
        c.auth.providers.insert("sso-down".into(), sso(dead));
        c.endpoints = vec![
            endpoint("/ws", TransportKind::Websocket, Profile::Native, "default"),
            endpoint("/sso", TransportKind::Websocket, Profile::Native, "sso"),
            endpoint(
                "/sso-down",
                TransportKind::Websocket,
                Profile::Native,
                "sso-down",
            ),
        ];
    })
    .await;
    let url = |path: &str, token: &str| format!("{}?token={token}", host.ws_url(path));
    for (pem, kid, user) in [("k1.pem", "k1", "11"), ("k2.pem", "k2", "12")] {
        let mut c = Client::connect(&url("/sso", &sso_token(pem, kid, user)), &[])
            .await
            .unwrap();
        let (status, _) = host
            .push(json!({"to": {"user": {"user_type": 2, "user_id": user}},
                         "type": "hello", "content": {"kid": kid}}))
            .await;
        assert_eq!(status, 202);
        assert_eq!(c.expect("hello").await["kid"], json!(kid));
    }
    // Signed with k1 but naming k2; naming a key the set lacks.
    for token in [
        sso_token("k1.pem", "k2", "13"),
        sso_token("k1.pem", "k9", "13"),
    ] {
        let (status, body) = refused(&url("/sso", &token)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_token"))
        );
    }
    // The unknown kid came within `jwks_min_refetch_secs` of the first fetch: no second one.
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // An identity provider that cannot be reached: 503, and the other endpoints serve on.
    let (status, body) = refused(&url("/sso-down", &sso_token("k1.pem", "k1", "14"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("auth_unavailable"))
    );
    host.connect("15", 2, None).await;
}
