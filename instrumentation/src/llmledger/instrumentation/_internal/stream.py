"""Proxies that stand in for the SDK's streams and raw responses.

The app gets an object that behaves exactly like the SDK's (``wrapt.ObjectProxy``: same
type for ``isinstance``, every attribute passed through); we only watch items go by and
end the call exactly once, whichever way the stream ends: exhausted, an exception
mid-stream, ``close()``, ``with``/``async with`` exit, the SDK's ``.stream()`` helpers
closing the underlying HTTP response, or garbage collection.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import wrapt

from llmledger.instrumentation._internal.call import LLMCall
from llmledger.instrumentation._internal.errors import internal_error

if TYPE_CHECKING:

    class _Proxy:
        """What the type checker sees of ``wrapt.ObjectProxy``: it wraps anything."""

        __wrapped__: Any

        def __init__(self, wrapped: Any) -> None: ...

else:
    _Proxy = wrapt.ObjectProxy


class _ResponseCloseHook(_Proxy):
    """The stream's HTTP response: the SDK's stream helpers close it directly."""

    def __init__(self, response: Any, call: LLMCall) -> None:
        super().__init__(response)
        self._self_call = call

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_call.end()

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            self._self_call.end()


class _StreamProxyBase(_Proxy):
    def __init__(self, stream: Any, call: LLMCall) -> None:
        super().__init__(stream)
        self._self_call = call
        self._self_response_hook: _ResponseCloseHook | None = None

    @property
    def response(self) -> Any:
        hook = self._self_response_hook
        if hook is None:
            hook = self._self_response_hook = _ResponseCloseHook(self.__wrapped__.response, self._self_call)
        return hook

    def __del__(self) -> None:
        call = self._self_call
        if not call.ended:
            call.end()


# Iteration runs in a generator over the SDK stream's own iterator, as ``Stream.__iter__``
# does itself: the per-chunk path then reads only local variables. Every attribute read on
# a wrapt proxy costs several times a plain one, which at 200 chunks a call is most of an
# instrumentation's per-chunk cost. ``next(stream)`` still works through ``__next__``.


def _chunks(proxy: StreamProxy) -> Iterator[Any]:
    # The frame holds the proxy: the app may keep only the iterator (`for x in create(...)`),
    # and the proxy's garbage collection would end the call mid-stream.
    stream = proxy.__wrapped__
    call = proxy._self_call  # pyright: ignore[reportPrivateUsage]
    fold = call.api.apply_chunk
    facts = call.facts
    hide = call.hide_usage_chunk
    try:
        for item in stream:
            if not call.first_chunk_ns:
                call.first_chunk_ns = time.perf_counter_ns()
            try:
                if fold(facts, item) and hide:
                    continue  # the usage chunk we asked for: the app did not
            except Exception as exc:
                internal_error(f"{call.api.api_type}.chunk", exc)
            yield item
    except GeneratorExit:
        raise  # the app stopped iterating: close(), ``with`` exit or garbage collection end the call
    except BaseException as exc:
        call.end_with_error(exc)
        raise
    call.end()


async def _achunks(proxy: AsyncStreamProxy) -> AsyncIterator[Any]:
    # _chunks with `async for`.
    stream = proxy.__wrapped__
    call = proxy._self_call  # pyright: ignore[reportPrivateUsage]
    fold = call.api.apply_chunk
    facts = call.facts
    hide = call.hide_usage_chunk
    try:
        async for item in stream:
            if not call.first_chunk_ns:
                call.first_chunk_ns = time.perf_counter_ns()
            try:
                if fold(facts, item) and hide:
                    continue
            except Exception as exc:
                internal_error(f"{call.api.api_type}.chunk", exc)
            yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        call.end_with_error(exc)
        raise
    call.end()


class StreamProxy(_StreamProxyBase):
    """Stands in for ``openai.Stream``."""

    def __iter__(self) -> Iterator[Any]:
        return _chunks(self)

    def __next__(self) -> Any:
        call = self._self_call
        try:
            while True:
                item = self.__wrapped__.__next__()
                if not call.chunk(item):
                    return item
        except StopIteration:
            call.end()
            raise
        except BaseException as exc:
            call.end_with_error(exc)
            raise

    def __enter__(self) -> StreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            self._self_call.end()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_call.end()


class AsyncStreamProxy(_StreamProxyBase):
    """Stands in for ``openai.AsyncStream``."""

    def __aiter__(self) -> AsyncIterator[Any]:
        return _achunks(self)

    async def __anext__(self) -> Any:
        call = self._self_call
        try:
            while True:
                item = await self.__wrapped__.__anext__()
                if not call.chunk(item):
                    return item
        except StopAsyncIteration:
            call.end()
            raise
        except BaseException as exc:
            call.end_with_error(exc)
            raise

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            self._self_call.end()

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_call.end()

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            self._self_call.end()


def wrap_stream(stream: Any, call: LLMCall) -> Any:
    from openai import AsyncStream, Stream

    if isinstance(stream, Stream):
        return StreamProxy(stream, call)
    if isinstance(stream, AsyncStream):
        return AsyncStreamProxy(stream, call)
    return stream


def apply_body(call: LLMCall, http_response: Any) -> None:
    """Read usage from a raw response's already-read JSON body (built the way the SDK builds it)."""
    model_type = call.api.response_type()
    if model_type is None:
        return
    try:
        data = json.loads(http_response.content)
    except (ValueError, TypeError):
        return  # not JSON (an error page): nothing to read
    if isinstance(data, dict):
        call.response(model_type.construct(**data))


