"""/metrics at 10,000 targets and more without holding the event loop that times checks.

prometheus_client formats the whole exposition on every scrape (1.4 s for the
310,000 samples of 10,000 targets, all of it on the loop) and gzips it at
level 9 (0.9 s more). Here each target's samples are formatted when they
have changed and kept as bytes, one string per target with where each family
ends in it (a bytes object per family would cost 4 MB of object headers at
10,000 targets, a tenth of the text itself). Each line of a target repeats its
``target="..."`` label, half of the text for a URL-named target: a worker
process's share keeps it as one byte (``MARK``), put back as the share is
compressed (``keep``; ``labels_once``). Putting it back costs about 0.1 µs a
line under the GIL, in the compressing thread: twice the loop's stalls of a
plain scrape, which one process scraped every second cannot afford, and a
worker scraped every 15 s at 50,000 targets can. A scrape formats only
the targets that changed since the last one (between scrapes, what changed
is formatted every second: ``keep_fresh``), in slices that yield to the
loop, and hands out the cached pieces, joined a block at a time as they are
written (``Text``: no second copy of the whole text), or gzipped in a native
thread (zlib releases the GIL) at level 1: 14x smaller, at a fifth of level
6's CPU. With worker processes, each renders its own targets' share and
the parent joins them (``SharedExposition``).

The text is the one prometheus_client's ``generate_latest`` writes for the
same samples (``StoreCollector``): ``sample_line`` follows it exactly, and a
test compares the two byte for byte.

Whatever a config or a discovery source holds, the text parses: every label
name is ``[a-zA-Z_][a-zA-Z0-9_]*`` and every label value escaped and valid
UTF-8. Target labels are the only names that are not greenmon's own, and
MetricsStore.set_targets checks them, and makes the target's strings valid
UTF-8, once per target (``store.exported_target``); a line only escapes
(``_escape``: backslash, double quote, newline, as the format asks). The
encode of a target's text and of the tail turns a lone surrogate that got
here some other way into U+FFFD, as set_targets does, instead of raising
(a failed render is a failed scrape); it costs nothing when there is none.
"""

from __future__ import annotations

import codecs
import time
import zlib
from array import array
from itertools import accumulate
from typing import Callable, Iterable, Iterator, Sequence

import gevent.lock
from prometheus_client.utils import floatToGoString

from greenmon.cooperative import Slices
from greenmon.gzipjoin import Part, deflate_part, gzip_stream
from greenmon.metrics import (ALL_TARGET_METRICS, TARGET_METRICS, MetricRow, changed_metrics,
                              global_samples, target_samples)
from greenmon.store import MetricsStore, Sample, TargetSeries

# A worker's share of the per-target families, as Text.share gives it: per family, None (not
# exported) or its text compressed as a part of a gzip stream.
Share = Sequence[Part | None]
INFLATE_CHUNK = 256 * 1024   # of text at a time, for a client that does not take gzip

BLOCK = 256        # targets per joined piece: about 50 KB of text
MARK = b"\x00"     # a target's label in its kept text (keep); in a text only from its own strings
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"   # the text format written here
GZIP_LEVEL = 1
FRESH_EVERY_S = 1.0      # between scrapes, what changed is formatted this often ...
FRESH_WHILE_S = 300.0    # ... for this long after the last scrape (or the start)


def _as_replacement(error: UnicodeError) -> tuple[bytes, int]:
    """The ``errors`` handler of the exposition's encodes: U+FFFD for each character UTF-8
    cannot carry (a lone surrogate), as store.utf8_text does; as bytes, because the
    UTF-8 encoder takes only ASCII text from a handler."""
    if isinstance(error, UnicodeEncodeError):
        return "\ufffd".encode() * (error.end - error.start), error.end
    raise error


