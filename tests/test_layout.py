"""The two wings and their contract: data flows one way (config -> training -> run folders ->
report), no module imports in a circle, and a report is built where torch is not installed: in
a fresh virtual environment with only requirements/report.txt and fitscope's wheel, from any
working directory."""

from __future__ import annotations

import ast
import email
import graphlib
import os
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pandas as pd
import pytest
import tomllib
from omegaconf import OmegaConf
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO, quick_cfg
from fitscope.train.runner import run

PACKAGE = REPO / "src" / "fitscope"
SHARED = {
    "fitscope",
    "fitscope.config",
    "fitscope.rundir",
    "fitscope.stopping",
    "fitscope.synthetic",
}


def is_shared(module: str) -> bool:
    """A module of neither wing: the names, rules and the run-folder contract both wings use."""
    return module in SHARED or module.startswith("fitscope.rundir.")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each fitscope module and the fitscope modules it imports, anywhere in its code."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def test_no_module_imports_in_a_circle():
    graph = import_graph()
    assert {"fitscope.report.frames", "fitscope.train.loop", "fitscope.rundir"} <= set(graph)
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError on a circle


def test_data_flows_one_way_between_the_wings():
    for module, imported in import_graph().items():
        if is_shared(module):
            assert not {m for m in imported if m.startswith(("fitscope.train", "fitscope.report"))}
        elif module.startswith("fitscope.report"):
            assert not {m for m in imported if m.startswith("fitscope.train")}, module
        elif module.startswith("fitscope.train"):
            assert not {m for m in imported if m.startswith("fitscope.report")}, module


