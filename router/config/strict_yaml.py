"""YAML read strictly: what `yaml.safe_load` accepts silently but a config never means.

- a key written twice in one mapping (safe_load keeps the last one without a word);
- a key that YAML 1.1 reads as a boolean (`yes`, `no`, `on`, `off`: a chain named `yes`
  would become `True`);
- an alias inside the node it refers to (`a: &x [*x]`: a self-containing structure that
  makes every later walk over the config recurse forever);
- numbers in scientific notation without a dot (`1e3`, `5E-1`): YAML 1.1 reads them as
  strings, YAML 1.2 and every human as numbers; they are read as numbers here.

Each is a `yaml.YAMLError` with the line and column, which the config loader reports as a
`ConfigError` naming the file. Still only safe constructors: no Python objects.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_SCIENTIFIC = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses duplicate and boolean keys and self-referencing aliases."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._open_anchors: set[str] = set()

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self._open_anchors:
                raise yaml.composer.ComposerError(
                    None, None, f"alias *{event.anchor} is inside the node &{event.anchor} it refers to "
                                f"(a structure that contains itself)", event.start_mark)
            return super().compose_node(parent, index)
        anchor = getattr(self.peek_event(), "anchor", None)
        if anchor is None:
            return super().compose_node(parent, index)
        self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open_anchors.discard(anchor)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` then a key of base: an override, not a duplicate
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, bool):
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key_node.value!r} is read by YAML as a boolean "
                                    f"({str(key).lower()}); quote it (\"{key_node.value}\") to use it as a name",
                        key_node.start_mark)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: the base constructor says so
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice in one mapping (first at line "
                                    f"{first.start_mark.line + 1}); the second would silently replace the first",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


# SafeLoader's own float constructor reads "1e300" fine; only its resolver wants a dot.
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _SCIENTIFIC, list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Parse one YAML document strictly (see the module docstring)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