UTF8_ERRORS = "greenmon.fffd"
codecs.register_error(UTF8_ERRORS, _as_replacement)


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, a lone surrogate that got this far as U+FFFD: a failed render would
    be a failed scrape. A plain encode() first, the handler only when it fails."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", UTF8_ERRORS)


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value   # the common case: nothing to escape (three scans, no new string)


_SMALL_COUNTS = tuple(f"{count}.0" for count in range(1000))   # as floatToGoString writes them


def _number(value) -> str:
    if type(value) is int and 0 <= value < 1000:
        return _SMALL_COUNTS[value]
    return floatToGoString(value)


def sample_line(sample: Sample) -> str:
    name, labels, value = sample
    if labels:
        inner = ",".join([key + '="' + _escape(text) + '"' for key, text in labels])
        return f"{name}{{{inner}}} {_number(value)}\n"
    return f"{name} {_number(value)}\n"


def family_header(row: MetricRow) -> bytes:
    help_text = row.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {row.name} {help_text}\n# TYPE {row.name} {row.kind}\n".encode()


def gzip_pieces(pieces: Iterable[bytes], level: int = GZIP_LEVEL) -> bytes:
    """One gzip member of the pieces, in order (run it off the loop: see cooperative.off_loop)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    out = [compressor.compress(piece) for piece in pieces]
    out.append(compressor.flush())
    return b"".join(out)


def global_text(store: MetricsStore) -> bytes:
    """The families that are not per target (GLOBAL_METRICS), headers and lines."""
    return b"".join(family_header(row) + utf8("".join(map(sample_line, found)))
                    for row, found in global_samples(store))


class Text:
    """One scrape's exposition: the cached pieces it is made of, joined a block of targets at
    a time only as it is written out or compressed, so that no second copy of the whole text
    (tens of MB at 10,000 targets) is ever built. It holds references to immutable bytes:
    iterating it in a thread is safe while the loop goes on."""

    def __init__(self, headers: list[bytes | None], targets: list[Kept],
                 tail: bytes, size: int, versions: tuple[int, ...],
                 parts: dict[int, tuple[int, Part]], labels_once: bool = False):
        self._headers = headers       # None: a per-target family that is not exported
        self._labels_once = labels_once   # the targets' labels are kept as MARK (keep)
        self._targets = targets
        self._tail = tail
        self.size = size
        self._versions = versions     # of each family's lines (Exposition._versions) ...
        self._parts = parts           # ... and the parts compressed of them, by family

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        for family, header in enumerate(self._headers):
            if header is not None:
                yield header
                yield from self.family(family)
        yield self._tail

    def family(self, index: int) -> Iterator[bytes]:
        """The lines of TARGET_METRICS[index] of every target, a block of targets at a time."""
        targets, end = self._targets, index + 1
        for start in range(0, len(targets), BLOCK):
            if self._labels_once:
                yield b"".join([text[ends[index]:ends[end]].replace(MARK, label)
                                for text, ends, label, _ in targets[start:start + BLOCK]])
            else:   # the text as kept is the text written out
                yield b"".join([text[ends[index]:ends[end]] for text, ends, _, _ in targets[start:start + BLOCK]])

    def share(self) -> Share:
        """These targets' lines of each per-target family, without its header, compressed as a
        part of a gzip stream (None for a family not exported). What a worker process sends
        for the parent's /metrics (``SharedExposition``), compressed even for a client that
        does not take gzip: the parent inflates it as it writes it, and no process holds
        the whole text twice. Run it off the loop."""
        return [None if header is None else self._part(index)
                for index, header in enumerate(self._headers)]

    def _part(self, index: int) -> Part:
        """The family compressed, or the part compressed of the same lines before: in steady
        state a third of the text (error and retry counters, target_info, the objectives)
        changes only when something happens."""
        version, kept = self._versions[index], self._parts.get(index)
        if kept is not None and kept[0] == version:
            return kept[1]
        part = deflate_part(self.family(index), GZIP_LEVEL)
        self._parts[index] = (version, part)
        return part


# A target's formatted lines as kept between scrapes: (text, ends, label, size). ``text`` holds
# each occurrence of ``label`` (its ``target="..."``) as MARK; ``ends``: where each family's part
# starts and ends in it; ``size``: the length of the lines written out. ``label`` MARK: the lines
# are kept whole (putting it back changes nothing), as in one process, or for a target whose
# own strings hold MARK. A plain tuple: a scrape unpacks one per target and family, and a
# tuple subclass unpacks at half the speed.
Kept = tuple[bytes, array, bytes, int]


def keep(pieces: list[bytes], label: bytes) -> Kept:
    """Kept from a target's lines as written out, a piece per family (``label`` MARK: whole)."""
    if label == MARK or any(MARK in piece for piece in pieces):
        return _joined(pieces, MARK)
    return _joined([piece.replace(label, MARK) for piece in pieces], label)


