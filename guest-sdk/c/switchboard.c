// Helpers for Switchboard listener plugins written in C: the `listener` exports on top of the
// generated bindings (`plugin.h`), sends, presence, config, logging, and a small JSON reader
// and writer. See switchboard.h.
//
// Ownership follows the canonical ABI as wit-bindgen's C bindings express it: arguments of an
// export belong to the export (freed here after the handler returns); what an export returns
// is freed by the generated post-return functions (so it is allocated here); what an import
// returns belongs to the caller (freed here).

#include "switchboard.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

// ---- Strings between the bindings and C ----

static char *sb_strndup(const char *s, size_t len) {
    char *out = malloc(len + 1);
    if (!out) abort();
    memcpy(out, s, len);
    out[len] = '\0';
    return out;
}

static char *from_wit(const plugin_string_t *s) {
    return sb_strndup((const char *)s->ptr, s->len);
}

// A borrowed view of a C string, for import arguments.
static plugin_string_t view(const char *s) {
    plugin_string_t out;
    plugin_string_set(&out, s);
    return out;
}

// ---- Results ----

static char *vformat(const char *fmt, va_list args) {
    va_list copy;
    va_copy(copy, args);
    int len = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (len < 0) len = 0;
    char *out = malloc((size_t)len + 1);
    if (!out) abort();
    vsnprintf(out, (size_t)len + 1, fmt, args);
    return out;
}

sb_result_t sb_error(sb_error_kind_t kind, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    sb_result_t r = {kind == SB_OK ? SB_OTHER : kind, vformat(fmt, args)};
    va_end(args);
    return r;
}

void sb_result_free(sb_result_t *result) {
    free(result->message);
    result->message = NULL;
}

// The host's error as a result; takes ownership of the error's string.
static sb_result_t from_wit_error(switchboard_plugin_types_error_t *err) {
    sb_result_t r;
    plugin_string_t *text;
    switch (err->tag) {
    case SWITCHBOARD_PLUGIN_TYPES_ERROR_INVALID_CONTENT:
        r.kind = SB_INVALID_CONTENT;
        text = &err->val.invalid_content;
        break;
    case SWITCHBOARD_PLUGIN_TYPES_ERROR_FORBIDDEN:
        r.kind = SB_FORBIDDEN;
        text = &err->val.forbidden;
        break;
    default:
        r.kind = SB_OTHER;
        text = &err->val.other;
        break;
    }
    r.message = from_wit(text);
    switchboard_plugin_types_error_free(err);
    return r;
}

// ---- The listener exports ----

static sb_ctx_t ctx_from(const switchboard_plugin_types_session_info_t *s) {
    sb_ctx_t ctx = {
        .session_id = from_wit(&s->session_id),
        .user_type = s->user.user_type,
        .user_id = from_wit(&s->user.user_id),
        .tenant_id = s->tenant_id.is_some ? from_wit(&s->tenant_id.val) : NULL,
    };
    return ctx;
}

static void ctx_free(sb_ctx_t *ctx) {
    free((char *)ctx->session_id);
    free((char *)ctx->user_id);
    free((char *)ctx->tenant_id);
}

void exports_switchboard_plugin_listener_describe(
    exports_switchboard_plugin_listener_plugin_info_t *ret) {
    size_t n = 0;
    while (SB_PLUGIN.message_types[n]) n++;
    plugin_string_dup(&ret->name, SB_PLUGIN.name);
    plugin_string_dup(&ret->version, SB_PLUGIN.version);
    ret->message_types.len = n;
    ret->message_types.ptr = malloc(n * sizeof(plugin_string_t));
    if (n && !ret->message_types.ptr) abort();
    for (size_t i = 0; i < n; i++) {
        plugin_string_dup(&ret->message_types.ptr[i], SB_PLUGIN.message_types[i]);
    }
    ret->lifecycle_events = SB_PLUGIN.lifecycle_events;
}

