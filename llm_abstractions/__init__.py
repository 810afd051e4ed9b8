"""How to talk to a model: messages, ``BaseLlm``, typed errors and the provider factory."""

from llm_abstractions.attachments import Attachment, AttachmentError, AttachmentLimits
from llm_abstractions.base import BaseLlm, NoSettings
from llm_abstractions.config import LlmConfig
from llm_abstractions.errors import (
    AuthenticationError,
    BudgetExhaustedError,
    CircuitOpenError,
    ContentFilteredError,
    ContextLengthExceededError,
    ErrorType,
    InvalidOutputError,
    InvalidRequestError,
    LlmConnectionError,
    LlmError,
    LlmTimeoutError,
    OutputTruncatedError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_abstractions.factory import (
    UnknownProviderError,
    create_llm,
    get_llm_class,
    known_providers,
    register_llm,
    unregister_llm,
)
from llm_abstractions.function import FunctionLlm
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message, Usage
from llm_abstractions.redaction import redact, redact_value, register_secret
from llm_abstractions.streaming import StreamingLlm, collect_stream

__all__ = [
    "Attachment",
    "AttachmentError",
    "AttachmentLimits",
    "AuthenticationError",
    "BaseLlm",
    "BudgetExhaustedError",
    "CircuitOpenError",
    "ContentFilteredError",
    "ContextLengthExceededError",
    "ErrorType",
    "FunctionLlm",
    "GenerationOptions",
    "InvalidOutputError",
    "InvalidRequestError",
    "LlmChunk",
    "LlmConfig",
    "LlmConnectionError",
    "LlmError",
    "LlmResponse",
    "LlmTimeoutError",
    "Message",
    "NoSettings",
    "OutputTruncatedError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "StreamingLlm",
    "UnknownProviderError",
    "Usage",
    "collect_stream",
    "create_llm",
    "get_llm_class",
    "known_providers",
    "redact",
    "redact_value",
    "register_llm",
    "register_secret",
    "unregister_llm",
]
