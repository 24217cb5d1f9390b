//! Exercises key-value state on request, for the end-to-end tests. Every request is `kv`
//! with `{"op": ..., ...}`; the answer is `kv-result` `{"ok": value}` or, when the host
//! refuses an operation, `{"error": message}` (a value, never a fault).
//!
//! - `none`: no state operation → `null` (the baseline of a cost measurement)
//! - `set` `{"key", "value": text, "ttl_ms"?: n, "bucket"?: name}` → `null`
//! - `get` `{"key", "bucket"?}` → the text or `null`
//! - `delete` `{"key"}` → `null`
//! - `incr` `{"key", "delta"}` → the sum
//! - `list` `{"prefix", "bucket"?}` → every key with the prefix
//! - `cas` `{"key", "to"}`: a compare-and-swap that another write overtakes once, then
//!   retried → `{"first": "ok"|"cas-failed", "second": "ok"|...}`
//! - `batch` `{"pairs": [[k, v], ...]}`: `set-many` then `get-many` of the keys → the values
//! - `fill` `{"prefix", "n", "size"}`: sets up to n keys of `size` bytes, stopping at the
//!   first refusal → `{"set": count, "error": message|null}`

use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_guest::{
    Content, Context, Error, Listener, Result, State,
    bindings::wasi::keyvalue::{atomics, batch},
};

#[derive(Deserialize)]
struct Request {
    op: String,
    #[serde(default)]
    key: String,
    value: Option<String>,
    ttl_ms: Option<u64>,
    #[serde(default)]
    bucket: String,
    #[serde(default)]
    delta: i64,
    #[serde(default)]
    prefix: String,
    to: Option<String>,
    #[serde(default)]
    pairs: Vec<(String, String)>,
    #[serde(default)]
    n: u32,
    #[serde(default)]
    size: usize,
}

fn text(bytes: Vec<u8>) -> Value {
    Value::String(String::from_utf8_lossy(&bytes).into_owned())
}

fn run(r: &Request) -> Result<Value> {
    if r.op == "none" {
        return Ok(Value::Null);
    }
    let state = State::open(&r.bucket)?;
    Ok(match r.op.as_str() {
        "set" => {
            let value = r.value.clone().unwrap_or_default();
            match r.ttl_ms {
                Some(ms) => state.set_with_ttl(
                    &r.key,
                    value.as_bytes(),
                    std::time::Duration::from_millis(ms),
                )?,
                None => state.set(&r.key, value.as_bytes())?,
            }
            Value::Null
        }
        "get" => state.get(&r.key)?.map_or(Value::Null, text),
        "delete" => {
            state.delete(&r.key)?;
            Value::Null
        }
        "incr" => json!(state.increment(&r.key, r.delta)?),
        "list" => json!(state.keys_with_prefix(&r.prefix, 100_000)?),
        "cas" => {
            let to = r.to.clone().unwrap_or_default();
            let cas = atomics::Cas::new(state.bucket(), &r.key)
                .map_err(|e| Error::other(format!("{e:?}")))?;
            state.set(&r.key, b"overtaken")?;
            let first = match atomics::swap(cas, to.as_bytes()) {
                Ok(()) => "ok".to_owned(),
                Err(atomics::CasError::CasFailed(retry)) => {
                    let seen = retry
                        .current()
                        .map_err(|e| Error::other(format!("{e:?}")))?;
                    if seen.as_deref() != Some(b"overtaken".as_slice()) {
                        return Err(Error::other("the retry handle does not hold the new value"));
                    }
                    let second = match atomics::swap(retry, to.as_bytes()) {
                        Ok(()) => "ok".to_owned(),
                        Err(e) => format!("{e:?}"),
                    };
                    return Ok(json!({ "first": "cas-failed", "second": second }));
                }
                Err(e) => format!("{e:?}"),
            };
            json!({ "first": first })
        }
        "batch" => {
            let pairs: Vec<(String, Vec<u8>)> = r
                .pairs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect();
            batch::set_many(state.bucket(), &pairs).map_err(|e| Error::other(format!("{e:?}")))?;
            let keys: Vec<String> = r.pairs.iter().map(|(k, _)| k.clone()).collect();
            let got = batch::get_many(state.bucket(), &keys)
                .map_err(|e| Error::other(format!("{e:?}")))?;
            json!(
                got.into_iter()
                    .map(|kv| kv.map(|(_, v)| text(v)))
                    .collect::<Vec<_>>()
            )
        }
        "fill" => {
            let value = vec![b'x'; r.size];
            let mut set = 0;
            let mut error = Value::Null;
            for i in 0..r.n {
                match state.set(&format!("{}{i}", r.prefix), &value) {
                    Ok(()) => set += 1,
                    Err(e) => {
                        error = json!(e.message());
                        break;
                    }
                }
            }
            json!({ "set": set, "error": error })
        }
        other => return Err(Error::invalid_content(format!("unknown op {other}"))),
    })
}

struct Kv;

impl Listener for Kv {
    const NAME: &'static str = "kv";
    const VERSION: &'static str = "1";
    const MESSAGE_TYPES: &'static [&'static str] = &["kv"];

    fn on_message(ctx: &Context, _msg_type: &str, content: Content) -> Result<()> {
        let request: Request = content.parse()?;
        let answer = match run(&request) {
            Ok(value) => json!({ "ok": value }),
            Err(e) => json!({ "error": e.message() }),
        };
        ctx.reply("kv-result", &answer)
    }
}

switchboard_guest::export_listener!(Kv);