bool exports_switchboard_plugin_listener_on_message(
    exports_switchboard_plugin_listener_session_info_t *session, plugin_string_t *msg_type,
    plugin_string_t *content, exports_switchboard_plugin_listener_error_t *err) {
    sb_ctx_t ctx = ctx_from(session);
    char *type = from_wit(msg_type);
    char *text = from_wit(content);
    exports_switchboard_plugin_listener_session_info_free(session);
    plugin_string_free(msg_type);
    plugin_string_free(content);

    sb_result_t r = sb_on_message(&ctx, type, text);

    ctx_free(&ctx);
    free(type);
    free(text);
    if (r.kind == SB_OK) {
        free(r.message);
        return true;
    }
    plugin_string_t message;
    plugin_string_dup(&message, r.message ? r.message : "error");
    free(r.message);
    switch (r.kind) {
    case SB_INVALID_CONTENT:
        err->tag = SWITCHBOARD_PLUGIN_TYPES_ERROR_INVALID_CONTENT;
        err->val.invalid_content = message;
        break;
    case SB_FORBIDDEN:
        err->tag = SWITCHBOARD_PLUGIN_TYPES_ERROR_FORBIDDEN;
        err->val.forbidden = message;
        break;
    default:
        err->tag = SWITCHBOARD_PLUGIN_TYPES_ERROR_OTHER;
        err->val.other = message;
        break;
    }
    return false;
}

static void lifecycle(exports_switchboard_plugin_listener_session_info_t *session,
                      void (*handler)(const sb_ctx_t *)) {
    sb_ctx_t ctx = ctx_from(session);
    exports_switchboard_plugin_listener_session_info_free(session);
    if (handler) handler(&ctx);
    ctx_free(&ctx);
}

void exports_switchboard_plugin_listener_on_connect(
    exports_switchboard_plugin_listener_session_info_t *session) {
    lifecycle(session, sb_on_connect);
}

void exports_switchboard_plugin_listener_on_disconnect(
    exports_switchboard_plugin_listener_session_info_t *session) {
    lifecycle(session, sb_on_disconnect);
}

// ---- Sending ----

static sb_result_t send_to(switchboard_plugin_sender_target_t *target, const char *msg_type,
                           const char *json) {
    plugin_string_t type = view(msg_type);
    plugin_string_t content = view(json);
    switchboard_plugin_sender_error_t err;
    if (switchboard_plugin_sender_send(target, &type, &content, &err)) return sb_ok();
    return from_wit_error(&err);
}

sb_result_t sb_reply(const sb_ctx_t *ctx, const char *msg_type, const char *json) {
    return sb_send_to_session(ctx->session_id, msg_type, json);
}

sb_result_t sb_send_to_session(const char *session_id, const char *msg_type, const char *json) {
    switchboard_plugin_sender_target_t target = {.tag = SWITCHBOARD_PLUGIN_TYPES_TARGET_SESSION};
    target.val.session = view(session_id);
    return send_to(&target, msg_type, json);
}

sb_result_t sb_send_to_user(uint32_t user_type, const char *user_id, const char *msg_type,
                            const char *json) {
    switchboard_plugin_sender_target_t target = {.tag = SWITCHBOARD_PLUGIN_TYPES_TARGET_USER};
    target.val.user.user_type = user_type;
    target.val.user.user_id = view(user_id);
    return send_to(&target, msg_type, json);
}

sb_result_t sb_send_to_user_type(uint32_t user_type, const char *msg_type, const char *json) {
    switchboard_plugin_sender_target_t target = {.tag = SWITCHBOARD_PLUGIN_TYPES_TARGET_USER_TYPE};
    target.val.user_type = user_type;
    return send_to(&target, msg_type, json);
}

sb_result_t sb_send_to_everyone(const char *msg_type, const char *json) {
    switchboard_plugin_sender_target_t target = {.tag = SWITCHBOARD_PLUGIN_TYPES_TARGET_EVERYONE};
    return send_to(&target, msg_type, json);
}

// ---- Presence ----

bool sb_is_online(uint32_t user_type, const char *user_id) {
    switchboard_plugin_presence_user_ref_t user = {user_type, view(user_id)};
    return switchboard_plugin_presence_is_online(&user);
}

char **sb_online_users(uint32_t user_type, size_t *count) {
    plugin_list_string_t ids;
    switchboard_plugin_presence_online_users(user_type, &ids);
    char **out = calloc(ids.len + 1, sizeof(char *));
    if (!out) abort();
    for (size_t i = 0; i < ids.len; i++) out[i] = from_wit(&ids.ptr[i]);
    if (count) *count = ids.len;
    plugin_list_string_free(&ids);
    return out;
}

