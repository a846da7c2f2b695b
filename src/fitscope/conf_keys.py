"""The config's keys as its YAML files declare them, with their comments and defaults: what
`python src/run.py --help` lists, and what a misspelled key on the command line is checked
against (`unknown_keys`), before Hydra composes anything. No torch, no Hydra.

Each option of a config group (`conf/<group>/<option>.yaml`) declares keys under the group's
name (`model.depth`); a line's comment, continued on the comment lines below it, is the key's
description. Presets (`# @package _global_`) declare no keys of their own.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^(?P<indent> *)(?P<key>[\w-]+):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")
_MORE = re.compile(r"^ +#\s?(?P<comment>.*)$")  # a comment line that continues the one above
GLOBAL = "# @package _global_"


@dataclass(frozen=True)
class Key:
    """A config key: `model.depth`, its default in the option that declares it (`2`), the
    option (`model/mlp`) and its comment."""

    name: str
    default: str
    option: str
    comment: str


def option_keys(path: Path, group: str) -> list[Key]:
    """The keys an option file declares, dotted under `group`, in the file's order."""
    text = path.read_text()
    if text.lstrip().startswith(GLOBAL):
        return []
    option, keys, parents = f"{group}/{path.stem}", [], []  # parents: (indent, name)
    for line in text.splitlines():
        more = _MORE.match(line)
        if more and keys and not _LINE.match(line):
            last = keys[-1]
            keys[-1] = Key(
                last.name, last.default, last.option, f"{last.comment} {more['comment']}"
            )
            continue
        found = _LINE.match(line)
        if not found or line.lstrip().startswith("- "):
            continue
        indent = len(found["indent"])
        while parents and parents[-1][0] >= indent:
            parents.pop()
        name = ".".join([group, *(p for _, p in parents), found["key"]])
        value = found["value"].strip()
        if value:
            keys.append(Key(name, value, option, (found["comment"] or "").strip()))
        else:  # a section: the keys below it are nested in it
            parents.append((indent, found["key"]))
    return keys


def groups(conf: Path) -> dict[str, list[Path]]:
    """Each config group (`model`, `hydra/launcher`, ...) and its option files."""
    found: dict[str, list[Path]] = {}
    for path in sorted(conf.rglob("*.yaml")):
        if path.parent != conf:
            found.setdefault(path.parent.relative_to(conf).as_posix(), []).append(path)
    return found


def all_keys(conf: Path) -> list[Key]:
    """Every key any option of any group declares (Hydra's own groups left out)."""
    return [
        key
        for group, paths in groups(conf).items()
        if not group.startswith("hydra/")
        for path in paths
        for key in option_keys(path, group)
    ]


def _override_keys(overrides: Iterable[str]) -> list[tuple[str, str]]:
    """(the override as typed, its key without +, ++ or ~) of each `key=value` override."""
    found = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key and not key.startswith(("hydra.", "hydra/")) and "@" not in key:
            found.append((override, key))
    return found


def closest(key: str, known: set[str], n: int = 3) -> list[str]:
    """The known keys a mistyped one most likely meant: the closest spellings of the whole key,
    then of its last part (`lr` -> `optimizer.lr`)."""
    whole = difflib.get_close_matches(key, sorted(known), n=n, cutoff=0.6)
    last = key.rsplit(".", 1)[-1]
    by_last: dict[str, list[str]] = {}
    for name in sorted(known):
        by_last.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    ends = difflib.get_close_matches(last, sorted(by_last), n=n, cutoff=0.75)
    found = [*whole, *(name for end in ends for name in by_last[end])]
    return list(dict.fromkeys(found))[:n]


def unknown_keys(overrides: Sequence[str], conf: Path) -> str | None:
    """One line for the first override whose key no config group declares, naming the closest
    keys (`model.depht=3`: did you mean model.depth?); None when every key exists. Group
    choices (`activation=tanh`) are Hydra's to check: it lists the options."""
    known = {key.name for key in all_keys(conf)}
    group_names = set(groups(conf))
    for typed, key in _override_keys(overrides):
        if key in known or key in group_names or key.split(".")[0] in ("hydra",):
            continue
        if "." not in key and any(k.startswith(key + ".") for k in known):
            continue  # a whole section (model=...) is Hydra's to judge
        close = closest(key, known | group_names)
        section = key.split(".")[0]
        same = sorted(k for k in known if k.startswith(section + "."))
        hint = f"did you mean {' or '.join(close)}?" if close else "no key is close to it"
        hint += "" if close else " (python src/run.py --help lists every key)"
        listed = (
            f"; the keys of {section}: {', '.join(k.split('.', 1)[1] for k in same)}"
            if same
            else ""
        )
        return f"{typed} is invalid: fitscope has no key {key}; {hint}{listed}"
    return None


def default_options(conf: Path) -> dict[str, str]:
    """Each group's default option, from conf/config.yaml's defaults list."""
    import yaml

    config = yaml.safe_load((conf / "config.yaml").read_text()) or {}
    found = {}
    for entry in config.get("defaults", []):
        if isinstance(entry, dict):
            found.update({str(k): str(v) for k, v in entry.items() if v is not None})
    return found


def command_line_problem(argv: Sequence[str], conf: Path) -> str | None:
    """The one line that refuses a command line's misspelled key, or None: `key=value`
    arguments only (Hydra's flags and their values are Hydra's)."""
    return unknown_keys([a for a in argv if not a.startswith("-") and "=" in a], conf)


def help_text(conf: Path, defaults: dict[str, str]) -> str:
    """Every group with its options (the default marked) and every key of every option with its
    default and comment: what `python src/run.py --help` prints. `defaults`: each group's
    default option (conf/config.yaml's defaults list)."""
    lines = [
        "fitscope: train MLPs and sweep activations, depths, widths and optimizers.",
        "",
        "python src/run.py [-m] [group=option ...] [key=value ...]",
        "  -m               a sweep: comma-separated values run every combination",
        "  --cfg job        print the composed config and stop",
        "  --hydra-help     Hydra's own options",
        "",
    ]
    for group, paths in groups(conf).items():
        default = defaults.get(group)
        options = ", ".join(f"{p.stem}*" if p.stem == default else p.stem for p in paths)
        lines += [f"{group}: {options}"]
        for path in paths:
            keys = [k for k in option_keys(path, group) if not k.name.endswith(".name")]
            if not keys:
                continue
            lines.append(f"  {path.stem}:")
            width = max(len(k.name) + len(k.default) for k in keys) + 2
            for key in keys:
                head = f"{key.name}={key.default}"
                lines.append(f"    {head:<{width}} {key.comment}".rstrip())
        lines.append("")
    lines.append("* the default option")
    lines.append("Example: python src/run.py -m activation=relu,leaky,selu model.depth=1,2,4")
    return "\n".join(lines)
