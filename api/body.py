"""Request bodies: every JSON body is read by shared/json_input.py, strictly, into the type the
handler declares (`data: TaskCreate`), before Litestar sees it; a form that is not text is a 400.

Litestar's own path decodes first and converts afterwards with coercion on (so `"priority": "1"`
became 1), and lets a decoder's UnicodeDecodeError or RecursionError escape as a 500. Here the
handler's `data` arrives already converted, and Litestar's later, laxer conversion is handed a
value of the right type and passes it through. Litestar's multipart reader, likewise, let a
field that is not UTF-8 (or names a charset Python does not know) escape as a 500; forms are read
first by the CSRF check, for every dashboard POST.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import msgspec.inspect
from litestar import Request
from litestar.datastructures import FormMultiDict
from litestar.exceptions import ClientException, ValidationException
from litestar.types import Empty

from shared.json_input import BodyError, decode


class StrictBodyRequest(Request):
    __slots__ = ()

    async def form(self) -> FormMultiDict:
        try:
            return await super().form()
        except (UnicodeDecodeError, LookupError):
            raise ClientException(
                detail="a form field is not text in its charset (UTF-8 unless it names another)"
            ) from None

    async def json(self) -> Any:
        if self._json is Empty:
            cached = self._connection_state.json
            if cached is Empty:
                cached = self._connection_state.json = await _decoded(await self.body(), self)
            self._json = cached
        return self._json


@functools.lru_cache(maxsize=256)
def _readable(annotation: Any) -> Any:
    """The handler's type if msgspec can convert into it, else Any (Litestar converts then)."""
    try:
        info = msgspec.inspect.type_info(annotation)
    except (TypeError, ValueError):
        return Any
    return Any if isinstance(info, msgspec.inspect.CustomType) else annotation


# Checking a body costs about a tenth of a second per MiB (its nesting and repeated keys are
# read in Python); above this size it is done off the event loop, which keeps answering others.
INLINE_BYTES = 64 * 1024


async def _decoded(body: bytes, request: Request) -> Any:
    data = request.route_handler.parsed_data_field
    into = _readable(data.annotation) if data is not None else Any
    try:
        if len(body) <= INLINE_BYTES:
            return decode(body, into)
        return await asyncio.to_thread(decode, body, into)
    except BodyError as exc:
        if exc.status == 422:
            # The same shape as every other invalid field: detail plus errors[].field.
            raise ValidationException(
                detail=str(exc),
                extra=[{"key": exc.field, "message": exc.message, "source": "body"}],
            ) from None
        raise ClientException(detail=str(exc)) from None