void sb_strings_free(char **strings) {
    if (!strings) return;
    for (char **s = strings; *s; s++) free(*s);
    free(strings);
}

// ---- Config and logging ----

char *sb_config(const char *key) {
    plugin_string_t k = view(key);
    plugin_string_t value;
    if (!switchboard_plugin_config_get(&k, &value)) return NULL;
    char *out = from_wit(&value);
    plugin_string_free(&value);
    return out;
}

void sb_log(sb_level_t level, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    char *line = vformat(fmt, args);
    va_end(args);
    plugin_string_t message = view(line);
    switchboard_plugin_logging_log((switchboard_plugin_logging_level_t)level, &message);
    free(line);
}

// ---- Text buffers ----

static void reserve(sb_buf_t *buf, size_t extra) {
    if (buf->len + extra + 1 <= buf->cap) return;
    size_t cap = buf->cap ? buf->cap : 64;
    while (cap < buf->len + extra + 1) cap *= 2;
    char *data = realloc(buf->data, cap);
    if (!data) abort();
    buf->data = data;
    buf->cap = cap;
}

static void buf_putn(sb_buf_t *buf, const char *s, size_t n) {
    reserve(buf, n);
    memcpy(buf->data + buf->len, s, n);
    buf->len += n;
    buf->data[buf->len] = '\0';
}

// ---- JSON reader ----
// Enough of JSON to read the top-level fields of an object: values are skipped with their
// nesting, strings are unescaped (including \u escapes and surrogate pairs) into UTF-8.

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

