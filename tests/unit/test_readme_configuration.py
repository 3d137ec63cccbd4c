"""The README's configuration table names every environment variable the services read."""

from __future__ import annotations

from pathlib import Path

import pytest
from kalcifer_common.settings import ApiSettings, EngineSettings, SchedulerSettings
from pydantic_settings import BaseSettings

README = (Path(__file__).parents[2] / "README.md").read_text()


@pytest.mark.parametrize("settings", [ApiSettings, EngineSettings, SchedulerSettings])
def test_every_setting_is_documented(settings: type[BaseSettings]) -> None:
    missing = [name.upper() for name in settings.model_fields if f"`{name.upper()}`" not in README]
    assert missing == [], f"add these to the README's configuration table: {missing}"
