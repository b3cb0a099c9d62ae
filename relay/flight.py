"""Single flight: concurrent scrapes of one upstream share one upstream request and one relabel pass.

The first scrape starts a flight: a task of its own that fetches and relabels, and hands each relabeled piece
to every follower. A scrape arriving while the flight runs joins it: the pieces produced so far are replayed
to it, then it follows the live stream, so each scraper still gets a whole, separate response. A follower that
leaves (disconnected, timed out) does not stop the flight; the flight is cancelled when nobody is left.

Memory stays bounded: the replay history is kept only up to `history_limit` bytes (past that, late scrapes
start a flight of their own), and the producer waits while a follower has more than FOLLOWER_BACKLOG_BYTES
not yet written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger(__name__)

FOLLOWER_BACKLOG_BYTES = 4 << 20
DEFAULT_HISTORY_LIMIT = 4 << 20


class Follower:
    """One scrape's view of a flight: the pieces it has not written yet, then the end or the error."""

    def __init__(self, flight: Flight, history: list[bytes]) -> None:
        self._flight = flight
        self._pieces: deque[bytes] = deque(history)
        self._backlog = sum(map(len, history))
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        if history:
            self._ready.set()

    @property
    def content_type(self) -> str:
        """The relayed body's Content-Type, known once the upstream's head arrived."""
        return self._flight.content_type

    async def pieces(self) -> AsyncIterator[bytes]:
        """Every relayed piece in order; raises the flight's error where it happened."""
        while True:
            while self._pieces:
                piece = self._pieces.popleft()
                self._backlog -= len(piece)
                if self._backlog <= FOLLOWER_BACKLOG_BYTES:
                    self._room.set()
                yield piece
            if self._flight.finished:
                error = self._flight.error
                if error is not None:
                    # One error object serves every follower: start each one's traceback afresh.
                    raise error.with_traceback(None)
                return
            self._ready.clear()
            await self._ready.wait()

    def leave(self) -> None:
        """Stop following; the last follower to leave an unfinished flight cancels it."""
        self._room.set()
        self._flight.remove(self)

    def push(self, piece: bytes) -> None:
        """A new piece from the flight."""
        self._pieces.append(piece)
        self._backlog += len(piece)
        if self._backlog > FOLLOWER_BACKLOG_BYTES:
            self._room.clear()
        self._ready.set()

    def wake(self) -> None:
        """The flight ended: stop waiting for pieces."""
        self._ready.set()

    async def wait_for_room(self) -> None:
        """Until this follower's backlog is small again (or it left)."""
        await self._room.wait()


Producer = Callable[["Flight"], Awaitable[None]]


class Flight:
    """One upstream fetch and relabel pass, shared by the scrapes that joined it."""

    def __init__(self, produce: Producer, history_limit: int = DEFAULT_HISTORY_LIMIT) -> None:
        self.content_type = ""
        self.finished = False
        self.error: BaseException | None = None
        self._history: list[bytes] | None = []
        self._history_bytes = 0
        self._history_limit = history_limit
        self._followers: list[Follower] = []
        self._cancelled = False
        self.task = asyncio.get_running_loop().create_task(self._run(produce))

    def join(self) -> Follower | None:
        """A new follower that will receive the whole body; None if the flight can no longer replay it."""
        if self._history is None or self._cancelled or (self.finished and self.error is not None):
            return None
        follower = Follower(self, list(self._history))
        self._followers.append(follower)
        return follower

    def remove(self, follower: Follower) -> None:
        """Forget a follower; cancel the flight if it was the last one and the flight is still running."""
        with contextlib.suppress(ValueError):
            self._followers.remove(follower)
        if not self._followers and not self.finished:
            self._cancelled = True
            self.task.cancel()

    async def publish(self, piece: bytes) -> None:
        """Hand a relabeled piece to every follower; wait while one of them is far behind."""
        if not piece:
            return
        if self._history is not None:
            self._history.append(piece)
            self._history_bytes += len(piece)
            if self._history_bytes > self._history_limit:
                self._history = None  # too big to replay: late scrapes start their own flight
        for follower in self._followers:
            follower.push(piece)
        for follower in list(self._followers):
            await follower.wait_for_room()

    async def _run(self, produce: Producer) -> None:
        try:
            await produce(self)
        except asyncio.CancelledError:
            self.error = ConnectionAbortedError("the flight was cancelled: no scraper was left")
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is handed to the followers, who report it
            self.error = exc
        finally:
            self.finished = True
            for follower in self._followers:
                follower.wake()


class Flights:
    """The flights under way, by key; a finished one stays joinable for `reuse_seconds` (min_interval)."""

    def __init__(self) -> None:
        self._flights: dict[object, Flight] = {}

    def follower(self, key: object, produce: Producer, reuse_seconds: float = 0.0) -> Follower:
        """Join the flight for `key`, or start one with `produce`."""
        flight = self._flights.get(key)
        follower = flight.join() if flight is not None else None
        if follower is not None:
            return follower
        flight = Flight(produce)
        self._flights[key] = flight
        flight.task.add_done_callback(lambda _task: self._landed(key, flight, reuse_seconds))
        follower = flight.join()
        if follower is None:  # a fresh flight always takes its first follower
            raise RuntimeError("a new flight refused its first follower")
        return follower

    def _landed(self, key: object, flight: Flight, reuse_seconds: float) -> None:
        if reuse_seconds > 0 and flight.error is None:
            asyncio.get_running_loop().call_later(reuse_seconds, self._forget, key, flight)
        else:
            self._forget(key, flight)

    def _forget(self, key: object, flight: Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def __len__(self) -> int:
        return len(self._flights)