static void put_utf8(sb_buf_t *buf, uint32_t cp) {
    char bytes[4];
    size_t n;
    if (cp < 0x80) {
        bytes[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        bytes[0] = (char)(0xC0 | (cp >> 6));
        bytes[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        bytes[0] = (char)(0xE0 | (cp >> 12));
        bytes[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        bytes[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        bytes[0] = (char)(0xF0 | (cp >> 18));
        bytes[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        bytes[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        bytes[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_putn(buf, bytes, n);
}

static bool hex4(const char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return false;
    }
    *out = v;
    return true;
}

// Parses the string literal at `p` (at its opening quote). Returns the position after it, or
// NULL if malformed; with `out`, appends the unescaped text to it.
static const char *parse_string(const char *p, sb_buf_t *out) {
    if (*p != '"') return NULL;
    p++;
    while (*p != '"') {
        if (*p == '\0' || (unsigned char)*p < 0x20) return NULL;
        if (*p != '\\') {
            const char *run = p;
            while (*p && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20) p++;
            if (out) buf_putn(out, run, (size_t)(p - run));
            continue;
        }
        p++;
        char c = *p++;
        const char *simple = NULL;
        switch (c) {
        case '"': simple = "\""; break;
        case '\\': simple = "\\"; break;
        case '/': simple = "/"; break;
        case 'b': simple = "\b"; break;
        case 'f': simple = "\f"; break;
        case 'n': simple = "\n"; break;
        case 'r': simple = "\r"; break;
        case 't': simple = "\t"; break;
        case 'u': {
            uint32_t cp;
            if (!hex4(p, &cp)) return NULL;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                uint32_t low;
                if (p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &low) || low < 0xDC00 ||
                    low > 0xDFFF)
                    return NULL;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return NULL;
            }
            if (out) put_utf8(out, cp);
            continue;
        }
        default: return NULL;
        }
        if (out) sb_buf_puts(out, simple);
    }
    return p + 1;
}

// Skips the value at `p`; returns the position after it, or NULL if malformed.
static const char *skip_value(const char *p, int depth) {
    if (depth > 64) return NULL;
    p = skip_ws(p);
    switch (*p) {
    case '"': return parse_string(p, NULL);
    case '{':
    case '[': {
        char close = *p == '{' ? '}' : ']';
        bool object = *p == '{';
        p = skip_ws(p + 1);
        if (*p == close) return p + 1;
        for (;;) {
            if (object) {
                p = parse_string(skip_ws(p), NULL);
                if (!p) return NULL;
                p = skip_ws(p);
                if (*p++ != ':') return NULL;
            }
            p = skip_value(p, depth + 1);
            if (!p) return NULL;
            p = skip_ws(p);
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == close) return p + 1;
            return NULL;
        }
    }
    default: {
        const char *start = p;
        while (*p && strchr("+-0123456789.eEtruefalsn", *p)) p++;
        return p == start ? NULL : p;
    }
    }
}

// Finds field `key` of the object `json`; sets `*value` to the start of its value.
static sb_json_status_t find_field(const char *json, const char *key, const char **value) {
    const char *p = skip_ws(json);
    if (*p != '{') return SB_JSON_INVALID;
    p = skip_ws(p + 1);
    if (*p == '}') return SB_JSON_MISSING;
    sb_buf_t name = {0};
    for (;;) {
        name.len = 0;
        if (name.data) name.data[0] = '\0';
        p = parse_string(skip_ws(p), &name);
        if (!p) break;
        p = skip_ws(p);
        if (*p++ != ':') break;
        p = skip_ws(p);
        if (name.len == strlen(key) && memcmp(name.len ? name.data : "", key, name.len) == 0) {
            sb_buf_free(&name);
            if (strncmp(p, "null", 4) == 0) return SB_JSON_MISSING;
            *value = p;
            return SB_JSON_OK;
        }
        p = skip_value(p, 0);
        if (!p) break;
        p = skip_ws(p);
        if (*p == ',') {
            p++;
            continue;
        }
        sb_buf_free(&name);
        return *p == '}' ? SB_JSON_MISSING : SB_JSON_INVALID;
    }
    sb_buf_free(&name);
    return SB_JSON_INVALID;
}

sb_json_status_t sb_json_get_string(const char *json, const char *key, char **out) {
    const char *v;
    sb_json_status_t status = find_field(json, key, &v);
    if (status != SB_JSON_OK) return status;
    if (*v != '"') return SB_JSON_WRONG_TYPE;
    sb_buf_t text = {0};
    if (!parse_string(v, &text)) {
        sb_buf_free(&text);
        return SB_JSON_INVALID;
    }
    *out = text.data ? text.data : sb_strndup("", 0);
    return SB_JSON_OK;
}

sb_json_status_t sb_json_get_int(const char *json, const char *key, int64_t *out) {
    const char *v;
    sb_json_status_t status = find_field(json, key, &v);
    if (status != SB_JSON_OK) return status;
    const char *p = v;
    bool negative = *p == '-';
    if (negative) p++;
    if (*p < '0' || *p > '9') return SB_JSON_WRONG_TYPE;
    int64_t n = 0;
    while (*p >= '0' && *p <= '9') {
        int digit = *p++ - '0';
        if (n > (INT64_MAX - digit) / 10) return SB_JSON_WRONG_TYPE;
        n = n * 10 + digit;
    }
    // A fraction or exponent is not an integer.
    if (*p == '.' || *p == 'e' || *p == 'E') return SB_JSON_WRONG_TYPE;
    *out = negative ? -n : n;
    return SB_JSON_OK;
}

sb_json_status_t sb_json_get_bool(const char *json, const char *key, bool *out) {
    const char *v;
    sb_json_status_t status = find_field(json, key, &v);
    if (status != SB_JSON_OK) return status;
    if (strncmp(v, "true", 4) == 0) *out = true;
    else if (strncmp(v, "false", 5) == 0) *out = false;
    else return SB_JSON_WRONG_TYPE;
    return SB_JSON_OK;
}

// ---- JSON writer ----

void sb_buf_puts(sb_buf_t *buf, const char *s) {
    buf_putn(buf, s, strlen(s));
}

void sb_buf_printf(sb_buf_t *buf, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    char *text = vformat(fmt, args);
    va_end(args);
    sb_buf_puts(buf, text);
    free(text);
}

void sb_buf_json_string(sb_buf_t *buf, const char *s) {
    if (!s) {
        sb_buf_puts(buf, "null");
        return;
    }
    sb_buf_puts(buf, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': sb_buf_puts(buf, "\\\""); break;
        case '\\': sb_buf_puts(buf, "\\\\"); break;
        case '\n': sb_buf_puts(buf, "\\n"); break;
        case '\r': sb_buf_puts(buf, "\\r"); break;
        case '\t': sb_buf_puts(buf, "\\t"); break;
        default:
            if (*p < 0x20) {
                sb_buf_printf(buf, "\\u%04x", *p);
            } else {
                buf_putn(buf, (const char *)p, 1);
            }
        }
    }
    sb_buf_puts(buf, "\"");
}

void sb_buf_free(sb_buf_t *buf) {
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}
