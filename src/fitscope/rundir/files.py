"""The files of a run or sweep folder read as data: text that must be UTF-8, JSON, and YAML read
by a safe loader that builds plain containers and resolves nothing (no interpolation, no
resolver, no Python object, no alias), with the same scalars as OmegaConf's loader (`1e-3` is a
float, a date stays text). No torch."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
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
    """A JSON file, read as `read_text` reads (no symlink, FIFO or device; bounded)."""
    return json.loads(read_text(path, path.name))


# what a user can do about an OSError, by its errno: the machine says no
_CAUSES = {
    errno.ENOSPC: "no space left on the device: free some, or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space, or write elsewhere",
    errno.EROFS: "a read-only file system: write elsewhere",
    errno.EACCES: "permission denied: write where you may, or ask for the permission",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "a name too long for the file system: choose a shorter one",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "it exists and is not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ELOOP: "a symlink, which fitscope never writes through",
}


def os_error_line(error: OSError) -> str:
    """An OSError in one line: the path, what the system said and what to do."""
    where = error.filename if error.filename is not None else "a file"
    cause = _CAUSES.get(error.errno or 0, error.strerror or type(error).__name__)
    return f"{where}: {cause}"


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def _not_utf8(name: str, error: UnicodeDecodeError) -> DamagedFileError:
    byte = error.object[error.start]
    return DamagedFileError(f"{name}: not UTF-8 text (byte {byte:#04x} at offset {error.start})")


# The most a file of a run or sweep folder may hold: far above what fitscope writes (a
# metrics.csv of 100,000 epochs with per-layer columns is about 100 MB), far below what would
# stall a report.
MAX_BYTES = 512 * 2**20
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def _link_problem(path: Path, name: str) -> DamagedFileError:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return DamagedFileError(
        f"{name}: a symlink (to {target}), not a file fitscope wrote: not read or written"
    )


def read_bytes(path: Path, name: str, limit: int = MAX_BYTES) -> bytes:
    """The file's bytes, read as data from a folder that may come from anyone: never through a
    symlink, never from a FIFO or a device (it would block or never end), never more than
    `limit` bytes. `FileNotFoundError` when it is missing; `DamagedFileError` (one line naming
    `name`) for anything else that is wrong with it."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO with no writer returns at once
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP and path.is_symlink():
            raise _link_problem(path, name) from None
        raise DamagedFileError(f"{name}: cannot be read ({error.strerror or error})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        kind = _KINDS.get(stat.S_IFMT(info.st_mode))
        if kind is not None:
            raise DamagedFileError(f"{name}: {kind}, not a regular file: not read")
        if info.st_size > limit:
            raise DamagedFileError(
                f"{name}: {info.st_size / 2**20:.0f} MiB, more than the {limit / 2**20:.0f} MiB "
                "a file of a run folder may hold: not read"
            )
        try:
            os.set_blocking(fd, True)
            data = file.read(limit + 1)
        except OSError as error:
            raise DamagedFileError(f"{name}: cannot be read ({error.strerror or error})") from None
    if len(data) > limit:  # it grew while being read
        raise DamagedFileError(f"{name}: more than {limit / 2**20:.0f} MiB: not read")
    return data


def read_text(path: Path, name: str, limit: int = MAX_BYTES) -> str:
    """The file's text (`read_bytes`); DamagedFileError when it is not UTF-8."""
    try:
        return read_bytes(path, name, limit).decode("utf-8")
    except UnicodeDecodeError as error:
        raise _not_utf8(name, error) from None


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


# Deeper than this, a YAML document is not a config (fitscope's are 3 levels deep).
MAX_YAML_DEPTH = 64


def _refused_structure(text: str) -> str | None:
    """Why the YAML document `text` is refused before it is built, or None: an alias (the way
    a document expands without bound) or nesting deeper than `MAX_YAML_DEPTH`. Read as a stream
    of parser events, so neither costs memory nor recursion."""
    depth = 0
    for event in yaml.parse(text, Loader=DataLoader):
        if isinstance(event, yaml.AliasEvent):
            return "an alias (*name), which fitscope never writes: refused"
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                return f"nested deeper than {MAX_YAML_DEPTH} levels: refused"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def load_yaml(text: str, name: str) -> Any:
    """`text`, a YAML document, as plain containers (None for an empty one): interpolations such
    as `${oc.env:X}` stay text. `DamagedFileError` naming `name` when it is not YAML, holds an
    alias, a duplicate key or nesting deeper than `MAX_YAML_DEPTH`."""
    try:
        refused = _refused_structure(text)
        if refused:
            raise DamagedFileError(f"{name}: {refused}")
        return yaml.load(text, Loader=DataLoader)  # noqa: S506 (a safe loader)
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        raise DamagedFileError(f"{name}: not a YAML mapping ({first_line(error)})") from None
