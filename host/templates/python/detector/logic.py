"""Detector `{{name}}`: what it looks for, in plain Python.

This module does not import the component's bindings, so `python3 -m
unittest` tests it natively; `detector.py` turns its answers into the
plugin's verdicts. Routes match it with `match: { protocol: {{name}} }`.
"""

from dataclasses import dataclass, field
from typing import Optional, Union

NAME = "{{name}}"
VERSION = "0.1.0"


@dataclass
class Matched:
    """The bytes are this protocol. Routes can match `sni`, `alpn` and the
    attributes (e.g. `{"host": "example.com"}`)."""

    sni: Optional[str] = None
    alpn: list = field(default_factory=list)
    attributes: dict = field(default_factory=dict)


@dataclass
class NeedMore:
    """Cannot tell yet: `total` bytes wanted in all, 0 if unknown."""

    total: int = 0


@dataclass
class NoMatch:
    """The bytes are not this protocol, and more bytes will not change that."""


GREETING = b"{{NAME}} "


def detect(data: bytes) -> Union[Matched, NeedMore, NoMatch]:
    """FILL THIS IN. `data` is every byte the client sent so far, from the
    first. Answer `NeedMore()` while the bytes could still become your
    protocol, `NoMatch()` as soon as they cannot. This one matches clients
    that start with `{{NAME}} `."""
    n = min(len(data), len(GREETING))
    if data[:n] != GREETING[:n]:
        return NoMatch()
    if n < len(GREETING):
        return NeedMore(len(GREETING))
    return Matched()
