"""Which Python functions run inside a block: tests that prove a path runs no Python code
(the native @cached hit) or skips a hook (pydantic's ``__getattr__``) record the calls."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import CodeType, FrameType


@contextmanager
def python_calls(counted: Callable[[CodeType], bool]) -> Iterator[list[str]]:
    """The qualified names (``co_qualname``) of the Python functions called in the block
    whose code object ``counted`` accepts, in call order."""
    names: list[str] = []

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and counted(frame.f_code):
            names.append(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        yield names
    finally:
        sys.setprofile(None)
