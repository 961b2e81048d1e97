"""Properties: any TOML the loader is given either loads faithfully or fails as ConfigError;
any record renders as exactly one printable line."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.operator import ConfigError, MeshConfig, format_record, load_config

KEYS = [(section, f.name, str(f.type))
        for section, cls in ((s.name, s.default_factory) for s in dataclasses.fields(MeshConfig))
        for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

toml_values = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126,
                                   blacklist_characters='"\\'), max_size=12),
)


def to_toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), toml_values), max_size=6,
                unique_by=lambda kv: kv[0][:2]))
def test_any_file_loads_faithfully_or_fails_as_config_error(
        assignments: list[tuple[tuple[str, str, str], Any]]) -> None:
    by_section: dict[str, list[str]] = {}
    for (section, key, _kind), value in assignments:
        by_section.setdefault(section, []).append(f"{key} = {to_toml(value)}")
    text = "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in by_section.items())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(text)
        try:
            config = load_config(path, {})
        except ConfigError as exc:
            assert str(exc).startswith("config: ")
            return
    for (section, key, kind), value in assignments:
        loaded = getattr(getattr(config, section), key)
        # an optional key (``str | None``), once given, holds its type
        assert loaded == value and type(loaded).__name__ == kind.removesuffix(" | None")


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text())
records = st.dictionaries(
    st.sampled_from(["ts", "event", "supervisor", "child", "app", "reason", "delay", "pid",
                     "restarts", "extra", "other"]),
    st.one_of(json_scalars, st.dictionaries(st.sampled_from(["app", "pid", "restarts"]),
                                            json_scalars, max_size=3)))


@settings(max_examples=200, deadline=None)
@given(records, st.booleans())
def test_any_record_renders_as_one_printable_line(record: dict[str, Any], color: bool) -> None:
    line = format_record(record, color=color)
    visible = line.replace("\x1b[", "[") if color else line
    assert "\n" not in line and "\r" not in line
    assert visible.isprintable()


json64 = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(),
                  st.text())


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), json64, max_size=5),
       st.text(min_size=1, max_size=20))
def test_any_written_record_reads_back(fields: dict[str, Any], event: str) -> None:
    from mycelium.operator import SupervisionLog

    fields = {k: v for k, v in fields.items() if k != "ts"}
    with tempfile.TemporaryDirectory() as tmp:
        log = SupervisionLog(Path(tmp))
        log.write({**fields, "event": event})
        (back,) = list(log.read())
        log.close()
    expected = orjson.loads(orjson.dumps({**fields, "event": event}))
    for key, value in expected.items():
        if value == value:  # NaN never equals itself (and orjson writes it as null anyway)
            assert back[key] == value


def test_a_record_orjson_cannot_encode_is_still_written(tmp_path: Path) -> None:
    from mycelium.operator import SupervisionLog

    log = SupervisionLog(tmp_path)
    log.write({"event": "started", "huge": 2**70, "odd": object()})
    (back,) = list(log.read())
    log.close()
    assert back["event"] == "started" and float(back["huge"]) == float(2**70)
    assert back["odd"].startswith("<object object")
