"""Fixtures shared by the test modules: the line engine under test, and certificates for a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay import pipeline
from tests.support import Pki


@pytest.fixture(
    params=[
        pytest.param(
            "native",
            marks=pytest.mark.skipif(
                pipeline.NATIVE is None, reason="the compiled engine is not loaded here"
            ),
        ),
        "python",
    ]
)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each line engine in turn as the default for bodies relabeled during the test."""
    monkeypatch.setattr(pipeline, "default_engine", request.param)
    return str(request.param)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """An upstream's CA and server certificate and a client certificate, made for this test."""
    return Pki(tmp_path)
