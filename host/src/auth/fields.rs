//! Reading a principal and an expiry out of a back end's JSON (a Redis value, an
//! introspection answer) by JSON pointers.

use std::collections::BTreeMap;

use serde_json::Value;
use time::{PrimitiveDateTime, UtcOffset, format_description::OwnedFormatItem};

use super::{AuthError, Principal, Verified, jwt::scalar_string};
use crate::config::ExpiresFormat;

/// Where the fields are and how to read them.
#[derive(Debug)]
pub(super) struct Fields {
    /// Pointer to the user id.
    pub user_id: String,
    /// Pointer to the user type; empty: `default_user_type`.
    pub user_type: String,
    /// Pointer to the tenant id; empty, absent or null: no tenant.
    pub tenant_id: String,
    /// Pointer to the expiry; empty: none.
    pub expires: String,
    /// How the expiry is written.
    pub format: Expiry,
    /// User type names (`sys_user`) to numbers.
    pub names: BTreeMap<String, u32>,
    /// User type when the value has none.
    pub default_user_type: Option<u32>,
}

/// How an expiry is written, ready to read.
#[derive(Debug)]
pub(super) enum Expiry {
    /// Epoch seconds.
    Secs,
    /// Epoch milliseconds.
    Millis,
    /// A local date-time at a fixed offset.
    DateTime(OwnedFormatItem, UtcOffset),
}

impl Expiry {
    /// From config (checked there already; an error here names what was wrong).
    pub(super) fn new(format: &ExpiresFormat) -> anyhow::Result<Self> {
        Ok(match format {
            ExpiresFormat::EpochS => Self::Secs,
            ExpiresFormat::EpochMs => Self::Millis,
            ExpiresFormat::DateTime { format, offset } => {
                let items = time::format_description::parse_owned::<2>(format)?;
                let secs = crate::config::parse_utc_offset(offset)
                    .ok_or_else(|| anyhow::anyhow!("bad UTC offset {offset:?}"))?;
                Self::DateTime(items, UtcOffset::from_whole_seconds(secs)?)
            }
        })
    }

    /// Epoch seconds of `value`, if it has this form.
    fn read(&self, value: &Value) -> Option<u64> {
        let number = || match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match self {
            Self::Secs => number(),
            Self::Millis => number().map(|ms| ms / 1000),
            Self::DateTime(items, offset) => {
                let text = value.as_str()?;
                let local = PrimitiveDateTime::parse(text.trim(), items).ok()?;
                u64::try_from(local.assume_offset(*offset).unix_timestamp()).ok()
            }
        }
    }
}

impl Fields {
    /// The principal and expiry in `json`. An expiry in the past is refused as expired.
    pub(super) fn read(&self, json: &Value, now: u64) -> Result<Verified, AuthError> {
        let at = |pointer: &str| {
            (!pointer.is_empty())
                .then(|| json.pointer(pointer))
                .flatten()
                .filter(|v| !v.is_null())
        };
        let user_id = at(&self.user_id)
            .and_then(scalar_string)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Claim(format!("{:?} (user id) is missing", self.user_id)))?;
        let user_type = match at(&self.user_type) {
            None => self.default_user_type.ok_or_else(|| {
                AuthError::Claim(format!("{:?} (user type) is missing", self.user_type))
            })?,
            Some(v) => {
                let text = scalar_string(v).unwrap_or_default();
                text.parse::<u32>()
                    .ok()
                    .or_else(|| self.names.get(&text).copied())
                    .ok_or_else(|| {
                        AuthError::Claim(format!(
                            "{:?} (user type) must be a number or a configured name",
                            self.user_type
                        ))
                    })?
            }
        };
        let tenant_id = match at(&self.tenant_id) {
            None => None,
            Some(v) => Some(scalar_string(v).filter(|s| !s.is_empty()).ok_or_else(|| {
                AuthError::Claim(format!(
                    "{:?} (tenant id) must be a non-empty string or a number",
                    self.tenant_id
                ))
            })?),
        };
        let expires_at = match at(&self.expires) {
            None => None,
            Some(v) => Some(self.format.read(v).ok_or_else(|| {
                AuthError::Claim(format!("{:?} (expiry) has the wrong form", self.expires))
            })?),
        };
        if expires_at.is_some_and(|exp| exp <= now) {
            return Err(AuthError::Invalid("expired".into()));
        }
        Ok(Verified {
            principal: Principal {
                user_id: user_id.into(),
                user_type,
                tenant_id: tenant_id.map(Into::into),
            },
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(format: Expiry) -> Fields {
        Fields {
            user_id: "/userId".into(),
            user_type: "/userType".into(),
            tenant_id: "/tenantId".into(),
            expires: "/expiresTime".into(),
            format,
            names: BTreeMap::new(),
            default_user_type: None,
        }
    }

    #[test]
    fn reads_yudao_values_in_every_expiry_form() {
        let now = 1_700_000_000;
        let json = serde_json::json!({"userId": 1, "userType": 2, "tenantId": 1, "expiresTime": 1_700_000_100_000u64});
        let v = fields(Expiry::Millis).read(&json, now).unwrap();
        assert_eq!(v.expires_at, Some(1_700_000_100));
        assert_eq!((&*v.principal.user_id, v.principal.user_type), ("1", 2));
        assert_eq!(v.principal.tenant_id.as_deref(), Some("1"));
        let json =
            serde_json::json!({"userId": "7", "userType": 1, "expiresTime": "2023-11-14 22:15:00"});
        let format = Expiry::new(&ExpiresFormat::DateTime {
            format: "[year]-[month]-[day] [hour]:[minute]:[second]".into(),
            offset: "+08:00".into(),
        })
        .unwrap();
        // 22:15 at +08:00 is 14:15 UTC.
        let v = fields(format).read(&json, 1_699_900_000).unwrap();
        assert_eq!(v.expires_at, Some(1_699_971_300));
        assert_eq!(v.principal.tenant_id, None);
    }

    #[test]
    fn expired_and_malformed_values_are_refused() {
        let now = 1_700_000_000;
        let expired =
            serde_json::json!({"userId": 1, "userType": 2, "expiresTime": 1_600_000_000_000u64});
        let err = fields(Expiry::Millis).read(&expired, now).unwrap_err();
        assert_eq!(err.to_string(), "invalid token: expired");
        for bad in [
            serde_json::json!({"userType": 2}),
            serde_json::json!({"userId": 1, "userType": "nobody"}),
            serde_json::json!({"userId": 1, "userType": 2, "tenantId": [1]}),
            serde_json::json!({"userId": 1, "userType": 2, "expiresTime": "soon"}),
        ] {
            assert!(fields(Expiry::Millis).read(&bad, now).is_err(), "{bad}");
        }
    }
}
