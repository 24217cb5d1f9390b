//! Chat rooms whose membership lives in the plugin's key-value state, so every node of a
//! cluster (with the Redis store) and every instance agrees on who is in a room.
//!
//! - `room-join {"room":"r1"}`: the sender's user joins; reply `room-joined {"room":"r1"}`.
//! - `room-leave {"room":"r1"}`: the sender's user leaves; reply `room-left {"room":"r1"}`.
//! - `room-say {"room":"r1","text":"hi"}`: every member (the sender included) gets
//!   `room-message {"room":"r1","from":{"user_type":2,"user_id":"1"},"text":"hi"}` as one
//!   delivery; a sender who is not a member is refused with `forbidden`.
//!
//! State is scoped to the tenant by the host, so rooms of different tenants never mix.
//! A member is a user (all of their sessions), one key per member:
//! `m:{len(room)}:{room}:{user_type}:{user_id}`. The room's length prefix keeps one room's
//! keys from being a prefix of another's.

use serde::{Deserialize, Serialize};
use switchboard_guest::{Content, Context, Error, Listener, Result, State, Target, UserRef};

/// Longest room name, in bytes.
const MAX_ROOM: usize = 128;
/// Longest text, in bytes.
const MAX_TEXT: usize = 4096;
/// Members one room may have.
const MAX_MEMBERS: usize = 10_000;

#[derive(Deserialize)]
struct Room {
    room: String,
}

#[derive(Deserialize)]
struct Say {
    room: String,
    text: String,
}

#[derive(Serialize)]
struct Message<'a> {
    room: &'a str,
    /// Serializes as `{"user_type": 2, "user_id": "1"}`.
    from: &'a UserRef,
    text: &'a str,
}

fn checked(room: &str) -> Result<&str> {
    if room.is_empty() || room.len() > MAX_ROOM {
        return Err(Error::invalid_content(format!(
            "room is 1 to {MAX_ROOM} bytes"
        )));
    }
    Ok(room)
}

fn members_prefix(room: &str) -> String {
    format!("m:{}:{room}:", room.len())
}

fn member_key(room: &str, user: &UserRef) -> String {
    format!(
        "{}{}:{}",
        members_prefix(room),
        user.user_type,
        user.user_id
    )
}

/// The user a member key (without its room prefix) names.
fn member(rest: &str) -> Option<UserRef> {
    let (user_type, user_id) = rest.split_once(':')?;
    Some(UserRef::new(user_type.parse().ok()?, user_id))
}

struct Rooms;

impl Listener for Rooms {
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const MESSAGE_TYPES: &'static [&'static str] = &["room-join", "room-leave", "room-say"];

    fn on_message(ctx: &Context, msg_type: &str, content: Content) -> Result<()> {
        let state = State::open("rooms")?;
        let me = ctx.user();
        match msg_type {
            "room-join" => {
                let Room { room } = content.parse()?;
                let key = member_key(checked(&room)?, me);
                state.set(&key, b"")?;
                ctx.reply("room-joined", &serde_json::json!({ "room": room }))
            }
            "room-leave" => {
                let Room { room } = content.parse()?;
                state.delete(&member_key(checked(&room)?, me))?;
                ctx.reply("room-left", &serde_json::json!({ "room": room }))
            }
            _ => {
                let Say { room, text } = content.parse()?;
                checked(&room)?;
                if text.len() > MAX_TEXT {
                    return Err(Error::invalid_content(format!(
                        "text is at most {MAX_TEXT} bytes"
                    )));
                }
                if !state.exists(&member_key(&room, me))? {
                    return Err(Error::forbidden(format!("not a member of room {room}")));
                }
                let prefix = members_prefix(&room);
                let members: Vec<UserRef> = state
                    .keys_with_prefix(&prefix, MAX_MEMBERS)?
                    .iter()
                    .filter_map(|key| member(&key[prefix.len()..]))
                    .collect();
                let message = Message {
                    room: &room,
                    from: me,
                    text: &text,
                };
                ctx.send(Target::Users(members), "room-message", &message)
            }
        }
    }
}

switchboard_guest::export_listener!(Rooms);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_keys_round_trip_and_rooms_do_not_overlap() {
        let user = UserRef::new(2, "a:b");
        let key = member_key("r1", &user);
        let prefix = members_prefix("r1");
        assert_eq!(member(&key[prefix.len()..]), Some(user));
        assert!(!member_key("r1:2", &UserRef::new(2, "x")).starts_with(&prefix));
    }
}
