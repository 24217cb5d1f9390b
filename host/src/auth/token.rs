//! Where a request carries its token: query `token`, query `Authorization=Bearer …`
//! (RuoYi-Vue-Plus), the `Authorization: Bearer` header, or a `Sec-WebSocket-Protocol` entry.

use http::HeaderMap;

use super::AuthError;

/// Where the token of a request was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// The token itself.
    pub token: String,
    /// When the token came in `Sec-WebSocket-Protocol`, the protocol entry to echo back
    /// (browsers fail the handshake unless the server selects one of the offered protocols).
    pub protocol: Option<String>,
}

/// Finds the token of a request: query `token`, query `Authorization=Bearer …` (RuoYi-Vue-Plus),
/// the `Authorization: Bearer` header, or an entry of `Sec-WebSocket-Protocol`. `query` is the
/// raw query string. Every place and every repetition is read: two different tokens in one
/// request are refused as ambiguous rather than letting one silently win.
pub fn find_token(query: Option<&str>, headers: &HeaderMap) -> Result<FoundToken, AuthError> {
    // A token is one word; a value with spaces after the optional scheme (`Basic …`) is not one.
    let plain = |token: &str| {
        let token = strip_bearer(token).trim();
        (!token.is_empty() && !token.contains(char::is_whitespace)).then(|| FoundToken {
            token: token.to_owned(),
            protocol: None,
        })
    };
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or_default()).unwrap_or_default();
    let mut found: Vec<FoundToken> = pairs
        .iter()
        .filter(|(k, _)| k == "token" || k == "Authorization")
        .filter_map(|(_, v)| plain(v))
        .collect();
    found.extend(
        headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(plain),
    );
    // A JWT is three base64url parts; other entries (e.g. "bearer") are markers.
    found.extend(
        headers
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty() && p.split('.').count() == 3)
            .map(|p| FoundToken {
                token: p.to_owned(),
                protocol: Some(p.to_owned()),
            }),
    );
    let Some(first) = found.first() else {
        return Err(AuthError::Missing);
    };
    if found.iter().any(|f| f.token != first.token) {
        return Err(AuthError::Ambiguous);
    }
    // The same token in several places: echo the protocol entry if one was offered, as
    // browsers require the server to select one.
    let chosen = found.iter().position(|f| f.protocol.is_some()).unwrap_or(0);
    Ok(found.swap_remove(chosen))
}

/// The value of `Authorization: Bearer <value>` (scheme case-insensitive, RFC 7235), if the
/// header has that form.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let rest = strip_bearer(value);
    (rest.len() < value.len())
        .then(|| rest.trim())
        .filter(|r| !r.is_empty())
}

fn strip_bearer(value: &str) -> &str {
    let value = value.trim();
    match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => &value[7..],
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_needs_the_scheme() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", v.parse().unwrap());
            bearer(&h).map(str::to_owned)
        };
        assert_eq!(with("Bearer k1").as_deref(), Some("k1"));
        assert_eq!(with("bearer k1").as_deref(), Some("k1"));
        assert_eq!(with("k1"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn finds_tokens_in_every_place() {
        let h = HeaderMap::new();
        assert!(matches!(find_token(None, &h), Err(AuthError::Missing)));
        let found = |q: &str, h: &HeaderMap| find_token(Some(q), h).map(|f| f.token);
        assert_eq!(found("Authorization=Bearer%20abc", &h).unwrap(), "abc");
        assert_eq!(found("token=def&x=1", &h).unwrap(), "def");
        let mut h = HeaderMap::new();
        h.insert("authorization", "bearer xyz".parse().unwrap());
        assert_eq!(found("", &h).unwrap(), "xyz");
        let mut h = HeaderMap::new();
        h.insert("sec-websocket-protocol", "bearer, a.b.c".parse().unwrap());
        let f = find_token(None, &h).unwrap();
        assert_eq!(
            (f.token.as_str(), f.protocol.as_deref()),
            ("a.b.c", Some("a.b.c"))
        );
        // The same token in the query too: still chosen, and its protocol echoed.
        let f = find_token(Some("token=a.b.c"), &h).unwrap();
        assert_eq!(f.protocol.as_deref(), Some("a.b.c"));
    }

    #[test]
    fn different_tokens_in_one_request_are_ambiguous() {
        let none = HeaderMap::new();
        let ambiguous =
            |q: &str, h: &HeaderMap| matches!(find_token(Some(q), h), Err(AuthError::Ambiguous));
        assert!(ambiguous("token=a&token=b", &none));
        assert!(ambiguous("token=a&Authorization=Bearer%20b", &none));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer b".parse().unwrap());
        assert!(ambiguous("token=a", &h));
        let mut h = HeaderMap::new();
        h.append("authorization", "Bearer a".parse().unwrap());
        h.append("authorization", "Bearer b".parse().unwrap());
        assert!(ambiguous("", &h));
        let mut h = HeaderMap::new();
        h.insert("sec-websocket-protocol", "a.b.c, d.e.f".parse().unwrap());
        assert!(ambiguous("", &h));
        // Repeating the same token is not ambiguous.
        assert!(find_token(Some("token=a&token=a"), &none).is_ok());
        assert_eq!(AuthError::Ambiguous.code(), "ambiguous_token");
    }
}
