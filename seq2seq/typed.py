"""Typed config sections: frozen dataclasses deriving from `Section`, each key declared with
`setting` (default, meaning, range); `from_dict` builds one from YAML's plain data, naming a bad
key by its dotted path, and `reference` lists the keys for `nmt keys` and docs/config.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from .errors import UserError

# A key's range: each bound `setting` takes, and the test a value in range passes against it.
BOUNDS = {"low": operator.ge, "high": operator.le, "above": operator.gt, "below": operator.lt}
# How people write numbers: 0.001, 1e-3, 1E-3, +2, 1_000; nan and infinity never make sense.
NUMBER = re.compile(r"[-+]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][-+]?\d+)?")
NON_FINITE = re.compile(r"[-+]?\.?(nan|inf|infinity)", re.IGNORECASE)
LARGEST_INT = 2**31  # beyond any sensible size; what C ints (SentencePiece), seeds hold
ALIASED_VALUES = 10_000  # what aliases (*name) may add to a config once copied out


def setting(default: Any, meaning: str, low=None, high=None, above=None, below=None) -> Any:
    """A config key: its default, one line of meaning, and its range: from `low` (or `above`,
    exclusive) up to `high` (or `below`, exclusive)."""
    bounds = {"low": low, "high": high, "above": above, "below": below}
    return field(default=default, metadata={"meaning": meaning, **bounds})


def section(cls: type, meaning: str) -> Any:
    return field(default_factory=cls, metadata={"meaning": meaning})


def _range_text(meta: dict, integer: bool) -> str:
    kind = "an integer" if integer else "a number"
    signs = {"low": ">=", "above": ">", "high": "<=", "below": "<"}  # lower bounds first
    (first, a), *upper = [(signs[k], meta[k]) for k in signs if meta.get(k) is not None]
    if not upper:
        return f"{kind} {first} {a}"
    second, b = upper[0]
    if (first, second) == (">=", "<="):
        return f"{kind} from {a} to {b}"
    return f"{kind} in {'[' if first == '>=' else '('}{a}, {b}{']' if second == '<=' else ')'}"


def _in_range(value: Any, meta: dict) -> bool:
    if value is None or isinstance(value, (str, bool)):
        return True
    values = value if isinstance(value, tuple) else (value,)
    bounds = [(meta[k], test) for k, test in BOUNDS.items() if meta.get(k) is not None]
    return all(test(v, bound) for v in values for bound, test in bounds)


class Section:
    """A config section: checks each key's range, then `check()` what ties keys together."""

    KEY: ClassVar[str] = ""  # the section's dotted name, for messages

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _in_range(value, f.metadata):
                integer = int in (hints[f.name], *typing.get_args(hints[f.name]))
                expected = _range_text(f.metadata, integer and not isinstance(value, float))
                if isinstance(value, tuple):  # "a number in ..." -> "a list of numbers in ..."
                    expected = re.sub(r"^an? (\w+)", r"a list of \1s", expected)
                self.expect(False, f.name, expected)
        self.check()

    def check(self) -> None:
        pass

    def expect(self, condition: bool, name: str, expected: str) -> None:
        """Refuse the value of `name` (dotted below this section) unless `condition` holds."""
        key = f"{self.KEY}.{name}" if self.KEY else name
        _check(condition, key, expected, operator.attrgetter(name)(self))


def short(value: Any, limit: int = 60) -> str:
    """A value as messages quote it: its repr, cut to about `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _check(condition: bool, key: str, expected: str, value: Any) -> None:
    if not condition:
        raise UserError(f"config key '{key}': expected {expected}, got {short(value)}")


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is tuple:
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; convert lists to tuples, ints to floats."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, {} if value is None else value, key)
    if origin is Literal:
        if value not in args:
            got, expected = short(value), _type_name(tp)
            raise UserError(f"config key '{key}': {got} is not allowed; expected {expected}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in [o for o in args if o is not type(None)]:
            with contextlib.suppress(UserError):
                return _convert(option, value, key)
        raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {short(value)}")
    if origin is tuple:
        _check(isinstance(value, (list, tuple)), key, "a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        _check(len(value) == len(args), key, f"a list of {len(args)} items", value)
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp in (int, float):
        return _number(tp, value, key)
    if tp is bool and isinstance(value, str):  # as YAML 1.1 spells them
        value = {"true": True, "yes": True, "on": True, "false": False, "no": False,
                 "off": False}.get(value.lower(), value)  # fmt: skip
    ok = {bool: isinstance(value, bool), str: isinstance(value, str)}.get(tp)
    if ok is None:
        raise TypeError(f"unsupported config annotation {tp!r} at {key}")
    _check(ok, key, _type_name(tp), value)
    return value


def _number(tp: type, value: Any, key: str) -> int | float:
    """An int or float field's value, from a number or a string spelling one; finite only.
    An int field takes a float spelling of a whole number (1e4)."""
    given = value
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        text = value.strip().replace("_", "")
        value = int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    non_finite = isinstance(value, float) and not math.isfinite(value)
    if non_finite or (isinstance(value, str) and NON_FINITE.fullmatch(value.strip())):
        raise UserError(f"config key '{key}': expected a finite number, got {short(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {short(value)}")
    if tp is float:
        return float(value)
    if isinstance(value, float):
        _check(value.is_integer(), key, "an integer", given)
        value = int(value)
    _check(abs(value) < LARGEST_INT, key, "an integer below 2**31", given)
    return value


def from_dict(cls: type, raw: Any, prefix: str = ""):
    """Build the dataclass `cls` from a plain mapping, naming any bad key by its dotted path."""
    _check(isinstance(raw, dict), prefix or "the config file", "a mapping of keys", raw)
    hints, names = typing.get_type_hints(cls), [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise UserError(f"unknown config key '{dotted}'; allowed here: {', '.join(names)}")
        kwargs[key] = _convert(hints[key], value, dotted)
    try:
        return cls(**kwargs)
    except UserError as e:  # a section inside a list: name it by its place
        if cls.KEY and prefix and prefix != cls.KEY:
            raise UserError(str(e).replace(f"'{cls.KEY}.", f"'{prefix}.")) from None
        raise


def to_dict(value: Any) -> Any:
    """A config, or a value in one, as plain JSON/YAML-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: to_dict(v) for k, v in value.items()}
    return [to_dict(v) for v in value] if isinstance(value, (list, tuple)) else value


