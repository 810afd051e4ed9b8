"""Reply streams written from a worker thread: order, coalescing while the loop is busy, finished loops."""

from __future__ import annotations

import threading

import anyio

from llm_abstractions import LlmChunk, Usage
from llm_abstractions.local.mailbox import Reply


async def test_text_posted_while_the_loop_is_busy_arrives_as_one_chunk() -> None:
    reply, receive = Reply.open()
    last = LlmChunk(text="!", finish_reason="stop", usage=Usage(output_tokens=4))

    def worker() -> None:
        for piece in ("to", "ken", "s"):
            reply.post(piece)
        reply.finish(last)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()  # blocks the event loop: everything is posted before the loop can flush
    items = [item async for item in receive]
    assert items == [last.model_copy(update={"text": "tokens!"})]


async def test_items_keep_their_order_per_reader() -> None:
    first, first_items = Reply.open()
    second, second_items = Reply.open()

    def worker() -> None:
        first.post("a")
        second.post("x")
        first.post(True)
        first.post("b")
        second.finish("y")
        first.finish(LlmChunk(finish_reason="length"))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert [i async for i in first_items] == ["a", True, LlmChunk(text="b", finish_reason="length")]
    assert [i async for i in second_items] == ["xy"]


def test_a_reply_whose_loop_has_finished_is_unreachable() -> None:
    async def open_reply() -> Reply:
        return Reply.open()[0]

    reply = anyio.run(open_reply)
    thread = threading.Thread(target=reply.post, args=("late",))
    thread.start()
    thread.join()
    assert reply.unreachable
