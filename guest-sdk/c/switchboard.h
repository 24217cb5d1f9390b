// Helpers for Switchboard listener plugins written in C (world
// `switchboard:plugin/plugin@0.1.0`), on top of the bindings `wit-bindgen c` generates from
// the WIT contract into `plugin.h` / `plugin.c` at build time. This file is hand-written.
//
// A plugin defines `SB_PLUGIN` and `sb_on_message`, and may define `sb_on_connect` /
// `sb_on_disconnect` (then set `lifecycle_events`):
//
//     #include "switchboard.h"
//
//     const sb_plugin_t SB_PLUGIN = {
//         .name = "c-hello",
//         .version = "0.1.0",
//         .message_types = (const char *[]){"c-hello", NULL},
//     };
//
//     sb_result_t sb_on_message(const sb_ctx_t *ctx, const char *type, const char *content) {
//         char *name = NULL;
//         if (sb_json_get_string(content, "name", &name) != SB_JSON_OK)
//             return sb_error(SB_INVALID_CONTENT, "missing string field name");
//         sb_buf_t out = {0};
//         sb_buf_puts(&out, "{\"text\":");
//         sb_buf_json_string(&out, name);
//         sb_buf_puts(&out, "}");
//         sb_result_t r = sb_reply(ctx, "c-hello", out.data);
//         sb_buf_free(&out);
//         free(name);
//         return r;
//     }
//
// Strings are NUL-terminated UTF-8. Every `char *` a helper returns is the caller's to free.

#ifndef SWITCHBOARD_H
#define SWITCHBOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- What the plugin defines ----

/// What the plugin says about itself (`describe`).
typedef struct sb_plugin_t {
    /// Unique among loaded plugins.
    const char *name;
    /// Shown with every fault report.
    const char *version;
    /// The claimed message types, ended by NULL.
    const char *const *message_types;
    /// Whether the host calls `sb_on_connect` / `sb_on_disconnect`.
    bool lifecycle_events;
} sb_plugin_t;

/// Who sent the message being handled (or who connected).
typedef struct sb_ctx_t {
    const char *session_id;
    uint32_t user_type;
    const char *user_id;
    /// NULL on single-tenant hosts.
    const char *tenant_id;
} sb_ctx_t;

/// Error kinds, as in the WIT `error` variant.
typedef enum sb_error_kind_t {
    SB_OK = 0,
    /// The content is not what the listener accepts.
    SB_INVALID_CONTENT,
    /// The caller may not do this.
    SB_FORBIDDEN,
    /// Anything else.
    SB_OTHER,
} sb_error_kind_t;

/// The outcome of a handler or of a send: `kind == SB_OK`, or an error with a message
/// (owned; `sb_result_free` frees it when the result is dropped instead of returned).
typedef struct sb_result_t {
    sb_error_kind_t kind;
    char *message;
} sb_result_t;

extern const sb_plugin_t SB_PLUGIN;

/// Handles one message of a claimed type; `content` is JSON text.
sb_result_t sb_on_message(const sb_ctx_t *ctx, const char *msg_type, const char *content);

/// A session opened (only with `lifecycle_events`). Optional.
void sb_on_connect(const sb_ctx_t *ctx) __attribute__((weak));

/// A session closed (only with `lifecycle_events`). Optional.
void sb_on_disconnect(const sb_ctx_t *ctx) __attribute__((weak));

// ---- Results ----

/// Success.
static inline sb_result_t sb_ok(void) {
    sb_result_t r = {SB_OK, NULL};
    return r;
}

/// An error with a printf-style message.
sb_result_t sb_error(sb_error_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/// Frees the message of a result that is not returned to the host.
void sb_result_free(sb_result_t *result);

// ---- Sending (within the tenant of the session being handled) ----
// `json` is the message content as JSON text. A refused send returns the host's error.

/// To the session being handled.
sb_result_t sb_reply(const sb_ctx_t *ctx, const char *msg_type, const char *json);
/// To one session by id.
sb_result_t sb_send_to_session(const char *session_id, const char *msg_type, const char *json);
/// To every session of one user.
sb_result_t sb_send_to_user(uint32_t user_type, const char *user_id, const char *msg_type,
                            const char *json);
/// To every session of every user of one user type.
sb_result_t sb_send_to_user_type(uint32_t user_type, const char *msg_type, const char *json);
/// To every session in the tenant (needs the `broadcast` capability).
sb_result_t sb_send_to_everyone(const char *msg_type, const char *json);

// ---- Presence (within the tenant, cluster-wide) ----

/// Whether the user has an open session.
bool sb_is_online(uint32_t user_type, const char *user_id);
/// The ids of the online users of one user type: a NULL-ended array, freed with
/// `sb_strings_free`. `*count` (if not NULL) receives their number.
char **sb_online_users(uint32_t user_type, size_t *count);
/// Frees a NULL-ended array of strings.
void sb_strings_free(char **strings);

// ---- Config and logging ----

/// A value of the `[config]` table of the plugin's sidecar, or NULL.
char *sb_config(const char *key);

typedef enum sb_level_t { SB_TRACE, SB_DEBUG, SB_INFO, SB_WARN, SB_ERROR } sb_level_t;
/// Logs a printf-style line, tagged with the plugin's name by the host.
void sb_log(sb_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// ---- JSON content ----
// A small reader for the fields of a JSON object (the message content), and a writer.

typedef enum sb_json_status_t {
    SB_JSON_OK = 0,
    /// The object has no such field, or it is null.
    SB_JSON_MISSING,
    /// The field has another type.
    SB_JSON_WRONG_TYPE,
    /// The text is not a JSON object.
    SB_JSON_INVALID,
} sb_json_status_t;

/// The string field `key` of the JSON object `json`, unescaped, in `*out` (caller frees).
sb_json_status_t sb_json_get_string(const char *json, const char *key, char **out);
/// The integer field `key` of the JSON object `json`.
sb_json_status_t sb_json_get_int(const char *json, const char *key, int64_t *out);
/// The boolean field `key` of the JSON object `json`.
sb_json_status_t sb_json_get_bool(const char *json, const char *key, bool *out);

/// A growable text buffer; zero-initialize it, free it with `sb_buf_free`.
typedef struct sb_buf_t {
    char *data;
    size_t len;
    size_t cap;
} sb_buf_t;

/// Appends a string.
void sb_buf_puts(sb_buf_t *buf, const char *s);
/// Appends printf-style text.
void sb_buf_printf(sb_buf_t *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/// Appends `s` as a JSON string literal (quoted and escaped); NULL appends `null`.
void sb_buf_json_string(sb_buf_t *buf, const char *s);
/// Frees the buffer's text.
void sb_buf_free(sb_buf_t *buf);

#ifdef __cplusplus
}
#endif

#endif
