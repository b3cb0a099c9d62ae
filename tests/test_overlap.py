"""Bodies through relabel_stream: output and errors in order, reading stops at a failure (both engines)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.config import parse
from relay.errors import InvalidExpositionError, LimitExceededError, ScrapeError
from relay.overlap import relabel_stream
from relay.pipeline import body_relabeler
from relay.rules import Rules

pytestmark = pytest.mark.usefixtures("engine")


def rules(**settings: object) -> Rules:
    """Rules without relabeling, with the given upstream settings."""
    extra = "".join(f"    {key}: {value}\n" for key, value in settings.items())
    text = f"upstreams:\n  - name: u\n    url: http://h/\n{extra}"
    return Rules.for_upstream(parse(text, source="t.yml", base_dir=Path()).upstreams[0])


class Upstream:
    """An async source of chunks that counts how many were read, and may break off with an error."""

    def __init__(self, chunks: list[bytes], error: ScrapeError | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk
        if self.error is not None:
            raise self.error


async def relayed(relay_rules: Rules, upstream: Upstream) -> tuple[bytes, BaseException | None]:
    """The published bytes and the error, if any, of one body through relabel_stream."""
    published: list[bytes] = []

    async def publish(piece: bytes) -> None:
        published.append(piece)

    error: BaseException | None = None
    try:
        await relabel_stream(body_relabeler(relay_rules), upstream, publish)
    except ScrapeError as exc:
        error = exc
    return b"".join(published), error


async def test_a_body_comes_out_whole_and_in_order():
    """Many small chunks, batched as the engine likes, give the body as one feed would."""
    body = b"".join(b'm{i="%d"} %d\n' % (i, i) for i in range(20_000))
    chunks = [body[offset : offset + 777] for offset in range(0, len(body), 777)]
    out, error = await relayed(rules(), Upstream(chunks))
    assert (out, error) == (body, None)


async def test_a_failing_body_stops_the_reading():
    """Once a line is too long the rest of the upstream body is not read (line_length_limit bounds memory)."""
    chunks = [b"x" * 65536 for _ in range(400)]
    upstream = Upstream(chunks)
    out, error = await relayed(rules(line_length_limit="1KB"), upstream)
    assert isinstance(error, LimitExceededError)
    assert "line_length_limit" in str(error)
    assert out == b""
    assert upstream.read < 200


async def test_an_error_earlier_in_the_body_wins_over_the_upstream_breaking_off():
    """A sample limit passed in what was read is the error, not the upstream's later break."""
    chunks = [b"a 1\nb 2\nc 3\n", *(b"d%d 1\n" % i for i in range(50))]
    broken = ScrapeError("upstream body broke off before its end")
    _, error = await relayed(rules(sample_limit=1), Upstream(chunks, broken))
    assert isinstance(error, LimitExceededError)
    assert "sample_limit" in str(error)


async def test_what_was_read_before_a_break_is_published_before_its_error():
    """The upstream breaking off after good lines: those lines go out, then the break is the error."""
    broken = ScrapeError("upstream body broke off before its end")
    out, error = await relayed(rules(), Upstream([b"a 1\n", b"b 2\n"], broken))
    assert (out, error) == (b"a 1\nb 2\n", broken)


async def test_an_invalid_last_line_fails_in_finish():
    """A bad line without a final newline is found when the body ends, after what came before it."""
    out, error = await relayed(rules(), Upstream([b"a 1\nb 1_000"]))
    assert out == b"a 1\n"
    assert isinstance(error, InvalidExpositionError)


async def test_a_failure_in_a_later_batch_names_its_place_in_the_whole_body():
    """Batches handed to the worker one after another count lines and bytes on from the batch before."""
    good = b"".join(b'm{i="%d"} %d\n' % (i, i) for i in range(20_000))
    body = good + b'm{i="bad"} 1_000\n' + good
    chunks = [body[offset : offset + 777] for offset in range(0, len(body), 777)]
    _, error = await relayed(rules(), Upstream(chunks))
    assert isinstance(error, InvalidExpositionError)
    assert error.message == (
        f"invalid exposition at line 20001 (byte {len(good)}), family m: expected a value and an optional "
        "timestamp after the series in 'm{i=\"bad\"} 1_000'"
    )
