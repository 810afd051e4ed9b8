"""Keys and endpoints: agent config first, else the SDKs' own variables; missing keys and SDKs reported early."""

from __future__ import annotations

import pytest

from agent_registry import AgentConfigError, AgentRegistry
from llm_abstractions import AuthenticationError, LlmConfig, LlmError, Message, create_llm, get_llm_class
from llm_abstractions.providers._sdk import MissingSdkError, import_sdk
from llm_abstractions.providers.gpt import GptLlm
from llm_abstractions.providers.openai_compatible import PRESETS
from orchestration import ProjectOrchestrator
from orchestration.issues import ProjectValidationError
from orchestration.models import AgentTask, ProjectSpec
from tests.fakes.agents import API_OF, MODEL_OF, PROVIDERS
from tests.fakes.fixtures import PROVIDER_ENV_VARS
from tests.fakes.provider_server import FakeProviderServer, Fault

QUESTION = [Message.user("hi")]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROVIDER_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("provider", "header", "value"),
    [
        ("gpt", "authorization", "Bearer test-openai-key"),
        ("claude", "authorization", "Bearer test-anthropic-key"),
        ("gemini", "x-goog-api-key", "test-google-key"),
    ],
)
async def test_key_and_base_url_come_from_the_sdk_variables(
    provider_env: FakeProviderServer, provider: str, header: str, value: str
) -> None:
    config = LlmConfig(name="a", provider=provider, model=MODEL_OF[provider])
    assert get_llm_class(provider).check_config(config) == []
    async with create_llm(config) as llm:
        response = await llm.generate_content_async(QUESTION)
    assert response.text == "echo: hi"
    [request] = provider_env.requests
    assert request.api == API_OF[provider]
    assert request.headers[header] == value


async def test_the_agents_key_wins_over_the_variable(provider_env: FakeProviderServer) -> None:
    config = LlmConfig(name="a", provider="gpt", model="gpt-4.1-mini", api_key="from-config")
    async with create_llm(config) as llm:
        await llm.generate_content_async(QUESTION)
    assert provider_env.requests[0].headers["authorization"] == "Bearer from-config"


