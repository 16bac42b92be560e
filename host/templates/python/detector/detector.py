"""The component: componentize-py builds it from this module, whose class
`Detector` implements the `detector` interface of `wit/plugin.wit`. The
`wit_world` package is generated from the WIT at build time. You should
not need to change this file: the logic is in `logic.py`.
"""

from wit_world import exports
from wit_world.imports import types

import logic


class Detector(exports.Detector):
    def init(self, config: str) -> types.PluginInfo:
        # `config` is the YAML's `plugins.config.{{name}}` as JSON, or `null`;
        # raise componentize_py_types.Err("why") to refuse it.
        return types.PluginInfo(name=logic.NAME, version=logic.VERSION)

    def detect(self, data: bytes, peer: types.Peer) -> types.Verdict:
        found = logic.detect(bytes(data))
        if isinstance(found, logic.Matched):
            attributes = [(str(k), str(v)) for k, v in found.attributes.items()]
            detection = types.Detection(protocol=logic.NAME, sni=found.sni, alpn=list(found.alpn), attributes=attributes)
            return types.Verdict_Matched(detection)
        if isinstance(found, logic.NeedMore):
            return types.Verdict_NeedMore(found.total)
        return types.Verdict_NoMatch()