def _joined(pieces: list[bytes], label: bytes) -> Kept:
    text = b"".join(pieces)
    size = len(text) if label == MARK else len(text) + text.count(MARK) * (len(label) - 1)
    return text, array("I", accumulate(map(len, pieces), initial=0)), label, size


def kept_piece(kept: Kept, index: int) -> bytes:
    """The lines of family ``index``, as written out."""
    text, ends, label, _ = kept
    return text[ends[index]:ends[index + 1]].replace(MARK, label)


def kept_updated(kept: Kept, fresh: list[bytes | None]) -> Kept:
    """Kept with the families of ``fresh`` formatted anew (None: as kept)."""
    text, ends, label, _ = kept
    if label != MARK and any(piece is not None and MARK in piece for piece in fresh):
        return keep([kept_piece(kept, index) if piece is None else piece
                     for index, piece in enumerate(fresh)], MARK)
    return _joined([text[ends[index]:ends[index + 1]] if piece is None
                    else piece if label == MARK else piece.replace(label, MARK)
                    for index, piece in enumerate(fresh)], label)


def target_label(series: TargetSeries) -> bytes:
    """The ``target="..."`` a target's every line holds, as sample_line writes it."""
    return utf8('target="' + _escape(series.target.name) + '"')


class Exposition:
    """The store's exposition text, cached per target and family, brought up to date per scrape
    (and between scrapes: ``keep_fresh``)."""

    def __init__(self, store: MetricsStore, labels_once: bool = False):
        """``labels_once``: keep each target's label once (``keep``), as a worker's share does."""
        self.store = store
        self._labels_once = labels_once
        # target -> its lines, and where each family's part of them starts and ends
        self._texts: dict[str, Kept] = {}
        self._layout: int | None = None
        self._headers = [family_header(row) for row in TARGET_METRICS]
        self._lock = gevent.lock.Semaphore()   # one render at a time; the next finds little to do
        self._scraped_at = time.monotonic()   # a daemon is scraped soon after it starts
        # Per family: bumped whenever a target's lines of it are formatted again; a compressed
        # share of the family (Text.share) is kept as long as its version stays.
        self._versions = [0] * len(TARGET_METRICS)
        self._parts: dict[int, tuple[int, Part]] = {}

    def render(self) -> Text:
        """The whole exposition, up to date."""
        with self._lock:
            store = self.store
            self._scraped_at = time.monotonic()
            self._format_changed()
            texts = [self._texts[name] for name in store.series if name in self._texts]
            headers = [header if row.shown(store) else None
                       for header, row in zip(self._headers, TARGET_METRICS)]
            tail = global_text(store)
            size = (sum(len(h) for h in headers if h is not None) + len(tail)
                    + sum([kept[3] for kept in texts]))
            return Text(headers, texts, tail, size, tuple(self._versions), self._parts,
                        self._labels_once)

    def keep_fresh(self) -> None:
        """Between scrapes, format what changed every FRESH_EVERY_S (run it in a greenlet of its
        own), so that a scrape finds little left to format: at 50,000 targets checked every
        minute and scraped every 15 s, a worker's share had 6,000 targets to format per scrape
        (0.6 s), and after a reload all of them. From the start, and then only while scrapes
        come: a daemon nobody scrapes stops formatting after FRESH_WHILE_S."""
        while True:
            gevent.sleep(FRESH_EVERY_S)
            if time.monotonic() - self._scraped_at <= FRESH_WHILE_S:
                with self._lock:
                    self._format_changed()

    def _format_changed(self) -> None:
        """Format the metrics of each target that its events since the last time changed, in
        slices that yield the loop (call it holding the lock)."""
        store = self.store
        slices = Slices()
        touched = 0
        if self._layout != store.layout:   # targets, labels or buckets changed: all anew
            self._layout = store.layout
            self._texts = {}
            stale = dict.fromkeys(store.series, 0)   # no text kept: every metric anew
            touched = ALL_TARGET_METRICS
        else:
            stale = store.changed
        store.changed = {}   # what changes from here on is formatted the next time
        for name, events in slices.each(list(stale.items())):
            series = store.series.get(name)
            if series is None:
                continue
            old = self._texts.get(name)
            metrics = ALL_TARGET_METRICS if old is None else changed_metrics(events)
            touched |= metrics
            found = target_samples(store, series, metrics)
            fresh = [None if samples is None else utf8("".join(map(sample_line, samples)))
                     for samples in found]
            if old is None:
                self._texts[name] = keep(fresh, target_label(series) if self._labels_once else MARK)
            else:
                self._texts[name] = kept_updated(old, fresh)
        for index in range(len(self._versions)):
            if touched >> index & 1:
                self._versions[index] += 1

    def document(self, gzip: bool) -> tuple[Text, bool]:
        """/metrics' body, and whether it is gzipped already (no: the web server compresses it,
        off the loop, when the client takes gzip)."""
        return self.render(), False


