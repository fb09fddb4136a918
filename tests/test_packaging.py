"""What a user gets from pip and a developer from make: one version, a licence, no runtime
dependency, dev tools kept out of the published extras, and a Makefile whose .PHONY list,
targets and `make help` agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pgcache

ROOT = Path(__file__).resolve().parent.parent
DEV_GROUPS = {"test", "lint", "bench"}


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _makefile() -> str:
    return (ROOT / "Makefile").read_text()


def _phony() -> set[str]:
    (line,) = re.findall(r"^\.PHONY:(.*)$", _makefile(), re.M)
    return set(line.split())


def _rules() -> list[tuple[str, str, str]]:
    """(target, prerequisites, `## ` help text) of every rule naming a target (not a file, not
    one of make's special targets, not a target-specific variable)."""
    rules = []
    for line in _makefile().splitlines():
        head, _, text = line.partition("## ")
        match = re.fullmatch(r"([A-Za-z][\w-]*):(?!=)([^=]*)", head.rstrip())
        if match:
            rules.append((match[1], match[2].strip(), text.strip()))
    return rules


def _targets() -> dict[str, str]:
    """Every target with its help text."""
    return {name: text for name, _, text in _rules()}


def test_the_version_is_written_once_in_cargo_toml() -> None:
    project = _pyproject()["project"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]


def test_the_package_version_is_the_crate_version() -> None:
    crate = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]
    assert pgcache.__version__ == crate["version"]


def test_pip_install_pgcache_installs_no_other_package() -> None:
    assert _pyproject()["project"].get("dependencies", []) == []


def test_the_licence_is_mit_and_ships_in_the_wheel() -> None:
    project = _pyproject()["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the pgcache developers\n")


def test_the_project_links_to_its_home_source_issues_and_changelog() -> None:
    urls = _pyproject()["project"]["urls"]
    assert set(urls) == {"Homepage", "Source", "Issues", "Changelog"}
    assert all(url.startswith("https://github.com/pgcache/pgcache") for url in urls.values())


def test_dev_tools_are_dependency_groups_not_published_extras() -> None:
    pyproject = _pyproject()
    groups = pyproject["dependency-groups"]
    assert set(groups) == {*DEV_GROUPS, "dev"}
    assert groups["dev"] == [{"include-group": group} for group in ("test", "lint", "bench")]
    assert not ({*DEV_GROUPS, "dev"} & set(pyproject["project"]["optional-dependencies"]))


def test_every_phony_target_exists() -> None:
    assert _phony() <= set(_targets())


def test_every_target_is_phony() -> None:
    assert set(_targets()) <= _phony()


def test_make_help_describes_every_target() -> None:
    undescribed = sorted(name for name, text in _targets().items() if not text.strip())
    assert not undescribed, f"targets without a `## ` description: {undescribed}"


def test_the_readme_commands_are_targets() -> None:
    readme = (ROOT / "README.md").read_text()
    mentioned = set(re.findall(r"(?:`|^)make ([a-z-]+)", readme, re.M))
    assert mentioned
    assert mentioned <= set(_targets())


def test_make_test_and_make_demo_install_system_packages_before_anything_else() -> None:
    prerequisites = {name: needs.split() for name, needs, _ in _rules()}
    assert prerequisites["test"][0] == "system-deps"
    assert prerequisites["demo"][0] == "system-deps"
    assert re.search(r"^\.NOTPARALLEL:", _makefile(), re.M)
