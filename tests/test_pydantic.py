"""plain_attribute_reads: a model's attribute reads without pydantic's ``__getattr__``, only
where that changes nothing; and the native ``skip_getattr_hook`` underneath."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, PrivateAttr
from tests.support.factories import make_features
from tests.support.profiling import python_calls

from pgcache._core import skip_getattr_hook
from pgcache._pydantic import plain_attribute_reads
from pgcache.ml.models import Prediction


def pydantic_getattr_calls() -> AbstractContextManager[list[str]]:
    """The calls of ``BaseModel.__getattr__`` inside the block (instances' misses)."""
    return python_calls(lambda code: code.co_qualname == "BaseModel.__getattr__")


def missing_attribute_error(obj: object) -> str:
    with pytest.raises(AttributeError) as info:
        obj.no_such_field  # type: ignore[attr-defined]  # noqa: B018
    return str(info.value)


def plain_model() -> type[BaseModel]:
    class Plain(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        name: str

    return Plain


def test_a_plain_model_reads_a_missing_attribute_without_pydantic_getattr() -> None:
    model = plain_model()
    assert plain_attribute_reads(model)
    with pydantic_getattr_calls() as called:
        message = missing_attribute_error(model(name="a"))
    assert called == []
    assert message == "'Plain' object has no attribute 'no_such_field'"


def test_a_model_left_alone_still_runs_pydantic_getattr() -> None:
    model = plain_model()
    with pydantic_getattr_calls() as called:
        message = missing_attribute_error(model(name="a"))
    assert called == ["BaseModel.__getattr__"]
    assert message == "'Plain' object has no attribute 'no_such_field'"


def test_fields_and_methods_read_the_same_after_the_change() -> None:
    model = plain_model()
    plain_attribute_reads(model)
    item = model(name="a")
    assert (item.name, item.model_dump(), item.model_copy(update={"name": "b"}).name) == (
        "a",
        {"name": "a"},
        "b",
    )


def test_a_model_with_private_attributes_keeps_them_readable() -> None:
    class WithPrivate(BaseModel):
        name: str
        _secret: int = PrivateAttr(default=7)

    assert not plain_attribute_reads(WithPrivate)
    assert WithPrivate(name="a")._secret == 7


def test_a_model_that_allows_extra_fields_keeps_them_readable() -> None:
    class WithExtra(BaseModel):
        model_config = ConfigDict(extra="allow")
        name: str

    assert not plain_attribute_reads(WithExtra)
    assert WithExtra(name="a", colour="red").colour == "red"  # type: ignore[attr-defined]


def test_a_model_with_a_getattr_of_its_own_is_left_alone() -> None:
    class Answering(BaseModel):
        name: str

        def __getattr__(self, item: str) -> str:
            return f"computed {item}"

    assert not plain_attribute_reads(Answering)
    assert Answering(name="a").anything == "computed anything"


def test_assigning_a_getattr_later_brings_the_hook_back() -> None:
    model = plain_model()
    plain_attribute_reads(model)
    model.__getattr__ = lambda self, item: f"late {item}"  # type: ignore[attr-defined]
    assert model(name="a").anything == "late anything"  # type: ignore[attr-defined]


def test_a_subclass_defined_later_keeps_pydantic_getattr() -> None:
    model = plain_model()
    plain_attribute_reads(model)

    class Sub(model):  # type: ignore[valid-type, misc]
        _secret: int = PrivateAttr(default=3)

    assert Sub(name="a")._secret == 3


@pytest.mark.parametrize(
    "instance",
    [make_features(1), Prediction(predicted_execution_time_ms=1, confidence=1,
     range_min_ms=0, range_max_ms=2, model_version="v", timestamp="2026-01-01T00:00:00Z")],
    ids=["QueryFeatures", "Prediction"],
)  # fmt: skip
def test_the_cached_models_read_without_pydantic_getattr(instance: BaseModel) -> None:
    with pydantic_getattr_calls() as called:
        missing_attribute_error(instance)
    assert called == []


class OwnGetattribute:
    def __getattribute__(self, name: str) -> Any:
        return object.__getattribute__(self, name)


@pytest.mark.parametrize("cls", [int, OwnGetattribute], ids=["static type", "own getattribute"])
def test_skip_getattr_hook_refuses_a_static_type_or_an_own_getattribute(cls: type) -> None:
    with pytest.raises(TypeError, match=r"cls=.*expected a class defined in Python"):
        skip_getattr_hook(cls)
