"""The two wings and their contract: data flows one way (config -> training -> run folders ->
report), no module imports in a circle, and a report is built where torch is not installed,
from any working directory, by an installed (not editable) fitscope."""

from __future__ import annotations

import ast
import graphlib
import os
import site
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from packaging.version import Version

from conftest import REPO, quick_cfg
from fitscope.train.runner import run

PACKAGE = REPO / "src" / "fitscope"
SHARED = {"fitscope", "fitscope.config", "fitscope.rundir", "fitscope.stopping"}


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
        if module in SHARED:
            assert not {m for m in imported if m.startswith(("fitscope.train", "fitscope.report"))}
        elif module.startswith("fitscope.report"):
            assert not {m for m in imported if m.startswith("fitscope.train")}, module
        elif module.startswith("fitscope.train"):
            assert not {m for m in imported if m.startswith("fitscope.report")}, module


def test_the_report_wing_loads_no_torch():
    code = textwrap.dedent(
        """
        import sys
        import fitscope.report.cli, fitscope.report.callback, fitscope.report.layer_charts
        heavy = [m for m in sys.modules if m.split(".")[0] in ("torch", "sklearn", "torchvision")]
        print(heavy + [m for m in sys.modules if m.startswith("fitscope.train")])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_report_from_a_non_editable_install_with_no_torch(tmp_path):
    for i, activation in enumerate(("relu", "tanh")):
        run(quick_cfg(f"activation={activation}"), tmp_path / "sweep" / str(i))
    wheels, venv, elsewhere = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()

    # the venv sees this machine's libraries through PYTHONPATH, not as a site folder, so no
    # editable install of fitscope (its finder maps fitscope.conf to the checkout) leaks in
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(site.getsitepackages())}

    def call(*command: str | Path, cwd: Path = elsewhere) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(c) for c in command],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    # offline where this machine's setuptools can build the project, as pyproject.toml asks
    offline = Version(version("setuptools")) >= Version("68")
    isolation = ["--no-build-isolation"] if offline else []
    call(sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", wheels, REPO)
    # the libraries come from this machine, fitscope from its wheel: `pip install .` as a user
    # would, without a second download of torch, which the report must not need anyway
    call(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    call(python, "-m", "pip", "install", "--no-deps", "--no-index", *wheels.glob("*.whl"))
    no_torch = textwrap.dedent(
        """
        import importlib.abc, runpy, sys

        class NoTorch(importlib.abc.MetaPathFinder):  # import torch fails, as where it is not
            def find_spec(self, name, path, target=None):  # installed (and leaves no entry in
                if name.split(".")[0] in ("torch", "torchvision"):  # sys.modules, which scipy
                    raise ModuleNotFoundError(f"No module named {name!r}")  # looks at)
                return None

        sys.meta_path.insert(0, NoTorch())
        import fitscope
        print(fitscope.__file__)
        runpy.run_module("fitscope.report", run_name="__main__")
        """
    )
    result = call(python, "-c", no_torch, tmp_path / "sweep", "--dir", tmp_path / "reports")
    assert str(venv) in result.stdout.splitlines()[0]  # the installed copy, not the checkout
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
