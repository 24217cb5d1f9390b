// c-greet: the example C listener. It greets with a configured greeting, sends notices to
// one user or to every user of a user type, and lists who is online.
//
//   c-greet  {"name"}                             -> c-greeting {"text", "lang", "version"} to the sender
//   c-notify {"text", "toUserId"?, "toUserType"?}  -> c-notice {"from", "text"} to that user, or to
//                                                   every user of the type; c-notify-ack
//                                                   {"to": "user", "online"} or {"to": "user-type",
//                                                   "onlineUsers": count} to the sender
//   c-who    {"userType"?}                        -> c-online {"userType", "users"} to the sender
//
// Config (sidecar c-greet.toml, [config]): `greeting` (default "Hello").

#include <stdlib.h>
#include <string.h>

#include "switchboard.h"

#define VERSION "0.1.0"

const sb_plugin_t SB_PLUGIN = {
    .name = "c-greet",
    .version = VERSION,
    .message_types = (const char *[]){"c-greet", "c-notify", "c-who", NULL},
};

// ---- Typed content ----

typedef struct notify_t {
    char *text;
    char *to_user_id; // NULL: every user of the type
    bool has_user_type;
    uint32_t to_user_type;
} notify_t;

static sb_result_t field_error(sb_json_status_t status, const char *field, const char *kind) {
    if (status == SB_JSON_MISSING) return sb_error(SB_INVALID_CONTENT, "missing field %s", field);
    if (status == SB_JSON_INVALID) return sb_error(SB_INVALID_CONTENT, "content must be a JSON object");
    return sb_error(SB_INVALID_CONTENT, "field %s must be %s", field, kind);
}

// An optional user type field: absent or null leaves `*has` false.
static sb_result_t optional_user_type(const char *content, const char *field, bool *has,
                                      uint32_t *out) {
    int64_t n;
    sb_json_status_t s = sb_json_get_int(content, field, &n);
    *has = false;
    if (s == SB_JSON_MISSING) return sb_ok();
    if (s != SB_JSON_OK || n < 0 || n > UINT32_MAX) return field_error(s, field, "a user type");
    *has = true;
    *out = (uint32_t)n;
    return sb_ok();
}

static sb_result_t parse_notify(const char *content, notify_t *out) {
    memset(out, 0, sizeof *out);
    sb_json_status_t s = sb_json_get_string(content, "text", &out->text);
    if (s != SB_JSON_OK) return field_error(s, "text", "a string");
    s = sb_json_get_string(content, "toUserId", &out->to_user_id);
    if (s != SB_JSON_OK && s != SB_JSON_MISSING) return field_error(s, "toUserId", "a string");
    return optional_user_type(content, "toUserType", &out->has_user_type, &out->to_user_type);
}

static void notify_free(notify_t *n) {
    free(n->text);
    free(n->to_user_id);
}

// ---- Handlers ----

static sb_result_t greet(const sb_ctx_t *ctx, const char *content) {
    char *name = NULL;
    sb_json_status_t s = sb_json_get_string(content, "name", &name);
    if (s != SB_JSON_OK) return field_error(s, "name", "a string");
    char *greeting = sb_config("greeting");

    sb_buf_t text = {0};
    sb_buf_printf(&text, "%s, %s!", greeting ? greeting : "Hello", name);
    sb_buf_t out = {0};
    sb_buf_puts(&out, "{\"text\":");
    sb_buf_json_string(&out, text.data);
    sb_buf_puts(&out, ",\"lang\":\"c\",\"version\":\"" VERSION "\"}");
    sb_result_t r = sb_reply(ctx, "c-greeting", out.data);

    sb_buf_free(&out);
    sb_buf_free(&text);
    free(greeting);
    free(name);
    return r;
}

static sb_result_t notify(const sb_ctx_t *ctx, const char *content) {
    notify_t n;
    sb_result_t r = parse_notify(content, &n);
    if (r.kind != SB_OK) {
        notify_free(&n);
        return r;
    }
    uint32_t user_type = n.has_user_type ? n.to_user_type : ctx->user_type;
    sb_buf_t notice = {0};
    sb_buf_puts(&notice, "{\"from\":");
    sb_buf_json_string(&notice, ctx->user_id);
    sb_buf_puts(&notice, ",\"text\":");
    sb_buf_json_string(&notice, n.text);
    sb_buf_puts(&notice, "}");

    sb_buf_t ack = {0};
    if (n.to_user_id && n.to_user_id[0]) {
        r = sb_send_to_user(user_type, n.to_user_id, "c-notice", notice.data);
        bool online = sb_is_online(user_type, n.to_user_id);
        sb_buf_printf(&ack, "{\"to\":\"user\",\"online\":%s}", online ? "true" : "false");
    } else {
        r = sb_send_to_user_type(user_type, "c-notice", notice.data);
        size_t count = 0;
        sb_strings_free(sb_online_users(user_type, &count));
        sb_buf_printf(&ack, "{\"to\":\"user-type\",\"onlineUsers\":%zu}", count);
    }
    if (r.kind == SB_OK) r = sb_reply(ctx, "c-notify-ack", ack.data);

    sb_buf_free(&ack);
    sb_buf_free(&notice);
    notify_free(&n);
    return r;
}

static int by_text(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static sb_result_t who(const sb_ctx_t *ctx, const char *content) {
    bool has_type;
    uint32_t user_type;
    sb_result_t r = optional_user_type(content, "userType", &has_type, &user_type);
    if (r.kind != SB_OK) return r;
    if (!has_type) user_type = ctx->user_type;

    size_t count = 0;
    char **users = sb_online_users(user_type, &count);
    qsort(users, count, sizeof *users, by_text);
    sb_buf_t out = {0};
    sb_buf_printf(&out, "{\"userType\":%u,\"users\":[", user_type);
    for (size_t i = 0; i < count; i++) {
        if (i) sb_buf_puts(&out, ",");
        sb_buf_json_string(&out, users[i]);
    }
    sb_buf_puts(&out, "]}");
    r = sb_reply(ctx, "c-online", out.data);

    sb_buf_free(&out);
    sb_strings_free(users);
    return r;
}

sb_result_t sb_on_message(const sb_ctx_t *ctx, const char *msg_type, const char *content) {
    if (strcmp(msg_type, "c-greet") == 0) return greet(ctx, content);
    if (strcmp(msg_type, "c-notify") == 0) return notify(ctx, content);
    if (strcmp(msg_type, "c-who") == 0) return who(ctx, content);
    return sb_error(SB_OTHER, "no handler for %s", msg_type);
}
