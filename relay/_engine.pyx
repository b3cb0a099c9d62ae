# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled line engine: framing, the native memo, value checks and output in C (Cython).

It does what relay.pyengine.PythonBodyRelabeler does, with the same bytes, counts and errors; that module is
the specification. Each line first goes to _line_fast(), which runs without the GIL and touches no Python
object: a sample whose series the memo knows and whose value and timestamp are in their usual form. Anything
else goes to _line(), with the GIL, which calls Python for what is rare: a series not seen before
(Rules.relabel_series parses and relabels it, unless the rules only keep or drop and the text is in the simple
form, which _decide_by_filters() reads here), a tail in an unusual form (Rules.learn_tail gives the verdict),
comment lines and metadata to place (MetadataTracker), exemplars, and every error message. An error about a
line is located (relay.exposition.located) from where the carry starts in the body and the lines _block()
counted, with newlines counted back only when there is an error.

The memo is keyed by a keyed 128-bit SipHash-1-3 of the series text, not the text itself: 16 bytes a key
instead of a copy of a 100-byte series, so an entry costs 32 bytes in the table. A random key per process
makes collisions as unlikely as guessing it, even for label values that cluster users choose (CRD names
reach kube-apiserver's labels); a collision would need 2^64 series.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memmove, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE, _PyBytes_Resize
from cpython.object cimport PyObject
from cpython.ref cimport Py_CLEAR, Py_INCREF
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_DecodeUTF8
from cpython.pythread cimport (
    NOWAIT_LOCK,
    WAIT_LOCK,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_type_lock,
)

import os
from collections import Counter

from relay.exposition import EXCERPT_SOURCE, LINE_ERRORS, label_limit_error, line_too_long, located
from relay.metadata import MetadataTracker
from relay.pyengine import (
    DUPLICATE_WATCH_LIMIT,
    EXEMPLAR_SUFFIXES,
    missing_eof,
    openmetrics_line_error,
    sample_limit_error,
    split_exemplar,
)
from relay.rules import DROP_REASONS, MEMO_BYTE_LIMIT
from relay.errors import InvalidExpositionError

# An entry's flags.
cdef enum:
    OCCUPIED = 1
    KEEP_VERBATIM = 2      # the series goes out as it came
    KEEP_REPLACED = 4      # the series goes out as the bytes in the arena
    DROPPED = 8            # the reason is in bits 8..11
    UTF8_ONLY = 16         # the arena holds the quoted UTF-8 form; other scrapers drop it (utf8_name)
    LIMIT_ERROR = 32       # a label limit is broken: the scrape fails (the message comes from Python)
    STRIP_EXEMPLAR = 64    # renamed away from a counter or bucket: an exemplar must go
    NOT_OPENMETRICS = 128  # the text is valid in the text format only: OpenMetrics bodies refuse it
    REASON_SHIFT = 8

cdef enum:  # what _line() and _block() report besides success
    CONTINUE = 1       # the sample goes on in the next line (a raw newline inside a quoted value)
    PENDING = 1        # the block ended inside such a sample: it waits at `pending` for the next chunk

cdef enum:  # what _line_fast() did with a line
    HANDLED = 0
    SLOW = 1           # the line needs the full path (_line, with the GIL)
    OUT_OF_MEMORY = 2

cdef enum:
    REASON_RELABEL = 0
    REASON_INVALID_NAME = 1
    REASON_UTF8_NAME = 2
    REASON_DUPLICATE = 3
    REASON_INVALID_LINE = 4
    REASONS = 5

assert DUPLICATE_WATCH_LIMIT == 400_000  # DUPLICATE_WATCH below
assert DROP_REASONS == ("relabel", "invalid_name", "utf8_name", "duplicate", "invalid_line")

cdef struct Entry:
    uint64_t key0
    uint64_t key1
    uint32_t flags
    uint32_t name_id
    uint32_t offset
    uint32_t length

DEF INITIAL_SLOTS = 4096
cdef size_t NO_ENTRY = <size_t>-1  # no such entry
cdef uint32_t UNNAMED = 0xFFFFFFFFU  # a name the memo did not take (too many names): never remembered
DEF DUPLICATE_WATCH = 400_000  # relay.pyengine.DUPLICATE_WATCH_LIMIT, checked at import
DEF NAME_LIMIT = 1 << 18  # distinct metric names remembered (a kube-apiserver has about 700)
DEF INITIAL_SEEN = 4096
DEF MAX_SIMPLE_LABELS = 64  # more labels than this: the Python parser decides
DEF SAFE_MAGNITUDE = 300  # decimal digits before the point that a float64 surely holds (max is ~1.8e308)
DEF SAFE_TIMESTAMP_DIGITS = 18  # int64 milliseconds: 18 digits always fit


cdef inline uint64_t _rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef inline uint64_t _load64(const uint8_t* p) noexcept nogil:
    cdef uint64_t word
    memcpy(&word, p, 8)
    return word


cdef inline void _sipround(uint64_t* v0, uint64_t* v1, uint64_t* v2, uint64_t* v3) noexcept nogil:
    v0[0] += v1[0]; v1[0] = _rotl(v1[0], 13); v1[0] ^= v0[0]; v0[0] = _rotl(v0[0], 32)
    v2[0] += v3[0]; v3[0] = _rotl(v3[0], 16); v3[0] ^= v2[0]
    v0[0] += v3[0]; v3[0] = _rotl(v3[0], 21); v3[0] ^= v0[0]
    v2[0] += v1[0]; v1[0] = _rotl(v1[0], 17); v1[0] ^= v2[0]; v2[0] = _rotl(v2[0], 32)


cdef void _siphash13_128(const uint8_t* data, size_t length, uint64_t k0, uint64_t k1,
                         uint64_t* out0, uint64_t* out1) noexcept nogil:
    """SipHash-1-3 with 128-bit output (one compression round, three finalisation rounds)."""
    cdef uint64_t v0 = k0 ^ 0x736f6d6570736575ULL
    cdef uint64_t v1 = k1 ^ 0x646f72616e646f6dULL ^ 0xee
    cdef uint64_t v2 = k0 ^ 0x6c7967656e657261ULL
    cdef uint64_t v3 = k1 ^ 0x7465646279746573ULL
    cdef uint64_t m
    cdef size_t whole = length & ~(<size_t>7)
    cdef size_t i = 0
    cdef int r
    while i < whole:
        m = _load64(data + i)
        v3 ^= m
        _sipround(&v0, &v1, &v2, &v3)
        v0 ^= m
        i += 8
    m = (<uint64_t>length) << 56
    cdef size_t rest = length - whole
    while rest > 0:
        rest -= 1
        m |= (<uint64_t>data[whole + rest]) << (8 * rest)
    v3 ^= m
    _sipround(&v0, &v1, &v2, &v3)
    v0 ^= m
    v2 ^= 0xee
    for r in range(3):
        _sipround(&v0, &v1, &v2, &v3)
    out0[0] = v0 ^ v1 ^ v2 ^ v3
    v1 ^= 0xdd
    for r in range(3):
        _sipround(&v0, &v1, &v2, &v3)
    out1[0] = v0 ^ v1 ^ v2 ^ v3


def siphash13_128(bytes data, bytes key):
    """The 128-bit SipHash-1-3 of `data` under a 16-byte `key`, as two 64-bit words (for tests)."""
    cdef uint64_t k0, k1, h0, h1
    if len(key) != 16:
        raise ValueError("the key has 16 bytes")
    k0 = int.from_bytes(key[:8], "little")
    k1 = int.from_bytes(key[8:], "little")
    _siphash13_128(<const uint8_t*>PyBytes_AS_STRING(data), len(data), k0, k1, &h0, &h1)
    return h0, h1


cdef class NativeMemo:
    """One upstream's series memo in native memory: 128-bit key → action, name and replacement bytes.

    Entries sit in a dense array in the order they were learnt, which is the order of the body; a scrape of
    the same body reads them in sequence (the engine tries the entry after the last one first), so the warm
    path streams through memory instead of missing the cache on every line. An open-addressing index of
    entry numbers finds the rest. Bounded like the Python memo: at most `max_entries` series and
    `max_bytes` of replacement text; a full memo keeps what it has, and end_of_scrape() renews it when the
    series have moved on.
    """

    cdef Entry* entries
    cdef uint64_t* identities
    cdef size_t entries_capacity
    cdef size_t count
    cdef uint32_t* index
    cdef size_t index_capacity
    cdef char* arena
    cdef size_t arena_used
    cdef size_t arena_capacity
    cdef readonly size_t max_entries
    cdef readonly size_t max_bytes
    cdef uint64_t k0, k1
    cdef readonly bint refused_insert
    cdef readonly uint64_t misses
    cdef bint dedup
    cdef dict names
    cdef dict name_ids
    cdef uint32_t next_name_id
    cdef readonly uint64_t name_epoch  # changes when the name table starts over (ids are then reused)
    cdef PyThread_type_lock lock  # held by the body being relabeled: single flight can run two at once

    def __cinit__(self, size_t max_entries, size_t max_bytes, bint dedup):
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()
        key = os.urandom(16)
        self.k0 = int.from_bytes(key[:8], "little")
        self.k1 = int.from_bytes(key[8:], "little")
        self.max_entries = min(max_entries, 0xFFFFFFFE)  # entry numbers are 32-bit
        self.max_bytes = min(max_bytes, 0xFFFFFFFF)  # arena offsets are 32-bit
        self.dedup = dedup
        self.names = {}
        self.name_ids = {}
        self.next_name_id = 1  # 0 means "no name" to the engine
        self.index = <uint32_t*>calloc(INITIAL_SLOTS, sizeof(uint32_t))
        if self.index == NULL:
            raise MemoryError()
        self.index_capacity = INITIAL_SLOTS

    def __dealloc__(self):
        if self.lock != NULL:
            PyThread_free_lock(self.lock)
        free(self.entries)
        free(self.identities)
        free(self.index)
        free(self.arena)

    def __len__(self):
        return self.count

    @property
    def memo_full(self):
        """Whether the memo took no more series (by count or by bytes) since it was last renewed."""
        return self.count >= self.max_entries or self.refused_insert

    @property
    def table_bytes(self):
        """Native memory held: entries, identities, the index and the replacement arena."""
        per_entry = sizeof(Entry) + (sizeof(uint64_t) if self.dedup else 0)
        return self.entries_capacity * per_entry + self.index_capacity * sizeof(uint32_t) + self.arena_capacity

    cdef inline size_t _lookup(self, uint64_t key0, uint64_t key1, size_t predicted) noexcept nogil:
        """The number of the entry with this key, or NO_ENTRY; `predicted` is tried first."""
        cdef Entry* entry
        cdef size_t mask, position
        cdef uint32_t number
        if predicted < self.count:
            entry = &self.entries[predicted]
            if entry.key0 == key0 and entry.key1 == key1:
                return predicted
        mask = self.index_capacity - 1
        position = <size_t>key0 & mask
        while True:
            number = self.index[position]
            if number == 0:
                return NO_ENTRY
            entry = &self.entries[number - 1]
            if entry.key0 == key0 and entry.key1 == key1:
                return number - 1
            position = (position + 1) & mask

    cdef inline void _place(self, size_t number) noexcept nogil:
        cdef size_t mask = self.index_capacity - 1
        cdef size_t position = <size_t>self.entries[number].key0 & mask
        while self.index[position] != 0:
            position = (position + 1) & mask
        self.index[position] = <uint32_t>(number + 1)

    cdef int _grow_index(self) except -1:
        cdef uint32_t* grown = <uint32_t*>calloc(self.index_capacity * 2, sizeof(uint32_t))
        cdef size_t number
        if grown == NULL:
            raise MemoryError()
        free(self.index)
        self.index = grown
        self.index_capacity *= 2
        for number in range(self.count):
            self._place(number)
        return 0

    cdef int _grow_entries(self) except -1:
        cdef size_t capacity = max(self.entries_capacity + self.entries_capacity // 2, 1024)
        cdef Entry* entries = <Entry*>realloc(self.entries, capacity * sizeof(Entry))
        cdef uint64_t* identities
        if entries == NULL:
            raise MemoryError()
        self.entries = entries
        if self.dedup:
            identities = <uint64_t*>realloc(self.identities, capacity * sizeof(uint64_t))
            if identities == NULL:
                raise MemoryError()
            self.identities = identities
        self.entries_capacity = capacity
        return 0

    cdef uint32_t _name_id(self, str name):
        found = self.name_ids.get(name)
        if found is not None:
            return found
        if len(self.name_ids) >= NAME_LIMIT:
            return UNNAMED
        cdef uint32_t new_id = self.next_name_id
        self.next_name_id += 1
        self.name_ids[name] = new_id
        self.names[new_id] = name
        return new_id

    cdef size_t _insert(self, uint64_t key0, uint64_t key1, uint32_t flags, uint32_t name_id,
                        uint64_t identity, const char* replacement, size_t length) except? 0:
        """Remember a result unless the memo is full (by entries or by bytes): its number, or NO_ENTRY."""
        cdef char* grown
        cdef size_t needed, number
        cdef Entry* entry
        if (self.count >= self.max_entries or self.arena_used + length > self.max_bytes
                or name_id == UNNAMED):
            self.refused_insert = True
            return NO_ENTRY
        if length:
            needed = self.arena_used + length
            if needed > self.arena_capacity:
                needed = max(needed, self.arena_capacity + self.arena_capacity // 2, 65536)
                grown = <char*>realloc(self.arena, needed)
                if grown == NULL:
                    raise MemoryError()
                self.arena = grown
                self.arena_capacity = needed
            memcpy(self.arena + self.arena_used, replacement, length)
        if self.count == self.entries_capacity:
            self._grow_entries()
        if (self.count + 1) * 4 > self.index_capacity * 3:
            self._grow_index()
        number = self.count
        entry = &self.entries[number]
        entry.key0 = key0
        entry.key1 = key1
        entry.flags = flags
        entry.name_id = name_id
        entry.offset = <uint32_t>self.arena_used
        entry.length = <uint32_t>length
        if self.dedup:
            self.identities[number] = identity
        self.arena_used += length
        self.count += 1
        self._place(number)
        return number

    def end_of_scrape(self, samples, misses, was_full):
        """After a body: forget a full memo of which this body used less than half (as Rules.end_of_scrape)."""
        if was_full and (samples - misses) * 2 < <long long>self.count:
            self.clear()

    def clear(self):
        """Forget every series (the arrays keep their size; names keep their ids, unless they are many)."""
        memset(self.index, 0, self.index_capacity * sizeof(uint32_t))
        self.count = 0
        self.arena_used = 0
        self.refused_insert = False
        if len(self.name_ids) >= NAME_LIMIT // 2:
            # Ids start over (so they stay below NAME_LIMIT); bodies under way see the new epoch and forget
            # the ids they noted.
            self.name_ids.clear()
            self.names.clear()
            self.next_name_id = 1
            self.name_epoch += 1


cdef inline Py_ssize_t _scan_float(const char* text, Py_ssize_t i, Py_ssize_t n, bint allow_special) noexcept nogil:
    """The end of a Go float token at `i` that is surely valid and finite, or -1 (then Python decides)."""
    cdef Py_ssize_t start_digits, integer_digits = 0, fraction_digits = 0, magnitude = 0
    cdef Py_ssize_t exponent = 0, exponent_digits = 0
    cdef bint negative_exponent = False, signed = False
    if i < n and (text[i] == b'+' or text[i] == b'-'):
        signed = True
        i += 1
    if allow_special and i + 3 <= n:
        if text[i] == b'I' and text[i + 1] == b'n' and text[i + 2] == b'f':
            return i + 3
        if not signed and text[i] == b'N' and text[i + 1] == b'a' and text[i + 2] == b'N':
            return i + 3
    while i < n and text[i] == b'0':
        i += 1
        integer_digits += 1
    while i < n and b'0' <= text[i] <= b'9':
        i += 1
        integer_digits += 1
        magnitude += 1
    if i < n and text[i] == b'.':
        i += 1
        while i < n and b'0' <= text[i] <= b'9':
            i += 1
            fraction_digits += 1
    if integer_digits + fraction_digits == 0:
        return -1
    if i < n and (text[i] == b'e' or text[i] == b'E'):
        i += 1
        if i < n and (text[i] == b'+' or text[i] == b'-'):
            negative_exponent = text[i] == b'-'
            i += 1
        while i < n and b'0' <= text[i] <= b'9' and exponent_digits < 5:
            exponent = exponent * 10 + (text[i] - 48)
            exponent_digits += 1
            i += 1
        if exponent_digits == 0 or exponent_digits == 5:
            return -1
        magnitude = magnitude - exponent if negative_exponent else magnitude + exponent
    if magnitude > SAFE_MAGNITUDE:
        return -1
    return i


cdef inline bint _canonical_tail(const char* tail, Py_ssize_t n, bint openmetrics) noexcept nogil:
    """Whether what follows a series is ` value[ timestamp]`, valid and already in canonical form."""
    cdef Py_ssize_t end, digits
    if n < 2 or tail[0] != b' ':
        return False
    end = _scan_float(tail, 1, n, True)
    if end < 0:
        return False
    if end == n:
        return True
    if tail[end] != b' ':
        return False
    if openmetrics:
        return _scan_float(tail, end + 1, n, False) == n  # NaN or Inf as timestamps: Python decides
    digits = n - end - 1
    if digits < 1 or digits > SAFE_TIMESTAMP_DIGITS:
        return False
    end += 1
    while end < n:
        if not (b'0' <= tail[end] <= b'9'):
            return False
        end += 1
    return True


def canonical_tail(bytes tail, bint openmetrics=False):
    """Whether the C check takes `tail` as valid and canonical without asking Python (for tests)."""
    return _canonical_tail(PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail), openmetrics)


cdef class NativeBodyRelabeler:
    """Turns one upstream body, chunk by chunk, into the relayed body; counts what it did (see module doc)."""

    cdef readonly object rules
    cdef readonly bint openmetrics
    cdef readonly bint utf8_names
    cdef readonly Py_ssize_t samples_in
    cdef readonly Py_ssize_t samples_out
    cdef Py_ssize_t drops[REASONS]
    cdef NativeMemo memo
    cdef object tracker
    cdef object relabel_series
    cdef object learn_tail
    cdef Py_ssize_t line_limit
    cdef Py_ssize_t sample_limit
    cdef bint dedup
    cdef bint ended
    cdef uint32_t last_name_id
    cdef uint64_t misses_before
    cdef bint was_full
    cdef char* carry
    cdef Py_ssize_t carry_length
    cdef Py_ssize_t carry_capacity
    cdef PyObject* out_object  # the bytes being written, between _open_output() and _close_output()
    cdef char* out
    cdef Py_ssize_t out_length
    cdef Py_ssize_t out_capacity
    cdef uint64_t* seen
    cdef size_t seen_capacity
    cdef size_t seen_count
    cdef bint seen_zero
    cdef size_t predicted
    cdef bint metadata_pending
    cdef uint8_t* noted
    cdef size_t noted_capacity
    cdef uint64_t name_epoch  # the memo's name epoch that `noted` and `last_name_id` belong to
    cdef object filter_steps  # the rules as data when they only keep or drop (Rules.filter_steps)
    cdef uint32_t decided_name_id
    cdef char* scratch
    cdef Py_ssize_t scratch_capacity
    cdef Py_ssize_t spans[4 * MAX_SIMPLE_LABELS]
    cdef bint carry_has_lines  # the carry holds whole lines of a sample that goes on (pushed back)
    cdef const char* pending  # where a block's unfinished sample starts, after _block() returned PENDING
    # Where the carry starts in the body, for errors that say where a line is: the number of lines before
    # it and its byte offset. _block() counts the lines it reads (one addition a line) and then moves on.
    cdef Py_ssize_t lines_before
    cdef Py_ssize_t offset
    cdef const char* sample_end  # where the line (or joined sample) being read ends, for its error

    engine = "native"
    releases_gil = True

    def __init__(self, rules, *, bint openmetrics=False, bint utf8_names=False):
        self.rules = rules
        self.openmetrics = openmetrics
        self.utf8_names = utf8_names
        if rules.native_memo is None:
            rules.native_memo = NativeMemo(rules.memo_size, MEMO_BYTE_LIMIT, rules.rewrites_labels)
        self.memo = rules.native_memo
        self.tracker = MetadataTracker(openmetrics=openmetrics, utf8_names=utf8_names)
        self.relabel_series = rules.relabel_series
        self.learn_tail = rules.learn_tail
        self.line_limit = rules.limits.line_length_limit
        self.sample_limit = rules.limits.sample_limit
        self.dedup = rules.rewrites_labels
        self.misses_before = self.memo.misses
        self.was_full = self.memo.memo_full
        self.name_epoch = self.memo.name_epoch
        steps = rules.filter_steps()
        if steps is not None:
            self.filter_steps = tuple(
                (tuple(label.encode() for label in step.source_labels), step.separator.encode(),
                 step.keep_when, step.matches, step.target.encode())
                for step in steps
            )

    def __dealloc__(self):
        free(self.carry)
        Py_CLEAR(self.out_object)
        free(self.seen)
        free(self.noted)
        free(self.scratch)

    @property
    def dropped(self):
        """Samples left out of this body, by reason."""
        return Counter({DROP_REASONS[i]: self.drops[i] for i in range(REASONS) if self.drops[i]})

    @property
    def memo_misses(self):
        """Series of this body that were not in the memo (other bodies relabeled meanwhile count too)."""
        return self.memo.misses - self.misses_before

    def feed(self, bytes chunk):
        """The relayed bytes for the lines that `chunk` completes (often b'' while a line is incomplete)."""
        return self.feed_many([chunk])

    def feed_many(self, list chunks):
        """The relayed bytes for the lines that these chunks complete, in one call.

        The per-line work runs without the GIL, so a worker thread can relabel one batch while the event
        loop reads the next and writes the last.
        """
        cdef Py_ssize_t count = len(chunks), size = self.carry_length + 4096, index
        cdef const char** starts = <const char**>malloc(max(count, 1) * sizeof(char*))
        cdef Py_ssize_t* lengths = <Py_ssize_t*>malloc(max(count, 1) * sizeof(Py_ssize_t))
        if starts == NULL or lengths == NULL:
            free(starts)
            free(lengths)
            raise MemoryError()
        for index in range(count):
            chunk = <bytes?>chunks[index]
            starts[index], lengths[index] = PyBytes_AS_STRING(chunk), PyBytes_GET_SIZE(chunk)
            size += lengths[index]
        _lock(self.memo)
        try:
            self._follow_name_epoch()
            self._open_output(size)
            # One stretch without the GIL for the whole batch: the GIL is taken back only for lines that
            # need Python, so a worker thread rarely waits for the event loop to let go of it.
            with nogil:
                for index in range(count):
                    self._feed_chunk(starts[index], lengths[index])
            return self._close_output()
        finally:
            free(starts)
            free(lengths)
            Py_CLEAR(self.out_object)  # left only by an error
            PyThread_release_lock(self.memo.lock)

    def finish(self):
        """The relayed bytes for a last line without newline, and OpenMetrics' `# EOF`."""
        cdef Py_ssize_t length = self.carry_length
        _lock(self.memo)
        try:
            self._follow_name_epoch()
            self._open_output(length + 4096)
            if length:
                self.carry_length = 0
                try:
                    if self._line(self.carry, length) == CONTINUE:  # the body ended inside a quoted value
                        self._line(self.carry, length, True)
                except LINE_ERRORS as error:
                    raise self._located(error, self.lines_before, self.offset, self.carry,
                                        self.carry, length) from error
            relayed = self._close_output()
            self.memo.end_of_scrape(self.samples_in, self.memo_misses, self.was_full)
        finally:
            Py_CLEAR(self.out_object)
            PyThread_release_lock(self.memo.lock)
        if not self.openmetrics:
            return relayed
        if not self.ended:
            raise missing_eof()
        return relayed + b"# EOF\n"

    cdef int _feed_chunk(self, const char* data, Py_ssize_t length) except -1 nogil:
        """Frame one chunk: complete the carried line, relabel the whole lines, carry the rest (as LineBlocks,
        the same checks in the same order)."""
        cdef Py_ssize_t cut = length - 1
        cdef Py_ssize_t rest, first
        cdef Py_ssize_t data_offset = self.offset + self.carry_length  # where `data` starts in the body
        while cut >= 0 and data[cut] != b'\n':
            cut -= 1
        if cut < 0:
            self._carry_append(data, length)
            if self.line_limit and self.carry_length > self.line_limit:
                self._line_too_long(self.carry, self.lines_before, self.offset, self.carry, self.carry_length)
            return 0
        rest = length - cut - 1
        if self.carry_length:
            # Only the line that the carry begins is copied; the rest is read where it lies.
            first = <Py_ssize_t>(<const char*>memchr(data, b'\n', cut + 1) - data)
            self._carry_append(data, first)
            if self.carry_has_lines:  # a sample carried over: its lines are checked one by one
                self._check_lengths(self.carry, self.carry_length, self.lines_before, self.offset)
            elif self.line_limit and self.carry_length > self.line_limit:
                self._line_too_long(self.carry, self.lines_before, self.offset, self.carry, self.carry_length)
            if first < cut:
                self._check_lengths(data + first + 1, cut - first - 1,
                                    self.lines_before + _newlines(self.carry, self.carry_length) + 1,
                                    data_offset + first + 1)
            self._check_rest(data, cut, rest, data_offset)
            self.carry_has_lines = False
            if not self.openmetrics and _opens_quote(self.carry, self.carry_length):
                # The carried sample may go on into this chunk's lines: one block with them, as LineBlocks.
                self._carry_append(data + first, cut - first)
                if self._block(self.carry, self.carry_length) == PENDING:
                    self._carry_keep_from(self.pending)
                    self._carry_append(data + cut, length - cut)
                    self.carry_has_lines = True
                    return 0
                self.carry_length = 0
            else:
                self._block(self.carry, self.carry_length)  # cannot end inside a quoted value
                self.carry_length = 0
                if first < cut and self._block(data + first + 1, cut - first - 1) == PENDING:
                    self._carry_append(self.pending, data + length - self.pending)
                    self.carry_has_lines = True
                    return 0
        else:
            self._check_lengths(data, cut, self.lines_before, data_offset)
            self._check_rest(data, cut, rest, data_offset)
            if self._block(data, cut) == PENDING:
                self._carry_append(self.pending, data + length - self.pending)
                self.carry_has_lines = True
                return 0
        self._carry_append(data + cut + 1, rest)
        return 0

    cdef void _carry_keep_from(self, const char* start) noexcept nogil:
        """Keep only the carry from `start` (a pointer into it) on."""
        cdef Py_ssize_t offset = start - self.carry
        memmove(self.carry, self.carry + offset, self.carry_length - offset)
        self.carry_length -= offset

    cdef int _check_rest(self, const char* data, Py_ssize_t cut, Py_ssize_t rest,
                         Py_ssize_t data_offset) except -1 nogil:
        """The line after a chunk's last newline is checked after the whole lines before it, as LineBlocks."""
        if self.line_limit and rest > self.line_limit:
            self._line_too_long(data + cut + 1,
                                self.lines_before + _newlines(self.carry, self.carry_length)
                                + _newlines(data, cut + 1), data_offset + cut + 1, data + cut + 1, rest)
        return 0

    cdef int _line_too_long(self, const char* line, Py_ssize_t lines_before, Py_ssize_t offset,
                            const char* base, Py_ssize_t length) except -1 nogil:
        """Raise line_too_long, located at the line at `line` (`length` bytes) in the stretch of the body that
        begins at `base` (at byte `offset`, after `lines_before` lines)."""
        with gil:
            raise self._located(line_too_long(self.line_limit), lines_before, offset, base, line, length)

    cdef object _located(self, error, Py_ssize_t lines_before, Py_ssize_t offset, const char* base,
                         const char* line, Py_ssize_t length):
        """`error` located (relay.exposition.located) at the line at `line`, `length` bytes long, in a stretch
        of the body that starts at `base`, at byte `offset`, after `lines_before` lines."""
        return located(error, lines_before + _newlines(base, line - base) + 1, offset + (line - base),
                       line[:min(length, EXCERPT_SOURCE)])

    cdef int _open_output(self, Py_ssize_t capacity) except -1:
        """Write the output straight into a new bytes object: no copy when it is handed over."""
        output = PyBytes_FromStringAndSize(NULL, capacity)
        Py_INCREF(output)
        self.out_object = <PyObject*>output
        self.out = PyBytes_AS_STRING(output)
        self.out_capacity = capacity
        self.out_length = 0
        return 0

    cdef int _grow_output(self, Py_ssize_t needed) except -1:
        capacity = max(needed, self.out_capacity * 2)
        _PyBytes_Resize(&self.out_object, capacity)
        self.out = PyBytes_AS_STRING(<object>self.out_object)
        self.out_capacity = capacity
        return 0

    cdef bytes _close_output(self):
        _PyBytes_Resize(&self.out_object, self.out_length)
        output = <bytes>self.out_object
        Py_CLEAR(self.out_object)
        self.out = NULL
        self.out_capacity = 0
        return output

    cdef int _carry_append(self, const char* data, Py_ssize_t length) except -1 nogil:
        if _grow(&self.carry, &self.carry_capacity, self.carry_length + length) < 0:
            with gil:
                raise MemoryError()
        memcpy(self.carry + self.carry_length, data, length)
        self.carry_length += length
        return 0

    cdef int _reserve(self, char** buffer, Py_ssize_t* capacity, Py_ssize_t needed) except -1:
        if _grow(buffer, capacity, needed) < 0:
            raise MemoryError()
        return 0

    cdef inline int _emit(self, const char* data, Py_ssize_t length) except -1:
        if self.out_length + length > self.out_capacity:
            self._grow_output(self.out_length + length)
        memcpy(self.out + self.out_length, data, length)
        self.out_length += length
        return 0

    cdef int _check_lengths(self, const char* block, Py_ssize_t length, Py_ssize_t lines_before,
                            Py_ssize_t offset) except -1 nogil:
        """Every line of a block (after `lines_before` lines, at byte `offset` of the body) is checked before
        any is relayed, as LineBlocks does."""
        cdef const char* start = block
        cdef const char* end = block + length
        cdef const char* newline
        if not self.line_limit or length <= self.line_limit:
            return 0  # no line of the block can be longer than the block
        while True:
            newline = <const char*>memchr(block, b'\n', end - block)
            if newline == NULL:
                newline = end
            if newline - block > self.line_limit:
                self._line_too_long(block, lines_before, offset, start, newline - block)
            if newline == end:
                return 0
            block = newline + 1

    cdef int _block(self, const char* block, Py_ssize_t length) except -1 nogil:
        """Relabel the lines of a block, which starts the carry's place in the body (lines_before, offset) and
        moves it past what was read; PENDING (and `pending` set) when its last sample goes on past it."""
        cdef const char* start = block
        cdef const char* end = block + length
        cdef const char* newline
        cdef Py_ssize_t line_length, lines = 0
        cdef int handled
        while True:
            newline = <const char*>memchr(block, b'\n', end - block)
            line_length = (newline if newline != NULL else end) - block
            handled = self._line_fast(block, line_length)
            if handled == SLOW:
                with gil:
                    self.sample_end = block + line_length
                    try:
                        if self._line(block, line_length) == CONTINUE:
                            newline = self._continue(block, block + line_length, end)
                            if newline == NULL:
                                self.pending = block
                                self.lines_before += lines
                                self.offset += block - start
                                return PENDING
                            lines += _newlines(block, newline - block)
                            if newline == end:
                                newline = NULL
                    except LINE_ERRORS as error:
                        raise self._located(error, self.lines_before, self.offset, start, block,
                                            self.sample_end - block) from error
            elif handled == OUT_OF_MEMORY:
                with gil:
                    raise MemoryError()
            lines += 1
            if newline == NULL:
                self.lines_before += lines
                self.offset += length + 1
                return 0
            block = newline + 1

    cdef const char* _continue(self, const char* start, const char* line_end, const char* end) except? NULL:
        """Join the lines after `start` until its quoted value closes, and relabel the whole sample; where it
        ends, or NULL when the block ends first (as PythonBodyRelabeler._continued)."""
        cdef const char* following
        cdef const char* text = start  # the sample without its leading blanks, as the Python engine counts
        while text < line_end and (text[0] == b' ' or text[0] == b'\t'):
            text += 1
        while _opens_quote(start, line_end - start):
            if line_end >= end:
                return NULL
            following = <const char*>memchr(line_end + 1, b'\n', end - line_end - 1)
            line_end = following if following != NULL else end
            self.sample_end = line_end
            if self.line_limit and line_end - text > self.line_limit:
                raise line_too_long(self.line_limit)
        self._line(start, line_end - start, True)
        return line_end

    cdef int _line_fast(self, const char* line, Py_ssize_t length) noexcept nogil:
        """The common line, without the GIL: a sample whose series the memo knows, with a canonical tail,
        and nothing that needs Python (metadata to place, a limit to report). SLOW before any change of
        state when the line needs the full path, so that _line() can take it from the start."""
        cdef Py_ssize_t series_length, needed
        cdef size_t number
        cdef uint64_t key0, key1
        cdef uint32_t flags, name_id
        cdef int seen
        cdef Entry* entry
        if self.openmetrics and (self.ended or length == 0 or line[0] == b' ' or line[0] == b'\t'):
            return SLOW
        if length == 0:
            return HANDLED
        if <uint8_t>line[0] < 58 or (self.openmetrics and _find_exemplar_mark(line, length)):
            return SLOW
        series_length = _series_length(line, length)
        _siphash13_128(<const uint8_t*>line, series_length, self.memo.k0, self.memo.k1, &key0, &key1)
        number = self.memo._lookup(key0, key1, self.predicted)
        if number == NO_ENTRY:
            return SLOW
        self.predicted = number + 1
        if not _canonical_tail(line + series_length, length - series_length, self.openmetrics):
            return SLOW
        entry = &self.memo.entries[number]
        flags, name_id = entry.flags, entry.name_id
        if flags & NOT_OPENMETRICS and self.openmetrics:
            return SLOW
        if flags & DROPPED and flags >> REASON_SHIFT == REASON_INVALID_LINE and not self.openmetrics:
            return SLOW  # perhaps the first line of a sample with a raw newline in a quoted value
        if flags & DROPPED or (flags & UTF8_ONLY and not self.utf8_names):
            self.samples_in += 1
            self.drops[flags >> REASON_SHIFT if flags & DROPPED else REASON_UTF8_NAME] += 1
            return HANDLED
        if flags & LIMIT_ERROR:
            return SLOW
        if name_id != self.last_name_id and (self.metadata_pending or not self._is_noted(name_id)):
            return SLOW
        if self.sample_limit and self.samples_out >= self.sample_limit:
            return SLOW
        needed = (length if flags & KEEP_VERBATIM else entry.length + length - series_length) + 1
        if self.out_length + needed > self.out_capacity:
            return SLOW  # the output grows with the GIL held
        # From here on the line is this path's: state changes.
        self.samples_in += 1
        self.last_name_id = name_id
        if self.dedup:
            seen = self._seen_before_nogil(self.memo.identities[number])
            if seen < 0:
                return OUT_OF_MEMORY
            if seen:
                self.drops[REASON_DUPLICATE] += 1
                return HANDLED
        self.samples_out += 1
        if flags & KEEP_VERBATIM:
            memcpy(self.out + self.out_length, line, length)
            self.out_length += length
        else:
            memcpy(self.out + self.out_length, self.memo.arena + entry.offset, entry.length)
            self.out_length += entry.length
            memcpy(self.out + self.out_length, line + series_length, length - series_length)
            self.out_length += length - series_length
        self.out[self.out_length] = b'\n'
        self.out_length += 1
        return HANDLED

    cdef int _line(self, const char* line, Py_ssize_t length, bint continued=False) except -1:
        """The full path of one line, with the GIL; CONTINUE when the sample goes on in the next lines (a raw
        newline inside a quoted label value), unless `continued` (the line is already the whole sample)."""
        cdef Py_ssize_t series_length
        cdef size_t number
        cdef uint64_t key0, key1, identity = 0
        cdef uint32_t flags, name_id, offset = 0, replacement_length = 0
        cdef bint tail_canonical, tail_invalid = False
        cdef NativeMemo memo = self.memo
        cdef Entry* entry
        cdef object exemplar = None, replacement = None, new_tail = None, result
        if self.openmetrics and (self.ended or length == 0 or line[0] == b' ' or line[0] == b'\t'):
            raise openmetrics_line_error(line[:length], ended=self.ended)
        if length == 0:
            return 0
        if <uint8_t>line[0] < 58:  # not a name's first character nor '{': blanks, a comment, or invalid
            while length and (line[0] == b' ' or line[0] == b'\t'):
                line += 1
                length -= 1
            if length == 0:
                return 0
            if line[0] == b'#':
                self.tracker.comment(line[:length])
                self.ended = self.tracker.ended
                self.metadata_pending = self.tracker.has_pending
                self.last_name_id = 0
                return 0
        if self.openmetrics and _find_exemplar_mark(line, length):
            without, exemplar = split_exemplar(line[:length])
            length = PyBytes_GET_SIZE(without)
            if not exemplar:
                exemplar = None
        series_length = _series_length(line, length)
        _siphash13_128(<const uint8_t*>line, series_length, memo.k0, memo.k1, &key0, &key1)
        number = memo._lookup(key0, key1, self.predicted)
        if number != NO_ENTRY:
            entry = &memo.entries[number]
            flags, name_id = entry.flags, entry.name_id
            offset, replacement_length = entry.offset, entry.length
            if self.dedup:
                identity = memo.identities[number]
        else:
            flags = self._decide_by_filters(line, series_length) if self.filter_steps is not None else 0
            if flags:
                name_id, identity, replacement_length = self.decided_name_id, 0, 0
                number = memo._insert(key0, key1, flags, name_id, 0, NULL, 0)
            else:
                try:
                    result = self.relabel_series(line[:series_length])
                except InvalidExpositionError:
                    if continued or self.openmetrics or not _opens_quote(line, length):
                        raise
                    return CONTINUE
                flags, name_id, identity, replacement = _encode(memo, result)
                replacement_length = PyBytes_GET_SIZE(replacement)
                number = memo._insert(key0, key1, flags, name_id, identity, PyBytes_AS_STRING(replacement),
                                      replacement_length)
            memo.misses += 1  # once decided: an invalid series raises and is no miss (as Rules.learn_series)
        # Bodies list their series in the same order every scrape: the next line is likely the next entry.
        self.predicted = number + 1
        if (flags & DROPPED and flags >> REASON_SHIFT == REASON_INVALID_LINE and not continued
                and not self.openmetrics and _opens_quote(line, length)):
            return CONTINUE
        if self.openmetrics and flags & NOT_OPENMETRICS:
            self.rules.openmetrics_refusal(line[:series_length])  # raises, unless invalid lines are dropped
            flags = OCCUPIED | DROPPED | (REASON_INVALID_LINE << REASON_SHIFT)
        tail_canonical = _canonical_tail(line + series_length, length - series_length, self.openmetrics)
        if not tail_canonical:
            learned = self.learn_tail(line[series_length:length], openmetrics=self.openmetrics)
            if learned is None:
                tail_invalid = True
            elif learned is True:
                tail_canonical = True
            else:
                new_tail = learned
        self.samples_in += 1
        if flags & DROPPED:
            self.drops[flags >> REASON_SHIFT] += 1
            return 0
        if flags & UTF8_ONLY and not self.utf8_names:
            self.drops[REASON_UTF8_NAME] += 1
            return 0
        if tail_invalid:
            self.drops[REASON_INVALID_LINE] += 1
            return 0
        if flags & LIMIT_ERROR:
            raise label_limit_error(self.relabel_series(line[:series_length]).limit_error)
        if name_id != self.last_name_id or name_id == UNNAMED:  # families run in blocks: once per name
            self.last_name_id = name_id
            if name_id == UNNAMED or self.metadata_pending or not self._noted(name_id):
                # Without pending metadata, describe() only notes the name: once per name is enough.
                name = result.name if name_id == UNNAMED else memo.names[name_id]
                for described in self.tracker.describe(name):
                    self._emit(PyBytes_AS_STRING(described), PyBytes_GET_SIZE(described))
                    self._emit(b"\n", 1)
                self.metadata_pending = self.tracker.has_pending
        if self.dedup and self._seen_before(identity):
            self.drops[REASON_DUPLICATE] += 1
            return 0
        self.samples_out += 1
        if flags & KEEP_VERBATIM:
            self._emit(line, length if tail_canonical else series_length)
        elif replacement is not None:
            self._emit(PyBytes_AS_STRING(replacement), replacement_length)
        else:
            self._emit(memo.arena + offset, replacement_length)
        if not (flags & KEEP_VERBATIM and tail_canonical):
            if tail_canonical:
                self._emit(line + series_length, length - series_length)
            else:
                self._emit(PyBytes_AS_STRING(new_tail), PyBytes_GET_SIZE(new_tail))
        if exemplar is not None and not (flags & STRIP_EXEMPLAR):
            self._emit(PyBytes_AS_STRING(exemplar), PyBytes_GET_SIZE(exemplar))
        self._emit(b"\n", 1)
        if self.sample_limit and self.samples_out > self.sample_limit:
            raise sample_limit_error(self.sample_limit)
        return 0

    cdef void _follow_name_epoch(self) noexcept:
        """After the memo's names started over (between two calls of this body), forget the old ids."""
        if self.name_epoch != self.memo.name_epoch:
            self.name_epoch = self.memo.name_epoch
            self.last_name_id = 0  # describe() again for the next name: harmless, it is idempotent
            if self.noted != NULL:
                memset(self.noted, 0, self.noted_capacity)

    cdef inline bint _is_noted(self, uint32_t name_id) noexcept nogil:
        return name_id < self.noted_capacity and self.noted[name_id]

    cdef bint _noted(self, uint32_t name_id) except -1:
        """Whether this body already told the tracker about this name; notes it."""
        cdef size_t capacity
        cdef uint8_t* grown
        if name_id >= self.noted_capacity:
            capacity = max(<size_t>name_id + 1, self.noted_capacity * 2, 1024)
            grown = <uint8_t*>realloc(self.noted, capacity)
            if grown == NULL:
                raise MemoryError()
            memset(grown + self.noted_capacity, 0, capacity - self.noted_capacity)
            self.noted, self.noted_capacity = grown, capacity
        if self.noted[name_id]:
            return True
        self.noted[name_id] = 1
        return False

    cdef uint32_t _decide_by_filters(self, const char* series, Py_ssize_t length) except? 0:
        """A new series' entry flags, found without Python's parser when the rules only keep or drop: the
        text in the simple form (`name{a="b",...}`, ASCII, no escapes, no label twice, not `__name__`), each
        rule's joined source values built here and its regex asked through its own memo. 0: not in that
        form, so Rules.relabel_series decides (and reports any error)."""
        cdef Py_ssize_t name_end, count, i, j, joined_length
        cdef Py_ssize_t* spans = self.spans
        cdef const char* label
        cdef Py_ssize_t label_length
        count = _simple_series(series, length, spans, MAX_SIMPLE_LABELS, &name_end)
        if count < 0:
            return 0
        name_id = self.memo._name_id(PyUnicode_DecodeASCII(series, name_end, NULL))
        if name_id == UNNAMED:
            return 0
        self.decided_name_id = name_id
        for source_labels, separator, keep_when, matches, target in self.filter_steps:
            joined_length = 0
            for i, source in enumerate(source_labels):
                if i:
                    self._scratch_append(&joined_length, PyBytes_AS_STRING(separator),
                                         PyBytes_GET_SIZE(separator))
                _label_value(series, name_end, spans, count, PyBytes_AS_STRING(source),
                             PyBytes_GET_SIZE(source), &label, &label_length)
                self._scratch_append(&joined_length, label, label_length)
            if matches is not None:
                kept = matches(PyUnicode_DecodeUTF8(self.scratch, joined_length, NULL)) == keep_when
            else:
                _label_value(series, name_end, spans, count, PyBytes_AS_STRING(target),
                             PyBytes_GET_SIZE(target), &label, &label_length)
                kept = (label_length == joined_length
                        and memcmp(label, self.scratch, joined_length) == 0) == keep_when
            if not kept:
                return OCCUPIED | DROPPED | (REASON_RELABEL << REASON_SHIFT)
        return OCCUPIED | KEEP_VERBATIM

    cdef int _scratch_append(self, Py_ssize_t* length, const char* data, Py_ssize_t size) except -1:
        self._reserve(&self.scratch, &self.scratch_capacity, length[0] + size)
        memcpy(self.scratch + length[0], data, size)
        length[0] += size
        return 0

    cdef bint _seen_before(self, uint64_t identity) except -1:
        """Whether this body already sent a series with this label set; remembers it (bounded)."""
        cdef int seen = self._seen_before_nogil(identity)
        if seen < 0:
            raise MemoryError()
        return seen

    cdef int _seen_before_nogil(self, uint64_t identity) noexcept nogil:
        """1 if this body already sent a series with this label set, else 0 (and remember it); -1: no memory."""
        cdef size_t mask, index, i
        cdef uint64_t* old
        cdef size_t old_capacity
        if identity == 0:
            if self.seen_zero:
                return 1
            if self.seen_count < DUPLICATE_WATCH:
                self.seen_zero = True
                self.seen_count += 1
            return 0
        if self.seen == NULL:
            self.seen = <uint64_t*>calloc(INITIAL_SEEN, sizeof(uint64_t))
            if self.seen == NULL:
                return -1
            self.seen_capacity = INITIAL_SEEN
        mask = self.seen_capacity - 1
        index = <size_t>(identity * 0x9E3779B97F4A7C15ULL >> 20) & mask
        while self.seen[index] != 0:
            if self.seen[index] == identity:
                return 1
            index = (index + 1) & mask
        if self.seen_count >= DUPLICATE_WATCH:
            return 0
        self.seen[index] = identity
        self.seen_count += 1
        if self.seen_count * 2 > self.seen_capacity:
            old, old_capacity = self.seen, self.seen_capacity
            self.seen = <uint64_t*>calloc(old_capacity * 2, sizeof(uint64_t))
            if self.seen == NULL:
                self.seen = old
                return -1  # no memory: the scrape fails rather than the table fill up
            self.seen_capacity = old_capacity * 2
            mask = self.seen_capacity - 1
            for i in range(old_capacity):
                if old[i] != 0:
                    index = <size_t>(old[i] * 0x9E3779B97F4A7C15ULL >> 20) & mask
                    while self.seen[index] != 0:
                        index = (index + 1) & mask
                    self.seen[index] = old[i]
            free(old)
        return 0


cdef int _grow(char** buffer, Py_ssize_t* capacity, Py_ssize_t needed) noexcept nogil:
    """Make room for `needed` bytes in a realloc'd buffer; -1 when there is no memory."""
    cdef char* grown
    if needed <= capacity[0]:
        return 0
    needed = max(needed, capacity[0] * 2, 65536)
    grown = <char*>realloc(buffer[0], needed)
    if grown == NULL:
        return -1
    buffer[0] = grown
    capacity[0] = needed
    return 0


cdef Py_ssize_t _newlines(const char* text, Py_ssize_t length) noexcept nogil:
    """How many newlines `text` holds (for errors: the warm path counts lines as it reads them)."""
    cdef const char* end = text + length
    cdef Py_ssize_t count = 0
    while text < end:
        text = <const char*>memchr(text, b'\n', end - text)
        if text == NULL:
            break
        count += 1
        text += 1
    return count


cdef int _lock(NativeMemo memo) except -1:
    """Take the memo's lock, letting other threads run while it is busy."""
    if not PyThread_acquire_lock(memo.lock, NOWAIT_LOCK):
        with nogil:
            PyThread_acquire_lock(memo.lock, WAIT_LOCK)
    return 0


cdef bint _opens_quote(const char* line, Py_ssize_t length) noexcept nogil:
    """relay.exposition.opens_quote in C: whether a sample line ends inside a quoted value or name."""
    cdef Py_ssize_t i = 0
    while i < length and line[i] != b'{' and line[i] != b'"' and line[i] != b'#':
        i += 1
    if i == length or line[i] != b'{':
        return False
    i += 1
    while i < length:
        if line[i] != b'"':
            i += 1
            continue
        i += 1
        while i < length and line[i] != b'"':
            if line[i] == b'\\':
                if i + 1 >= length:
                    return False  # a backslash that escapes nothing: no string of the grammar
                i += 1
            i += 1
        if i >= length:
            return True
        i += 1
    return False


def opens_quote_native(bytes line):
    """The C version of relay.exposition.opens_quote (for tests)."""
    return _opens_quote(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line))


cdef inline Py_ssize_t _series_length(const char* line, Py_ssize_t length) noexcept nogil:
    """Where the series of a sample line ends: after its last '}', or else at the first blank (as the
    Python engine's rfind and _end_of_bare_name)."""
    cdef Py_ssize_t end = length - 1
    while end >= 0 and line[end] != b'}':
        end -= 1
    if end >= 0:
        return end + 1
    end = 0
    while end < length and line[end] != b' ' and line[end] != b'\t':
        end += 1
    return end


cdef inline bint _name_start(char c) noexcept nogil:
    return (b'a' <= c <= b'z') or (b'A' <= c <= b'Z') or c == b'_'


cdef inline bint _name_char(char c) noexcept nogil:
    return _name_start(c) or (b'0' <= c <= b'9')


cdef Py_ssize_t _simple_series(const char* text, Py_ssize_t length, Py_ssize_t* spans, Py_ssize_t most,
                               Py_ssize_t* name_end) noexcept nogil:
    """The labels of a series in the simple form, as (name start, name length, value start, value length)
    in `spans`: their count, or -1 when the text is not in that form (the Python parser decides then)."""
    cdef Py_ssize_t i = 0, count = 0, start, previous
    if length == 0 or not (_name_start(text[0]) or text[0] == b':'):
        return -1
    i = 1
    while i < length and (_name_char(text[i]) or text[i] == b':'):
        i += 1
    name_end[0] = i
    if i == length:
        return 0
    if text[i] != b'{' or text[length - 1] != b'}':
        return -1
    i += 1
    while True:
        if count == most or i >= length or not _name_start(text[i]):
            return -1
        start = i
        while i < length and _name_char(text[i]):
            i += 1
        if i + 1 >= length or text[i] != b'=' or text[i + 1] != b'"':
            return -1
        spans[4 * count] = start
        spans[4 * count + 1] = i - start
        if i - start == 8 and memcmp(text + start, b"__name__", 8) == 0:
            return -1
        for previous in range(count):
            if spans[4 * previous + 1] == i - start and memcmp(text + spans[4 * previous], text + start,
                                                                 i - start) == 0:
                return -1
        i += 2
        start = i
        while i < length and text[i] != b'"':
            if text[i] == b'\\' or text[i] == b'\n' or <uint8_t>text[i] >= 0x80:
                return -1
            i += 1
        if i >= length:
            return -1
        spans[4 * count + 2] = start
        spans[4 * count + 3] = i - start
        count += 1
        i += 1
        if i == length - 1:  # the closing brace
            return count
        if text[i] != b',':
            return -1
        i += 1


cdef void _label_value(const char* text, Py_ssize_t name_end, const Py_ssize_t* spans, Py_ssize_t count,
                       const char* label, Py_ssize_t label_length, const char** value,
                       Py_ssize_t* value_length) noexcept nogil:
    """The value of a label (`__name__` included) in a simple series; empty when it has none."""
    cdef Py_ssize_t i
    if label_length == 8 and memcmp(label, b"__name__", 8) == 0:
        value[0], value_length[0] = text, name_end
        return
    for i in range(count):
        if spans[4 * i + 1] == label_length and memcmp(text + spans[4 * i], label, label_length) == 0:
            value[0], value_length[0] = text + spans[4 * i + 2], spans[4 * i + 3]
            return
    value[0], value_length[0] = text, 0


cdef inline bint _find_exemplar_mark(const char* line, Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(length - 2):
        if line[i] == b' ' and line[i + 1] == b'#' and line[i + 2] == b' ':
            return True
    return False


cdef tuple _encode(NativeMemo memo, result):
    """A SeriesResult as an entry's flags, name id, identity and replacement bytes."""
    output, name, renamed, unchanged, drop_reason, limit_error, identity, utf8_output, openmetrics_valid = result
    cdef uint32_t flags = OCCUPIED
    replacement = b""
    if output is None and utf8_output is None:
        flags |= DROPPED | (DROP_REASONS.index(drop_reason) << REASON_SHIFT)
    elif output is None:
        flags |= UTF8_ONLY | KEEP_REPLACED
        replacement = utf8_output
    elif unchanged:
        flags |= KEEP_VERBATIM
    else:
        flags |= KEEP_REPLACED
        replacement = output
    if limit_error:
        flags |= LIMIT_ERROR
    if renamed and not name.endswith(EXEMPLAR_SUFFIXES):
        flags |= STRIP_EXEMPLAR
    if not openmetrics_valid:
        flags |= NOT_OPENMETRICS
    return flags, memo._name_id(name), identity & 0xFFFFFFFFFFFFFFFF, replacement
