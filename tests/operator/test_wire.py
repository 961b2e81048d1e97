"""Every message the actors exchange crosses the wire, and nothing mistyped comes back from it.

The first tests find the messages two ways — every dataclass in :mod:`mycelium.messages`, and
every class an actor in :mod:`mycelium` tells, asks or matches in ``on_receive`` — and require
each public one to be on the wire and to round-trip through JSON. The rest feed
:func:`mycelium.messages.from_wire` values that lie about their types.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import inspect
import pkgutil
import types
import typing
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mycelium
from mycelium import messages
from mycelium.messages import (
    AgentSync,
    InstanceInfo,
    PlanChanged,
    RegisterEndpoint,
    WireError,
    decode_message,
    from_wire,
    message_types,
    to_wire,
)
from mycelium.wire import Codec, is_local

ROOT = Path(mycelium.__file__).resolve().parent


def _module_name(path: Path) -> str:
    return ".".join(("mycelium", *path.relative_to(ROOT).with_suffix("").parts))


def _sent_or_matched(tree: ast.AST) -> set[str]:
    """Class names called as the message of ``x.tell(...)``/``x.ask(...)`` or matched by a
    ``case Name(...)`` inside an ``on_receive``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("tell", "ask"):
            for arg in node.args:
                if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name):
                    found.add(arg.func.id)
        if isinstance(node, ast.FunctionDef) and node.name == "on_receive":
            for inner in ast.walk(node):
                if isinstance(inner, ast.MatchClass) and isinstance(inner.cls, ast.Name):
                    found.add(inner.cls.id)
    return found


