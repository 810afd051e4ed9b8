"""``VllmLlm``: the ``vllm`` agent type, a model served in-process by vLLM's async engine (NVIDIA GPU).

Use it when the orchestrator's process should own the model: one engine per model,
started on first use, shared by every task, shut down (GPU memory freed) at the end
of the run. When a vLLM server already runs on its own (``vllm serve``), or the GPU
is on another machine, or several processes share one model, use the
``openai_compatible`` agent with ``preset: vllm`` instead: it talks to the server.
"""

from __future__ import annotations

from typing import ClassVar

from llm_abstractions.local.local_llm import LocalLlm
from llm_abstractions.local.vllm_runner import VllmSettings

__all__ = ["VllmLlm"]


class VllmLlm(LocalLlm):
    """A local model on vLLM: ``model`` is a folder or a model id already in the Hugging Face cache.

    Agent keys: ``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``,
    ``max_num_seqs``, ``dtype``, ``enforce_eager`` (:class:`VllmSettings`). A task's
    ``json_schema`` is enforced by vLLM's structured output (guided decoding).
    Defaults: see :data:`~llm_abstractions.local.local_llm.LOCAL_DEFAULT_OPTIONS`.
    """

    provider = "vllm"
    runner_name = "vllm"
    settings_model = VllmSettings
    settings: VllmSettings
    runtime_modules: ClassVar[tuple[str, ...]] = ("vllm",)
    install_command = 'pip install "orchestrate-llm[vllm]"  (Linux with an NVIDIA GPU and CUDA)'

    @property
    def gpus_per_replica(self) -> float:
        """One GPU per tensor-parallel rank: a replica holds them all (its ranks run inside it)."""
        return self.settings.tensor_parallel_size