def parse_override(text: str) -> tuple[list[str], Any]:
    """`--model.encoder.hidden_size=512` -> (["model", "encoder", "hidden_size"], 512)."""
    key, equals, value = text.removeprefix("--").partition("=")
    if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise UserError(f"override {short(text)}: expected --section.key=value")
    try:
        parsed = yaml.load(value, Loader=_Reader) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {short(text)}: '{part}' is not a section")
        node[path[-1]] = value
    return raw


def _expanded(node: yaml.Node, sizes: dict) -> float:
    """How many values `node` stands for, aliases copied out (one inside what it names: inf)."""
    if id(node) not in sizes:
        sizes[id(node)] = math.inf
        inside = node.value if isinstance(node, yaml.CollectionNode) else []
        if isinstance(node, yaml.MappingNode):
            inside = [n for pair in inside for n in pair]
        sizes[id(node)] = 1 + sum(_expanded(child, sizes) for child in inside)
    return sizes[id(node)]


class _Reader(yaml.SafeLoader):
    """YAML's safe loader, read as a person means it: plain values but null stay text for each
    key to convert by its type (YAML 1.1 reads `no` as false, `010` as 8); a key given twice is
    an error, and so are aliases copying out over ALIASED_VALUES values (a "billion laughs")."""

    yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag.endswith(("null", "merge"))]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_document(self, node):
        sizes: dict = {}
        if _expanded(node, sizes) - len(sizes) > ALIASED_VALUES:
            problem = f"aliases copy out more than {ALIASED_VALUES:,} values; write them out"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            kind = {yaml.SequenceNode: "a list", yaml.MappingNode: "a mapping"}.get(type(key_node))
            if kind or key in seen:
                problem = f"{kind} cannot be a key" if kind else f"key {key!r} is given twice"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise UserError(f"{path}: is a folder; expected a YAML config file")
    if not path.exists():  # a pipe is fine: <(sed ... config.yaml)
        raise UserError(f"{path}: no such config file")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Reader)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; expected a YAML config") from None
    except yaml.MarkedYAMLError as e:
        where = f"{path}:{e.problem_mark.line + 1}" if e.problem_mark else str(path)
        raise UserError(f"{where}: {e.problem or 'invalid YAML'}") from None
    except yaml.YAMLError:  # a character YAML does not allow, say
        raise UserError(f"{path}: invalid YAML") from None
    if raw is not None and not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections (data, model, train, search)")
    return raw or {}


def keys(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """Every key under `cls`: (dotted key, type, default, meaning), sections unfolded."""
    rows, hints = [], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows += keys(hints[f.name], key + ".")
        else:
            kind = _type_name(hints[f.name])
            if any(f.metadata.get(k) is not None for k in BOUNDS):
                ranged = _range_text(f.metadata, "integer" in kind)
                kind = kind.replace("an integer", ranged).replace("a number", ranged)
            rows.append((key, kind, f.default, f.metadata["meaning"]))
    return rows


def reference(cls: type, prefix: str = "", markdown: bool = False) -> str:
    """The keys under `prefix` as aligned text, or as one markdown table per section."""
    rows = [row for row in keys(cls) if row[0].startswith(prefix)]

    def shown(value: Any) -> str:
        if isinstance(value, (tuple, list)):
            return "[" + ", ".join(shown(v) for v in value) + "]"
        if value is None or isinstance(value, bool):
            return {None: "null", True: "true", False: "false"}[value]
        return '""' if value == "" else str(value)

    if not markdown:
        return "\n".join(
            f"{key} = {shown(default)}\n    {meaning} ({kind})"
            for key, kind, default, meaning in rows
        )
    out, section = [], None
    for key, kind, default, meaning in rows:
        top = key.split(".")[0] if "." in key else ""
        if top != section:
            section = top
            out += ["", f"## {top or 'top level'}", "", "| key | default | type | meaning |"]
            out.append("| --- | --- | --- | --- |")
        meaning = meaning.replace("|", "\\|")  # not a column
        out.append(f"| `{key}` | `{shown(default)}` | {kind} | {meaning} |")
    return "\n".join(out[1:]) + "\n"
