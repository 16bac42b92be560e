"""Detector `py-hello`: matches clients whose first bytes are `HELO-PY `.

componentize-py makes this module the component: the class `Detector`
implements the `detector` interface of wit/plugin.wit (the `wit_world`
package is generated from the WIT at build time).
"""

from wit_world import exports
from wit_world.imports import types

GREETING = b"HELO-PY "


class Detector(exports.Detector):
    def init(self, config: str) -> types.PluginInfo:
        return types.PluginInfo(name="py-hello", version="0.1.0")

    def detect(self, data: bytes, peer: types.Peer) -> types.Verdict:
        # Compare what has come so far with the start of the greeting: a
        # prefix of it may still become a match.
        n = min(len(data), len(GREETING))
        if data[:n] != GREETING[:n]:
            return types.Verdict_NoMatch()
        if n < len(GREETING):
            return types.Verdict_NeedMore(len(GREETING))
        return types.Verdict_Matched(types.Detection(protocol="py-hello", sni=None, alpn=[], attributes=[]))
