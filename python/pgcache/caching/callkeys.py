"""The default cache key of a call to a function cached by :func:`pgcache.cached`.

:func:`make_key` builds it from the arguments: unhashable lists, dicts, sets and bytearrays
are converted to a canonical hashable form (dicts and sets regardless of order; a list stays
apart from a tuple with the same items), keyword arguments regardless of their order, and
``typed=True`` keeps ``f(1)`` and ``f(1.0)`` apart as :func:`functools.lru_cache` does. What it
deliberately does not do: bind arguments to the signature (``f(1)`` and ``f(x=1)`` are two
keys, as with ``lru_cache``; binding would cost microseconds on every hit).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final


class _Marker:
    """A private tag inside keys; compares by identity, so no user value can equal it."""

    __slots__ = ("_label",)

    def __init__(self, label: str) -> None:
        self._label = label

    def __repr__(self) -> str:
        return self._label


_LIST: Final = _Marker("<list>")
_DICT: Final = _Marker("<dict>")
KWARGS: Final = _Marker("<kwargs>")
"""Separates positional from keyword arguments in a key; the native key builder uses it too."""


class FunctionTag:
    """Leads every default key of one decorated function: keeps functions sharing a cache apart."""

    __slots__ = ("name",)

    def __init__(self, func: Callable[..., object]) -> None:
        self.name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}"

    def __repr__(self) -> str:
        return f"<{self.name}>"


# Immutable types whose values are their own canonical form (their hash never fails).
_SCALARS: Final = frozenset({int, float, str, bytes, bool, complex, type(None)})


class _UnhashableArgumentError(TypeError):
    """Raised inside :func:`_freeze`; :func:`make_key` names the argument and re-raises."""

    def __init__(self, value: object) -> None:
        super().__init__(value)
        self.value = value


def _freeze(value: object, typed: bool) -> Hashable:
    """The canonical hashable form of one argument."""
    kind = type(value)
    if kind in _SCALARS:
        return (kind, value) if typed else value
    if isinstance(value, tuple):
        return tuple([_freeze(item, typed) for item in value])
    if isinstance(value, list):
        return (_LIST, tuple([_freeze(item, typed) for item in value]))
    if isinstance(value, dict):
        return _freeze_mapping(value, typed)
    if isinstance(value, (set, frozenset)):  # a tuple: faster than a union in 3.11
        # A set equals the frozenset with the same items, so both share one key.
        return frozenset([_freeze(item, typed) for item in value])
    if isinstance(value, bytearray):
        return _freeze(bytes(value), typed)
    try:
        hash(value)
    except TypeError:
        # Checked only now: an ABC isinstance check is slow, and most arguments are hashable.
        if isinstance(value, Mapping):
            return _freeze_mapping(value, typed)
        raise _UnhashableArgumentError(value) from None
    return (kind, value) if typed else value


def _freeze_mapping(value: Mapping[Any, Any], typed: bool) -> Hashable:
    return (_DICT, frozenset([(_freeze(k, typed), _freeze(v, typed)) for k, v in value.items()]))


def make_key(
    args: tuple[object, ...], kwargs: Mapping[str, object], typed: bool = False
) -> Hashable:
    """The default cache key of one call: a tuple built from its arguments.

    Lists, tuples, dicts, sets and bytearrays (also nested) become hashable; dicts, sets and
    keyword arguments are order-insensitive. ``typed=True`` includes every value's type, so
    ``1``, ``1.0`` and ``True`` give three keys instead of one. An argument that stays
    unhashable raises ``TypeError`` naming it.
    """
    key: tuple[object, ...] = args
    culprit: int | str = 0  # the argument being converted, named if it fails
    try:
        for arg in args:
            if typed or type(arg) not in _SCALARS:
                frozen: list[Hashable] = []
                for item in args:
                    culprit = len(frozen)
                    frozen.append(_freeze(item, typed))
                key = tuple(frozen)
                break
        if kwargs:
            pairs: list[tuple[str, Hashable]] = []
            for culprit, value in kwargs.items():
                pairs.append((culprit, _freeze(value, typed)))
            key = (*key, KWARGS, frozenset(pairs))
    except _UnhashableArgumentError as error:
        where = (
            f"positional argument {culprit}"
            if isinstance(culprit, int)
            else f"keyword argument {culprit!r}"
        )
        raise TypeError(
            f"cannot build a cache key: {where} is {error.value!r} of unhashable type "
            f"{type(error.value).__name__}; make it hashable or pass key= to cached()"
        ) from None
    return key
