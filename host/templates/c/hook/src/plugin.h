// Hook {{name}}: what its logic (plugin.c) and the glue to the generated
// bindings (glue.c) share. Plain C, so that test.c runs natively.
#ifndef PLUGIN_H
#define PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define PLUGIN_NAME "{{name}}"
#define PLUGIN_VERSION "0.1.0"

// Which way a chunk travels.
enum direction { CLIENT_TO_SERVER, SERVER_TO_CLIENT };

enum action_kind {
    // Write `data` on towards the other side; none holds the chunk back
    // (forward what was held with a later chunk or at the end).
    FORWARD,
    // Send `data` back to the side the chunk came from, then close.
    RESPOND,
    // Close the connection.
    CLOSE,
    // Write `data` on, and let the rest of this direction through
    // unchanged: the hook is not called for this direction again.
    PASS,
};

// What to do with a chunk (or at the end of a side).
struct action {
    enum action_kind kind;
    // The bytes of FORWARD, PASS and RESPOND: the chunk itself (changed in
    // place, or a shorter `len`), handed on without a copy, or any other
    // bytes (a string constant, the session's buffer), which are copied.
    const uint8_t *data;
    size_t len;
    // RESPOND and CLOSE: why, for the proxy's log.
    const char *reason;
};

// What the hook keeps for one connection (defined in plugin.c).
struct session;

// The hook's functions (in plugin.c). A session is opened per connection
// on a route that lists the hook, and closed when the connection ends;
// `on_data` gets every chunk from either side, which it may change in
// place; `on_end` is called once a side has finished sending.
struct session *session_open(void);
void session_close(struct session *session);
struct action on_data(struct session *session, enum direction direction, uint8_t *data, size_t len);
struct action on_end(struct session *session, enum direction direction);

#endif
