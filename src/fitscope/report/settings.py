"""The report's settings: the `report` config group, typed and checked with the same rules as
a run's config (`fitscope.config`).

Their one source of defaults is the group's YAML file, which ships inside the package
(fitscope/conf/report/default.yaml), so every install finds it; a checkout imported from src/
finds it beside src/, in conf/.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fitscope import FitscopeError
from fitscope.config import check_values
from fitscope.rundir import read_sweep_section

# A checkout's config groups, beside src/: what `python src/report.py` imports fitscope from
# (a script's folder comes first on sys.path), where only an install maps fitscope.conf.
CHECKOUT_CONF = Path(__file__).resolve().parents[3] / "conf"


@functools.cache
def default_values() -> dict[str, Any]:
    """The `report` group's defaults: conf/report/default.yaml, found through the package, or
    beside src/ when fitscope is imported from a checkout."""
    try:
        text = (resources.files("fitscope.conf") / "report" / "default.yaml").read_text()
    except ModuleNotFoundError:
        checkout = CHECKOUT_CONF / "report" / "default.yaml"
        if not checkout.is_file():  # an install older than fitscope.conf
            raise FitscopeError(
                "the report's defaults (conf/report/default.yaml, package fitscope.conf) are not "
                'installed: install fitscope again, e.g. python -m pip install -e ".[test]"'
            ) from None
        text = checkout.read_text()
    return OmegaConf.to_container(OmegaConf.create(text))


@dataclass(frozen=True)
class ReportSettings:
    """Where the report goes, early stopping and the fit-diagnosis thresholds (each key is
    explained in fitscope/conf/report/default.yaml and in the README's Reports section)."""

    enabled: bool
    dir: str
    name: str | None
    patience: int
    min_delta: float
    overfit_rise: float
    underfit_train_acc: float
    converge_window: float
    converge_tol: float
    vanishing_ratio: float
    exploding_norm: float
    smooth_window: int
    noise_tolerance: float
    chance_margin: float
    collapse_ratio: float
    unit_share: float
    metric: str
    matrix: tuple[str, ...] | None
    group_by: str | None
    extremes: int
    run_panels: int

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any] | None = None, **overrides: Any
    ) -> ReportSettings:
        """Settings from a `report` section (keys it lacks take the defaults) and `overrides`
        (None keeps the value); `ConfigError` for a value the rules refuse."""
        merged = {**default_values(), **(values or {})}
        merged.update({key: value for key, value in overrides.items() if value is not None})
        check_values({"report": merged}, sections=("report",))
        if merged["matrix"] is not None:
            merged["matrix"] = tuple(merged["matrix"])
        return cls(**{f.name: merged[f.name] for f in fields(cls)})


# A sweep folder may come from anyone: where a report goes is never taken from its files,
# only from the user's own command (--dir, --name) or config.
NOT_FROM_FILES = ("enabled", "dir", "name")


def sweep_settings(folders: Sequence[Path]) -> dict[str, Any] | None:
    """The `report` section the first of `folders` that is a sweep folder ran with (from its
    multirun.yaml), as data: without `NOT_FROM_FILES` and without values that are
    interpolations (`${...}`, never resolved); None when none has one."""
    for folder in folders:
        section = read_sweep_section(Path(folder), "report")
        if section is not None:
            return {
                key: value
                for key, value in section.items()
                if key not in NOT_FROM_FILES and not (isinstance(value, str) and "${" in value)
            }
    return None
