// The detector's logic, natively: `make test`.

#include <stdio.h>
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

static struct verdict run(const char *bytes, size_t len) {
    return detect((const uint8_t *)bytes, len);
}

int main(void) {
    static const char hello[] = "{{NAME}} hello\r\n";
    struct verdict v = run(hello, sizeof hello - 1);
    check(v.kind == MATCHED && v.protocol != NULL && strcmp(v.protocol, PLUGIN_NAME) == 0,
          "its first bytes match");

    // Every shorter start of the greeting is waited for.
    static const char greeting[] = "{{NAME}} ";
    for (size_t n = 0; n < sizeof greeting - 1; n++) {
        check(run(greeting, n).kind == NEED_MORE, "a start of the greeting is waited for");
    }

    // Other protocols' first bytes do not match.
    static const char *const others[] = {
        "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "SSH-2.0-OpenSSH_9.6\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        check(run(others[i], strlen(others[i])).kind == NO_MATCH, others[i]);
    }

    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