def test_the_report_wing_loads_no_torch():
    code = textwrap.dedent(
        """
        import sys
        import fitscope.report.cli, fitscope.report.callback, fitscope.report.draw_png
        heavy = [m for m in sys.modules if m.split(".")[0] in ("torch", "sklearn", "torchvision")]
        print(heavy + [m for m in sys.modules if m.startswith("fitscope.train")])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_every_package_of_the_source_is_installed():
    """pyproject.toml names its packages: a new one (rundir/) must be named too, or an install
    that is not editable lacks it."""
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    source = REPO / "src"
    found = {
        ".".join(init.parent.relative_to(source).parts)
        for init in source.rglob("__init__.py")
        if "egg-info" not in str(init)
    }
    assert found - {"hydra_plugins"} <= listed, sorted(found - listed)


def requirements(name: str) -> set[Requirement]:
    """The requirements in requirements/NAME.txt, which pyproject.toml reads as dependencies."""
    lines = (REPO / "requirements" / f"{name}.txt").read_text().splitlines()
    return {Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()}


def test_report_requirements_cover_the_report_wings_imports():
    """requirements/report.txt, all that a machine without torch installs, holds every library
    the report wing and the shared modules import (the Hydra callback only runs under Hydra)."""
    distributions = packages_distributions()
    needed = set()
    for module in import_graph():
        if module == "fitscope.report.callback" or not (
            is_shared(module) or module.startswith("fitscope.report")
        ):
            continue
        path = PACKAGE.parent.joinpath(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for top in {name.split(".")[0] for name in names}:
                if top not in sys.stdlib_module_names and top not in ("fitscope", "__future__"):
                    needed |= {canonicalize_name(d) for d in distributions.get(top, [top])}
    report = {canonicalize_name(r.name) for r in requirements("report")}
    train = {canonicalize_name(r.name) for r in requirements("train")}
    assert {"numpy", "pandas", "matplotlib", "scipy", "omegaconf"} <= needed
    assert needed <= report, f"requirements/report.txt lacks {sorted(needed - report)}"
    assert not report & train  # one place for each requirement
    assert {"torch", "torchvision", "hydra-core"} <= train


@pytest.mark.slow
def test_report_in_a_fresh_venv_with_only_the_report_requirements(tmp_path):
    """The README's login-node install in a new virtual environment that sees none of this
    machine's libraries: `pip install -r requirements/report.txt` from the package index, then
    fitscope's wheel with --no-deps. torch and Hydra are absent; the report is built."""
    for i, activation in enumerate(("relu", "tanh")):
        run(quick_cfg(f"activation={activation}"), tmp_path / "sweep" / str(i))
    wheels, venv, elsewhere = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()

    # nothing of this machine's Python leaks in: no PYTHONPATH, no user site; pip's own
    # settings (index, certificates) stay, as on a login node
    leaks = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSTARTUP", "VIRTUAL_ENV")
    env = {key: value for key, value in os.environ.items() if key not in leaks}
    env["PYTHONNOUSERSITE"] = "1"

    def call(
        *command: str | Path, cwd: Path = elsewhere, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(c) for c in command],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    # offline where this machine's setuptools can build the project, as pyproject.toml asks
    offline = Version(version("setuptools")) >= Version("68")
    isolation = ["--no-build-isolation"] if offline else []
    call(sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", wheels, REPO)
    (wheel,) = wheels.glob("fitscope-*.whl")
    # the wheel's dependencies are both requirement files: `pip install .` installs everything
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(name))
    runtime = {Requirement(r) for r in metadata.get_all("Requires-Dist")}
    runtime = {str(r) for r in runtime if r.marker is None}  # not an extra's
    assert runtime == {str(r) for r in requirements("report") | requirements("train")}

    call(sys.executable, "-m", "venv", venv)  # no system site packages
    python = venv / "bin" / "python"
    # exactly the README's commands, from the checkout (the wheel stands for `.`)
    installed = call(
        python,
        "-m",
        "pip",
        "install",
        "-r",
        "requirements/report.txt",
        cwd=REPO,
        timeout=900,
        check=False,
    )
    if installed.returncode != 0:
        offline = any(  # pip's words when it cannot reach the package index
            words in installed.stdout + installed.stderr
            for words in ("Could not find a version", "No matching distribution", "NewConnection")
        )
        if offline and not os.environ.get("FITSCOPE_ALL_EXTRAS"):
            pytest.skip(
                "the package index cannot be reached: requirements/report.txt not installed"
            )
        raise AssertionError(installed.stdout + installed.stderr)
    call(python, "-m", "pip", "install", "--no-deps", wheel)
    paths = call(python, "-c", "import sys; print(*sys.path, sep='\\n')").stdout.splitlines()
    assert not [p for p in paths if "site-packages" in p and not p.startswith(str(venv))], paths
    absent = call(python, "-c", "import torch", check=False)  # not hidden: not installed
    assert "No module named 'torch'" in absent.stderr, absent.stdout + absent.stderr
    found = "import importlib.util as u; print([m for m in {} if u.find_spec(m)])"
    training = ["torch", "torchvision", "hydra"]  # Hydra's callback is not the report
    assert call(python, "-c", found.format(training)).stdout.strip() == "[]"

    installed = call(python, "-c", "import fitscope; print(fitscope.__file__)")
    assert installed.stdout.startswith(str(venv))  # the installed copy, not the checkout
    call(python, "-m", "fitscope.report", tmp_path / "sweep", "--dir", tmp_path / "reports")
    runs = pd.read_csv(tmp_path / "reports" / "sweep" / "runs.csv")
    assert runs["activation.name"].tolist() == ["relu", "tanh"]
    # report.patience came from the package: the Definitions name it
    patience = OmegaConf.load(REPO / "conf" / "report" / "default.yaml")["patience"]
    definitions = (tmp_path / "reports" / "sweep" / "report.md").read_text()
    assert f"patience {patience} and min_delta" in definitions
    # and `python src/report.py` of a checkout, from another working directory: the script's
    # folder comes first on sys.path, so fitscope is the checkout's, whose conf/ is beside src/
    checkout = call(python, "-c", "import fitscope; print(fitscope.__file__)", cwd=REPO / "src")
    assert checkout.stdout.startswith(str(REPO / "src"))
    call(python, REPO / "src" / "report.py", tmp_path / "sweep", "--name", "again")
    assert (elsewhere / "reports" / "again" / "report.html").is_file()


def _imports_from(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every `from fitscope... import name` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fitscope"):
            found += [(node.module, alias.name) for alias in node.names]
    return found


def test_no_module_imports_another_modules_private_names():
    private = [
        (path.relative_to(REPO).as_posix(), f"{module}.{name}")
        for path in [*PACKAGE.rglob("*.py"), *(REPO / "src").glob("*.py")]
        for module, name in _imports_from(path)
        if name.startswith("_") and not name.startswith("__")
    ]
    assert private == []


def test_the_two_training_drivers_are_siblings_that_share_the_run_record():
    graph = import_graph()
    runner, pack_runner = "fitscope.train.runner", "fitscope.train.pack_runner"
    assert runner not in graph[pack_runner] and pack_runner not in graph[runner]
    assert (
        "fitscope.train.record" in graph[runner] and "fitscope.train.record" in graph[pack_runner]
    )
    assert "types" not in {
        node.module
        for node in ast.walk(ast.parse((PACKAGE / "train" / "packed.py").read_text()))
        if isinstance(node, ast.ImportFrom)
    }  # no SimpleNamespace posing as a step


# Sizes a reader can hold: modules of at most about 400 lines, functions of at most about 70,
# in the training wing, the report wing, the run-folder contract and the config's rules.
MODULE_LINES, FUNCTION_LINES = 420, 75
HELD = ["train", "report", "rundir", "config.py", "conf_keys.py", "synthetic.py"]


def test_modules_and_functions_are_sizes_a_reader_can_hold():
    paths = [p for held in HELD for p in sorted((PACKAGE / held).rglob("*.py")) or [PACKAGE / held]]
    assert len(paths) > 40
    too_long = []
    for path in paths:
        text = path.read_text()
        if len(text.splitlines()) > MODULE_LINES:
            too_long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES:
                    too_long.append(f"{path.name}: {node.name} {lines} lines")
    assert too_long == []
