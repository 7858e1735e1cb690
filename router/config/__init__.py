"""The config: YAML in, typed and checked settings out.

- schema.py: the frozen dataclasses, one per section; their fields are the keys (a
  contract), their metadata the bounds the loader checks;
- loader.py: YAML or a dict to those dataclasses, `${VAR}` interpolation, every error a
  `ConfigError` naming the file and key path;
- values.py: one value at its key path, checked against the dataclasses (`ValueChecker`,
  the base of the loader; server_section.py uses its checks too);
- strict_yaml.py: pyyaml's safe loader made strict (duplicate keys, YAML 1.1 booleans as
  keys, self-referencing aliases are errors with a line number).

Uses only the bottom of the tree: errors, request (the parameters a target may set) and
observe/redact (a key is held as a `Secret`).
"""

from .loader import config_from_dict, load_config

__all__ = ["load_config", "config_from_dict"]
