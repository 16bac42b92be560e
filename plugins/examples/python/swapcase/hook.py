"""Hook `py-swapcase`: swaps the case of the ASCII letters a client sends
and passes the server's bytes at their first chunk.

componentize-py makes this module the component: `Hook` implements the
`hook` interface of wit/plugin.wit, and its resource `session` must be a
class `Session` in a module named after the interface, `hook` (this one).
"""

from wit_world import exports
from wit_world.exports.hook import Action, Action_Forward, Action_Pass
from wit_world.imports import types


class Hook(exports.Hook):
    def init(self, config: str) -> types.PluginInfo:
        return types.PluginInfo(name="py-swapcase", version="0.1.0")


class Session(exports.hook.Session):
    """One per connection; this hook keeps nothing between chunks."""

    def __init__(self, peer: types.Peer, detection: types.Detection, route: str) -> None:
        pass

    def on_data(self, direction: types.Direction, data: bytes) -> Action:
        if direction == types.Direction.SERVER_TO_CLIENT:
            return Action_Pass(data)
        # Byte by byte, so how the stream is split does not matter.
        return Action_Forward(bytes(data).swapcase())

    def on_end(self, direction: types.Direction) -> Action:
        return Action_Forward(b"")
