"""Marks conf/ as the package `fitscope.conf` (pyproject.toml maps it), so that every install,
editable or not, finds the config groups through importlib.resources. Hydra reads only the
YAML files."""
