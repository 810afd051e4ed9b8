from __future__ import annotations

from collections.abc import Iterator

import pytest

from llm_abstractions import LlmConfig, register_llm
from llm_abstractions.factory import unregister_llm
from tests.reliability.doubles import ScriptedLlm, Scripts


@pytest.fixture
def scripts() -> Iterator[Scripts]:
    """Agents of type ``scripted`` answer from ``scripts[agent name]``."""
    state = Scripts()

    class FactoryScriptedLlm(ScriptedLlm):
        def __init__(self, config: LlmConfig) -> None:
            super().__init__(config, state[config.name])

    register_llm("scripted", FactoryScriptedLlm)
    yield state
    unregister_llm("scripted")
