"""``MlxLlm``: the ``mlx`` agent type, a model run in-process by mlx-lm (Apple Silicon, or CPU on Linux)."""

from __future__ import annotations

import sys
from typing import ClassVar

from llm_abstractions.local.local_llm import LocalLlm
from llm_abstractions.local.mlx_runner import MlxSettings

__all__ = ["MlxLlm", "MlxSettings"]

_INSTALL = (
    'pip install "orchestrate-llm[mlx]"  (or: pip install mlx-lm)'
    if sys.platform == "darwin"
    else 'pip install "orchestrate-llm[mlx]"  (or: pip install "mlx-lm[cpu]")'
)


class MlxLlm(LocalLlm):
    """A local model on mlx-lm: ``model`` is a folder or a model id already in the Hugging Face cache.

    The model loads on the first call and is shared by every task (and every agent)
    that uses it with the same settings; concurrent tasks are decoded in one batch.
    Defaults: see :data:`~llm_abstractions.local.local_llm.LOCAL_DEFAULT_OPTIONS`.
    ``json_schema`` is not enforced by mlx-lm (the prompt must ask for JSON).
    """

    provider = "mlx"
    runner_name = "mlx"
    settings_model = MlxSettings
    settings: MlxSettings
    runtime_modules: ClassVar[tuple[str, ...]] = ("mlx_lm",)
    install_command = _INSTALL

    @classmethod
    def runtime_problem(cls) -> str | None:
        problem = super().runtime_problem()
        if problem is not None:
            return problem
        try:
            import mlx.core  # noqa: F401  (plain ``mlx`` without a backend fails here on Linux)
        except ImportError as exc:
            return f"the mlx runtime does not import ({exc}): {_INSTALL}"
        return None
