"""Shared pieces of the ``shaledb`` command: opening a root from a URL,
key/value encodings, and rendering bytes for people and for JSON.

REQUIRES: nothing here writes to a store; ``open_root`` never creates a
database (a local directory is only created when ``create=True``).
"""

from __future__ import annotations

import base64
import binascii
import os

from shaledb.errors import InvalidArgument

__all__ = ["ENCODINGS", "decode_arg", "open_root", "render_bytes", "root_url", "store_options"]

#: How keys and values are given on the command line and printed.
ENCODINGS = ("utf8", "hex", "base64")


def root_url(url: str) -> str:
    """``url`` with a relative local path made absolute (stores want absolute paths)."""
    if not isinstance(url, str) or not url:
        raise InvalidArgument("the database URL must not be empty")
    if "://" in url:
        return url
    return os.path.abspath(url)


def store_options(url: str, endpoint: str | None) -> dict:
    """Store options for ``url``: ``--endpoint`` applies to ``s3://`` only."""
    if endpoint is None:
        return {}
    if not url.lower().startswith("s3://"):
        raise InvalidArgument("--endpoint applies to s3:// URLs only")
    return {"endpoint_url": endpoint}


def open_root(url: str, endpoint: str | None = None, *, create: bool = False):
    """Open the object store a database URL names.

    A local directory that does not exist is InvalidArgument unless
    ``create`` (so a typo never leaves an empty directory behind).
    """
    url = root_url(url)
    opts = store_options(url, endpoint)
    if url.startswith("/") or url.lower().startswith("file://"):
        path = url[len("file://"):] if url.lower().startswith("file://") else url
        if not create and not os.path.isdir(path):
            raise InvalidArgument(f"no ShaleDB database at {url}: the directory does not exist")
    from shaledb.storage import open_store

    return open_store(url, **opts)


def decode_arg(text: str, encoding: str, what: str) -> bytes:
    """Bytes of a key or value given on the command line in ``encoding``."""
    try:
        if encoding == "hex":
            return binascii.unhexlify(text.strip())
        if encoding == "base64":
            return base64.b64decode(text.strip(), validate=True)
        return text.encode("utf-8")
    except (binascii.Error, ValueError, UnicodeEncodeError) as e:
        raise InvalidArgument(f"{what} {text!r} is not valid {encoding}: {e}") from None


def render_bytes(data: bytes, encoding: str = "utf8") -> str:
    """``data`` as text: UTF-8 (undecodable bytes as ``\\xNN`` escapes), hex or base64."""
    data = bytes(data)
    if encoding == "hex":
        return data.hex()
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    return data.decode("utf-8", "backslashreplace")