async def test_gemini_prefers_google_api_key_then_gemini_api_key(
    provider_env: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-variable")
    config = LlmConfig(name="a", provider="gemini", model="gemini-2.5-flash")
    async with create_llm(config) as llm:
        await llm.generate_content_async(QUESTION)
    monkeypatch.delenv("GOOGLE_API_KEY")
    async with create_llm(config) as llm:
        await llm.generate_content_async(QUESTION)
    assert [r.headers["x-goog-api-key"] for r in provider_env.requests] == ["test-google-key", "gemini-variable"]


@pytest.mark.parametrize(
    ("provider", "settings", "variables"),
    [
        ("gpt", {}, "OPENAI_API_KEY"),
        ("claude", {}, "ANTHROPIC_API_KEY"),
        ("gemini", {}, "GOOGLE_API_KEY or GEMINI_API_KEY"),
        ("openai_compatible", {"preset": "groq"}, "GROQ_API_KEY"),
        ("openai_compatible", {"preset": "xai"}, "XAI_API_KEY"),
    ],
)
def test_a_missing_key_is_reported_with_the_variable_to_set(
    clean_env: pytest.MonkeyPatch, provider: str, settings: dict[str, str], variables: str
) -> None:
    config = LlmConfig(name="a", provider=provider, model="m", settings=settings)
    problems = get_llm_class(provider).check_config(config)
    assert problems == [f"no API key: set {variables}, or api_key in the agent's config"]


@pytest.mark.parametrize("preset", ["ollama", "vllm", "lmstudio"])
def test_local_presets_need_no_key(clean_env: pytest.MonkeyPatch, preset: str) -> None:
    config = LlmConfig(name="a", provider="openai_compatible", model="m", settings={"preset": preset})
    assert get_llm_class("openai_compatible").check_config(config) == []
    llm = create_llm(config)
    assert str(llm.client.base_url).rstrip("/") == PRESETS[preset].base_url  # type: ignore[attr-defined]
    assert llm.pricing_provider is None


def test_openai_compatible_needs_a_base_url_or_a_preset(clean_env: pytest.MonkeyPatch) -> None:
    config = LlmConfig(name="a", provider="openai_compatible", model="m")
    assert get_llm_class("openai_compatible").check_config(config) == [
        "needs base_url or a preset (groq, xai, ollama, vllm, lmstudio)"
    ]


async def test_a_preset_key_variable_and_an_explicit_base_url(
    clean_env: pytest.MonkeyPatch, fake_server: FakeProviderServer
) -> None:
    clean_env.setenv("GROQ_API_KEY", "groq-variable")
    config = LlmConfig(
        name="a",
        provider="openai_compatible",
        model="llama-3.3-70b-versatile",
        base_url=fake_server.openai_base_url,
        settings={"preset": "groq"},
    )
    async with create_llm(config) as llm:
        assert llm.pricing_provider == "groq"
        await llm.generate_content_async(QUESTION)
    assert fake_server.requests[0].headers["authorization"] == "Bearer groq-variable"


def test_an_unknown_preset_is_rejected_when_agents_load() -> None:
    with pytest.raises(AgentConfigError, match="preset"):
        AgentRegistry().load_mapping({"local": {"type": "openai_compatible", "model": "m", "preset": "nope"}})


def test_project_validation_names_the_agent_and_the_variable(
    clean_env: pytest.MonkeyPatch, fake_server: FakeProviderServer
) -> None:
    spec = ProjectSpec(
        agents={"writer": {"type": "gpt", "model": "gpt-4.1-mini", "base_url": fake_server.openai_base_url}},
        tasks=[AgentTask(id="t", description="hello", agent="writer")],
    )
    with pytest.raises(ProjectValidationError) as caught:
        ProjectOrchestrator(spec, registry=AgentRegistry()).validate()
    assert "agent 'writer'" in str(caught.value)
    assert "OPENAI_API_KEY" in str(caught.value)
    assert fake_server.requests == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_call_without_key_fails_as_authentication_without_a_request(
    clean_env: pytest.MonkeyPatch, fake_server: FakeProviderServer, provider: str
) -> None:
    settings = {"preset": "xai"} if provider == "openai_compatible" else {}
    config = LlmConfig(name="a", provider=provider, model="m", base_url=fake_server.url, settings=settings)
    async with create_llm(config) as llm:
        with pytest.raises(AuthenticationError, match="no API key"):
            await llm.generate_content_async(QUESTION)
    assert fake_server.requests == []


def test_a_missing_sdk_gives_the_install_command() -> None:
    class NoSdkLlm(GptLlm):
        sdk_module = "orchestrate_test_no_such_sdk"

    problems = NoSdkLlm.check_config(LlmConfig(name="a", provider="gpt", model="m", api_key="k"))
    assert "the gpt provider needs the 'openai' package: pip install 'orchestrate-llm[openai]'" in problems
    with pytest.raises(MissingSdkError, match=r"pip install 'orchestrate-llm\[gemini\]'"):
        import_sdk("orchestrate_test_no_such_sdk", package="google-genai", extra="gemini", provider="gemini")


async def test_gemini_keeps_its_httpx_client_without_retries_when_aiohttp_is_present(
    fake_server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With aiohttp importable google-genai switches transport and retries resets by itself.

    aiohttp is not installed here, so the SDK's own flag stands in for it: had the SDK taken
    the aiohttp path, the call would fail on the missing module instead of reaching the server.
    """
    from google.genai import _api_client

    monkeypatch.setattr(_api_client, "has_aiohttp", True)
    fake_server.script("gemini", Fault.reset())
    config = LlmConfig(
        name="a", provider="gemini", model="gemini-2.5-flash", api_key="k", base_url=fake_server.gemini_base_url
    )
    async with create_llm(config) as llm:
        with pytest.raises(LlmError) as caught:
            await llm.generate_content_async(QUESTION)
        assert caught.value.type_name == "connection"
        assert (await llm.generate_content_async(QUESTION)).text == "echo: hi"
    assert len(fake_server.requests) == 2


async def test_keys_from_the_environment_are_redacted(provider_env: FakeProviderServer) -> None:
    from llm_abstractions import redact

    provider_env.script("openai", Fault(status=401, message="bad key test-openai-key"))
    async with create_llm(LlmConfig(name="a", provider="gpt", model="gpt-4.1-mini")) as llm:
        with pytest.raises(AuthenticationError) as caught:
            await llm.generate_content_async(QUESTION)
    assert "test-openai-key" not in str(caught.value)
    assert redact("key=test-openai-key!") == "key=[REDACTED]!"
