from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2_path():
    from temper.models.registry import resolve

    return resolve("smollm2-135m-instruct")
