"""The settings table (docs/settings.md) names every setting in config.py, with the default the code ships."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from optout_guard.config import Settings

SETTINGS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def _table() -> dict[str, str]:
    section = SETTINGS_PAGE.read_text(encoding="utf-8")
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            for name in re.findall(r"`([a-z_]+)`", cells[0]):
                rows[name] = cells[1]
    return rows


def test_every_setting_is_in_the_settings_table_with_its_default():
    table = _table()
    fields = {f.name: f.default for f in dataclasses.fields(Settings) if f.name != "workspace"}
    assert set(table) == set(fields)
    for name, default in fields.items():
        shown = table[name].replace(" ", "").strip("`")
        if isinstance(default, bool):
            assert shown == str(default).lower(), name
        elif isinstance(default, (int, float)):
            assert float(shown) == float(default), name
        elif isinstance(default, str):
            assert shown == default, name
