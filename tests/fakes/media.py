"""Tiny image and PDF files built in memory, for attachment tests (nothing downloaded).

``png(marker)`` is a valid 1x1 PNG whose ``tEXt`` chunk holds ``marker`` (so a test can look for its bytes
anywhere they must not be); ``pdf(pages)`` a minimal PDF of ``pages`` pages; ``padded_png(size)`` a PNG
signature followed by filler up to ``size`` bytes (the engine reads only the magic bytes: enough for limits).
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["gif", "jpeg", "padded_png", "pdf", "png", "webp"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(marker: bytes = b"tiny") -> bytes:
    """A 1x1 red PNG with ``marker`` in a text chunk."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"tEXt", b"Comment\x00" + marker)
        + _chunk(b"IDAT", pixels)
        + _chunk(b"IEND", b"")
    )


def padded_png(size: int) -> bytes:
    """``size`` bytes starting with PNG's signature (not a decodable image: the engine only sniffs it)."""
    start = png()
    return start + b"\x00" * (size - len(start))


def pdf(pages: int = 1) -> bytes:
    """A minimal PDF of ``pages`` empty pages."""
    kids = " ".join(f"{3 + n} 0 R" for n in range(pages))
    objects = [
        b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj",
        f"2 0 obj << /Type /Pages /Kids [{kids}] /Count {pages} >> endobj".encode(),
        *(f"{3 + n} 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] >> endobj".encode() for n in range(pages)),
    ]
    return b"%PDF-1.4\n" + b"\n".join(objects) + b"\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def jpeg() -> bytes:
    """The first bytes of a JPEG (SOI and an APP0 marker)."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"


def gif() -> bytes:
    """A 1x1 GIF."""
    header = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\x00\x00\x00\x00\x00"
    return header + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def webp() -> bytes:
    """A RIFF/WEBP header (enough for its magic bytes)."""
    body = b"WEBPVP8 " + struct.pack("<I", 10) + b"\x00" * 10
    return b"RIFF" + struct.pack("<I", len(body)) + body
