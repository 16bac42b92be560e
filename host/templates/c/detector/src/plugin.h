// Detector {{name}}: what its logic (plugin.c) and the glue to the
// generated bindings (glue.c) share. Plain C, so that test.c runs natively.
#ifndef PLUGIN_H
#define PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define PLUGIN_NAME "{{name}}"
#define PLUGIN_VERSION "0.1.0"

enum verdict_kind {
    // The bytes are not this protocol, and more bytes will not change that.
    NO_MATCH,
    // Cannot tell yet.
    NEED_MORE,
    // The bytes are this protocol.
    MATCHED,
};

// A detector's answer for the bytes seen so far.
struct verdict {
    enum verdict_kind kind;
    // NEED_MORE: the total number of bytes wanted, 0 if unknown.
    uint32_t need;
    // MATCHED: the protocol routes match on (`match: { protocol: ... }`).
    const char *protocol;
    // MATCHED: the TLS server name, or NULL.
    const char *sni;
};

// Looks at every byte the client has sent so far (in plugin.c).
struct verdict detect(const uint8_t *data, size_t len);

#endif
