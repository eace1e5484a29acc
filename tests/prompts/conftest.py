"""One SmolLM2 engine shared by the prompt tests that generate (a few short generations each)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def llm():
    from temper.engine.llm import LLM
    return LLM("smollm2-135m-instruct")
