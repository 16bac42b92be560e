"""Hook `{{name}}`: what it does to a connection's bytes, in plain Python.

This module does not import the component's bindings, so `python3 -m
unittest` tests it natively; `hook.py` turns its answers into the plugin's
actions. A route runs it with `hooks: [{{name}}]`.
"""

from dataclasses import dataclass
from typing import Union

NAME = "{{name}}"
VERSION = "0.1.0"

# Which way a chunk travels.
CLIENT_TO_SERVER = "client-to-server"
SERVER_TO_CLIENT = "server-to-client"


@dataclass
class Forward:
    """Write these bytes on towards the other side (b"" holds the chunk back)."""

    data: bytes


@dataclass
class Pass:
    """Write these bytes on, and let the rest of this direction through
    unchanged: the hook is not called for it again, not even at its end."""

    data: bytes


@dataclass
class Respond:
    """Send `data` back to the side the chunk came from, then close."""

    data: bytes
    reason: str


@dataclass
class Close:
    """Close the connection; `reason` goes to the log."""

    reason: str


Action = Union[Forward, Pass, Respond, Close]


class Session:
    """What the hook keeps for one connection."""

    def __init__(self, route: str) -> None:
        self.route = route
        # Bytes the client has sent.
        self.sent = 0

    def on_data(self, direction: str, data: bytes) -> Action:
        """FILL THIS IN. Each chunk from either side comes here: forward it
        (changed or not), hold it (forward less), answer and close
        (`Respond`), close, or `Pass` to let the rest of a direction through
        without the hook. This one counts what the client sends and passes
        the server's bytes."""
        if direction == CLIENT_TO_SERVER:
            self.sent += len(data)
            return Forward(data)
        return Pass(data)

    def on_end(self, direction: str) -> Action:
        """That side has finished sending: a last chance to forward bytes
        held back."""
        return Forward(b"")