class _RawResponseProxyBase(_Proxy):
    def __init__(self, raw: Any, call: LLMCall) -> None:
        super().__init__(raw)
        self._self_call = call
        self._self_streams: dict[int, Any] = {}

    def _self_on_parsed(self, parsed: Any, custom_type: bool) -> Any:
        call = self._self_call
        try:
            if call.stream:
                key = id(parsed)
                proxy = self._self_streams.get(key)
                if proxy is None:
                    proxy = self._self_streams[key] = wrap_stream(parsed, call)
                return proxy
            if not call.ended:
                if custom_type:  # parse(to=...) gave the app its own type: read the body ourselves
                    apply_body(call, self.__wrapped__.http_response)
                else:
                    call.response(parsed)
                call.end()
        except Exception as exc:
            internal_error("raw_response.parse", exc)
            call.end()
        return parsed

    def _self_on_read(self) -> None:
        call = self._self_call
        if call.ended or call.stream:
            return
        try:
            apply_body(call, self.__wrapped__.http_response)
        except Exception as exc:
            internal_error("raw_response.read", exc)
        call.end()

    def __del__(self) -> None:
        call = self._self_call
        if not call.ended and not call.stream:
            call.end()


class RawResponseProxy(_RawResponseProxyBase):
    """Stands in for ``LegacyAPIResponse`` and ``APIResponse`` (``with_raw_response``, ``with_streaming_response``)."""

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_on_parsed(self.__wrapped__.parse(*args, **kwargs), bool(args or kwargs))

    def read(self) -> Any:
        body = self.__wrapped__.read()
        self._self_on_read()
        return body

    def text(self) -> Any:
        body = self.__wrapped__.text()
        self._self_on_read()
        return body

    def json(self) -> Any:
        body = self.__wrapped__.json()
        self._self_on_read()
        return body

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_call.end()


class AsyncRawResponseProxy(_RawResponseProxyBase):
    """Stands in for ``AsyncAPIResponse`` (``with_streaming_response`` on async clients)."""

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_on_parsed(await self.__wrapped__.parse(*args, **kwargs), bool(args or kwargs))

    async def read(self) -> Any:
        body = await self.__wrapped__.read()
        self._self_on_read()
        return body

    async def text(self) -> Any:
        body = await self.__wrapped__.text()
        self._self_on_read()
        return body

    async def json(self) -> Any:
        body = await self.__wrapped__.json()
        self._self_on_read()
        return body

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_call.end()
