"""The pin files against pyproject.toml and against the environment running the suite."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_pins() -> ModuleType:
    """requirements/pins.py, a script rather than a package module, loaded from its path."""
    spec = importlib.util.spec_from_file_location("relay_pins", ROOT / "requirements" / "pins.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


pins = _load_pins()


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version (`6.0.12.20260510`, `1.4.1.post1` → its leading numbers)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    assert match is not None, f"{version!r} has no numeric release"
    return tuple(int(part) for part in match[0].split("."))


def test_oldest_pins_are_the_declared_lower_bounds():
    """requirements/oldest.txt is what `make constraints` writes from pyproject.toml today."""
    written = pins.OLDEST.read_text(encoding="utf-8")
    assert written == pins.oldest_text(pins.declared()), "run `make constraints` after editing pyproject.toml"


def test_lock_pins_every_declared_dependency_within_its_bound():
    """The lock names every runtime, dev and build requirement (and pip) at a version its bound allows."""
    locked = pins.pinned(pins.LOCK.read_text(encoding="utf-8"))
    for tool in pins.TOOLS:
        assert tool in locked, f"the lock does not pin {tool}"
    for entry in pins.declared():
        assert entry.key in locked, f"the lock does not pin {entry.name}"
        assert release(locked[entry.key]) >= release(entry.bound), (
            f"the lock pins {entry.name}=={locked[entry.key]}, below the declared >={entry.bound}"
        )


@pytest.mark.parametrize("requirement", ["aiohttp", "aiohttp<4", "aiohttp==3.13.0", "aiohttp>=3.13,<4"])
def test_a_dependency_without_a_plain_lower_bound_is_refused(tmp_path, requirement):
    """The oldest run needs one real version per dependency: anything but `name>=X` is named and refused."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[build-system]\nrequires = []\n"
        f'[project]\ndependencies = ["{requirement}"]\n[project.optional-dependencies]\ndev = []\n',
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="is not of the form 'name>=version") as raised:
        pins.declared(pyproject)
    assert repr(requirement) in str(raised.value)


def test_conflicting_lower_bounds_are_refused(tmp_path):
    """One name declared twice (runtime and build, say) with two bounds cannot give one oldest version."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[build-system]\nrequires = ["Cython>=3.0.11"]\n'
        '[project]\ndependencies = []\n[project.optional-dependencies]\ndev = ["cython>=3.1.0"]\n',
        encoding="utf-8",
    )
    with pytest.raises(
        ValueError, match=r"declared twice with different lower bounds \(3\.1\.0 and 3\.0\.11\)"
    ):
        pins.declared(pyproject)


@pytest.mark.parametrize(
    ("line", "problem"),
    [("aiohttp>=3.13.0", "not an exact pin"), ("aiohttp", "not an exact pin")],
)
def test_a_constraints_line_that_is_not_an_exact_pin_is_refused(line, problem):
    """Pin files hold `name==version` lines only, so that they say exactly what is installed."""
    with pytest.raises(ValueError, match=problem):
        pins.pinned(f"# header\n{line}\n")


def test_the_environment_under_test_has_the_pinned_versions():
    """The environment running the suite has each version of the pin file `make` installed it from
    (RELAY_PINS); from the lock, it has nothing else either."""
    named = os.environ.get("RELAY_PINS")
    if not named:
        pytest.skip("RELAY_PINS is not set: only `make test` says which pin file this environment follows")
    path = (ROOT / named).resolve()
    expected = pins.pinned(path.read_text(encoding="utf-8"))
    installed = {
        pins.normalize(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
        if pins.normalize(dist.metadata["Name"]) != "metrics-relay"
    }
    wrong = {
        name: installed.get(name, "not installed")
        for name, version in expected.items()
        if installed.get(name) != version
    }
    assert wrong == {}, f"installed at versions other than {named} pins"
    if path == pins.LOCK:
        assert sorted(set(installed) - set(expected)) == [], "installed but not in the lock"
