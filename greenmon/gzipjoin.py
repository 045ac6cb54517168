"""One gzip stream from parts compressed apart (by worker processes, at once), as pigz makes one.

Concatenated gzip members are a valid gzip file (RFC 1952, 2.2), and
Prometheus reads them; but ``curl --compressed`` and other clients stop at
the first member's end and show a truncated /metrics. So each part is raw
deflate ended by a sync flush (byte-aligned, not final: ``deflate_part``),
parts are laid end to end, and ``gzip_stream`` frames them as one member:
a header, the parts, an empty final block, and the trailer, whose CRC-32 is
the parts' CRCs combined (``crc32_combine``: zlib's, which Python's zlib
module does not expose; the algorithm of zlib 1.2.12's ``crc32.c``).
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterable, NamedTuple

_POLY = 0xEDB88320                     # CRC-32's polynomial, bit-reflected
_HEADER = bytes((0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF))   # deflate, no name, no time, OS unknown
_LAST_BLOCK = b"\x03\x00"              # an empty fixed-Huffman block with the final bit set


class Part(NamedTuple):
    data: bytes      # raw deflate, ended by a sync flush
    crc: int         # CRC-32 of what it holds, uncompressed
    size: int        # its uncompressed length


def deflate_part(pieces: Iterable[bytes], level: int) -> Part:
    """The pieces, in order, as one part of a gzip stream (run it off the loop)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    out, crc, size = [], 0, 0
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
        size += len(piece)
        out.append(compressor.compress(piece))
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return Part(b"".join(out), crc, size)


def _multiply(a: int, b: int) -> int:
    """a times b modulo the CRC polynomial (bit-reflected: x^0 is bit 31)."""
    m, product = 1 << 31, 0
    while True:
        if a & m:
            product ^= b
            if a & (m - 1) == 0:
                return product
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> list[int]:
    """x^(2^k) modulo the polynomial, k = 0..31."""
    table = [1 << 30]   # x^1
    for _ in range(31):
        table.append(_multiply(table[-1], table[-1]))
    return table


_X_TO_2_TO_K = _powers()


def _x_to_8n(n: int) -> int:
    """x^(8n) modulo the polynomial: what n bytes do to a CRC that runs through them."""
    product, k = 1 << 31, 3
    while n:
        if n & 1:
            product = _multiply(_X_TO_2_TO_K[k & 31], product)
        n >>= 1
        k += 1
    return product


def crc32_combine(crc1: int, crc2: int, size2: int) -> int:
    """The CRC-32 of A then B, from A's CRC, B's CRC and B's length."""
    return _multiply(_x_to_8n(size2), crc1) ^ crc2


def gzip_stream(parts: Iterable[Part]) -> list[bytes]:
    """One gzip member holding the parts in order, as pieces to write one after another."""
    out, crc, size = [_HEADER], 0, 0
    for part in parts:
        if part.size:
            out.append(part.data)
            crc = crc32_combine(crc, part.crc, part.size)
            size += part.size
    out.append(_LAST_BLOCK + struct.pack("<II", crc, size & 0xFFFFFFFF))
    return out
