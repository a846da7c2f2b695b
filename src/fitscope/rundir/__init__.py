"""The run folder: the one interface between training and reporting. This module owns its
format, both sides of it: what the trainer writes and how the report reads it back. No torch.

A run folder holds (names below):
- `metrics.csv`: one row per epoch, `EPOCH_COLUMNS` then the diagnostics' columns
  (`layer_column`), flushed as each epoch ends, so a killed run keeps its finished epochs;
- `summary.json`: status (`running`, `completed`, `diverged`, `failed`) and results, rewritten
  atomically (never half-written);
- `config.yaml`: the resolved config; `.hydra/`: Hydra's own record;
- `best.pt`: the best epoch's weights (written and loaded by `fitscope.train.models`);
- `.lock`: locked (an OS lock, `run_lock`) by the process that trains the run, so two processes
  never write one run folder; it names that process.

Readers are tolerant: a missing, empty, cut-short or unreadable file is a problem of that run,
reported with it, never an exception that stops a report. A run is *incomplete* when a file is
missing or cut short the way a killed run leaves it (no summary.json, metrics.csv with no
complete epoch); it is *damaged* (`RunRecord.damage`) when a file is there but is not what
fitscope writes: summary.json not a JSON object or a field the report reads of the wrong type,
metrics.csv not UTF-8 CSV or without the epoch, loss and accuracy columns, or no config that
config.yaml or .hydra/config.yaml gives as a mapping. NaN and huge numbers are data, not damage.
Configs are read as written: interpolations such as `${oc.env:X}` are never resolved.
"""

from fitscope.rundir.files import DamagedFileError, RunFolderError, load_yaml, read_json
from fitscope.rundir.lock import RunLocked, mark_ended, run_lock
from fitscope.rundir.names import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENTRY_POINT,
    EPOCH_COLUMNS,
    GRADIENT_COLUMNS,
    HYDRA_CONFIG,
    LAYER_MEASURES,
    LOCK_FILE,
    METRICS_FILE,
    REQUIRED_COLUMNS,
    RUN_MARKERS,
    SPLIT_METRICS,
    STATUSES,
    SUMMARY_FILE,
    SWEEP_FILE,
    display_path,
    layer_column,
    parse_layer_column,
    rerun_command,
)
from fitscope.rundir.read import (
    SUMMARY_FIELDS,
    RunRecord,
    completed_summary,
    find_run_dirs,
    read_choices,
    read_config,
    read_metrics,
    read_overrides,
    read_run,
    read_summary,
    read_sweep_section,
)
from fitscope.rundir.write import MetricsWriter, finite_or_none, write_config, write_json_atomic

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "DamagedFileError",
    "ENTRY_POINT",
    "EPOCH_COLUMNS",
    "GRADIENT_COLUMNS",
    "HYDRA_CONFIG",
    "LAYER_MEASURES",
    "LOCK_FILE",
    "METRICS_FILE",
    "MetricsWriter",
    "REQUIRED_COLUMNS",
    "RUN_MARKERS",
    "RunFolderError",
    "RunLocked",
    "RunRecord",
    "SPLIT_METRICS",
    "STATUSES",
    "SUMMARY_FIELDS",
    "SUMMARY_FILE",
    "SWEEP_FILE",
    "completed_summary",
    "display_path",
    "find_run_dirs",
    "finite_or_none",
    "load_yaml",
    "layer_column",
    "mark_ended",
    "parse_layer_column",
    "read_choices",
    "read_config",
    "read_json",
    "read_metrics",
    "read_overrides",
    "read_run",
    "read_summary",
    "read_sweep_section",
    "rerun_command",
    "run_lock",
    "write_config",
    "write_json_atomic",
]
