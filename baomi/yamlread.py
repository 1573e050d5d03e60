"""Reading YAML with positions, so every policy problem can say FILE:LINE:COL.

The policy loader walks PyYAML's node tree (``yaml.compose``) instead of plain Python values:
nodes keep their marks, duplicate keys can be caught (plain ``yaml.safe_load`` silently keeps
the last one, which in a security policy hides a mistake), and every problem is collected
rather than stopping at the first.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
BOOL_TAG = "tag:yaml.org,2002:bool"
NULL_TAG = "tag:yaml.org,2002:null"
STR_TAG = "tag:yaml.org,2002:str"
DATE_TAG = "tag:yaml.org,2002:timestamp"


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the policy, where it is, and what is allowed instead."""

    file: str
    line: int
    column: int
    message: str
    allowed: str = ""

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.message}"
        return f"{text}; {self.allowed}" if self.allowed else text

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column,
                "message": self.message, "allowed": self.allowed}


class Invalid(Exception):
    """Raised by a converter: the value at hand is wrong (the reader records it)."""

    def __init__(self, message: str, allowed: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.allowed = allowed


@dataclass
class Context:
    """Collects problems for one file."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def report(self, node: yaml.Node | None, message: str, allowed: str = "") -> None:
        line, column = position(node)
        self.problems.append(Problem(self.file, line, column, message, allowed))


def position(node: yaml.Node | None) -> tuple[int, int]:
    if node is None or node.start_mark is None:
        return 1, 1
    return node.start_mark.line + 1, node.start_mark.column + 1


def describe(node: yaml.Node) -> str:
    """How a user would name what they wrote: 'a list', 'the number 5', 'text \"x\"'."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = str(node.value)
    shown = value if len(value) <= 40 else value[:37] + "..."
    kinds = {INT_TAG: "the number", FLOAT_TAG: "the number", BOOL_TAG: "the boolean",
             DATE_TAG: "the date"}
    if node.tag == NULL_TAG:
        return "nothing (null)"
    return f"{kinds.get(node.tag, 'text')} {shown!r}" if node.tag not in kinds else \
        f"{kinds[node.tag]} {shown}"


def suggest(word: str, choices: Iterable[str]) -> str:
    """'did you mean X?' for a mistyped key, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""


Converter = Callable[[yaml.Node], T]


class MapReader:
    """Reads one YAML mapping against a known set of keys.

    ``get`` converts a value and, on a problem, records it and returns the default so the
    walk goes on; ``done`` reports every key nobody asked for (typos must not be ignored).
    """

    def __init__(self, ctx: Context, node: yaml.Node | None, where: str) -> None:
        self.ctx = ctx
        self.where = where
        self.node = node
        self.entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        self.asked: set[str] = set()
        if node is None:
            return
        if not isinstance(node, yaml.MappingNode):
            ctx.report(node, f"{where} must be a mapping of settings, found {describe(node)}",
                       "write it as 'key: value' lines")
            self.node = None
            return
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == NULL_TAG:
                ctx.report(key_node, f"{where}: a key must be a plain name")
                continue
            key = str(key_node.value)
            if key in self.entries:
                first, _ = self.entries[key]
                ctx.report(key_node, f"{where}: '{key}' is given twice (first on line "
                           f"{position(first)[0]})", "give each setting once")
                continue
            self.entries[key] = (key_node, value_node)

    @property
    def present(self) -> bool:
        return self.node is not None

    def has(self, key: str) -> bool:
        return key in self.entries

    def raw(self, key: str) -> yaml.Node | None:
        self.asked.add(key)
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def key_node(self, key: str) -> yaml.Node | None:
        entry = self.entries.get(key)
        return entry[0] if entry else self.node

    def get(self, key: str, convert: Converter[T], default: T, *, required: bool = False) -> T:
        value_node = self.raw(key)
        if value_node is None:
            if required:
                self.ctx.report(self.node, f"{self.where}: '{key}' is required",
                                f"add '{key}:' to {self.where}")
            return default
        return convert_at(self.ctx, value_node, f"{self.where}.{key}", convert, default)

    def done(self) -> None:
        known = set(self.asked)
        for key, (key_node, _) in self.entries.items():
            if key in known:
                continue
            hint = suggest(key, known)
            allowed = "known keys: " + ", ".join(sorted(known))
            self.ctx.report(key_node, f"{self.where}: unknown key '{key}'"
                            + (f" ({hint})" if hint else ""), allowed)


def convert_at(ctx: Context, node: yaml.Node, where: str, convert: Converter[T],
               default: T) -> T:
    try:
        return convert(node)
    except Invalid as exc:
        ctx.report(node, f"{where}: {exc.message}", exc.allowed)
        return default


# --- converters: each takes a node and returns a typed value or raises Invalid -------------

def _scalar(node: yaml.Node, expected: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise Invalid(f"expected {expected}, found {describe(node)}", f"write {expected}")
    return str(node.value)


def integer(lo: int, hi: int, unit: str = "") -> Converter[int]:
    span = f"a whole number from {lo} to {hi}" + (f" {unit}" if unit else "")

    def convert(node: yaml.Node) -> int:
        text = _scalar(node, span)
        if node.tag != INT_TAG:
            raise Invalid(f"expected {span}, found {describe(node)}", f"allowed: {span}")
        value = int(yaml.safe_load(text))
        if not lo <= value <= hi:
            raise Invalid(f"{value} is out of range", f"allowed: {span}")
        return value

    return convert


def boolean(node: yaml.Node) -> bool:
    _scalar(node, "true or false")
    if node.tag != BOOL_TAG:
        raise Invalid(f"expected true or false, found {describe(node)}", "allowed: true, false")
    return bool(yaml.safe_load(node.value))


def text(pattern: str | None = None, what: str = "text", max_len: int = 256) -> Converter[str]:
    regex = re.compile(pattern) if pattern else None

    def convert(node: yaml.Node) -> str:
        value = _scalar(node, what)
        if node.tag == NULL_TAG or value == "":
            raise Invalid(f"expected {what}, found nothing", f"write {what}")
        if node.tag != STR_TAG and regex is None:
            raise Invalid(f"expected {what}, found {describe(node)}", f"write {what} in quotes")
        if len(value) > max_len:
            raise Invalid(f"is {len(value)} characters long", f"at most {max_len}")
        if regex and not regex.fullmatch(value):
            raise Invalid(f"{value!r} is not {what}", f"allowed: {what}")
        return value

    return convert


def choice(options: Sequence[str]) -> Converter[str]:
    def convert(node: yaml.Node) -> str:
        value = _scalar(node, "one of " + ", ".join(options))
        if node.tag == BOOL_TAG and value.lower() in ("no", "yes", "on", "off"):
            # YAML 1.1 reads a bare 'no' as false; take the word the user wrote.
            value = value.lower()
        if value not in options:
            hint = suggest(value, options)
            raise Invalid(f"{value!r} is not allowed" + (f" ({hint})" if hint else ""),
                          "allowed: " + ", ".join(options))
        return value

    return convert


def listof(item: Converter[T], *, min_items: int = 0, max_items: int = 10_000
           ) -> Callable[[Context, yaml.Node, str], list[T]]:
    """A list converter needs the context, so each bad item is reported on its own line."""

    def convert(ctx: Context, node: yaml.Node, where: str) -> list[T]:
        if not isinstance(node, yaml.SequenceNode):
            ctx.report(node, f"{where}: expected a list, found {describe(node)}",
                       "write one '- item' per line or [a, b]")
            return []
        out: list[T] = []
        for index, child in enumerate(node.value):
            try:
                out.append(item(child))
            except Invalid as exc:
                ctx.report(child, f"{where}[{index}]: {exc.message}", exc.allowed)
        if not min_items <= len(node.value) <= max_items:
            ctx.report(node, f"{where}: has {len(node.value)} items",
                       f"between {min_items} and {max_items}")
        return out

    return convert


def date(node: yaml.Node) -> dt.date:
    value = _scalar(node, "a date YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise Invalid(f"{value!r} is not a date", "write a date as YYYY-MM-DD") from None


def file_mode(node: yaml.Node) -> int:
    """Modes are written as quoted octal ('0640'): YAML reads a bare 0640 as the number 416."""
    if isinstance(node, yaml.ScalarNode) and node.tag == INT_TAG:
        raise Invalid(f"the mode {node.value} is written as a number",
                      "write modes as quoted octal text, e.g. '0640'")
    value = _scalar(node, "a quoted octal mode such as '0640'")
    if not re.fullmatch(r"0?[0-7]{3}", value):
        raise Invalid(f"{value!r} is not an octal file mode", "e.g. '0640', '0750', '0600'")
    return int(value, 8)


POSIX_NAME = r"[a-z_][a-z0-9_-]{0,30}\$?"


def absolute_path(node: yaml.Node) -> str:
    value = _scalar(node, "an absolute path")
    if not value.startswith("/"):
        raise Invalid(f"{value!r} is a relative path", "paths must be absolute, e.g. /srv/data")
    parts = value.split("/")
    if ".." in parts or "." in parts or "\0" in value or "\n" in value:
        raise Invalid(f"{value!r} is not a plain absolute path",
                      "no '.', '..', NUL or newline in paths")
    if value != "/" and value.endswith("/"):
        value = value.rstrip("/")
    while "//" in value:
        value = value.replace("//", "/")
    return value or "/"
