"""The component: componentize-py builds it from this module. `Hook`
implements the `hook` interface of `wit/plugin.wit`, and its resource
`session` must be a class `Session` in a module named after the
interface: this one, `hook`. The `wit_world` package is generated from
the WIT at build time. You should not need to change this file: the logic
is in `logic.py`.
"""

from wit_world import exports
from wit_world.exports.hook import Action, Action_Close, Action_Forward, Action_Pass, Action_Respond, Response
from wit_world.imports import types

import logic

DIRECTIONS = {
    types.Direction.CLIENT_TO_SERVER: logic.CLIENT_TO_SERVER,
    types.Direction.SERVER_TO_CLIENT: logic.SERVER_TO_CLIENT,
}


class Hook(exports.Hook):
    def init(self, config: str) -> types.PluginInfo:
        # `config` is the YAML's `plugins.config.{{name}}` as JSON, or `null`;
        # raise componentize_py_types.Err("why") to refuse it.
        return types.PluginInfo(name=logic.NAME, version=logic.VERSION)


class Session(exports.hook.Session):
    def __init__(self, peer: types.Peer, detection: types.Detection, route: str) -> None:
        self.logic = logic.Session(route)

    def on_data(self, direction: types.Direction, data: bytes) -> Action:
        return action(self.logic.on_data(DIRECTIONS[direction], bytes(data)))

    def on_end(self, direction: types.Direction) -> Action:
        return action(self.logic.on_end(DIRECTIONS[direction]))


def action(a: logic.Action) -> Action:
    if isinstance(a, logic.Forward):
        return Action_Forward(bytes(a.data))
    if isinstance(a, logic.Pass):
        return Action_Pass(bytes(a.data))
    if isinstance(a, logic.Respond):
        return Action_Respond(Response(data=bytes(a.data), reason=a.reason))
    if isinstance(a, logic.Close):
        return Action_Close(a.reason)
    return Action_Close(f"{logic.NAME}: not an action: {a!r}")
