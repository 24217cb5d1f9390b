//! Property tests: hostile input to the envelope parsers of every profile, token extraction
//! and verification, and the config loader never panics, and what parses round-trips.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{Value, value::RawValue};
use switchboard::{
    auth::{Authenticator, find_token},
    config::{AuthConfig, Config},
    envelope::{Inbound, Profile},
};

const PROFILES: [Profile; 3] = [Profile::Native, Profile::Yudao, Profile::RuoyiPlus];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::hash_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_parses_or_errors_without_panic(text in ".{0,200}") {
        for p in PROFILES {
            let _ = p.parse(&text, "t");
        }
    }

    #[test]
    fn json_like_text_parses_or_errors_without_panic(text in r#"[\[\]{}":,a-z0-9 \\.-]{0,120}"#) {
        for p in PROFILES {
            let _ = p.parse(&text, "t");
        }
    }

    #[test]
    fn envelopes_round_trip_in_every_profile(msg_type in "[a-zA-Z0-9._-]{1,40}", content in json_value()) {
        let raw = RawValue::from_string(content.to_string()).unwrap();
        for p in [Profile::Native, Profile::Yudao] {
            let frame = p.encode(&msg_type, &raw);
            match p.parse(&frame, "t") {
                Ok(Inbound::Message { msg_type: t, content: c }) => {
                    prop_assert_eq!(&t, &msg_type);
                    let back: Value = serde_json::from_str(c.get()).unwrap();
                    prop_assert_eq!(&back, &content);
                }
                other => prop_assert!(false, "{:?} did not round-trip: {:?}", p, other),
            }
        }
    }

    #[test]
    fn plain_text_round_trips_in_ruoyi_plus(text in ".{0,80}") {
        prop_assume!(!text.trim_start().starts_with('{'));
        match Profile::RuoyiPlus.parse(&text, "t") {
            Ok(Inbound::Message { content, .. }) => {
                prop_assert_eq!(Profile::RuoyiPlus.encode("t", &content), text);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn token_extraction_and_verification_never_panic(
        query in prop::collection::hash_map("(token|Authorization|x)", ".{0,60}", 0..3),
        header in ".{0,80}",
        protocol in "[ -~]{0,80}",
    ) {
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = header.parse() {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        if let Ok(v) = protocol.parse() {
            headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
        }
        let query: HashMap<String, String> = query;
        let query = serde_urlencoded::to_string(&query).unwrap_or_default();
        let auth = Authenticator::new(&AuthConfig {
            jwt_secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..Default::default()
        })
        .unwrap();
        if let Ok(found) = find_token(Some(&query), &headers) {
            prop_assert!(!found.token.is_empty());
            prop_assert!(auth.verify(&found.token).is_err());
        }
    }

    #[test]
    fn config_text_and_env_never_panic(
        text in r#"[\[\]a-z_=." 0-9\n]{0,200}"#,
        key in "SWITCHBOARD_[A-Z_]{0,20}",
        value in ".{0,30}",
    ) {
        let _ = Config::parse(&text, [(key, value)]);
    }
}
