"""The native call path of @cached (pgcache._core.CachedCall): keys it builds are exactly those
of the Python key builder, and a hit with plain arguments runs no Python code."""

from __future__ import annotations

import enum
import inspect
import os
import sys
from contextlib import AbstractContextManager

import pytest
from hypothesis import given, settings, strategies as st
from tests.support.profiling import python_calls

import pgcache
from pgcache import Cache, CachedFunction, cached
from pgcache._core import CachedCall, CallCounter


class Level(enum.IntEnum):
    LOW = 1


class Label(str):
    __slots__ = ()


# Arguments of every kind the key builder knows: the native builder takes the plain ones (exact
# scalars and tuples of them), the Python builder the rest; both must give one key.
_plain_scalars = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.booleans()
    | st.none()
    | st.complex_numbers(allow_nan=False, allow_infinity=False, max_magnitude=1e6)
)
_other_scalars = st.sampled_from([Level.LOW, Label("low"), frozenset({1, 2})])
_arguments = st.recursive(
    _plain_scalars | _other_scalars,
    lambda children: (
        st.lists(children, max_size=3).map(tuple)
        | st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=3), children, max_size=3)
        | st.lists(_plain_scalars, max_size=3).map(set)
        | st.binary(max_size=4).map(bytearray)
    ),
    max_leaves=8,
)
_plain_arguments = st.recursive(
    _plain_scalars, lambda children: st.lists(children, max_size=3).map(tuple), max_leaves=8
)
_names = st.text(alphabet="abcxyz_", min_size=1, max_size=4)


