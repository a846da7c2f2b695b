"""The run folder: the one interface between training and reporting. This module owns its
format, both sides of it: what the trainer writes and how the report reads it back. No torch.

A run folder holds (names below):
- `metrics.csv`: one row per epoch, `EPOCH_COLUMNS` then the diagnostics' columns
  (`layer_column`), flushed as each epoch ends, so a killed run keeps its finished epochs;
- `summary.json`: status (`running`, `completed`, `diverged`, `failed`) and results, rewritten
  atomically (never half-written);
- `config.yaml`: the resolved config; `.hydra/`: Hydra's record of the job, which fitscope
  writes itself once it trains the run (`write_hydra_files`);
- `best.pt`: the best epoch's weights (written and loaded by `fitscope.train.models`), with its
  SHA-256 in summary.json (`checkpoint_sha256`);
- `run.log`: the job's log lines (`fitscope.rundir.logfile.RunLog`);
- `.lock`: locked (an OS lock, `run_lock`) by the process that trains the run, so two processes
  never write one run folder; it names that process;
- `.replaced-<time>/`: the files of a completed run that resume found not whole, set aside
  before it trained the run again (`set_aside`).

Writers never write through a symlink (`check_run_folder`, `atomic_file`, `open_new`);
readers read a folder as data from anyone: no symlink, FIFO or device is read, no file beyond
`MAX_BYTES` (`read_bytes`). A completed run is whole when its folder holds what its summary
says (`completed_problems`): resume and the report check it alike.

Readers are tolerant: a missing, empty, cut-short or unreadable file is a problem of that run,
reported with it, never an exception that stops a report. A run is *incomplete* when a file is
missing or cut short the way a killed run leaves it (no summary.json, metrics.csv with no
complete epoch); it is *damaged* (`RunRecord.damage`) when a file is there but is not what
fitscope writes: summary.json not a JSON object or a field the report reads of the wrong type,
metrics.csv not UTF-8 CSV or without the epoch, loss and accuracy columns, or no config that
config.yaml or .hydra/config.yaml gives as a mapping. NaN and huge numbers are data, not damage.
Configs are read as written: interpolations such as `${oc.env:X}` are never resolved.
"""

from fitscope.rundir.files import (
    DamagedFileError,
    RunFolderError,
    load_yaml,
    os_error_line,
    read_bytes,
    read_json,
    read_text,
)
from fitscope.rundir.folder import RunRecord, read_run
from fitscope.rundir.guard import check_run_folder, checksum, completed_problems, set_aside
from fitscope.rundir.lock import RunLocked, mark_ended, run_lock
from fitscope.rundir.names import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENTRY_POINT,
    EPOCH_COLUMNS,
    GRADIENT_COLUMNS,
    HYDRA_CONFIG,
    HYDRA_DIR,
    LAYER_MEASURES,
    LOCK_FILE,
    LOG_FILE,
    METRICS_FILE,
    REQUIRED_COLUMNS,
    RUN_MARKERS,
    SPLIT_METRICS,
    STATUSES,
    SUMMARY_FILE,
    SWEEP_FILE,
    display_path,
    hydra_quoted,
    layer_column,
    parse_layer_column,
    rerun_command,
)
from fitscope.rundir.read import (
    SUMMARY_FIELDS,
    completed_summary,
    find_run_dirs,
    read_choices,
    read_config,
    read_metrics,
    read_overrides,
    read_summary,
    read_sweep_section,
)
from fitscope.rundir.write import (
    MetricsWriter,
    atomic_file,
    finite_or_none,
    write_config,
    write_hydra_files,
    write_json_atomic,
)

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "DamagedFileError",
    "ENTRY_POINT",
    "EPOCH_COLUMNS",
    "GRADIENT_COLUMNS",
    "HYDRA_CONFIG",
    "HYDRA_DIR",
    "LAYER_MEASURES",
    "LOCK_FILE",
    "LOG_FILE",
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
    "atomic_file",
    "check_run_folder",
    "checksum",
    "completed_problems",
    "completed_summary",
    "display_path",
    "find_run_dirs",
    "finite_or_none",
    "hydra_quoted",
    "load_yaml",
    "layer_column",
    "mark_ended",
    "os_error_line",
    "parse_layer_column",
    "read_bytes",
    "read_choices",
    "read_config",
    "read_json",
    "read_metrics",
    "read_overrides",
    "read_run",
    "read_summary",
    "read_text",
    "read_sweep_section",
    "rerun_command",
    "run_lock",
    "set_aside",
    "write_config",
    "write_hydra_files",
    "write_json_atomic",
]
