//! Every HTTP refusal has the one error shape `{"code", "message"}`: extractor rejections,
//! unknown paths, wrong methods and plain requests to a WebSocket endpoint included.

use serde_json::Value;
use switchboard_tests::host::{API_KEY, TestHost};

/// Status and body of a request; the body must be the error shape.
async fn refusal(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.expect("body");
    assert!(
        content_type.starts_with("application/json"),
        "{status}: content type {content_type:?}, body {text:?}"
    );
    let body: Value = serde_json::from_str(&text).expect("a JSON body");
    let code = body["code"].as_str().expect("a code").to_string();
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{status}: no message in {body}"
    );
    (status, code)
}

#[tokio::test]
async fn every_refusal_is_a_json_error_with_a_code_and_a_message() {
    let host = TestHost::start(&[]).await;
    let base = format!("http://{}", host.addr);
    let http = reqwest::Client::new();
    let user = host.token("1", 2, None);

    // A path segment that is not a number.
    let (status, code) = refusal(
        http.get(format!("{base}/api/v1/presence/users/admin/1"))
            .bearer_auth(API_KEY),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));

    // A query that does not parse (a key given twice).
    let (status, code) = refusal(
        http.get(format!(
            "{base}/api/v1/presence/users/2/1?tenant_id=a&tenant_id=b"
        ))
        .bearer_auth(API_KEY),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));

    // A dispatch body that is not UTF-8.
    let (status, code) = refusal(
        http.post(format!("{base}/api/v1/dispatch"))
            .bearer_auth(&user)
            .body(vec![0xff, 0xfe, 0x00]),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));

    // A path nothing serves, and a method a path does not take.
    let (status, code) = refusal(http.get(format!("{base}/nothing/here"))).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code) = refusal(
        http.delete(format!("{base}/api/v1/messages"))
            .bearer_auth(API_KEY),
    )
    .await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));

    // A plain GET to the WebSocket endpoint, with a valid token.
    let (status, code) = refusal(http.get(format!("{base}/ws?token={user}"))).await;
    assert!([400, 405, 426].contains(&status), "{status}");
    assert_eq!(code, "websocket_upgrade_required");

    host.shutdown().await;
}