def _same_shape(a: object, b: object) -> bool:
    """Equal, and of the same types all the way down (an equal key of other types is not
    "exactly the key the Python builder builds")."""
    if type(a) is not type(b) or a != b:
        return False
    if isinstance(a, tuple) and isinstance(b, tuple):
        return all(_same_shape(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, frozenset) and isinstance(b, frozenset):
        return all(any(_same_shape(x, y) for y in b) for x in a)
    return True


def _recording(typed: bool) -> tuple[CachedFunction[..., int], list[object]]:
    loads: list[object] = []

    def load(*args: object, **kwargs: object) -> int:
        loads.append((args, kwargs))
        return len(loads)

    return cached(Cache(max_size=100), typed=typed)(load), loads


@settings(max_examples=300, deadline=None)
@given(
    args=st.lists(_arguments, max_size=3),
    kwargs=st.dictionaries(_names, _arguments, max_size=3),
    typed=st.booleans(),
)
def test_a_call_is_stored_under_exactly_the_key_the_python_builder_builds(
    args: list[object], kwargs: dict[str, object], typed: bool
) -> None:
    function, loads = _recording(typed)
    result = function(*args, **kwargs)
    assert loads == [(tuple(args), kwargs)]  # called with its arguments, not its key
    [stored] = function.cache.keys()
    expected = function.cache_key(*args, **kwargs)  # built by callkeys.make_key
    assert _same_shape(stored, expected)
    assert hash(stored) == hash(expected)
    reordered = dict(reversed(list(kwargs.items())))
    assert function(*args, **reordered) == result  # a hit, whatever the keyword order
    assert len(loads) == 1
    assert function.invalidate(*args, **kwargs)  # found through the Python-built key


@settings(max_examples=200, deadline=None)
@given(args=st.lists(_plain_arguments, max_size=4), typed=st.booleans())
def test_plain_arguments_give_keys_of_their_own_types_typed_or_not(
    args: list[object], typed: bool
) -> None:
    function, _ = _recording(typed)
    function(*args)
    assert _same_shape(function.cache.keys()[0], function.cache_key(*args))


def _python_calls() -> AbstractContextManager[list[str]]:
    """The names of pgcache's Python functions called inside the block."""
    package = os.path.dirname(pgcache.__file__)
    return python_calls(lambda code: code.co_filename.startswith(package))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("q", 1, 2.5, b"x", None, True), {}),
        (((1, ("a", None)),), {}),
        (("q",), {"limit": 10, "sort": ("a", 1)}),
    ],
)
def test_a_hit_with_plain_arguments_runs_no_python_code(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    function, loads = _recording(typed=False)
    function(*args, **kwargs)
    with _python_calls() as called:
        function(*args, **kwargs)
    assert called == []
    assert len(loads) == 1


def test_other_arguments_take_the_python_path_with_the_same_results() -> None:
    function, loads = _recording(typed=False)
    with _python_calls() as called:
        assert function([1, 2], Level.LOW) == function([1, 2], Level.LOW) == 1
    assert "CachedFunction._call" in called
    assert "make_key" in called
    assert len(loads) == 1


def test_equal_arguments_of_other_types_share_one_entry_as_in_a_dict() -> None:
    function, loads = _recording(typed=False)
    assert function(1, (1, "x")) == function(1.0, (True, "x")) == 1
    assert function(Level.LOW, (1, "x")) == 1  # the Python path finds the native entry
    assert len(loads) == 1
    typed_function, typed_loads = _recording(typed=True)
    assert [typed_function(1), typed_function(1.0), typed_function(True)] == [1, 2, 3]
    assert len(typed_loads) == 3


async def test_an_async_hit_is_a_finished_coroutine_with_the_value() -> None:
    loads: list[str] = []

    @cached(Cache(max_size=10))
    async def load(key: str) -> str:
        loads.append(key)
        return key.upper()

    assert await load("a") == "A"
    with _python_calls() as called:
        hit = load("a")
        assert inspect.iscoroutine(hit)
        value = await hit
    assert called == ["_ready"]  # the finished coroutine; no key building, no lookup
    assert (value, loads) == ("A", ["a"])


async def test_a_coroutine_awaited_after_another_stored_the_key_does_not_load_again() -> None:
    loads: list[str] = []

    @cached(Cache(max_size=10))
    async def load(key: str) -> str:
        loads.append(key)
        return key.upper()

    first, second = load("a"), load("a")  # both looked before either ran: two misses
    assert (await first, await second) == ("A", "A")
    assert loads == ["a"]
    assert load.cache_info().hits == 1


def test_calls_are_counted_natively_on_every_path() -> None:
    function, _ = _recording(typed=False)
    function(1)
    function(1)
    function([1])
    info = function.cache_info()
    assert (info.hits, info.misses) == (1, 2)


def test_a_call_object_used_before_it_is_configured_says_so() -> None:
    bare = CachedCall()
    with pytest.raises(RuntimeError, match="not configured"):
        bare(1)


def test_a_call_object_is_configured_only_once() -> None:
    function, _ = _recording(typed=False)
    with pytest.raises(RuntimeError, match="already configured"):
        function._configure(
            cache=Cache(),
            tag=object(),
            ttl=None,
            typed=False,
            native_keys=True,
            calls=CallCounter(),
            unstored=ValueError,
            ready=None,
            kwargs_marker=object(),
        )
    assert function(1) == 1  # still the first configuration


def test_a_counter_starts_at_zero() -> None:
    assert CallCounter().value == 0


@pytest.mark.parametrize("typed", [False, True])
def test_a_hit_keeps_no_reference_to_its_arguments(typed: bool) -> None:
    function, _ = _recording(typed)
    stored, asked = "".join(["arg", "ument"]), "".join(["argu", "ment"])  # equal, not identical
    function(stored)
    before = sys.getrefcount(asked)
    assert function(asked) == function(asked) == 1
    assert sys.getrefcount(asked) == before


def test_a_subclass_with_a_call_of_its_own_is_called_through_it() -> None:
    class Counted(CachedFunction[..., int]):
        def __call__(self, *args: object, **kwargs: object) -> int:
            return -1

    function = Counted(lambda key: 1, cached(Cache()).options, Cache())
    assert function("a") == function("a") == -1
