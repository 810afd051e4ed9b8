"""Attachments on the wire: each provider's own format, through its real SDK, at the fake server.

Images and PDFs go as OpenAI ``image_url`` / ``file`` parts, Anthropic ``image`` / ``document`` blocks and Gemini
``inlineData`` / ``fileData`` parts; text files arrive inlined in the prompt's text. What a provider refuses (a
type, a URL, a size over its limits) is refused before any request: the server sees none.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import pytest

from llm_abstractions import InvalidRequestError, Message, collect_stream, create_llm
from llm_abstractions.attachments import Attachment
from tests.fakes import media
from tests.fakes.agents import API_OF, llm_config
from tests.fakes.provider_server import FakeProviderServer, RecordedRequest

PNG = media.png(b"wire-marker")
PDF = media.pdf(2)
IMAGE = Attachment.from_bytes(PNG, "dot.png")
DOC = Attachment.from_bytes(PDF, "report.pdf")
NOTES = Attachment.from_bytes(b"Otters hold hands.\n", "notes.md")
IMAGE_URL = Attachment.from_url("https://example.com/photos/cat.jpg?signature=s3cr3t")
PDF_URL = Attachment.from_url("https://example.com/papers/paper.pdf")
NOTES_BLOCK = '<attachment name="notes.md" media_type="text/markdown">\nOtters hold hands.\n</attachment>'
INLINED = f"{NOTES_BLOCK}\n\nDescribe them."


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _send(
    server: FakeProviderServer, provider: str, attachments: Sequence[Attachment], *, streamed: bool = False
) -> RecordedRequest:
    messages = [Message.system("Be brief."), Message.user("Describe them.", attachments)]
    async with create_llm(llm_config(provider, server)) as llm:
        if streamed:
            await collect_stream(llm.stream_content_async(messages), provider=provider)
        else:
            await llm.generate_content_async(messages)
    [request] = server.requests
    return request


async def _refused(server: FakeProviderServer, provider: str, attachments: Sequence[Attachment]) -> str:
    """The refusal's message; the server saw nothing."""
    async with create_llm(llm_config(provider, server)) as llm:
        with pytest.raises(InvalidRequestError) as caught:
            await llm.generate_content_async([Message.user("Describe.", attachments)])
    assert server.requests == []
    assert not caught.value.retryable
    return caught.value.message


STREAMED = pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])


@STREAMED
@pytest.mark.parametrize("provider", ["gpt", "openai_compatible"])
async def test_openai_gets_image_url_and_file_parts(
    fake_server: FakeProviderServer, provider: str, streamed: bool
) -> None:
    request = await _send(fake_server, provider, [NOTES, IMAGE, DOC, IMAGE_URL], streamed=streamed)
    assert request.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"}},
                {
                    "type": "file",
                    "file": {"filename": "report.pdf", "file_data": f"data:application/pdf;base64,{b64(PDF)}"},
                },
                {"type": "image_url", "image_url": {"url": "https://example.com/photos/cat.jpg?signature=s3cr3t"}},
                {"type": "text", "text": INLINED},
            ],
        },
    ]


@STREAMED
async def test_anthropic_gets_image_and_document_blocks(fake_server: FakeProviderServer, streamed: bool) -> None:
    request = await _send(fake_server, "claude", [NOTES, IMAGE, DOC, IMAGE_URL, PDF_URL], streamed=streamed)
    assert request.json["system"] == "Be brief."
    assert request.json["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)}},
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PDF)},
                    "title": "report.pdf",
                },
                {
                    "type": "image",
                    "source": {"type": "url", "url": "https://example.com/photos/cat.jpg?signature=s3cr3t"},
                },
                {
                    "type": "document",
                    "source": {"type": "url", "url": "https://example.com/papers/paper.pdf"},
                    "title": "paper.pdf",
                },
                # long enough for the prompt cache: the text file a block of its own, marked, then the prompt
                {"type": "text", "text": NOTES_BLOCK, "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Describe them."},
            ],
        }
    ]


def _gemini_part(part: dict[str, Any]) -> tuple[str, Any, str | None]:
    """A Gemini part as (kind, content, mime type): the bytes of inline data decoded (google-genai sends them in
    URL-safe base64), field names read in either of the API's spellings (``mimeType`` / ``mime_type``)."""
    if "text" in part:
        return "text", part["text"], None
    kind = "inlineData" if "inlineData" in part else "fileData"
    fields = part[kind]
    mime_type = fields.get("mimeType", fields.get("mime_type"))
    if kind == "inlineData":
        return kind, base64.urlsafe_b64decode(fields["data"]), mime_type
    return kind, fields.get("fileUri", fields.get("file_uri")), mime_type


