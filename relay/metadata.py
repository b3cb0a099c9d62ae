"""Where HELP/TYPE/UNIT lines go in a relayed body: held until their family's first surviving sample (pure).

Both line engines hand every comment line and every change of sample name to one MetadataTracker, so the
placement rules live here once: metadata goes out just before the first surviving sample of its family, never
twice, never after samples of the same name, and not at all when no sample of the family survives.
"""

from __future__ import annotations

from relay.exposition import belongs_to_family, metadata_line, parse_metadata, parse_openmetrics_metadata


class MetadataTracker:
    """The metadata of the family being read, and what was already sent, for one body."""

    def __init__(self, *, openmetrics: bool, utf8_names: bool) -> None:
        self.openmetrics = openmetrics
        self.utf8_names = utf8_names
        self.ended = False
        """OpenMetrics' `# EOF` was read."""
        self._family = ""
        self._family_type = b""
        self._pending: list[bytes] = []
        self._pending_kinds: list[bytes] = []  # the kind of each pending line
        self._described: set[str] = set()
        self._names_sent: set[str] = set()

    @property
    def has_pending(self) -> bool:
        """Whether metadata waits for a sample (otherwise describe() only notes names)."""
        return bool(self._pending)

    def comment(self, line: bytes) -> bool:
        """Take a comment line: remember HELP/TYPE (and UNIT) for their family, drop other comments.

        True when the line was kept exactly as it came (so a block of lines may still go out verbatim).
        """
        metadata = parse_openmetrics_metadata(line) if self.openmetrics else parse_metadata(line)
        if metadata is None:
            return False
        if metadata.kind == b"EOF":
            self.ended = True
            return False
        if metadata.family != self._family:
            self._family = metadata.family
            self._family_type = b""
            self._pending, self._pending_kinds = [], []
        if metadata.kind == b"TYPE":
            self._family_type = metadata.text
        if self.openmetrics:
            written: bytes | None = line  # OpenMetrics metadata is strict already
        else:
            written = metadata_line(metadata, utf8_names=self.utf8_names)
        if written is None or metadata.family in self._described or written in self._pending:
            return False
        # A family with two TYPE (or HELP, UNIT) lines gets one: the last, as Prometheus keeps the last.
        repeated = [index for index, kind in enumerate(self._pending_kinds) if kind == metadata.kind]
        for index in reversed(repeated):
            del self._pending[index], self._pending_kinds[index]
        self._pending.append(written)
        self._pending_kinds.append(metadata.kind)
        return written == line and not repeated

    def describe(self, name: str) -> list[bytes]:
        """The metadata lines to send before a surviving sample called `name` (often none); notes the name.

        Strict parsers refuse a TYPE for a name after samples of that name, which renamed series would
        otherwise cause: a family whose name was already sent loses its metadata instead.
        """
        family = self._family
        sent: list[bytes] = []
        if self._pending and family and belongs_to_family(name, family, self._family_type):
            if family not in self._described and family not in self._names_sent:
                sent = self._pending
            self._described.add(family)
            self._pending, self._pending_kinds = [], []
        self._names_sent.add(name)
        return sent
