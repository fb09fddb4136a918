"""Optional dependencies: a missing one is one ImportError naming the extra, the table of
extras agrees with pyproject.toml, and each part imports only what its extra brings."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import sys
import tomllib
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pgcache._extras import EXTRAS, require

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "pgcache"

# The module a distribution gives pgcache to import (distribution names as pyproject spells them).
IMPORT_NAME = {
    "pydantic": "pydantic",
    "pydantic-settings": "pydantic_settings",
    "psycopg": "psycopg",
    "httpx": "httpx",
    "stamina": "stamina",
    "prometheus-client": "prometheus_client",
    "redis": "redis",
    "orjson": "orjson",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "rich": "rich",
}
# A requirement's own extras: those that bring a module pgcache imports, and those that only
# bring faster builds of what is there already (psycopg's C build, uvloop and httptools).
EXTRA_IMPORT_NAME = {("psycopg", "pool"): "psycopg_pool"}
SPEED_ONLY = {("psycopg", "binary"), ("uvicorn", "standard")}
# Modules that a distribution above always brings, imported by name (h11: uvicorn's protocol).
COMES_WITH = {"httpcore": "httpx", "pydantic_core": "pydantic", "h11": "uvicorn"}

# The extra each part of the package needs; a module takes the longest prefix that matches.
# Anything not named here is the light install: no third-party import outside TYPE_CHECKING.
PART_EXTRA = {
    "pgcache.__main__": "service",
    "pgcache.config": "config",
    "pgcache.caching.codec": "redis",
    "pgcache.caching.redis_client": "redis",
    "pgcache.caching.redis_tier": "redis",
    "pgcache.postgres": "postgres",
    "pgcache.ml": "ml",
    "pgcache.ml.reference": "service",  # the reference service runs on starlette and uvicorn
    "pgcache.observability": "metrics",
    "pgcache.service": "service",
    "pgcache.cli": "service",
}
# Modules that need more than their extra today; the test fails once the gap is closed.
KNOWN_GAPS: dict[str, str] = {}
# The parts that check their extra when imported.
CHECKED_ON_IMPORT = [
    ("pgcache.config", "config"),
    ("pgcache.ml.reference", "service"),
    ("pgcache.caching.codec", "redis"),
    ("pgcache.caching.redis_client", "redis"),
    ("pgcache.postgres", "postgres"),
    ("pgcache.ml", "ml"),
    ("pgcache.observability", "metrics"),
    ("pgcache.service", "service"),
    ("pgcache.cli", "service"),
]


def _optional_dependencies() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return {extra: [Requirement(text) for text in texts] for extra, texts in extras.items()}


def _import_names(requirements: list[Requirement]) -> set[str]:
    names = set()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        names.add(IMPORT_NAME[name])
        for extra in requirement.extras:
            if (name, extra) in EXTRA_IMPORT_NAME:
                names.add(EXTRA_IMPORT_NAME[name, extra])
            else:
                assert (name, extra) in SPEED_ONLY, f"what does {name}[{extra}] bring?"
    return names


def _pretend_missing(monkeypatch: pytest.MonkeyPatch, *missing: str) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name in missing else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_a_missing_module_is_an_import_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _pretend_missing(monkeypatch, "stamina")
    with pytest.raises(ImportError) as raised:
        require("ml", "pgcache.ml")
    message = str(raised.value)
    assert message.startswith("pgcache.ml needs the optional dependencies of pgcache[ml]")
    assert "(missing: stamina)" in message
    assert message.endswith("install them with: pip install 'pgcache[ml]'")
    assert raised.value.name == "stamina"


def test_every_missing_module_is_named_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_missing(monkeypatch, "uvicorn", "rich", "starlette")
    with pytest.raises(ImportError, match=r"\(missing: starlette, uvicorn, rich\)"):
        require("service", "the pgcache command")


def test_nothing_is_raised_when_the_extra_is_installed() -> None:
    require("ml", "pgcache.ml")  # the test environment has every extra


@pytest.mark.parametrize(("subpackage", "extra"), CHECKED_ON_IMPORT)
def test_importing_a_part_without_its_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, subpackage: str, extra: str
) -> None:
    importlib.import_module(subpackage)  # so that monkeypatch puts it back afterwards
    monkeypatch.delitem(sys.modules, subpackage)
    _pretend_missing(monkeypatch, EXTRAS[extra][-1])
    with pytest.raises(ImportError, match=rf"pip install 'pgcache\[{extra}\]'"):
        importlib.import_module(subpackage)


def test_the_extras_are_those_of_pyproject_toml() -> None:
    assert set(_optional_dependencies()) - {"all"} == set(EXTRAS)


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_an_extra_installs_the_modules_the_table_names(extra: str) -> None:
    assert _import_names(_optional_dependencies()[extra]) == set(EXTRAS[extra])


def test_all_is_every_other_extra_together() -> None:
    extras = _optional_dependencies()
    everything = extras.pop("all")
    by_name = {canonicalize_name(requirement.name): requirement for requirement in everything}
    assert len(by_name) == len(everything), "a distribution named twice in all"
    for extra, requirements in extras.items():
        for requirement in requirements:
            in_all = by_name.get(canonicalize_name(requirement.name))
            assert in_all is not None, f"{requirement} of {extra} is missing from all"
            assert requirement.extras <= in_all.extras, f"{in_all} lacks {requirement}"
            assert requirement.specifier == in_all.specifier, f"{in_all} differs from {requirement}"
    names = {canonicalize_name(r.name) for requirements in extras.values() for r in requirements}
    assert set(by_name) == names


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


@functools.cache
def _imports(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """The modules ``path`` imports when it is loaded, and those it imports at all (in a function
    too); TYPE_CHECKING blocks aside. ``from a import b`` counts as ``a`` and ``a.b``."""
    on_load: set[str] = set()
    anywhere: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, in_function)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        anywhere.update(names)
        if not in_function:
            on_load.update(names)
        inside = in_function or isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(ast.parse(path.read_text(), filename=str(path)), in_function=False)
    return frozenset(on_load), frozenset(anywhere)


def _third_party(names: frozenset[str]) -> set[str]:
    tops = {name.partition(".")[0] for name in names}
    return {COMES_WITH.get(top, top) for top in tops - sys.stdlib_module_names - {"pgcache"}}


def _own(module: str, names: frozenset[str]) -> set[str]:
    """pgcache's modules among ``names``, with the packages loaded on the way to ``module``."""
    found = {name for name in names if name in MODULES}
    parts = module.split(".")
    found.update(".".join(parts[:end]) for end in range(1, len(parts)))
    return found - {module}


