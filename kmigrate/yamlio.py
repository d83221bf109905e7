"""YAML as kmigrate reads it: the YAML 1.2 core schema, duplicate keys refused, lines kept.

PyYAML implements YAML 1.1, whose implicit types are traps in record data: ``yes``/``no``/
``on``/``off`` become booleans (a DROP_DOWN option "No"), ``12:30`` becomes the integer 750
(a TIME), ``2024-03-01`` a ``date`` object (a DATE that then is not JSON), ``0123`` an octal
number (a code with a leading zero). kmigrate resolves plain scalars as YAML 1.2 does, and
keeps the text of anything else: ``true``/``false``, ``null``/``~``, decimal integers without a
leading zero; everything else is a string. A decimal float (``1.50``, ``1e3``) is kept as the
text written: a Python float would turn ``12345678901234567.89`` into ``1.2345678901234568e+16``
and ``1.50`` into ``1.5``, while Kintone takes every value as text anyway. Explicit tags that
build non-JSON values (``!!binary``, ``!!set``, ``!!timestamp``, ...) are refused.

Aliases are counted as what they stand for: a kilobyte of nested aliases (the "billion laughs")
names a document of gigabytes, which every later step (JSON, checksums, validation) would walk.
``check_expansion`` measures the composed node graph, each shared node once, before anything is
built, and refuses a document whose expansion is larger than the budget (``[limits] yaml_mb``).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster


class Loader(_BaseLoader):
    """A safe loader with the YAML 1.2 core schema and no duplicate keys."""

    yaml_implicit_resolvers: dict = {}
    yaml_constructors = {
        tag: fn
        for tag, fn in yaml.SafeLoader.yaml_constructors.items()
        if tag
        not in {
            "tag:yaml.org,2002:binary",
            "tag:yaml.org,2002:timestamp",
            "tag:yaml.org,2002:set",
            "tag:yaml.org,2002:omap",
            "tag:yaml.org,2002:pairs",
        }
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, int] = {}
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"duplicate key {key_node.value!r} (first on line {seen[key_node.value]})",
                        key_node.start_mark,
                    )
                seen[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _resolver(tag: str, pattern: str, first: str) -> None:
    Loader.add_implicit_resolver(tag, re.compile(pattern, re.X), list(first))


_resolver("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF")
_resolver("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""])  # type: ignore[arg-type]
_resolver("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789")
_resolver(
    "tag:yaml.org,2002:float",
    r"^[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)\.[0-9]*)(?:[eE][-+]?[0-9]+)?$|^[-+]?(?:0|[1-9][0-9]*)[eE][-+]?[0-9]+$",
    "-+0123456789.",
)
Loader.add_constructor("tag:yaml.org,2002:float", lambda loader, node: str(loader.construct_scalar(node)))
_resolver("tag:yaml.org,2002:merge", r"^(?:<<)$", "<")


DEFAULT_MAX_CHARS = 64 << 20  # [limits] yaml_mb's default, in characters


class ExpansionError(yaml.YAMLError):
    """The document is larger, aliases expanded, than the budget (or an alias holds itself)."""

    def __init__(self, problem: str, mark: Any):
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


def check_expansion(root: yaml.Node | None, max_chars: int) -> None:
    """Refuse a node graph whose expansion exceeds ``max_chars``: a scalar weighs its length
    plus one, a collection two plus its children, an alias the whole of what it names. Each
    node is weighed once (memoised, iteratively: deep nesting cannot exhaust the stack)."""
    if root is None:
        return
    weight: dict[int, int] = {}
    open_nodes: set[int] = set()  # the current path: meeting one again is an alias to itself
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            if isinstance(node, yaml.ScalarNode):
                total = len(node.value) + 1
            elif isinstance(node, yaml.SequenceNode):
                total = 2 + sum(weight[id(child)] for child in node.value)
            else:
                total = 2 + sum(weight[id(k)] + weight[id(v)] for k, v in node.value)
            if total > max_chars:
                raise ExpansionError(
                    f"with its aliases expanded this part of the document is larger than the limit of "
                    f"{max_chars / (1 << 20):g} MB (`yaml_mb` under [limits] in kmigrate.toml)",
                    node.start_mark,
                )
            weight[key] = total
            continue
        if key in weight:
            continue
        if key in open_nodes:
            raise ExpansionError("an alias refers to a node that contains it", node.start_mark)
        open_nodes.add(key)
        stack.append((node, True))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, False) for child in node.value if id(child) not in weight)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.extend((n, False) for n in (k, v) if id(n) not in weight)


def compose_and_construct(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> tuple[yaml.Node | None, Any]:
    """Parse once: the node tree (for line numbers) and the Python value built from it, its
    expansion checked first."""
    return _load(Loader, text, max_chars)


_SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> Any:
    """``yaml.safe_load`` (YAML 1.1, for the sandbox file) with the same expansion budget."""
    return _load(_SafeLoader, text, max_chars)[1]


def _load(loader_class: type, text: str, max_chars: int) -> tuple[yaml.Node | None, Any]:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        check_expansion(node, max_chars)
        data = loader.construct_document(node) if node is not None else None
        return node, data
    finally:
        loader.dispose()


def node_at(node: yaml.Node | None, path: tuple[Any, ...]) -> yaml.Node | None:
    """The deepest node reachable along ``path`` (mapping keys and sequence indexes).

    Steps that do not fit the node (e.g. pydantic's union-branch names) are skipped, so a
    validation error's ``loc`` can be followed as it is.
    """
    best = node
    for step in path:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(step):
                    node = value_node
                    best = node
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            node = node.value[step]
            best = node
    return best


def key_node_at(node: yaml.Node | None, path: tuple[Any, ...]) -> yaml.Node | None:
    """The key node of the last step of ``path`` when it names a mapping key (for "unknown key")."""
    parent = node_at(node, path[:-1])
    if isinstance(parent, yaml.MappingNode) and path:
        for key_node, _value in parent.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(path[-1]):
                return key_node
    return None
