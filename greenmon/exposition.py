"""/metrics at 10,000 targets and more without holding the event loop that times checks.

prometheus_client formats the whole exposition on every scrape (1.4 s for the
310,000 samples of 10,000 targets, all of it on the loop) and gzips it at
level 9 (0.9 s more). Here each target's samples are formatted when they
have changed and kept as bytes, one string per target with where each family
ends in it (a bytes object per family would cost 4 MB of object headers at
10,000 targets, a tenth of the text itself). A scrape formats only
the targets that changed since the last one, in slices that yield to the
loop, and hands out the cached pieces, joined a block at a time as they are
written (``Text``: no second copy of the whole text), or gzipped in a native
thread (zlib releases the GIL) at level 1: 14x smaller, at a fifth of level
6's CPU.

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
import zlib
from array import array
from itertools import accumulate
from typing import Iterable, Iterator

import gevent.lock
from prometheus_client.utils import floatToGoString

from greenmon.cooperative import Slices
from greenmon.metrics import (ALL_TARGET_METRICS, TARGET_METRICS, MetricRow, changed_metrics,
                              global_samples, target_samples)
from greenmon.store import MetricsStore, Sample

BLOCK = 256        # targets per joined piece: about 50 KB of text
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"   # the text format written here
GZIP_LEVEL = 1


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


class Text:
    """One scrape's exposition: the cached pieces it is made of, joined a block of targets at
    a time only as it is written out or compressed, so that no second copy of the whole text
    (tens of MB at 10,000 targets) is ever built. It holds references to immutable bytes:
    iterating it in a thread is safe while the loop goes on."""

    def __init__(self, headers: list[bytes | None], targets: list[tuple[bytes, array]],
                 tail: bytes, size: int):
        self._headers = headers       # None: a per-target family that is not exported
        self._targets = targets
        self._tail = tail
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        targets = self._targets
        for family, header in enumerate(self._headers):
            if header is None:
                continue
            yield header
            end = family + 1
            for start in range(0, len(targets), BLOCK):
                yield b"".join([text[ends[family]:ends[end]] for text, ends in targets[start:start + BLOCK]])
        yield self._tail


class Exposition:
    """The store's exposition text, cached per target and family, brought up to date per scrape."""

    def __init__(self, store: MetricsStore):
        self.store = store
        # target -> its text, and where each family's part of it starts and ends
        self._texts: dict[str, tuple[bytes, array]] = {}
        self._layout: int | None = None
        self._headers = [family_header(row) for row in TARGET_METRICS]
        self._lock = gevent.lock.Semaphore()   # one render at a time; the next finds little to do

    def render(self) -> Text:
        """The whole exposition, up to date."""
        with self._lock:
            store = self.store
            slices = Slices()
            if self._layout != store.layout:   # targets, labels or buckets changed: all anew
                self._layout = store.layout
                self._texts = {}
                stale = dict.fromkeys(store.series, 0)   # no text kept: every metric anew
            else:
                stale = store.changed
            store.changed = {}   # what changes from here on is formatted by the next scrape
            for name, events in slices.each(list(stale.items())):
                series = store.series.get(name)
                if series is None:
                    continue
                old, ends = self._texts.get(name, (None, None))
                metrics = ALL_TARGET_METRICS if old is None else changed_metrics(events)
                found = target_samples(store, series, metrics)
                pieces = [old[ends[index]:ends[index + 1]] if samples is None else
                          utf8("".join(map(sample_line, samples)))
                          for index, samples in enumerate(found)]
                self._texts[name] = (b"".join(pieces), array("I", accumulate(map(len, pieces), initial=0)))
            texts = [self._texts[name] for name in store.series if name in self._texts]
            headers = [header if row.shown(store) else None
                       for header, row in zip(self._headers, TARGET_METRICS)]
            tail = b"".join(family_header(row) + utf8("".join(map(sample_line, found)))
                            for row, found in global_samples(store))
            size = (sum(len(h) for h in headers if h is not None) + len(tail)
                    + sum([len(text) for text, _ in texts]))
            return Text(headers, texts, tail, size)
