"""Builds the compiled line engine (relay/_engine.pyx) where a C compiler is present.

Without one, or with RELAY_NO_EXTENSIONS set at build time, the relay installs with its Python engine only.
Everything else about the package is declared in pyproject.toml.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """A failed compilation is a warning: the Python engine does the same work, only slower."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler or toolchain failure means: no extension
            _warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - as above, per extension
            _warn(exc)


def _warn(exc: Exception) -> None:
    print(
        f"metrics-relay: the compiled line engine was not built ({exc}); the Python engine will be used",
        file=sys.stderr,
    )


def _extensions() -> list[Extension]:
    if os.environ.get("RELAY_NO_EXTENSIONS"):
        return []
    try:
        from Cython.Build import cythonize  # noqa: PLC0415 - absent Cython means: no extension
    except ImportError:
        _warn(ImportError("Cython is not installed"))
        return []
    engine = Extension("relay._engine", ["relay/_engine.pyx"], extra_compile_args=["-O2"])
    # A translation error is a bug in the engine, not a machine without a compiler: it fails the build.
    return list(cythonize([engine], compiler_directives={"language_level": "3"}, quiet=True))


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
