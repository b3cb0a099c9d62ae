"""Bodies to relay: the real apiserver capture, and larger ones built from it with a `replica` label.

A built body keeps the shape of a real exposition: each family's HELP/TYPE once, then its samples for every
replica, contiguous, each series made unique by `replica="N"` appended to its labels. The same generator
streams bodies too large to hold (1 GiB) in chunks.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
APISERVER_FIXTURE = "kube-apiserver-1.35-minikube.prom"
REPLICA_LABEL = b"replica"
STREAM_CHUNK_BYTES = 256 * 1024


def fixtures_dir() -> Path:
    """Where the captured bodies are: $BENCH_FIXTURES, else ../shared/fixtures beside the repository."""
    return Path(os.environ.get("BENCH_FIXTURES", FIXTURES_DIR))


def apiserver_body() -> bytes:
    """The real kube-apiserver 1.35 /metrics capture (about 3 MB, 23k samples)."""
    path = fixtures_dir() / APISERVER_FIXTURE
    if not path.is_file():
        raise SystemExit(f"bench: {path} is missing (set BENCH_FIXTURES to the folder of the fixtures)")
    return path.read_bytes()


@dataclass(frozen=True)
class FamilyBlock:
    """One family of a body: its comment lines, and its sample lines split where the replica label goes.

    `pieces` joined with `replica="N"` gives the samples of replica N: the label goes before each
    closing brace, or into new braces after a bare name.
    """

    comments: bytes
    pieces: tuple[bytes, ...]
    samples: int


def family_blocks(body: bytes) -> list[FamilyBlock]:
    """Cut a body into family blocks (a run of comments, then the samples up to the next comment)."""
    blocks: list[FamilyBlock] = []
    comments: list[bytes] = []
    pieces: list[bytes] = []
    samples = 0
    pending = b""  # text of the current sample line after the insertion point, joined to the next piece

    def close() -> None:
        nonlocal pending, samples
        if comments or samples:
            blocks.append(FamilyBlock(b"".join(comments), (*pieces, pending), samples))
        comments.clear()
        pieces.clear()
        pending = b""
        samples = 0

    for line in body.splitlines(keepends=True):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(b"#"):
            if samples:
                close()
            comments.append(line)
            continue
        head, tail = _split_for_label(line)
        pieces.append(pending + head)
        pending = tail
        samples += 1
    close()
    return blocks


def _split_for_label(line: bytes) -> tuple[bytes, bytes]:
    """The text before and after the replica label: `a{x="1"` | `} 5`, or `a{` | `} 5` for a bare name."""
    brace = line.rfind(b"}")
    if brace >= 0:
        before = line[:brace]
        separator = b"" if before.endswith((b"{", b",")) else b","
        return before + separator + REPLICA_LABEL + b'="', b'"' + line[brace:]
    name_end = len(line) - len(line.lstrip())
    name_end += len(line[name_end:].split(None, 1)[0])
    return line[:name_end] + b"{" + REPLICA_LABEL + b'="', b'"}' + line[name_end:]


def replicated_chunks(
    body: bytes | list[FamilyBlock],
    replicas: int,
    chunk_bytes: int = STREAM_CHUNK_BYTES,
    first_replica: int = 0,
) -> Iterator[bytes]:
    """The body with every family's samples repeated for `replicas` replicas, in chunks of ≥ chunk_bytes
    (`body` may be given as its family_blocks(), to cut it only once)."""
    buffer: list[bytes] = []
    buffered = 0
    for block in family_blocks(body) if isinstance(body, bytes) else body:
        buffer.append(block.comments)
        buffered += len(block.comments)
        if not block.samples:
            continue
        for replica in range(first_replica, first_replica + replicas):
            text = str(replica).encode().join(block.pieces)
            buffer.append(text)
            buffered += len(text)
            if buffered >= chunk_bytes:
                yield b"".join(buffer)
                buffer.clear()
                buffered = 0
    if buffer:
        yield b"".join(buffer)


def replicas_for_size(body: bytes, target_bytes: int) -> int:
    """How many replicas make a built body of about `target_bytes`."""
    blocks = family_blocks(body)
    comments = sum(len(block.comments) for block in blocks)
    one_replica = sum(len(b"0".join(block.pieces)) for block in blocks if block.samples)
    return max(1, round((target_bytes - comments) / one_replica))


def replicated_body(body: bytes, target_bytes: int) -> bytes:
    """A body of about `target_bytes` built from `body` (all replicas held in memory)."""
    return b"".join(replicated_chunks(body, replicas_for_size(body, target_bytes)))


def sample_count(body: bytes) -> int:
    """Sample lines: non-blank lines not starting with '#'."""
    return sum(1 for line in body.splitlines() if line.strip() and not line.lstrip().startswith(b"#"))


def value_variant(body: bytes, variant: int) -> bytes:
    """The body with a different value in every sample line: the same series in the same order, comments
    and timestamps as they were (a later scrape of a live upstream). Variant 0 is the body itself.

    Variant k adds k to an integer value (k per thousand of it, when larger) and scales any other finite
    value by 1 + k/1024; a zero float or a non-finite value becomes k. About a second for a 50 MB body.
    """
    if variant == 0:
        return body
    shifted: dict[bytes, bytes] = {}  # the same value text always becomes the same new text
    lines = body.split(b"\n")
    for number, line in enumerate(lines):
        if not line or line.startswith(b"#") or not line.strip() or line.lstrip().startswith(b"#"):
            continue
        brace = line.rfind(b"}")
        found = _VALUE.match(line, brace + 1) if brace >= 0 else _BARE_VALUE.match(line)
        if found is None:
            continue  # not a sample line we understand: left as it is (the engines will judge it)
        start, end = found.span(1)
        value = line[start:end]
        new = shifted.get(value)
        if new is None:
            new = shifted[value] = _shifted_value(value, variant)
        lines[number] = line[:start] + new + line[end:]
    return b"\n".join(lines)


_VALUE = re.compile(rb"[ \t]+([^ \t\r]+)")
_BARE_VALUE = re.compile(rb"[ \t]*[^ \t\r]+[ \t]+([^ \t\r]+)")


def _shifted_value(value: bytes, variant: int) -> bytes:
    try:
        integer = int(value)
    except ValueError:
        pass
    else:
        return str(integer + variant * max(1, abs(integer) // 1000)).encode()
    try:
        number = float(value)
    except ValueError:
        return value  # not a number: left for the engines to refuse, as they would the original
    scaled = number * (1 + variant / 1024)
    if number == 0 or not math.isfinite(scaled):
        return str(variant).encode()
    return repr(scaled).encode()


def value_variants(body: bytes, count: int) -> list[bytes]:
    """Variants 0 (the body) to count - 1 of `body`."""
    return [value_variant(body, variant) for variant in range(count)]
