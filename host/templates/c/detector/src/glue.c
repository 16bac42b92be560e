// Glue between the bindings `wit-bindgen c` generates from wit/ (in
// build/gen/) and plugin.c; nothing to change here to write a detector.
//
// The bindings' rules: arguments are ours to free, and what we return is
// freed with `free` once the host has copied it, so returned strings are
// copies.

#include <stdlib.h>
#include <string.h>

#include "detector_plugin.h"
#include "plugin.h"

// `config` is this plugin's section of the YAML config as JSON, or `null`.
bool exports_refractium_plugin_detector_init(detector_plugin_string_t *config,
                                             exports_refractium_plugin_detector_plugin_info_t *ret,
                                             detector_plugin_string_t *err) {
    (void)err;
    detector_plugin_string_free(config);
    detector_plugin_string_dup(&ret->name, PLUGIN_NAME);
    detector_plugin_string_dup(&ret->version, PLUGIN_VERSION);
    return true;
}

void exports_refractium_plugin_detector_detect(detector_plugin_list_u8_t *data,
                                               exports_refractium_plugin_detector_peer_t *peer,
                                               exports_refractium_plugin_detector_verdict_t *ret) {
    struct verdict v = detect(data->ptr, data->len);
    detector_plugin_list_u8_free(data);
    exports_refractium_plugin_detector_peer_free(peer);
    switch (v.kind) {
    case MATCHED: {
        ret->tag = REFRACTIUM_PLUGIN_TYPES_VERDICT_MATCHED;
        refractium_plugin_types_detection_t *found = &ret->val.matched;
        memset(found, 0, sizeof *found);  // no ALPN, no attributes
        detector_plugin_string_dup(&found->protocol, v.protocol != NULL ? v.protocol : PLUGIN_NAME);
        if (v.sni != NULL) {
            found->sni.is_some = true;
            detector_plugin_string_dup(&found->sni.val, v.sni);
        }
        break;
    }
    case NEED_MORE:
        ret->tag = REFRACTIUM_PLUGIN_TYPES_VERDICT_NEED_MORE;
        ret->val.need_more = v.need;
        break;
    default:
        ret->tag = REFRACTIUM_PLUGIN_TYPES_VERDICT_NO_MATCH;
        break;
    }
}
