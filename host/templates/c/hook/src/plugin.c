// Hook `{{name}}`: a route runs it with `hooks: [{{name}}]`.

#include <stdlib.h>

#include "plugin.h"

// What the hook keeps for one connection.
struct session {
    // Bytes the client has sent.
    uint64_t sent;
};

struct session *session_open(void) {
    return calloc(1, sizeof(struct session));
}

void session_close(struct session *session) {
    free(session);
}

// FILL THIS IN. Each chunk from either side comes here: forward it
// (changed in place or not), hold it back (forward less), answer and close
// (RESPOND), CLOSE, or PASS to let the rest of a direction through without
// the hook. This one counts what the client sends and passes the server's
// bytes.
struct action on_data(struct session *session, enum direction direction, uint8_t *data, size_t len) {
    if (direction == SERVER_TO_CLIENT) {
        return (struct action){.kind = PASS, .data = data, .len = len};
    }
    session->sent += len;
    return (struct action){.kind = FORWARD, .data = data, .len = len};
}

// A side has finished sending: a last chance to forward held bytes.
struct action on_end(struct session *session, enum direction direction) {
    (void)session;
    (void)direction;
    return (struct action){.kind = FORWARD};
}
