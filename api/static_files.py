"""Static files (the dashboard's htmx and CSS, the API docs UI): cacheable, revalidated, gzipped.

The files ship with the app and never change while it runs, so each is read once at start-up,
with its ETag (a hash of its content), its Last-Modified and, where that saves a tenth or more,
a gzip copy. (brotli would need another dependency; gzip already takes htmx from 50 kB to 16.)

URLs come in two forms:
- `<prefix>/<version>/<file>`: versioned. <version> is a hash of the whole directory, so a
  new release gets new URLs; these are cached for a year (`immutable`): a browser asks again
  only when the page links another version. Pages link these (see `version`).
- `<prefix>/<file>` (or a stale version): `no-cache`, i.e. the browser may keep the copy but
  asks each time, and gets 304 Not Modified (no body) while it is current.

A conditional GET (If-None-Match, else If-Modified-Since) that matches answers 304.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

from litestar import Request, Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, no-cache"
_MIN_GZIP_BYTES = 1024
_TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    etag: str  # without quotes
    last_modified: datetime
    media_type: str


def _load(path: Path) -> Asset:
    body = path.read_bytes()
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".js":
        media_type = "text/javascript"
    if path.suffix in (".LICENSE", ".txt") or path.name.endswith("LICENSE"):
        media_type = "text/plain"
    if media_type.startswith(_TEXT_TYPES):
        media_type += "; charset=utf-8"
    gzipped = None
    if len(body) >= _MIN_GZIP_BYTES:
        # mtime=0: the same bytes every start, so caches and ETags stay stable.
        packed = gzip.compress(body, compresslevel=6, mtime=0)
        if len(packed) <= 0.9 * len(body):
            gzipped = packed
    mtime = datetime.fromtimestamp(int(path.stat().st_mtime), UTC)
    etag = hashlib.sha256(body).hexdigest()[:20]
    return Asset(body, gzipped, etag, mtime, media_type)


class StaticDirectory:
    """Every regular file directly in `directory`, in memory."""

    def __init__(self, directory: Path) -> None:
        self.assets = {
            p.name: _load(p) for p in sorted(directory.iterdir())
            if p.is_file() and not p.name.startswith(".")
        }
        digest = hashlib.sha256()
        for name, asset in self.assets.items():
            digest.update(f"{name}\0{asset.etag}\0".encode())
        self.version = digest.hexdigest()[:12]

    def answer(self, request: Request, file_path: str) -> Response[bytes]:
        parts = file_path.strip("/").split("/")
        versioned = len(parts) == 2 and parts[0] == self.version
        if len(parts) == 2:  # a version (maybe stale: still the current file) and a name
            parts = parts[1:]
        asset = self.assets.get(parts[0]) if len(parts) == 1 else None
        if asset is None:
            raise NotFoundException(detail=f"no file {request.url.path}")
        gzip_ok = asset.gzipped is not None and accepts_gzip(request.headers.get(
            "accept-encoding", ""))
        etag = f'"{asset.etag}-gzip"' if gzip_ok else f'"{asset.etag}"'
        headers = {
            "Cache-Control": IMMUTABLE if versioned else REVALIDATE,
            "ETag": etag,
            "Last-Modified": format_datetime(asset.last_modified, usegmt=True),
        }
        if asset.gzipped is not None:
            headers["Vary"] = "Accept-Encoding"
        if not_modified(request, asset):
            return Response(b"", status_code=304, headers=headers, media_type=asset.media_type)
        if gzip_ok:
            headers["Content-Encoding"] = "gzip"
        body = asset.gzipped if gzip_ok and asset.gzipped is not None else asset.body
        return Response(body, headers=headers, media_type=asset.media_type)


def accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower().removeprefix("q=")
            try:
                return not params.strip() or float(q) > 0
            except ValueError:
                return False
    return False


def not_modified(request: Request, asset: Asset) -> bool:
    """RFC 9110 13.2.2: If-None-Match decides when present; If-Modified-Since only without it.
    ETags compare weakly here (a GET), so the gzip and identity variants both count."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        tags = {t.strip().removeprefix("W/").strip('"') for t in if_none_match.split(",")}
        return asset.etag in tags or f"{asset.etag}-gzip" in tags
    since = request.headers.get("if-modified-since")
    if since:
        try:
            when = parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False  # an invalid date is ignored (RFC 9110 13.1.3)
        if when.tzinfo is None:
            return False
        return asset.last_modified <= when
    return False


def static_router(path: str, files: Callable[[], StaticDirectory], name: str) -> Router:
    """A public router serving `files()` under `path` (a callable, so a directory may be read
    on its first request rather than at start-up)."""

    @get("/{file_path:path}", name=name, include_in_schema=False, sync_to_thread=False)
    def serve_file(request: Request, file_path: FromPath[str]) -> Response[bytes]:
        return files().answer(request, file_path)

    return Router(path=path, route_handlers=[serve_file], include_in_schema=False)
