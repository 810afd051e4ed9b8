"""``BaseLlm`` wrappers: behaviour composed around a model, each in its own module.

- :class:`WrapperLlm` delegates everything (the base of the others),
- :class:`TimeoutLlm` applies the per-call timeout,
- :class:`LimitedLlm` applies an endpoint's shared :class:`EndpointLimits` (its :class:`Pacer`
  follows configured limits, rate-limit headers and 429s),
- :class:`CircuitBreakerLlm` consults an endpoint's :class:`CircuitBreaker`,
- :class:`FallbackLlm` tries models in order,
- :class:`StreamedLlm` answers complete calls from the stream (time to first token).
"""

from llm_abstractions.wrappers.circuit import CircuitBreaker, CircuitBreakerLlm, CircuitState
from llm_abstractions.wrappers.fallback import FallbackLlm
from llm_abstractions.wrappers.limits import EndpointLimits, LimitedLlm, LimitSettings, estimate_tokens
from llm_abstractions.wrappers.pacing import Pacer, PaceReason, PacingSettings, PacingStatus, key_digest, shared_pacer
from llm_abstractions.wrappers.streamed import StreamedLlm
from llm_abstractions.wrappers.timeout import TimeoutLlm
from llm_abstractions.wrappers.wrapper import WrapperLlm

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerLlm",
    "CircuitState",
    "EndpointLimits",
    "FallbackLlm",
    "LimitSettings",
    "LimitedLlm",
    "PaceReason",
    "Pacer",
    "PacingSettings",
    "PacingStatus",
    "StreamedLlm",
    "TimeoutLlm",
    "WrapperLlm",
    "estimate_tokens",
    "key_digest",
    "shared_pacer",
]
