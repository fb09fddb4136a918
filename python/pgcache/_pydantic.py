"""What pgcache's pydantic models share beyond pydantic: attribute reads CPython can specialise.

Pydantic's ``BaseModel`` defines ``__getattr__`` (for private attributes and extra fields), so
CPython reads every attribute of every model through its slower hook and never specialises
the read: a cached feature hit's ``features.scenario == scenario`` costs about 490
instructions through the hook, about 150 specialised (callgrind, CPython 3.11). A model with
neither private attributes nor extra fields gains nothing from that ``__getattr__`` (it would
only raise the ``AttributeError`` the plain read raises), so :func:`plain_attribute_reads`
lets its reads be plain ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgcache._core import skip_getattr_hook

if TYPE_CHECKING:  # pydantic comes with the extras that use this module, not with pgcache
    from pydantic import BaseModel


def _pydantic_getattr(model: type) -> object:
    """``pydantic.BaseModel.__getattr__`` as ``model`` inherits it (None if it has none)."""
    for cls in model.__mro__:
        if cls.__module__ == "pydantic.main" and cls.__qualname__ == "BaseModel":
            return vars(cls).get("__getattr__")
    return None


def plain_attribute_reads(model: type[BaseModel]) -> bool:
    """Reads ``model``'s attributes without pydantic's ``__getattr__`` when that changes
    nothing: no private attributes, extra fields not allowed, pydantic's own ``__getattr__``
    and no ``__getattribute__`` of the model's. Returns whether it did (otherwise the model is
    left as it is). Subclasses of ``model`` defined later keep pydantic's hook."""
    pydantic_getattr = _pydantic_getattr(model)
    if (
        pydantic_getattr is None
        or model.__private_attributes__
        or model.model_config.get("extra") == "allow"
        or getattr(model, "__getattr__", None) is not pydantic_getattr
        or model.__getattribute__ is not object.__getattribute__
    ):
        return False
    skip_getattr_hook(model)
    return True
