"""The fake provider server itself: scripting order, the log, keep-alive and shutdown."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from tests.fakes.provider_server import FakeProviderServer, Fault, RecordedRequest, Reply


def _post(server: FakeProviderServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "one two three"}]}


def test_scripted_responses_come_before_the_handler_and_the_default(fake_server: FakeProviderServer) -> None:
    fake_server.script("openai", Fault.rate_limited(retry_after="0.5", retry_after_ms=500))
    fake_server.script(None, Reply(text="shared"))
    fake_server.handler = lambda request: Reply(text=f"handled {request.model}")

    status, headers, body = _post(fake_server, "/v1/chat/completions", CHAT)
    assert status == 429
    assert headers["retry-after"] == "0.5"
    assert headers["retry-after-ms"] == "500"
    assert json.loads(body)["error"]["type"] == "rate_limit_exceeded"

    answers = [json.loads(_post(fake_server, "/v1/chat/completions", CHAT)[2]) for _ in range(2)]
    assert [a["choices"][0]["message"]["content"] for a in answers] == ["shared", "handled m"]
    assert fake_server.pending("openai") == fake_server.pending(None) == 0


def test_default_reply_echoes_and_counts_words(fake_server: FakeProviderServer) -> None:
    _, _, body = _post(fake_server, "/v1/chat/completions", CHAT)
    answer = json.loads(body)
    assert answer["choices"][0]["message"]["content"] == "echo: one two three"
    assert answer["usage"]["prompt_tokens"] == 3
    assert answer["usage"]["completion_tokens"] == 4
    assert answer["model"] == "m"


@pytest.mark.parametrize(
    ("path", "api", "expected"),
    [
        ("/v1/chat/completions", "openai", "maximum context length"),
        ("/v1/messages", "anthropic", "prompt is too long"),
        ("/v1beta/models/g:generateContent", "gemini", "input token count"),
    ],
)
def test_context_length_errors_use_each_apis_wording(
    fake_server: FakeProviderServer, path: str, api: str, expected: str
) -> None:
    fake_server.script(None, Fault.context_length())
    status, _, body = _post(fake_server, path, {"model": "m", "messages": [], "contents": []})
    assert status == 400
    assert expected in body.decode()
    [request] = fake_server.requests
    assert request.api == api


def test_log_records_the_request_and_completion(fake_server: FakeProviderServer) -> None:
    _post(fake_server, "/v1beta/models/gemini-x:streamGenerateContent?alt=sse", {"contents": []})
    [request] = fake_server.wait_for_requests(1)
    assert isinstance(request, RecordedRequest)
    assert (request.api, request.model, request.stream, request.query) == ("gemini", "gemini-x", True, {"alt": ["sse"]})
    assert request.completed.wait(5)
    assert not request.client_closed.is_set()


def test_keep_alive_serves_many_requests_on_one_connection(fake_server: FakeProviderServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fake_server.port, timeout=5)
    try:
        for _ in range(20):
            conn.request("POST", "/v1/messages", body=json.dumps(CHAT), headers={"content-type": "application/json"})
            response = conn.getresponse()
            assert json.loads(response.read())["content"][0]["text"] == "echo: one two three"
    finally:
        conn.close()
    assert len(fake_server.requests_for("anthropic")) == 20


def test_reset_drops_the_connection(fake_server: FakeProviderServer) -> None:
    fake_server.script(None, Fault.reset())
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        _post(fake_server, "/v1/chat/completions", CHAT)


def test_wait_for_requests_times_out(fake_server: FakeProviderServer) -> None:
    with pytest.raises(TimeoutError):
        fake_server.wait_for_requests(1, timeout=0.05)


def test_stop_closes_a_connection_left_waiting() -> None:
    server = FakeProviderServer().start()
    server.script(None, Reply(delay_s=60))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(CHAT))
    server.wait_for_requests(1)
    server.stop()
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        conn.getresponse()
    conn.close()


def test_usage_is_rendered_in_each_apis_own_terms(fake_server: FakeProviderServer) -> None:
    # Reply counts are totals; Anthropic's input_tokens leaves out the cache, Gemini's candidates the thoughts.
    def reply() -> Reply:
        return Reply(
            text="hi",
            input_tokens=100,
            output_tokens=40,
            cache_read_tokens=60,
            cache_write_tokens=10,
            reasoning_tokens=25,
        )

    fake_server.script(None, reply(), reply(), reply())
    openai = json.loads(_post(fake_server, "/v1/chat/completions", CHAT)[2])["usage"]
    anthropic = json.loads(_post(fake_server, "/v1/messages", CHAT)[2])["usage"]
    gemini = json.loads(_post(fake_server, "/v1beta/models/g:generateContent", {"contents": []})[2])["usageMetadata"]
    assert openai == {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 10},
        "completion_tokens_details": {"reasoning_tokens": 25},
    }
    assert anthropic == {
        "input_tokens": 30,
        "output_tokens": 40,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 10,
        "output_tokens_details": {"thinking_tokens": 25},
    }
    assert gemini == {
        "promptTokenCount": 100,
        "cachedContentTokenCount": 60,
        "candidatesTokenCount": 15,
        "thoughtsTokenCount": 25,
        "totalTokenCount": 140,
    }
