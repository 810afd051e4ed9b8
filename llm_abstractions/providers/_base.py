"""``SdkLlm``: what the SDK-backed providers share.

A provider implements :meth:`SdkLlm._complete` (one non-streamed SDK call: its response and HTTP headers),
:meth:`SdkLlm._chunk_of` (its response as one :class:`LlmChunk`), :meth:`SdkLlm._sdk_stream`
(the SDK stream mapped to chunks, the first carrying the rate limits its headers state) and
:meth:`SdkLlm._map_error`. Both paths go through
:func:`collect_stream`, so text, usage, finish reason and timing are accounted in one
place; SDK exceptions become typed errors, and a ``content_filter`` finish raises
:class:`ContentFilteredError` after the text that came before it, saying why (the chunk's
``finish_detail``) and carrying the usage the provider reported.

An answer must end with a finish reason: a stream without one was cut short
(``connection``), and a complete response without one is a malformed response
(``provider_unavailable``), like a response or stream event that does not have the
API's shape (bad JSON, fields missing or mistyped). Both are retryable.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import ClassVar, Generic, TypeVar

import anyio

from llm_abstractions.base import BaseLlm
from llm_abstractions.config import LlmConfig
from llm_abstractions.errors import (
    AuthenticationError,
    ContentFilteredError,
    LlmConnectionError,
    LlmError,
    ProviderUnavailableError,
)
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message, Usage
from llm_abstractions.providers._http_errors import transport_error
from llm_abstractions.providers._sdk import (
    config_key,
    env_key,
    import_sdk,
    install_hint,
    missing_key_message,
    sdk_installed,
)
from llm_abstractions.rate_limits import rate_limits_from_headers
from llm_abstractions.redaction import redact, register_secret
from llm_abstractions.streaming import collect_stream

__all__ = ["SdkLlm", "closing_shielded"]

ClientT = TypeVar("ClientT")
ResponseT = TypeVar("ResponseT")
_T = TypeVar("_T")

_UNREADABLE = (AttributeError, TypeError, KeyError, IndexError, ValueError)
"""What reading a response that does not have the API's shape raises: bad JSON, fields missing or mistyped."""


def _always() -> bool:
    return True


