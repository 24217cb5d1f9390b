//! WebSocket close codes the host sends, in one place, with what a client should do.
//!
//! | code | name | when | client should |
//! |---|---|---|---|
//! | 1000 | normal | the client closed, or `GET /resource/sse/close` | not reconnect |
//! | 1001 | going away | the host is shutting down | reconnect with backoff (another node) |
//! | 1002 | protocol error | a frame that breaks RFC 6455 (unmasked, bad opcode, reserved bits) | fix the client |
//! | 1007 | invalid payload | a text frame that is not UTF-8 | fix the client |
//! | 1008 | policy violation | sustained message rate abuse | reconnect later, slower |
//! | 1009 | message too big | a frame over `server.max_frame_bytes` | send smaller frames |
//! | 1012 | service restart | the node is draining (taken out of service) | reconnect at once (the load balancer sends it to another node) |
//! | 4000 | idle timeout | nothing received for `server.idle_timeout_secs` | reconnect; keep heartbeats on |
//! | 4001 | slow consumer | its outbound queue (`server.outbound_queue`) overflowed | reconnect; messages were dropped |
//! | 4002 | session replaced | a newer connection of the same user (one-session-per-user endpoints) | not reconnect automatically |
//! | 4003 | expired | the session's token passed its expiry (found by the periodic re-check) | get a new token, then reconnect |
//! | 4004 | revoked | the back end no longer knows the token (logout, kick-out, deleted key) | not reconnect with this token; log in again |
//!
//! 1xxx codes are the standard ones (RFC 6455 §7.4.1); 4xxx are this host's own.

/// The client or the host ended the session normally.
pub const NORMAL: u16 = 1000;
/// The host is shutting down.
pub const GOING_AWAY: u16 = 1001;
/// The client broke the WebSocket protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text frame was not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// The client kept exceeding its message rate.
pub const POLICY_VIOLATION: u16 = 1008;
/// A frame exceeded the size limit.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The node is draining: reconnect at once, to another node.
pub const SERVICE_RESTART: u16 = 1012;
/// Nothing was received within the idle timeout.
pub const IDLE_TIMEOUT: u16 = 4000;
/// The outbound queue overflowed because the client does not read fast enough.
pub const SLOW_CONSUMER: u16 = 4001;
/// A newer connection of the same user replaced this one.
pub const SESSION_REPLACED: u16 = 4002;
/// The session's token expired.
pub const EXPIRED: u16 = 4003;
/// The session's token was revoked (logout, kick-out).
pub const REVOKED: u16 = 4004;

/// The reason text sent with a close code.
pub fn reason(code: u16) -> &'static str {
    match code {
        NORMAL => "normal",
        GOING_AWAY => "host shutting down",
        PROTOCOL_ERROR => "protocol error",
        INVALID_PAYLOAD => "invalid utf-8",
        POLICY_VIOLATION => "message rate exceeded",
        MESSAGE_TOO_BIG => "frame too large",
        SERVICE_RESTART => "node draining; reconnect",
        IDLE_TIMEOUT => "idle timeout",
        SLOW_CONSUMER => "slow consumer",
        SESSION_REPLACED => "session replaced",
        EXPIRED => "token expired",
        REVOKED => "token revoked",
        _ => "internal error",
    }
}
