"""What a Ray replica sends back for one call (``LlmReplica.stream``, called directly: no Ray needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from llm_abstractions import GenerationOptions, LlmChunk, LlmConfig, Message
from llm_abstractions.ray_replicas import LlmReplica
from llm_abstractions.streaming import StreamingLlm

TOKENS = 200


class Burst(StreamingLlm):
    """Makes its tokens as fast as it can."""

    provider = "burst"

    async def _stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[LlmChunk]:
        for i in range(TOKENS):
            yield LlmChunk(text=f"{i} ")
        yield LlmChunk(finish_reason="stop")


async def test_the_first_chunk_goes_alone_and_the_rest_in_few_batches() -> None:
    replica = LlmReplica(Burst, LlmConfig(name="b", provider="burst"), {})
    batches = [batch async for batch in replica.stream([Message.user("go")], None)]
    assert [chunk.text for chunk in batches[0]] == ["0 "]  # time to first token is not held back
    assert len(batches) < 20  # not a Ray object per token (one each costs the driver about a millisecond)
    chunks = [chunk for batch in batches for chunk in batch]
    assert "".join(c.text for c in chunks) == "".join(f"{i} " for i in range(TOKENS))
    assert chunks[-1].finish_reason == "stop"