@asynccontextmanager
async def closing_shielded(close: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """Run ``close`` on exit, shielded, so that a cancelled call still closes its HTTP stream."""
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await close()


class SdkLlm(BaseLlm, Generic[ClientT, ResponseT]):
    """A provider over an official async SDK: the SDK is imported on creation, the client on first use."""

    sdk_module: ClassVar[str]
    """Module imported to build the client (``"openai"``, ``"google.genai"``)."""
    sdk_package: ClassVar[str]
    """The pip package that provides it."""
    sdk_extra: ClassVar[str]
    """The ``orchestrate-llm`` extra that installs it."""
    key_variables: ClassVar[tuple[str, ...]] = ()
    """Environment variables holding the API key, in the SDK's order of precedence."""

    def __init__(self, config: LlmConfig) -> None:
        super().__init__(config)
        # Import the SDK now (a second or so, once per process), not inside a timed call.
        import_sdk(self.sdk_module, package=self.sdk_package, extra=self.sdk_extra, provider=self.provider)
        self._client_instance: ClientT | None = None

    @classmethod
    def check_config(cls, config: LlmConfig) -> list[str]:
        problems = super().check_config(config)
        if not sdk_installed(cls.sdk_module):
            problems.append(install_hint(cls.sdk_package, cls.sdk_extra, cls.provider))
        if not config.model:
            problems.append("no model: set model in the agent's config")
        variables = cls.key_variables_for(config)
        if variables and config.api_key is None and env_key(variables) is None:
            problems.append(missing_key_message(variables))
        return problems

    @classmethod
    def key_variables_for(cls, config: LlmConfig) -> tuple[str, ...]:
        """The variables an agent's key may come from; empty when no key is needed."""
        return cls.key_variables

    @property
    def api_key(self) -> str | None:
        """The configured key, else ``None`` (the SDK reads its own variables)."""
        return config_key(self.config)

    @property
    def client(self) -> ClientT:
        """The SDK client, built on first use (a missing key fails here, as ``authentication``)."""
        if self._client_instance is None:
            variables = self.key_variables_for(self.config)
            if variables and self.api_key is None:
                key = env_key(variables)
                if key is None:
                    raise AuthenticationError(missing_key_message(variables), provider=self.provider)
                register_secret(key)  # keys from the environment are redacted too
            self._client_instance = self._create_client()
        return self._client_instance

    @abstractmethod
    def _create_client(self) -> ClientT:
        """Build the SDK's async client, with SDK retries off."""

    @abstractmethod
    async def _close_client(self, client: ClientT) -> None:
        """Release the client's connections."""

    @abstractmethod
    async def _complete(
        self, messages: Sequence[Message], options: GenerationOptions
    ) -> tuple[ResponseT, Mapping[str, str] | None]:
        """One non-streamed SDK call; its response and the response's HTTP headers (``None``: unknown)."""

    @abstractmethod
    def _chunk_of(self, response: ResponseT) -> LlmChunk:
        """A non-streamed response as a single chunk holding the whole answer."""

    @abstractmethod
    def _sdk_stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncGenerator[LlmChunk]:
        """The SDK's stream as chunks; closing it closes the HTTP stream."""

    @abstractmethod
    def _map_error(self, exc: Exception) -> LlmError | None:
        """The typed error of an SDK exception; ``None`` leaves it to the transport mapping."""

    async def count_tokens_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None
    ) -> int | None:
        return await self._sdk_call(self._count(self._attached(messages), self.resolve_options(options)))

    async def _count(self, messages: Sequence[Message], options: GenerationOptions) -> int | None:
        """The provider's count of a request's input tokens; ``None`` (the default): it has no counting endpoint."""
        return None

    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        return await collect_stream(
            self._guarded(self._single(messages, options)), provider=self.provider, model=self.model_name
        )

    async def _stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[LlmChunk]:
        async with aclosing(self._guarded(self._sdk_stream(messages, options), stream=True)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _single(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncGenerator[LlmChunk]:
        response, headers = await self._complete(messages, options)
        yield self._whole(response, headers)

    def _whole(self, response: ResponseT, headers: Mapping[str, str] | None = None) -> LlmChunk:
        """A complete response as its one chunk; a malformed response without a finish reason."""
        with self._reading():
            chunk = self._chunk_of(response)
        chunk.rate_limits = rate_limits_from_headers(headers)
        if chunk.finish_reason is None:
            raise self._malformed("the answer has no finish reason")
        return chunk

    async def _answer_of(self, read: Callable[[], ResponseT]) -> LlmResponse:
        """The answer of a response read back later (a line of a batch job's results), made as :meth:`_generate`
        makes a real-time one: a malformed response, a filtered answer, raise their typed errors."""

        async def whole() -> AsyncGenerator[LlmChunk]:
            with self._reading():
                response = read()
            yield self._whole(response)

        return await collect_stream(self._guarded(whole()), provider=self.provider, model=self.model_name)

    async def _sdk_call(self, call: Awaitable[_T]) -> _T:
        """Await an SDK call other than a generation (a token count, a batch job's), its exceptions mapped to typed
        errors."""
        with self._typed_errors():
            return await call

    @contextmanager
    def _typed_errors(self) -> Iterator[None]:
        """SDK and transport exceptions raised inside become typed errors (typed errors, and what cannot be mapped,
        pass through)."""
        try:
            yield
        except LlmError:
            raise
        except Exception as exc:
            error = self._map_error(exc) or transport_error(exc, provider=self.provider)
            if error is None:
                raise
            raise error from exc

    @contextmanager
    def _reading(self, arrived: Callable[[], bool] = _always) -> Iterator[None]:
        """Errors raised reading a response become a malformed response, once ``arrived()`` says it is there."""
        try:
            yield
        except _UNREADABLE as exc:
            if not arrived():
                raise
            raise self._malformed(f"{type(exc).__name__}: {exc}") from exc

    def _malformed(self, detail: str) -> ProviderUnavailableError:
        return ProviderUnavailableError(
            f"malformed response from the provider ({redact(detail)})", provider=self.provider
        )

    async def _guarded(self, chunks: AsyncGenerator[LlmChunk], *, stream: bool = False) -> AsyncGenerator[LlmChunk]:
        """``chunks`` with SDK exceptions mapped to typed errors and content filtering raised.

        A filtered answer raises :class:`ContentFilteredError` once the stream is over (usage may
        come after the finish), with what the provider said and the usage it reported. A stream
        that ends without a finish reason was cut short: that is a connection error.
        """
        finished = False
        filtered: LlmChunk | None = None
        usage: Usage | None = None
        with self._typed_errors():
            async with aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
                    usage = chunk.usage or usage
                    if chunk.finish_reason == "content_filter":
                        filtered = chunk
                    finished = finished or chunk.finish_reason is not None
            if filtered is not None:
                detail = f" ({redact(filtered.finish_detail)})" if filtered.finish_detail else ""
                raise ContentFilteredError(
                    f"the provider filtered the answer{detail}", provider=self.provider, usage=usage
                )
            if stream and not finished:
                raise LlmConnectionError("the stream ended before the answer was complete", provider=self.provider)

    async def aclose(self) -> None:
        client, self._client_instance = self._client_instance, None
        if client is not None:
            await self._close_client(client)