def _exchanged_classes() -> dict[str, type[Any]]:
    """Every dataclass an actor of the mesh tells, asks or receives, by qualified name."""
    out: dict[str, type[Any]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        names = _sent_or_matched(ast.parse(path.read_text()))
        if not names:
            continue
        module = importlib.import_module(_module_name(path))
        for name in names:
            obj = getattr(module, name, None)
            if isinstance(obj, type) and dataclasses.is_dataclass(obj):
                out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return out


def test_every_dataclass_in_messages_is_on_the_wire() -> None:
    defined = {name: obj for name, obj in inspect.getmembers(messages, inspect.isclass)
               if dataclasses.is_dataclass(obj) and obj.__module__ == messages.__name__}
    assert len(defined) >= 34
    assert {n: message_types().get(n) for n in defined} == defined


def test_every_message_an_actor_exchanges_is_on_the_wire_or_private() -> None:
    exchanged = _exchanged_classes()
    assert {"mycelium.messages.ClaimSwitch", "mycelium.messages.IsRouted",
            "mycelium.messages.ReleaseSwitch", "mycelium.messages.AgentSync"} <= set(exchanged)
    # messages an actor sends itself (private, or marked local) stay off the wire
    public = {q: c for q, c in exchanged.items()
              if not c.__name__.startswith("_") and not is_local(c)}
    missing = [q for q, c in public.items() if message_types().get(c.__name__) is not c]
    assert missing == []


def test_every_module_imports_so_the_scan_saw_everything() -> None:
    for info in pkgutil.walk_packages(mycelium.__path__, "mycelium."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)


def _strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Values of one annotation, as JSON can carry them (finite floats, 64-bit ints)."""
    if hint is type(None):
        return st.none()
    if hint is str:
        return st.text(max_size=12)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(-(2**63), 2**63 - 1)
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _instances(hint)
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return st.sampled_from(list(hint))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return st.one_of(*map(_strategy, args))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(_strategy(args[0]), max_size=3).map(tuple)
    if origin is tuple:
        return st.tuples(*map(_strategy, args))
    raise AssertionError(f"no strategy for {hint!r}: extend the test with the new type")


def _instances(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: _strategy(hints[f.name]) for f in dataclasses.fields(cls)})


@pytest.mark.parametrize("name", sorted(message_types()))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_each_message_round_trips_through_json(name: str, data: st.DataObject) -> None:
    message = data.draw(_instances(message_types()[name]))
    assert from_wire(orjson.loads(orjson.dumps(to_wire(message)))) == message


def test_a_message_with_its_defaults_left_out_decodes() -> None:
    assert from_wire({"type": "Tick"}) == messages.Tick()
    assert from_wire({"type": "PublishPlan", "app": "a", "digest": "d"}).max == 1


INFO = to_wire(InstanceInfo(id="a@node-1#1", app="a", node="node-1", digest="d" * 64,
                            state="Ready", child="c", url="http://127.0.0.1:9"))


@pytest.mark.parametrize(("wire", "complaint"), [
    ({"type": "AgentSync", "node": None, "apps": [None]}, "AgentSync.node: expected a string"),
    ({"type": "AgentSync", "node": "node-1", "apps": ["a", None]},
     "AgentSync.apps[1]: expected a string, got null"),
    ({"type": "AgentSync", "node": "node-1", "apps": "a"}, "AgentSync.apps: expected a list"),
    ({"type": "AgentSync", "node": "node-1"}, "missing field 'apps'"),
    ({"type": "AgentSync", "node": "n", "apps": [], "extra": 1}, "unknown fields ['extra']"),
    ({"type": "RegisterEndpoint", "instance": {**INFO, "pid": "12"}},
     "RegisterEndpoint.instance: InstanceInfo.pid: expected int or null, got str"),
    ({"type": "RegisterEndpoint", "instance": {**INFO, "type": "Plan"}},
     "expected InstanceInfo"),
    ({"type": "RegisterEndpoint", "instance": "http://127.0.0.1:1"},
     "expected InstanceInfo, got str"),
    ({"type": "PlanChanged", "app": "a", "plan": 3, "budget": None},
     "PlanChanged.plan: expected Plan or null, got int"),
    ({"type": "SlotReply", "granted": 1}, "SlotReply.granted: expected a boolean, got int"),
    ({"type": "SetBudget", "app": "a", "max_instances": True, "cpu": 1, "mem": 1},
     "SetBudget.max_instances: expected an integer, got bool"),
    ({"type": "SetBudget", "app": "a", "max_instances": 1, "cpu": "1", "mem": 1},
     "SetBudget.cpu: expected a number, got str"),
    ({"type": "EndpointsChanged", "routes": [], "restarts": [["a", 1, 2]]},
     "EndpointsChanged.restarts[0]: expected a list of 2"),
    ({"type": ["AgentSync"]}, "unknown message type"),
    ({"type": "Nope"}, "unknown message type 'Nope'"),
])
def test_a_mistyped_field_is_refused_with_its_name(wire: dict[str, Any], complaint: str) -> None:
    with pytest.raises(WireError) as caught:
        from_wire(wire)
    assert complaint in str(caught.value)
    assert caught.value.exit_code == 2  # bad input, for the CLI


def test_a_well_typed_message_decodes_to_exactly_its_types() -> None:
    sync = from_wire({"type": "AgentSync", "node": "node-1", "apps": ["a"],
                      "instances": [INFO]})
    assert sync == AgentSync("node-1", ("a",), (from_wire(INFO),))
    assert isinstance(sync.apps, tuple)
    assert from_wire({"type": "SetBudget", "app": "a", "max_instances": 1, "cpu": 1,
                      "mem": 2}).cpu == 1.0
    changed = from_wire({"type": "PlanChanged", "app": "a", "plan": None, "budget": None})
    assert changed == PlanChanged("a", None, None)


def test_decode_message_wants_exactly_one_message() -> None:
    for not_a_message in (None, [], "AgentSync", {"node": "n"}, [to_wire(messages.Tick())]):
        with pytest.raises(WireError):
            decode_message(not_a_message)
    assert decode_message(to_wire(RegisterEndpoint(from_wire(INFO)))).instance.url == \
        "http://127.0.0.1:9"


def test_plain_data_passes_from_wire_unchanged() -> None:
    assert from_wire({"apps": []}) == {"apps": []}
    assert from_wire([1, "a", None]) == [1, "a", None]


def test_the_codec_checks_literals_mappings_and_refuses_what_it_cannot_carry() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WireProbe:
        mode: typing.Literal["a", "b"]
        env: dict[str, str] = dataclasses.field(default_factory=dict)
        anything: Any = None

    @dataclasses.dataclass(frozen=True, slots=True)
    class WireNope:
        when: complex

    codec = Codec()  # its own registry: the mesh's stays as it is
    codec.register(WireProbe, WireNope, messages.Tick)
    probe = codec.from_wire({"type": "WireProbe", "mode": "b", "env": {"K": "v"},
                             "anything": [to_wire(messages.Tick("t"))]})
    assert probe == WireProbe("b", {"K": "v"}, [messages.Tick("t")])
    with pytest.raises(WireError, match=r"WireProbe.mode: expected one of \['a', 'b'\]"):
        codec.from_wire({"type": "WireProbe", "mode": "c"})
    with pytest.raises(WireError, match=r"WireProbe.env\['K'\]: expected a string, got int"):
        codec.from_wire({"type": "WireProbe", "mode": "a", "env": {"K": 1}})
    with pytest.raises(TypeError, match="cannot carry"):
        codec.from_wire({"type": "WireNope", "when": 1})

    @dataclasses.dataclass(frozen=True)
    class Tick:
        kind: str = ""

    with pytest.raises(TypeError, match="two message classes"):
        codec.register(Tick)
    with pytest.raises(WireError, match="unknown message type 'WireProbe'"):
        from_wire({"type": "WireProbe", "mode": "a"})  # not on the mesh's wire


def test_every_registered_class_has_a_decoder_the_wire_can_build() -> None:
    for cls in message_types().values():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert "type" not in fields
        from_wire(to_wire(_defaults(cls)))


def _defaults(cls: type[Any]) -> Any:
    """One instance with the simplest value for each required field."""
    simple: dict[Any, Any] = {str: "x", int: 1, float: 1.0, bool: True}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            hint = hints[f.name]
            origin = typing.get_origin(hint)
            if hint in simple:
                kwargs[f.name] = simple[hint]
            elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
                kwargs[f.name] = _defaults(hint)
            elif isinstance(hint, type) and issubclass(hint, enum.StrEnum):
                kwargs[f.name] = next(iter(hint))
            elif origin is tuple:
                kwargs[f.name] = ()
            else:
                kwargs[f.name] = None
    return cls(**kwargs)
