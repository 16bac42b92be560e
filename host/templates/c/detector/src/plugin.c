// Detector `{{name}}`: routes match it with `match: { protocol: {{name}} }`.

#include <string.h>

#include "plugin.h"

// FILL THIS IN. `data` is every byte the client sent so far, from the
// first (it grows between calls, it never slides). Answer NEED_MORE while
// the bytes could still become your protocol, NO_MATCH as soon as they
// cannot. This one matches clients that start with `{{NAME}} `.
struct verdict detect(const uint8_t *data, size_t len) {
    static const char greeting[] = "{{NAME}} ";
    const size_t want = sizeof greeting - 1;
    const size_t n = len < want ? len : want;
    if (n > 0 && memcmp(data, greeting, n) != 0) {
        return (struct verdict){.kind = NO_MATCH};
    }
    if (n < want) {
        return (struct verdict){.kind = NEED_MORE, .need = 0};
    }
    return (struct verdict){.kind = MATCHED, .protocol = PLUGIN_NAME};
}
