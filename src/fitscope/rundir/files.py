"""The files of a run or sweep folder read as data: text that must be UTF-8, JSON, and YAML read
by a safe loader that builds plain containers and resolves nothing (no interpolation, no
resolver, no Python object, no alias), with the same scalars as OmegaConf's loader (`1e-3` is a
float, a date stays text). No torch."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from fitscope import FitscopeError


class RunFolderError(FitscopeError):
    pass


class DamagedFileError(RunFolderError):
    """A file of a run folder that is there but is not what fitscope (or Hydra) writes. The
    message, one line, names the file and what is wrong with it."""


def read_json(path: Path) -> dict[str, Any]:
    with open(path) as file:
        return json.load(file)


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def _not_utf8(name: str, error: UnicodeDecodeError) -> DamagedFileError:
    byte = error.object[error.start]
    return DamagedFileError(f"{name}: not UTF-8 text (byte {byte:#04x} at offset {error.start})")


def read_text(path: Path, name: str) -> str:
    """The file's text; DamagedFileError when it is not UTF-8 or cannot be read."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise _not_utf8(name, error) from None
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise DamagedFileError(f"{name}: cannot be read ({error.strerror or error})") from None


_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where built


class DataLoader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """YAML's safe loader as OmegaConf reads a config: floats such as `1e-3`, no timestamps, no
    duplicate keys; anchors and aliases are refused (fitscope and Hydra never write them, and an
    alias-built document can expand without bound)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        keys = set()
        for key_node, _ in node.value:
            if key_node.tag == yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG:
                if key_node.value in keys:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"found duplicate key {key_node.value}", key_node.start_mark
                    )
                keys.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


DataLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
        |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
DataLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in DataLoader.yaml_implicit_resolvers.items()
}


def _shares_nodes(value: Any, seen: set[int] | None = None) -> bool:
    """True when a container occurs twice in `value` (what an alias builds)."""
    seen = set() if seen is None else seen
    if isinstance(value, (dict, list)):
        if id(value) in seen:
            return True
        seen.add(id(value))
        children = value.values() if isinstance(value, dict) else value
        return any(_shares_nodes(child, seen) for child in children)
    return False


def load_yaml(text: str, name: str) -> Any:
    """`text`, a YAML document, as plain containers (None for an empty one): interpolations such
    as `${oc.env:X}` stay text. `DamagedFileError` naming `name` when it is not YAML, holds an
    alias or a duplicate key."""
    try:
        value = yaml.load(text, Loader=DataLoader)  # noqa: S506 (a safe loader)
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        raise DamagedFileError(f"{name}: not a YAML mapping ({first_line(error)})") from None
    if _shares_nodes(value):
        raise DamagedFileError(f"{name}: an alias (*name), which fitscope never writes: refused")
    return value
