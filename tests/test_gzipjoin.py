"""Parts compressed apart make one gzip member that any reader reads whole (greenmon.gzipjoin).

Checked against zlib itself: the combined CRC-32 against zlib.crc32 of the
joined bytes, the stream against zlib's own gzip reader told to stop at the
first member's end (as curl --compressed does), and against gunzip.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenmon.gzipjoin import crc32_combine, deflate_part, gzip_stream

TEXTS = st.lists(st.binary(max_size=3000) | st.text(max_size=2000).map(str.encode), max_size=6)


def read_first_member(body: bytes) -> tuple[bytes, bytes]:
    """What a reader that stops after one gzip member gets, and what it leaves unread."""
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = reader.decompress(body)
    assert reader.eof, "the member does not end"
    return data, reader.unused_data


@given(st.binary(max_size=5000), st.binary(max_size=5000), st.integers(0, 2**32 - 1))
def test_combined_crc_is_the_crc_of_the_joined_bytes(first, second, start):
    crc1 = zlib.crc32(first, start)
    assert crc32_combine(crc1, zlib.crc32(second), len(second)) == zlib.crc32(second, crc1)


def test_combined_crc_over_a_long_part():
    # The length enters bit by bit (x^(8n)): a part of 12 MB, as a worker's share can be.
    zeros = bytes(12_345_678)
    crc = zlib.crc32(b"greenmon")
    assert crc32_combine(crc, zlib.crc32(zeros), len(zeros)) == zlib.crc32(zeros, crc)
    assert crc32_combine(crc, 0, 0) == crc


@given(st.lists(TEXTS, max_size=5), st.sampled_from([1, 6, 9]))
def test_parts_make_one_member_holding_them_in_order(groups, level):
    parts = [deflate_part(pieces, level) for pieces in groups]
    body = b"".join(gzip_stream(parts))
    data, left = read_first_member(body)
    assert data == b"".join(b"".join(pieces) for pieces in groups)
    assert left == b""   # one member: nothing after it for a reader that stops there
    assert gzip.decompress(body) == data


def test_a_stream_of_no_part_is_an_empty_member():
    assert read_first_member(b"".join(gzip_stream([]))) == (b"", b"")


@pytest.mark.skipif(shutil.which("gzip") is None, reason="no gzip program")
def test_gzip_the_program_reads_it_and_finds_it_sound():
    parts = [deflate_part([b"# HELP a x\n", b"a 1.0\n" * 5000], 1), deflate_part([b"b 2.0\n"], 1)]
    body = b"".join(gzip_stream(parts))
    tested = subprocess.run(["gzip", "-t"], input=body, capture_output=True, timeout=30)
    assert tested.returncode == 0, tested.stderr
    out = subprocess.run(["gzip", "-dc"], input=body, capture_output=True, timeout=30)
    assert out.stdout == b"# HELP a x\n" + b"a 1.0\n" * 5000 + b"b 2.0\n"
