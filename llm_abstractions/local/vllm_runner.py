"""``VllmRunner``: vLLM's async engine in-process, one engine per model.

Every concurrent request goes to the engine as soon as it arrives, so vLLM's
continuous batching schedules them together. Output is streamed as deltas; a
request whose stream is closed early (cancellation) is aborted in the engine.
vLLM's async engine runs on asyncio (not trio).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llm_abstractions.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    LlmError,
    ProviderUnavailableError,
)
from llm_abstractions.local.models import resolve_model_path
from llm_abstractions.local.runner import LocalRunner, Prompt
from llm_abstractions.messages import GenerationOptions, LlmChunk, Usage

__all__ = ["VllmRunner", "VllmSettings", "sampling_params"]


class VllmSettings(BaseModel):
    """Device options of a vLLM engine: the keys a ``vllm`` agent accepts besides the common ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensor_parallel_size: int = Field(default=1, gt=0)
    """GPUs the model is split across."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    """Fraction of each GPU's memory the engine may take (weights plus KV cache)."""
    max_model_len: int | None = Field(default=None, gt=0)
    """Context length; ``None`` takes the model's."""
    max_num_seqs: int | None = Field(default=None, gt=0)
    """Sequences batched together; ``None`` takes vLLM's default."""
    dtype: str = "auto"
    enforce_eager: bool = False
    """Skip CUDA graph capture: faster start, slower decoding."""


def sampling_params(options: GenerationOptions) -> Any:
    """``GenerationOptions`` -> vLLM ``SamplingParams`` (unset options keep vLLM's defaults)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    values: dict[str, Any] = {
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "min_p": options.min_p,
        "repetition_penalty": options.repetition_penalty,
        "max_tokens": options.max_tokens,
        "stop": options.stop,
        "seed": options.seed,
    }
    kwargs = {key: value for key, value in values.items() if value is not None}
    if options.json_schema is not None:
        kwargs["structured_outputs"] = StructuredOutputsParams(json=options.json_schema, disable_any_whitespace=True)
    return SamplingParams(output_kind=RequestOutputKind.DELTA, **kwargs)


class VllmRunner(LocalRunner):
    """A model on vLLM's in-process async engine; its device options are :class:`VllmSettings`."""

    name = "vllm"

    def __init__(self) -> None:
        self.model: str | None = None
        self._engine: Any = None
        self._tokenizer: Any = None

    async def load(self, model: str, **device_options: Any) -> None:
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        settings = VllmSettings.model_validate(device_options)
        path = resolve_model_path(model)
        self.model = model
        extra = {"max_num_seqs": settings.max_num_seqs} if settings.max_num_seqs else {}
        args = AsyncEngineArgs(
            model=str(path),
            tensor_parallel_size=settings.tensor_parallel_size,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            max_model_len=settings.max_model_len,
            dtype=settings.dtype,
            enforce_eager=settings.enforce_eager,
            disable_log_stats=True,
            **extra,
        )
        try:
            self._engine = AsyncLLMEngine.from_engine_args(args)
            tokenizer = self._engine.get_tokenizer()  # a coroutine in older vLLM versions
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        except Exception as exc:
            raise ProviderUnavailableError(f"vLLM could not start: {exc}", provider=self.name) from exc

    def _encode(self, prompt: Prompt) -> list[int]:
        tokenizer = self._tokenizer
        if isinstance(prompt, str):
            return list(tokenizer.encode(prompt))
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": m.role, "content": m.content} for m in prompt]
            return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        return list(tokenizer.encode("\n\n".join(m.content for m in prompt)))

    async def stream(self, prompt: Prompt, options: GenerationOptions) -> AsyncGenerator[LlmChunk, None]:
        if self._engine is None:
            raise ProviderUnavailableError("the vLLM engine is not running", provider=self.name)
        from vllm.inputs import TokensPrompt

        tokens = self._encode(prompt)
        generated = 0
        outputs = self._engine.generate(
            TokensPrompt(prompt_token_ids=tokens), sampling_params(options), uuid.uuid4().hex
        )
        try:
            async with contextlib.aclosing(outputs):
                async for output in outputs:
                    completion = output.outputs[0]
                    generated += len(completion.token_ids)
                    if output.finished:
                        yield LlmChunk(
                            text=completion.text,
                            finish_reason=completion.finish_reason,
                            usage=Usage(input_tokens=len(tokens), output_tokens=generated),
                            model=self.model,
                        )
                    elif completion.text:
                        yield LlmChunk(text=completion.text)
        except LlmError:
            raise
        except ValueError as exc:  # vLLM's request validation
            message = str(exc)
            error = ContextLengthExceededError if "maximum model length" in message else InvalidRequestError
            raise error(message, provider=self.name) from exc
        except Exception as exc:
            raise ProviderUnavailableError(f"{type(exc).__name__}: {exc}", provider=self.name) from exc

    async def close(self) -> None:
        engine, self._engine, self._tokenizer = self._engine, None, None
        if engine is None:
            return
        engine.shutdown()
        del engine
        gc.collect()
        with contextlib.suppress(ImportError):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
