"""Set values in a YAML config's text, keeping everything else byte for byte.

pyyaml drops comments when it dumps, and ruamel.yaml (which keeps them) would be a new
dependency for one command; so `router advise --write` edits the text itself, at the
positions pyyaml's composer reports for each node: a scalar that exists is replaced in
place, a missing key is added to its mapping (a new line in block style, `, key: value`
in flow style). Comments, key order, quoting and anchors elsewhere are untouched.
A value reached through an alias (`retry: *fast`) or a merge key (`<<: *base`) lives
elsewhere in the file: editing it there would change every user of the anchor, so the
alias is replaced by the values it stood for with the edit applied, and a merged key is
set in the mapping's own keys, where it overrides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

_ALIAS = re.compile(r"[ \t]*:[ \t]*(\*[^\s,\[\]{}]+)")


class EditError(ValueError):
    """The text cannot take the edit (not YAML, or a path that is not a mapping)."""


def set_values(text: str, path: tuple[str, ...], values: Mapping[str, Any]) -> str:
    """`text` with each `values` key (dotted: "retry.attempts") set in the mapping at `path`."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise EditError(f"not valid YAML: {exc}") from None
    node = root
    for part in path:
        node = _child(node, part) if isinstance(node, yaml.MappingNode) else None
        if node is None:
            raise EditError(f"{'.'.join(path)}: no such mapping")
    if not isinstance(node, yaml.MappingNode):
        raise EditError(f"{'.'.join(path)}: not a mapping")
    nested: dict[str, Any] = {}
    for key, value in values.items():
        section, _, leaf = key.partition(".")
        if leaf:
            nested.setdefault(section, {})[leaf] = value
        else:
            nested[section] = value
    shared = _shared(root)
    if id(node) in shared:
        raise EditError(f"{'.'.join(path)}: it is an anchor that other keys use (&name ... *name); set it by hand")
    edits: list[tuple[int, int, str]] = []
    _plan(text, node, nested, edits, node, shared)
    # From the end backwards, so positions stay valid; of two insertions at one place the
    # one planned first (an inner mapping's) must end up first, so it is applied last.
    order = sorted(range(len(edits)), key=lambda i: (edits[i][0], edits[i][1], i), reverse=True)
    for start, end, new in (edits[i] for i in order):
        text = text[:start] + new + text[end:]
    return text


def _child(mapping: yaml.MappingNode, key: str) -> yaml.Node | None:
    found = _entry(mapping, key)
    return found[1] if found else None


def _entry(mapping: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None


def _inside(node: yaml.Node, owner: yaml.Node) -> bool:
    return owner.start_mark.index <= node.start_mark.index and node.end_mark.index <= owner.end_mark.index


def _shared(root: yaml.Node) -> set[int]:
    """Nodes reached more than once (an anchor and its aliases): never edited in place."""
    seen: set[int] = set()
    shared: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            shared.add(id(node))
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return shared


def _plan(text: str, mapping: yaml.MappingNode, values: Mapping[str, Any], edits: list, owner: yaml.Node,
          shared: set[int]) -> None:
    missing: dict[str, Any] = {}
    for key, value in values.items():
        entry = _entry(mapping, key)
        child = entry[1] if entry else None
        if entry is not None and not _inside(entry[1], owner):  # `key: *anchor`
            alias = _ALIAS.match(text, entry[0].end_mark.index)
            if alias is None:
                raise EditError(f"{key}: its value is defined elsewhere in the file; set it by hand")
            if isinstance(value, Mapping):
                value = {**(yaml.safe_load(yaml.serialize(entry[1])) or {}), **value}
            edits.append((alias.start(1), alias.end(1), _flow(value)))
            continue
        if child is None:
            missing[key] = value
        elif id(child) in shared:
            raise EditError(f"{key}: it is an anchor that other keys use (&name ... *name); set it by hand")
        elif isinstance(value, Mapping):
            if not isinstance(child, yaml.MappingNode):
                raise EditError(f"{key}: expected a mapping in the file")
            _plan(text, child, value, edits, owner, shared)
        elif isinstance(child, yaml.ScalarNode):
            edits.append((child.start_mark.index, child.end_mark.index, _scalar(value)))
        else:
            raise EditError(f"{key}: expected a single value in the file")
    if missing:
        edits.append(_insertion(text, mapping, missing))


def _insertion(text: str, mapping: yaml.MappingNode, values: Mapping[str, Any]) -> tuple[int, int, str]:
    if mapping.flow_style or not mapping.value:
        items = ", ".join(f"{k}: {_flow(v)}" for k, v in values.items())
        if not mapping.value:  # `{}`: replace it whole
            return mapping.start_mark.index, mapping.end_mark.index, "{" + items + "}"
        close = text.rindex("}", mapping.start_mark.index, mapping.end_mark.index)
        return close, close, ", " + items
    indent = " " * mapping.value[0][0].start_mark.column
    leaf = _last_leaf(mapping)
    end = leaf.end_mark.index
    line_end = end - 1 if end and text[end - 1] == "\n" else text.find("\n", end)
    lines = "".join(f"\n{indent}{k}: {_flow(v)}" for k, v in values.items())
    if line_end < 0:
        return len(text), len(text), lines
    return line_end, line_end, lines


def _last_leaf(node: yaml.Node) -> yaml.Node:
    """The last scalar (or flow collection) of a block collection: the new line goes after its line."""
    while isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        inner = last[1] if isinstance(node, yaml.MappingNode) else last
        if not _inside(inner, node):  # an alias: it sits on its key's line
            return last[0] if isinstance(node, yaml.MappingNode) else node
        node = inner
    return node


def _flow(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return _scalar(value)


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