def _needed_on_load(module: str, seen: set[str]) -> set[str]:
    """The third-party modules that loading ``module`` loads, through pgcache's own modules."""
    if module in seen:
        return set()
    seen.add(module)
    on_load, _ = _imports(MODULES[module])
    needed = _third_party(on_load)
    for own in _own(module, on_load):
        needed |= _needed_on_load(own, seen)
    return needed


def _needed(module: str) -> set[str]:
    """The third-party modules ``module`` may import: loading it, then calling its functions."""
    _, anywhere = _imports(MODULES[module])
    return _needed_on_load(module, set()) | _third_party(anywhere)


def _extra_of(module: str) -> str | None:
    parts = [part for part in PART_EXTRA if module == part or module.startswith(part + ".")]
    return PART_EXTRA[max(parts, key=len)] if parts else None


def _module_param(module: str) -> object:
    gap = KNOWN_GAPS.get(module)
    marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
    return pytest.param(module, id=module, marks=marks)


@pytest.mark.parametrize("module", [_module_param(module) for module in MODULES])
def test_a_module_needs_only_what_its_extra_installs(module: str) -> None:
    extra = _extra_of(module)
    allowed = set(EXTRAS[extra]) if extra else set()
    beyond = sorted(_needed(module) - allowed)
    where = f"pgcache[{extra}]" if extra else "the light install (no extra)"
    assert not beyond, f"{module} imports {beyond}, which {where} does not install"
