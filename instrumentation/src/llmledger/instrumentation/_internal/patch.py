"""The wrappers: start the call, run the SDK method, hand the result to the right proxy, end.

Sync and async wrappers differ only in ``await``; everything else lives in ``LLMCall``,
the ``ApiSpec`` extractors and the proxies.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from llmledger.instrumentation._internal import guard
from llmledger.instrumentation._internal.apis import RESPONSES, ApiSpec
from llmledger.instrumentation._internal.attribution import current_attribution
from llmledger.instrumentation._internal.call import LLMCall
from llmledger.instrumentation._internal.errors import internal_error
from llmledger.instrumentation._internal.provider import Endpoint, endpoint_for
from llmledger.instrumentation._internal.stream import (
    AsyncRawResponseProxy,
    RawResponseProxy,
    apply_body,
    wrap_stream,
)
from llmledger.instrumentation._internal.telemetry import Telemetry

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

_BACKGROUND_PENDING = frozenset({"queued", "in_progress"})
_BACKGROUND_TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled"})


_endpoints: weakref.WeakKeyDictionary[Any, tuple[Any, Endpoint]] = weakref.WeakKeyDictionary()


def _endpoint(instance: Any) -> Endpoint:
    """The client's provider and server, remembered per client until its base URL changes."""
    client = getattr(instance, "_client", None)
    base_url = getattr(client, "base_url", None)
    try:
        known = _endpoints.get(client)
    except TypeError:  # not weak-referenceable
        known = None
    if known is not None and known[0] is base_url:
        return known[1]
    endpoint = endpoint_for(str(base_url or ""), type(client).__name__ in ("AzureOpenAI", "AsyncAzureOpenAI"))
    with contextlib.suppress(TypeError):
        _endpoints[client] = (base_url, endpoint)
    return endpoint


def _start(tel: Telemetry, api: ApiSpec, instance: Any, kwargs: dict[str, Any]) -> LLMCall | None:
    """Run the guards, then start the call; None when starting failed (the app's call goes on untraced)."""
    if guard.guards:  # opt-in checks (hard budgets) may refuse the call before it is sent
        guard.run_guards(current_attribution(tel.resource_tenant))
    try:
        call = LLMCall(tel, api, _endpoint(instance), kwargs)
        if call.stream and tel.config.stream_usage and api.inject_stream_usage(kwargs):
            call.hide_usage_chunk = True
        call.activate()
        return call
    except Exception as exc:
        internal_error("start", exc)
        return None


_raw_types: tuple[type[Any], type[Any], type[Any]] | None = None


def _classify_raw() -> tuple[type[Any], type[Any], type[Any]]:
    """The SDK's raw-response classes (private modules, stable since openai 1.x), imported once."""
    global _raw_types
    if _raw_types is None:
        from openai._legacy_response import LegacyAPIResponse
        from openai._response import APIResponse, AsyncAPIResponse

        _raw_types = (LegacyAPIResponse, APIResponse, AsyncAPIResponse)
    return _raw_types


def _handle_result(tel: Telemetry, call: LLMCall, result: Any) -> Any:
    """The SDK method returned: give the app its result (or a proxy of it); the call ends exactly once."""
    call.deactivate()
    try:
        legacy, api_response, async_api_response = _classify_raw()
        if isinstance(result, async_api_response):
            return AsyncRawResponseProxy(result, call)
        if isinstance(result, api_response):
            return RawResponseProxy(result, call)
        if isinstance(result, legacy):
            if call.stream:
                return RawResponseProxy(result, call)
            apply_body(call, result.http_response)  # with_raw_response: the body is read already
            _remember_background(tel, call)
            call.end()
            return result
        if call.stream:
            proxy = wrap_stream(result, call)
            if proxy is not result:
                return proxy
        call.response(result)
        _remember_background(tel, call)
    except Exception as exc:
        internal_error("result", exc)
    call.end()
    return result


def _remember_background(tel: Telemetry, call: LLMCall) -> None:
    """A background Responses call is billed when it finishes, at the ``retrieve`` that sees it."""
    facts = call.facts
    if (
        call.api is RESPONSES
        and call.kwargs.get("background") is True
        and facts.status in _BACKGROUND_PENDING
        and facts.response_id is not None
    ):
        tel.background.remember(facts.response_id, call.kwargs.get("model"), call.attribution)


def _fail(call: LLMCall, exc: BaseException) -> None:
    """The SDK method raised: the call ends with the app's exception, which goes on unchanged."""
    call.deactivate()
    call.end_with_error(exc)


def sync_wrapper(tel: Telemetry, api: ApiSpec) -> Wrapper:
    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not tel.active or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        call = _start(tel, api, instance, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _fail(call, exc)
            raise
        return _handle_result(tel, call, result)

    return wrapper


def async_wrapper(tel: Telemetry, api: ApiSpec) -> Wrapper:
    async def wrapper(
        wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not tel.active or not is_instrumentation_enabled():
            return await wrapped(*args, **kwargs)
        call = _start(tel, api, instance, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            _fail(call, exc)
            raise
        return _handle_result(tel, call, result)

    return wrapper


def _bill_retrieved(
    tel: Telemetry,
    instance: Any,
    response_id: str,
    model: Any,
    attribution: dict[str, str],
    result: Any,
    start: tuple[int, int],
) -> None:
    if getattr(result, "status", None) not in _BACKGROUND_TERMINAL:
        return
    try:
        tel.background.done(response_id)
        call = LLMCall(
            tel, RESPONSES, _endpoint(instance), {"model": model}, attribution=attribution, start=start
        )
        call.response(result)
        call.end()
    except Exception as exc:
        internal_error("responses.retrieve", exc)


def sync_retrieve_wrapper(tel: Telemetry) -> Wrapper:
    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        response_id = args[0] if args else kwargs.get("response_id")
        pending = tel.background.pending(response_id) if tel.active else None
        if pending is None or not isinstance(response_id, str) or kwargs.get("stream") is True:
            return wrapped(*args, **kwargs)
        start = LLMCall.now()
        result = wrapped(*args, **kwargs)
        _bill_retrieved(tel, instance, response_id, *pending, result, start)
        return result

    return wrapper


def async_retrieve_wrapper(tel: Telemetry) -> Wrapper:
    async def wrapper(
        wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        response_id = args[0] if args else kwargs.get("response_id")
        pending = tel.background.pending(response_id) if tel.active else None
        if pending is None or not isinstance(response_id, str) or kwargs.get("stream") is True:
            return await wrapped(*args, **kwargs)
        start = LLMCall.now()
        result = await wrapped(*args, **kwargs)
        _bill_retrieved(tel, instance, response_id, *pending, result, start)
        return result

    return wrapper
