"""How values are written to Redis: data with a type tag, never code.

A value in Redis is ``j:`` + JSON for plain data (``dict`` with ``str`` keys, ``list``, ``str``,
``int``, ``float``, ``bool``, ``None``), or ``m:{Model}:`` + JSON for a registered pydantic
model (by default :class:`pgcache.QueryFeatures` and :class:`pgcache.Prediction`), read back
through the model's own validation. Reading never imports, calls or constructs anything the
bytes name beyond those registered models, so whoever can write to a shared Redis cannot make
an instance run code (unlike pickle: CVE-2021-33026 in flask-caching).

A value that would not come back as it went in (a tuple, a set, a dict with int keys, NaN, a
datetime, any other object) is refused with ``TypeError``; bytes that are not a value written
here are refused with ``ValueError``. The tier counts both and never raises them to a caller.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable
from typing import Any, Final, Protocol, Self

from pgcache._extras import require

require("redis", "the shared Redis tier's value codec (pgcache.caching.codec)")

import orjson  # noqa: E402  -- after require(): a missing extra is named, not a bare error

_PLAIN_TAG: Final = b"j:"
_MODEL_TAG: Final = b"m:"
_MAX_DEPTH: Final = 200
# The models a query-analysis service caches, imported only when their extras are installed.
_DEFAULT_MODELS: Final = (
    ("pgcache.postgres.features", "QueryFeatures"),
    ("pgcache.ml.models", "Prediction"),
)


class JsonModel(Protocol):
    """What the codec needs of a model class (pydantic's ``BaseModel`` has it)."""

    def model_dump_json(self) -> str: ...

    @classmethod
    def model_validate_json(cls, json_data: str | bytes) -> Self: ...


def _check_plain(value: object, depth: int = 0) -> None:
    """Raise TypeError unless ``value`` is JSON data that reads back equal and of the same type."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return
    if depth > _MAX_DEPTH:
        raise TypeError(f"nested deeper than {_MAX_DEPTH} levels")
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]  # kind is float
            raise TypeError(f"{value!r} has no JSON form")
        return
    if kind is list:
        for item in value:  # type: ignore[attr-defined]  # kind is list
            _check_plain(item, depth + 1)
        return
    if kind is dict:
        for name, item in value.items():  # type: ignore[attr-defined]  # kind is dict
            if type(name) is not str:
                raise TypeError(f"a dict key {name!r} of type {type(name).__name__} (not str)")
            _check_plain(item, depth + 1)
        return
    raise TypeError(f"a {kind.__name__} would not read back as one")


class ValueCodec:
    """Encodes values to bytes for Redis and decodes them back, with a type tag; never pickle.

    >>> codec = ValueCodec()
    >>> codec.encode({"Plan": {"Node Type": "Seq Scan"}})
    b'j:{"Plan":{"Node Type":"Seq Scan"}}'
    >>> codec.decode(b'j:[1,2.5,null]')
    [1, 2.5, None]

    ``models`` are the pydantic model classes stored with their name as tag (two with one name
    raise ``ValueError``). :meth:`encode` raises ``TypeError`` for a value that has no faithful
    form; :meth:`decode` raises ``ValueError`` for bytes it did not write.
    """

    __slots__ = ("_by_tag", "_by_type")

    def __init__(self, models: Iterable[type[JsonModel]] = ()) -> None:
        self._by_type: dict[type, bytes] = {}
        self._by_tag: dict[bytes, type[JsonModel]] = {}
        for model in models:
            if not isinstance(model, type) or not callable(
                getattr(model, "model_validate_json", None)
            ):
                raise TypeError(f"models: {model!r} is not a pydantic model class")
            tag = _MODEL_TAG + model.__name__.encode() + b":"
            if tag in self._by_tag and self._by_tag[tag] is not model:
                raise ValueError(f"models: two models are called {model.__name__!r}")
            self._by_type[model] = tag
            self._by_tag[tag] = model

    @classmethod
    def default(cls) -> ValueCodec:
        """A codec for plain data and the pydantic models of pgcache whose extras are installed."""
        models: list[type[JsonModel]] = []
        for module, name in _DEFAULT_MODELS:
            try:
                models.append(getattr(importlib.import_module(module), name))
            except ImportError:
                continue
        return cls(models)

    @property
    def models(self) -> tuple[type[JsonModel], ...]:
        """The registered model classes."""
        return tuple(self._by_tag.values())

    def __repr__(self) -> str:
        return f"<ValueCodec models={[model.__name__ for model in self.models]}>"

    def encode(self, value: object) -> bytes:
        """The bytes of ``value``; ``TypeError`` when it would not read back as it is."""
        tag = self._by_type.get(type(value))
        if tag is not None:
            text: str = value.model_dump_json()  # type: ignore[attr-defined]  # a registered model
            return tag + text.encode()
        try:
            _check_plain(value)
            return _PLAIN_TAG + orjson.dumps(value)
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError (e.g. int > 64 bits)
            raise TypeError(
                f"a value of type {type(value).__name__} cannot go to Redis: {exc}"
            ) from None

    def decode(self, raw: bytes) -> Any:
        """The value ``raw`` holds; ``ValueError`` for bytes that are not a value written here."""
        try:
            if raw.startswith(_PLAIN_TAG):
                return orjson.loads(raw[len(_PLAIN_TAG) :])
            if raw.startswith(_MODEL_TAG):
                end = raw.find(b":", len(_MODEL_TAG)) + 1
                model = self._by_tag.get(raw[:end]) if end else None
                if model is not None:
                    return model.model_validate_json(raw[end:])
        except ValueError as exc:  # orjson.JSONDecodeError and pydantic's ValidationError
            raise ValueError(f"unreadable {raw[:20]!r}... ({type(exc).__name__})") from None
        raise ValueError(f"{raw[:20]!r}... is not a value written by pgcache (unknown tag)")
