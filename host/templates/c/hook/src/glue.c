// Glue between the bindings `wit-bindgen c` generates from wit/ (in
// build/gen/) and plugin.c; nothing to change here to write a hook.
//
// The bindings' rules: arguments are ours to free, and what we return is
// freed with `free` once the host has copied it (a list only when it is
// not empty).

#include <stdlib.h>
#include <string.h>

#include "hook_plugin.h"
#include "plugin.h"

// Sessions are this component's resource: the bindings' `session` is ours.
struct exports_refractium_plugin_hook_session_t {
    struct session *session;
};

// `config` is this plugin's section of the YAML config as JSON, or `null`.
bool exports_refractium_plugin_hook_init(hook_plugin_string_t *config,
                                         exports_refractium_plugin_hook_plugin_info_t *ret,
                                         hook_plugin_string_t *err) {
    (void)err;
    hook_plugin_string_free(config);
    hook_plugin_string_dup(&ret->name, PLUGIN_NAME);
    hook_plugin_string_dup(&ret->version, PLUGIN_VERSION);
    return true;
}

exports_refractium_plugin_hook_own_session_t exports_refractium_plugin_hook_constructor_session(
    exports_refractium_plugin_hook_peer_t *peer, exports_refractium_plugin_hook_detection_t *detection,
    hook_plugin_string_t *route) {
    exports_refractium_plugin_hook_peer_free(peer);
    exports_refractium_plugin_hook_detection_free(detection);
    hook_plugin_string_free(route);
    exports_refractium_plugin_hook_session_t *rep = malloc(sizeof *rep);
    if (rep == NULL || (rep->session = session_open()) == NULL) {
        abort();  // out of memory: the call fails and the proxy closes the connection
    }
    return exports_refractium_plugin_hook_session_new(rep);
}

void exports_refractium_plugin_hook_session_destructor(exports_refractium_plugin_hook_session_t *rep) {
    session_close(rep->session);
    free(rep);
}

// The bytes of an action as a list the bindings free: `chunk` (ours, or
// NULL) is handed on when the action's bytes are its own start, else the
// bytes are copied and `chunk` freed.
static hook_plugin_list_u8_t bytes(uint8_t *chunk, const uint8_t *data, size_t len) {
    hook_plugin_list_u8_t out = {NULL, 0};
    if (len > 0 && data == chunk) {
        return (hook_plugin_list_u8_t){chunk, len};
    }
    if (len > 0) {
        out.ptr = malloc(len);
        if (out.ptr == NULL) abort();
        memcpy(out.ptr, data, len);
        out.len = len;
    }
    free(chunk);
    return out;
}

static void translate(struct action a, uint8_t *chunk, exports_refractium_plugin_hook_action_t *ret) {
    switch (a.kind) {
    case RESPOND:
        ret->tag = EXPORTS_REFRACTIUM_PLUGIN_HOOK_ACTION_RESPOND;
        ret->val.respond.data = bytes(chunk, a.data, a.len);
        hook_plugin_string_dup(&ret->val.respond.reason, a.reason != NULL ? a.reason : "");
        break;
    case CLOSE:
        free(chunk);
        ret->tag = EXPORTS_REFRACTIUM_PLUGIN_HOOK_ACTION_CLOSE;
        hook_plugin_string_dup(&ret->val.close, a.reason != NULL ? a.reason : "");
        break;
    case PASS:
        ret->tag = EXPORTS_REFRACTIUM_PLUGIN_HOOK_ACTION_PASS;
        ret->val.pass = bytes(chunk, a.data, a.len);
        break;
    default:
        ret->tag = EXPORTS_REFRACTIUM_PLUGIN_HOOK_ACTION_FORWARD;
        ret->val.forward = bytes(chunk, a.data, a.len);
        break;
    }
}

void exports_refractium_plugin_hook_method_session_on_data(exports_refractium_plugin_hook_borrow_session_t self,
                                                           exports_refractium_plugin_hook_direction_t direction,
                                                           hook_plugin_list_u8_t *data,
                                                           exports_refractium_plugin_hook_action_t *ret) {
    enum direction d = direction == REFRACTIUM_PLUGIN_TYPES_DIRECTION_CLIENT_TO_SERVER ? CLIENT_TO_SERVER
                                                                                        : SERVER_TO_CLIENT;
    // An empty list's pointer is not from malloc.
    uint8_t *chunk = data->len > 0 ? data->ptr : NULL;
    translate(on_data(self->session, d, chunk, data->len), chunk, ret);
}

void exports_refractium_plugin_hook_method_session_on_end(exports_refractium_plugin_hook_borrow_session_t self,
                                                          exports_refractium_plugin_hook_direction_t direction,
                                                          exports_refractium_plugin_hook_action_t *ret) {
    enum direction d = direction == REFRACTIUM_PLUGIN_TYPES_DIRECTION_CLIENT_TO_SERVER ? CLIENT_TO_SERVER
                                                                                        : SERVER_TO_CLIENT;
    translate(on_end(self->session, d), NULL, ret);
}
