"""Writes the two pin files from pyproject.toml: the lock (newest allowed) and the oldest allowed versions.

    python requirements/pins.py oldest    # requirements/oldest.txt: every declared lower bound, exact
    python requirements/pins.py lock      # requirements/constraints.txt: a scratch venv's newest resolution

`make constraints` runs both. Every declared dependency (runtime, the dev extra and the build requirements)
must have the form `name>=X` (an optional `; marker` after it): the lower bound is what the oldest run
installs, so it has to be one real version.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements" / "constraints.txt"
OLDEST = ROOT / "requirements" / "oldest.txt"

_DECLARED = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*(?P<bound>[^\s,;]+)\s*(?:;\s*(?P<marker>.+))?"
)
# Installed by the lock but declared nowhere: the installer itself, which the Makefile and the Dockerfile
# bring to the locked version first.
TOOLS = ("pip",)


@dataclass(frozen=True)
class Declared:
    """One dependency as pyproject.toml declares it: its lower bound and its environment marker."""

    name: str
    bound: str
    marker: str | None

    @property
    def key(self) -> str:
        """The name as package indexes compare names (PEP 503)."""
        return normalize(self.name)


def normalize(name: str) -> str:
    """A distribution name lower-cased with runs of `-`, `_`, `.` as one `-`, as pip compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(pyproject: Path = PYPROJECT) -> list[Declared]:
    """Runtime, dev-extra and build requirements, in that order, one entry per distinct name."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    texts = [
        *data["project"]["dependencies"],
        *data["project"]["optional-dependencies"]["dev"],
        *data["build-system"]["requires"],
    ]
    found: dict[str, Declared] = {}
    for text in texts:
        match = _DECLARED.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"{pyproject.name}: {text!r} is not of the form 'name>=version [; marker]'")
        entry = Declared(match["name"], match["bound"], match["marker"])
        earlier = found.setdefault(entry.key, entry)
        if earlier.bound != entry.bound:
            raise ValueError(
                f"{pyproject.name}: {entry.name} is declared twice with different lower bounds "
                f"({earlier.bound} and {entry.bound})"
            )
    return list(found.values())


def oldest_text(entries: list[Declared]) -> str:
    """The oldest-allowed constraints: each declared dependency pinned to its lower bound."""
    lines = [
        "# The oldest versions pyproject.toml allows, one per declared dependency (runtime, dev, build).",
        "# `make test` runs the suite on them in .venv-oldest. Written by `make constraints`",
        "# (requirements/pins.py); tests/test_dependencies.py keeps it equal to pyproject.toml.",
    ]
    for entry in entries:
        marker = f"; {entry.marker}" if entry.marker else ""
        lines.append(f"{entry.name}=={entry.bound}{marker}")
    return "\n".join(lines) + "\n"


def pinned(text: str) -> dict[str, str]:
    """`name==version` lines of a constraints file, by normalized name (comments and markers dropped)."""
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        name, separator, version = line.partition("==")
        if not separator:
            raise ValueError(f"{raw!r} is not an exact pin 'name==version'")
        pins[normalize(name)] = version.strip()
    return pins


def lock_text(freeze: str) -> str:
    """The lock from `pip freeze --all` of an environment that installed every declared dependency."""
    lines = (line for line in freeze.splitlines() if line and not line.startswith("#"))
    body = sorted(lines, key=str.lower)
    header = [
        "# Exact versions of everything `make` and the Dockerfile install: runtime, dev, the build",
        "# requirements (setuptools, Cython: --build-constraint, for pip's isolated build) and pip itself.",
        "# Refresh with `make constraints`: the newest versions pyproject.toml allows, in a scratch venv.",
    ]
    return "\n".join([*header, *body]) + "\n"


def resolve_newest(entries: list[Declared]) -> str:
    """`pip freeze --all` of a scratch venv with the newest allowed version of every declared dependency."""
    requirements = [
        f"{entry.name}>={entry.bound}" + (f"; {entry.marker}" if entry.marker else "") for entry in entries
    ]
    with tempfile.TemporaryDirectory(prefix="relay-lock-") as scratch:
        venv.create(scratch, with_pip=True)
        python = str(Path(scratch) / "bin" / "python")
        _pip(python, "install", "--upgrade", *TOOLS)
        _pip(python, "install", *requirements)
        return _pip(python, "freeze", "--all")


def _pip(python: str, *arguments: str) -> str:
    """Run the scratch venv's pip; its output, or CalledProcessError."""
    command = [python, "-m", "pip", "--disable-pip-version-check", "--quiet", *arguments]
    # The argv is this script's own: the scratch venv's interpreter and pyproject.toml's requirements.
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout  # noqa: S603


def main(argv: list[str]) -> int:
    """Write the file(s) named on the command line: `oldest`, `lock`, or both."""
    if not argv or any(arg not in {"oldest", "lock"} for arg in argv):
        print("usage: python requirements/pins.py oldest|lock ...", file=sys.stderr)
        return 2
    entries = declared()
    if "oldest" in argv:
        OLDEST.write_text(oldest_text(entries), encoding="utf-8")
        print(f"wrote {OLDEST.relative_to(ROOT)}: {len(entries)} lower bounds")
    if "lock" in argv:
        LOCK.write_text(lock_text(resolve_newest(entries)), encoding="utf-8")
        print(f"wrote {LOCK.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