@STREAMED
async def test_gemini_gets_inline_data_and_file_data_parts(fake_server: FakeProviderServer, streamed: bool) -> None:
    request = await _send(fake_server, "gemini", [NOTES, IMAGE, DOC, PDF_URL], streamed=streamed)
    assert request.json["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    [content] = request.json["contents"]
    assert content["role"] == "user"
    assert [_gemini_part(part) for part in content["parts"]] == [
        ("inlineData", PNG, "image/png"),
        ("inlineData", PDF, "application/pdf"),
        ("fileData", "https://example.com/papers/paper.pdf", "application/pdf"),
        ("text", INLINED, None),
    ]


@pytest.mark.parametrize("provider", ["gpt", "claude", "gemini", "openai_compatible"])
async def test_a_text_file_alone_is_inlined_into_plain_text(fake_server: FakeProviderServer, provider: str) -> None:
    request = await _send(fake_server, provider, [NOTES])
    body: dict[str, Any] = request.json
    if API_OF[provider] == "gemini":
        assert body["contents"][-1]["parts"] == [{"text": INLINED}]
    else:
        assert body["messages"][-1] == {"role": "user", "content": INLINED}


async def test_an_attachment_without_text_sends_no_empty_text_part(fake_server: FakeProviderServer) -> None:
    async with create_llm(llm_config("claude", fake_server)) as llm:
        await llm.generate_content_async([Message.user("", [IMAGE])])
    [request] = fake_server.requests
    assert [block["type"] for block in request.json["messages"][0]["content"]] == ["image"]


@pytest.mark.parametrize("provider", ["gpt", "openai_compatible"])
async def test_openai_refuses_a_pdf_by_url_before_any_request(fake_server: FakeProviderServer, provider: str) -> None:
    message = await _refused(fake_server, provider, [PDF_URL])
    assert "cannot fetch application/pdf by URL (paper.pdf" in message


async def test_gemini_refuses_a_gif_before_any_request(fake_server: FakeProviderServer) -> None:
    message = await _refused(fake_server, "gemini", [Attachment.from_bytes(media.gif(), "anim.gif")])
    assert "gemini does not take image/gif (anim.gif)" in message


@pytest.mark.parametrize(
    ("provider", "attachments", "expected"),
    [
        ("gpt", [Attachment.from_bytes(media.padded_png(21 * 1024 * 1024), "big.png")], "takes images up to 20.0 MB"),
        ("openai_compatible", [Attachment.from_bytes(media.padded_png(21 * 1024 * 1024), "big.png")], "20.0 MB"),
        (
            "claude",
            [Attachment.from_bytes(media.padded_png(4 * 1024 * 1024), "big.png")],
            "big.png is 5.3 MB base64-encoded; claude takes images up to 5.0 MB",
        ),
        ("claude", [Attachment.from_bytes(media.pdf(101), "long.pdf")], "101 PDF pages in one request"),
        ("claude", [IMAGE] * 101, "101 images in one request; claude takes at most 100"),
        ("gemini", [Attachment.from_bytes(media.pdf(1001), "tome.pdf")], "1001 PDF pages"),
    ],
    ids=["gpt-image", "compatible-image", "claude-image", "claude-pages", "claude-count", "gemini-pages"],
)
async def test_size_limits_refuse_before_any_request(
    fake_server: FakeProviderServer, provider: str, attachments: list[Attachment], expected: str
) -> None:
    assert expected in await _refused(fake_server, provider, attachments)


async def test_the_request_size_limit_counts_base64_and_text(fake_server: FakeProviderServer) -> None:
    # Seven 3 MB images pass Claude's 5 MB image limit one by one, but 28 MB of base64 plus 5 MB of text do not.
    images = [Attachment.from_bytes(media.padded_png(3 * 1024 * 1024 + n), f"p{n}.png") for n in range(7)]
    async with create_llm(llm_config("claude", fake_server)) as llm:
        with pytest.raises(InvalidRequestError, match=r"come to 33\.\d MB as sent; claude takes 32\.0 MB at most"):
            await llm.generate_content_async([Message.user("x" * 5 * 1024 * 1024, images)])
    assert fake_server.requests == []


async def test_a_stored_reference_has_no_bytes_to_send(fake_server: FakeProviderServer) -> None:
    message = await _refused(fake_server, "gpt", [IMAGE.reference])
    assert "dot.png: its bytes are not here" in message


async def test_attachments_go_with_user_messages_only(fake_server: FakeProviderServer) -> None:
    async with create_llm(llm_config("gpt", fake_server)) as llm:
        with pytest.raises(InvalidRequestError, match="not assistant ones"):
            await llm.generate_content_async(
                [Message.user("a"), Message(role="assistant", content="b", attachments=(IMAGE,)), Message.user("c")]
            )
    assert fake_server.requests == []


async def test_a_refused_stream_sends_nothing(fake_server: FakeProviderServer) -> None:
    async with create_llm(llm_config("gemini", fake_server)) as llm:
        with pytest.raises(InvalidRequestError):
            async for _ in llm.stream_content_async([Message.user("x", [Attachment.from_bytes(media.gif(), "a.gif")])]):
                pass
    assert fake_server.requests == []