class Inflated:
    """The text of a gzip stream, inflated a chunk at a time as it is written out: /metrics
    joined from the workers' shares, for a client that does not take gzip. ``size``: the
    text's length, known from the parts (Content-Length)."""

    def __init__(self, pieces: list[bytes], size: int):
        self._pieces = pieces
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        for data in self._pieces:
            while data:
                text = inflater.decompress(data, INFLATE_CHUNK)
                if text:
                    yield text
                data = inflater.unconsumed_tail
        rest = inflater.flush()
        if rest:
            yield rest


class SharedExposition:
    """/metrics of a daemon with worker processes. Each worker keeps a store of its own share
    and renders that share of the per-target families (``Text.share``): at once, on its own
    core, compressed there. This process keeps no per-target text: it joins the shares
    family by family after each header, and ends with the instance-wide families of its
    own store (loop and schedule lag, sweeps...). The parts make one gzip stream
    (``gzipjoin``), which every client reads whole; one that does not take gzip gets it
    inflated as it is written (``Inflated``).

    ``fetch()`` gives each worker's share, in worker order; it raises ``ShareUnavailable``
    when one cannot give it (gone, or too slow)."""

    def __init__(self, store: MetricsStore, fetch: Callable[[], list[Share]]):
        self.store = store
        self.fetch = fetch
        self._headers = [deflate_part([family_header(row)], GZIP_LEVEL) for row in TARGET_METRICS]

    def keep_fresh(self) -> None:
        """Nothing to keep: each worker keeps its own share fresh."""

    def document(self, gzip: bool) -> tuple[list[bytes] | Inflated, bool]:
        shares = self.fetch()
        store = self.store
        parts: list[Part] = []
        for index, row in enumerate(TARGET_METRICS):
            if row.shown(store):
                parts.append(self._headers[index])
                parts += [share[index] for share in shares if share[index] is not None]
        parts.append(deflate_part([global_text(store)], GZIP_LEVEL))   # a few KB: here
        pieces = gzip_stream(parts)
        if gzip:
            return pieces, True
        return Inflated(pieces, sum(part.size for part in parts)), False
