"""The wire form of messages: plain JSON-able data in, checked message dataclasses out.

Messages (:mod:`mycelium.messages`) are data; this module is how they cross a process boundary
— the control socket, etcd, the fabric's sqlite store. :func:`to_wire` turns a message into
``{"type": ClassName, ...fields}``; :func:`from_wire` turns that back into the message, and it
trusts nothing: every field is checked against the class's annotation (``str``, ``int``,
``float``, ``bool``, ``None`` unions, ``tuple[X, ...]``, ``Literal``, string enums (the
:mod:`mycelium.states` words), ``dict[K, V]``, nested message dataclasses). An actor must never
receive a message whose fields lie about their types — one ``AgentSync`` with a ``null`` node
name would break every later ``status`` — so a wrong value is refused here with a
:class:`WireError` naming the field.

Each class's checks are built once from its resolved annotations (on first decode) and cached:
decoding is a walk over precompiled closures, not a fresh look at ``typing`` every time.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from mycelium.errors import BadInput

__all__ = ["WIRE", "Codec", "WireError", "decode_message", "from_wire", "is_local", "local",
           "message_types", "register", "to_wire"]

Check = Callable[[Any, str], Any]
"""Checks one wire value (``where`` names it in errors) and returns its Python value."""


class WireError(BadInput, ValueError):
    """A wire value does not fit its message: unknown type, missing, unknown or mistyped field.

    A ``ValueError`` too, so that callers which read stored messages (etcd, sqlite) keep
    catching what they always caught.
    """


class Codec:
    """A registry of message classes by name, with their cached decoders.

    The mesh uses one (:data:`WIRE`, whose methods this module's functions are); a test can
    make its own without touching the mesh's.
    """

    def __init__(self) -> None:
        self._registry: dict[str, type[Any]] = {}
        self._decoders: dict[type[Any], Callable[[Mapping[str, Any]], Any]] = {}

    def register(self, *classes: type[Any]) -> None:
        """Put message dataclasses on the wire (by class name).

        Raises:
            TypeError: not a dataclass, a field named ``type``, or another class of the same
                name.
        """
        for cls in classes:
            if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
                raise TypeError(f"{cls!r} is not a dataclass")
            if any(f.name == "type" for f in dataclasses.fields(cls)):
                raise TypeError(f"{cls.__name__}: a field named 'type' would hide the wire tag")
            known = self._registry.get(cls.__name__)
            if known is not None and known is not cls:
                raise TypeError(f"two message classes are named {cls.__name__}")
            self._registry[cls.__name__] = cls

    def message_types(self) -> dict[str, type[Any]]:
        """Every message class on the wire, by name (what ``msg`` offers in the REPL)."""
        return dict(self._registry)

    def decode_message(self, data: Any) -> Any:
        """Exactly one message: ``data`` must be a registered message's wire form.

        Raises:
            WireError: not a message, an unknown type, or fields that do not fit it.
        """
        if not isinstance(data, dict) or "type" not in data:
            raise WireError('a message is an object {"type": "<MessageClass>", ...fields}')
        cls = self._registry.get(data["type"]) if isinstance(data["type"], str) else None
        if cls is None:
            raise WireError(f"unknown message type {data['type']!r}")
        return self.decoder(cls)(data)

    def from_wire(self, data: Any) -> Any:
        """The inverse of :func:`to_wire` for a message, a list of them, or plain data.

        A dict with a ``type`` is decoded (and checked) as that message; a list element by
        element; anything else (a plain answer such as a status document) is returned as it
        is.

        Raises:
            WireError: a message of an unknown type or with fields that do not fit it.
        """
        if isinstance(data, dict) and "type" in data:
            return self.decode_message(data)
        if isinstance(data, list):
            return [self.from_wire(x) for x in data]
        return data

    def decoder(self, cls: type[Any]) -> Callable[[Mapping[str, Any]], Any]:
        """The cached decoder of one message class (built on its first use).

        Raises:
            TypeError: a field's annotation the wire cannot carry.
        """
        decoder = self._decoders.get(cls)
        if decoder is None:
            decoder = self._decoders[cls] = self._build_decoder(cls)
        return decoder

    def _build_decoder(self, cls: type[Any]) -> Callable[[Mapping[str, Any]], Any]:
        hints = typing.get_type_hints(cls)
        name = cls.__name__
        fields = [(f.name, _check_for(hints[f.name], f"{name}.{f.name}", self),
                   f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING)
                  for f in dataclasses.fields(cls)]
        allowed = {f for f, _, _ in fields} | {"type"}

        def decode(data: Mapping[str, Any]) -> Any:
            if data.get("type") != name:
                raise WireError(f"expected {name}, got type {data.get('type')!r}")
            unknown = [k for k in data if k not in allowed]
            if unknown:
                raise WireError(f"{name}: unknown fields {sorted(map(str, unknown))}")
            kwargs: dict[str, Any] = {}
            for field, check, required in fields:
                if field in data:
                    kwargs[field] = check(data[field], f"{name}.{field}")
                elif required:
                    raise WireError(f"{name}: missing field {field!r}")
            return cls(**kwargs)

        return decode


WIRE = Codec()
"""The mesh's codec: :mod:`mycelium.messages` registers every message class with it."""

register = WIRE.register
message_types = WIRE.message_types
decode_message = WIRE.decode_message
from_wire = WIRE.from_wire

_LOCAL: set[type[Any]] = set()
_Message = typing.TypeVar("_Message", bound=type[Any])


def local(cls: _Message) -> _Message:
    """Mark ``cls`` as a message an actor only ever sends itself: it stays off the wire.

    Such a message may carry live objects, and no message from outside may pose as one (a
    stop task's "the child is gone", a fabric's "push the routes now"); it is never registered,
    so :func:`from_wire` refuses its name.
    """
    _LOCAL.add(cls)
    return cls


def is_local(cls: type[Any]) -> bool:
    """True if ``cls`` was marked with :func:`local`."""
    return cls in _LOCAL


def to_wire(obj: Any) -> Any:
    """A message as plain JSON-able data: ``{"type": "PublishPlan", ...fields}``.

    Tuples become lists, mappings stay mappings; anything else is returned as it is.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {"type": type(obj).__name__}
        for f in dataclasses.fields(obj):
            out[f.name] = to_wire(getattr(obj, f.name))
        return out
    if isinstance(obj, tuple | list):
        return [to_wire(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------- the checks


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _fail(where: str, want: str, value: Any) -> WireError:
    return WireError(f"{where}: expected {want}, got {_describe(value)}")


def _check_for(hint: Any, where: str, codec: Codec) -> Check:
    """Build the check of one annotation.

    Raises:
        TypeError: an annotation the wire cannot carry (found when the class is first used,
            and by the test that decodes every registered class).
    """
    if hint is Any:
        return lambda v, _w: codec.from_wire(v)
    if hint is None or hint is type(None):
        return _exact(type(None), "null")
    if hint is bool:
        return _exact(bool, "a boolean")
    if hint is str:
        return _exact(str, "a string")
    if hint is int:
        return _int
    if hint is float:
        return _float
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _nested(hint, codec)
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return _str_enum(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _union(args, where, codec)
    if origin is typing.Literal:
        return _literal(args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _tuple_of(_check_for(args[0], where, codec))
        return _fixed_tuple([_check_for(a, where, codec) for a in args])
    if origin in (dict, Mapping):
        return _mapping(_check_for(args[0], where, codec), _check_for(args[1], where, codec))
    raise TypeError(f"{where}: the wire cannot carry values of type {hint!r}")


def _name(hint: Any) -> str:
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _exact(kind: type[Any], want: str) -> Check:
    def check(value: Any, where: str) -> Any:
        if type(value) is not kind:  # exact: True is not an int here, 1 is not a bool
            raise _fail(where, want, value)
        return value
    return check


def _int(value: Any, where: str) -> int:
    if type(value) is not int:
        raise _fail(where, "an integer", value)
    return value


def _float(value: Any, where: str) -> float:
    if type(value) is float:
        return value
    if type(value) is int:  # JSON writes 1.0 as 1 in some encoders
        return float(value)
    raise _fail(where, "a number", value)


def _nested(cls: type[Any], codec: Codec) -> Check:
    def check(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise _fail(where, cls.__name__, value)
        try:
            return codec.decoder(cls)(value)
        except WireError as exc:
            raise WireError(f"{where}: {exc}") from None
    return check


def _union(hints: tuple[Any, ...], where: str, codec: Codec) -> Check:
    """``X | Y``: a dict goes to the arm whose message class its ``type`` names (so that the
    nested message's own complaint is the error); any other value to the first arm it fits."""
    nested = {h.__name__: _check_for(h, where, codec) for h in hints
              if isinstance(h, type) and dataclasses.is_dataclass(h)}
    plain = [_check_for(h, where, codec) for h in hints if _name(h) not in nested]
    want = " or ".join(_name(h) for h in hints)

    def check(value: Any, where: str) -> Any:
        if isinstance(value, dict) and nested:
            tag = value.get("type")
            arm = nested.get(tag) if isinstance(tag, str) else None
            if arm is not None:
                return arm(value, where)
        for option in plain:
            try:
                return option(value, where)
            except WireError:
                continue
        raise _fail(where, want, value)
    return check


def _literal(allowed: tuple[Any, ...]) -> Check:
    def check(value: Any, where: str) -> Any:
        for option in allowed:
            if type(value) is type(option) and value == option:
                return value
        raise WireError(f"{where}: expected one of {list(allowed)!r}, got {value!r}")
    return check


def _str_enum(kind: type[enum.StrEnum]) -> Check:
    def check(value: Any, where: str) -> Any:
        if isinstance(value, str):
            try:
                return kind(value)  # the word read back as its member
            except ValueError:
                pass
        raise WireError(f"{where}: expected one of {[m.value for m in kind]!r}, got {value!r}")
    return check


def _tuple_of(item: Check) -> Check:
    def check(value: Any, where: str) -> Any:
        if not isinstance(value, list | tuple):
            raise _fail(where, "a list", value)
        return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))
    return check


def _fixed_tuple(items: list[Check]) -> Check:
    def check(value: Any, where: str) -> Any:
        if not isinstance(value, list | tuple) or len(value) != len(items):
            raise _fail(where, f"a list of {len(items)}", value)
        return tuple(c(v, f"{where}[{i}]") for i, (c, v) in enumerate(zip(items, value,
                                                                            strict=True)))
    return check


def _mapping(key: Check, val: Check) -> Check:
    def check(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        return {key(k, f"{where} key"): val(v, f"{where}[{k!r}]") for k, v in value.items()}
    return check
