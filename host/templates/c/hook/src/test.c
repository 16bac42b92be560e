// The hook's logic, natively: `make test`.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

static int passed, failed;

static void check(int ok, const char *what) {
    if (ok) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "FAILED: %s\n", what);
    }
}

#define OUT_MAX 4096

// Appends an action's bytes to `out`, which holds `*got` of OUT_MAX.
static void append(char *out, size_t *got, const void *data, size_t len) {
    if (*got + len > OUT_MAX) {
        check(0, "the hook's output fits in the test's buffer");
        return;
    }
    if (len > 0) memcpy(out + *got, data, len);
    *got += len;
}

// What the other side gets from a session fed `stream` in two chunks cut
// at `cut`, then the end of the side, as the proxy runs it; the last
// action's kind goes to `last`.
static size_t run(enum direction direction, const char *stream, size_t len, size_t cut, char *out,
                  enum action_kind *last) {
    struct session *session = session_open();
    size_t got = 0;
    int passed_on = 0;
    const size_t from[2] = {0, cut}, to[2] = {cut, len};
    for (int i = 0; i < 2 && !passed_on; i++) {
        size_t n = to[i] - from[i];
        uint8_t *chunk = malloc(n > 0 ? n : 1);  // the proxy's copy, which on_data may change
        memcpy(chunk, stream + from[i], n);
        struct action a = on_data(session, direction, chunk, n);
        append(out, &got, a.data, a.len);
        free(chunk);
        *last = a.kind;
        if (a.kind == PASS) {
            // The rest of the side goes through as it is.
            passed_on = 1;
            append(out, &got, stream + to[i], len - to[i]);
        } else if (a.kind != FORWARD) {
            break;
        }
    }
    if (!passed_on && (*last == FORWARD)) {
        struct action a = on_end(session, direction);
        append(out, &got, a.data, a.len);
    }
    session_close(session);
    return got;
}

int main(void) {
    static const char stream[] = "hello, server\r\n";
    const size_t len = sizeof stream - 1;
    char out[OUT_MAX];
    enum action_kind last;

    // The client's stream goes through unchanged however it is split.
    for (size_t cut = 0; cut <= len; cut++) {
        size_t got = run(CLIENT_TO_SERVER, stream, len, cut, out, &last);
        check(got == len && memcmp(out, stream, len) == 0, "the client's bytes go through unchanged");
    }

    // The server's bytes are passed at their first chunk.
    size_t got = run(SERVER_TO_CLIENT, stream, len, 5, out, &last);
    check(last == PASS && got == len && memcmp(out, stream, len) == 0, "the server's bytes are passed");

    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
