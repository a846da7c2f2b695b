"""The docs: the README is a front door that links every page of the site (docs/, mkdocs.yml),
the site builds with `mkdocs build --strict`, and the commands that the README and the pages
show in their ```bash blocks are real: every option of `python src/run.py` composes into a
config, and every option of `src/report.py` and the benchmarks exists."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONF, REPO, REPORT_PY, needs, run_cli, run_script

DOCS = REPO / "docs"
README = REPO / "README.md"
README_LINES = 160  # a front door: what fitscope answers, install, quickstart, links
BASH_BLOCK = re.compile(r"^[ \t]*```bash[ \t]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
SEPARATORS = {"&&", "||", ";", "|", "&"}
# Commands these tests cannot compose here: the datasets torchvision downloads, and the clusters.
LEFT_OUT = ("data=mnist", "data=fashion_mnist", "data=kmnist")
LEFT_OUT_LAUNCHERS = ("hydra/launcher=slurm", "hydra/launcher=ray_cluster")
# Overrides that need an extra installed: Hydra finds their plugins only then.
EXTRAS = {
    "hydra/launcher=submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "hparams_search=lr_optuna": "hydra_plugins.hydra_optuna_sweeper",
}
BENCHMARKS = {"src/bench.py", "src/bench_report.py"}
# The public Python surface that the API page documents (mkdocstrings, from the docstrings).
API = (
    "fitscope.report.build.build_report",
    "fitscope.report.frames.collect",
    "fitscope.report.settings.ReportSettings",
    "fitscope.train.runner.run",
    "fitscope.train.models.load_checkpoint",
    "fitscope.synthetic.write_sweep",
    "fitscope.rundir.read_run",
    "fitscope.rundir.read_metrics",
    "fitscope.rundir.read_summary",
)
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-name", "-cn"}


def pages() -> set[str]:
    return {path.name for path in DOCS.glob("*.md")}


def nav_pages(entries: object) -> set[str]:
    """The Markdown files that mkdocs.yml's `nav` lists, at any depth."""
    if isinstance(entries, str):
        return {entries} if entries.endswith(".md") else set()
    if isinstance(entries, dict):
        entries = list(entries.values())
    if isinstance(entries, list):
        return set().union(*(nav_pages(entry) for entry in entries))
    return set()


def test_readme_is_a_front_door_that_links_every_page():
    text = README.read_text()
    assert len(text.splitlines()) <= README_LINES, "the README is a front door: move text to docs/"
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert pages(), "no docs pages"
    assert nav_pages(config["nav"]) == pages(), "every docs/*.md page, and only those, in nav"
    links = re.findall(r"(?<!!)\[[^\]]*\]\((docs/[^)#\s]+)(?:#[^)\s]*)?\)", text)
    linked = {Path(link).name for link in links if link.endswith(".md")}
    assert pages() <= linked, f"the README links no {sorted(pages() - linked)}"
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, f"the README links files that are not there: {missing}"


def test_the_site_builds_with_strict_checks(tmp_path):
    needs("mkdocs")
    needs("material")  # mkdocs-material
    needs("mkdocstrings_handlers.python")  # mkdocstrings[python]
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for page in pages():
        built = "index.html" if page == "index.md" else f"{Path(page).stem}/index.html"
        assert (tmp_path / built).is_file(), f"{page} was not built"
    api = (tmp_path / "api" / "index.html").read_text()
    missing = [name for name in API if f'id="{name}"' not in api]
    assert not missing, f"the API page documents no {missing}"


def shown_commands() -> list[tuple[str, list[str]]]:
    """(where, tokens) of every command in a ```bash block of the README and the pages:
    continued lines joined, comments dropped, split at `&&`, `;`, `|` and `&` as a shell does."""
    commands = []
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        for block in BASH_BLOCK.findall(path.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                command: list[str] = []
                for token in [*lexer, ";"]:
                    if token in SEPARATORS:
                        if command:
                            commands.append((f"{path.name}: {line.strip()}", command))
                        command = []
                    else:
                        command.append(token)
    return commands


def _kind(tokens: list[str]) -> str | None:
    """`run`, `report` or `bench` for the commands this test checks, else None."""
    if tokens[:1] != ["python"] or len(tokens) < 2:
        return None
    if tokens[1] == "src/run.py":
        return "run"
    if tokens[1] == "src/report.py" or tokens[1:3] == ["-m", "fitscope.report"]:
        return "report"
    if tokens[1].startswith("src/bench"):
        return "bench"
    return None


def _composable(tokens: list[str]) -> str | None:
    """Why a `src/run.py` command is not composed here, or None."""
    if any(t in LEFT_OUT for t in tokens):
        return "downloads its dataset"
    if any(t in LEFT_OUT_LAUNCHERS for t in tokens):
        return "needs a cluster"
    if any("<" in t or "..." in t for t in tokens):
        return "holds a placeholder"
    for override, module in EXTRAS.items():
        if override in tokens and not os.environ.get("FITSCOPE_ALL_EXTRAS"):
            try:
                needs(module)
            except pytest.skip.Exception:
                return f"needs {module}"
    return None


def split_arguments(arguments: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, Hydra's own flags with their values) of `src/run.py` arguments."""
    overrides, flags = [], []
    rest = iter(arguments)
    for argument in rest:
        if argument in FLAGS_WITH_VALUE:
            flags += [argument, next(rest, "")]
        elif argument.startswith("-"):
            flags.append(argument)
        else:
            overrides.append(argument)
    return overrides, flags


def one_job(arguments: list[str]) -> list[str]:
    """`src/run.py` arguments as one job: `-m` dropped, each swept override at its first value
    (Hydra refuses a sweep without -m, and `--cfg` with it). A swept config group's other
    values are checked as option files (`swept_options`)."""
    overrides, flags = split_arguments(arguments)
    flags = [flag for flag in flags if flag not in ("-m", "--multirun")]
    job = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            job.append(f"{override.get_key_element()}={first}")
        else:
            job.append(override.input_line)
    return job + flags


def swept_options(arguments: list[str]) -> list[str]:
    """The values of swept config groups (`activation=relu,selu`) that are no option file."""
    overrides, _ = split_arguments(arguments)
    missing = []
    for override in OverridesParser.create().parse_overrides(overrides):
        group = override.key_or_group
        if override.is_sweep_override() and (CONF / group).is_dir():
            for value in override.sweep_string_iterator():
                if not (CONF / group / f"{value}.yaml").is_file():
                    missing.append(f"{group}={value}")
    return missing


def _options(tokens: list[str]) -> set[str]:
    return {m for t in tokens for m in re.findall(r"(?<![\w-])--[a-z][a-z-]*", t)}


@pytest.mark.slow
def test_every_command_the_docs_show_is_real(tmp_path):
    commands = [(where, tokens, _kind(tokens)) for where, tokens in shown_commands()]
    commands = [(where, tokens, kind) for where, tokens, kind in commands if kind]
    kinds = {kind for _, _, kind in commands}
    assert kinds == {"run", "report", "bench"}, f"commands found: {kinds}"

    # src/report.py and the benchmarks: every option they are shown with exists
    helps = {"report": run_script(REPORT_PY, "--help", cwd=tmp_path)}
    for script in BENCHMARKS:
        helps[script] = run_script(REPO / script, "--help", cwd=tmp_path)
    for name, result in helps.items():
        assert result.returncode == 0, f"{name} --help: {result.stderr}"
    problems = []
    for where, tokens, kind in commands:
        if kind == "run":
            continue
        help_text = helps["report" if kind == "report" else tokens[1]].stdout
        unknown = _options(tokens[2:]) - _options([help_text])
        if unknown:
            problems.append(f"{where}: no option {sorted(unknown)}")

    # src/run.py: each command composes (`--cfg job`: Hydra prints the config, nothing trains)
    jobs: dict[tuple[str, ...], str] = {}
    for where, tokens, kind in commands:
        if kind != "run" or _composable(tokens):
            continue
        try:
            job = one_job(tokens[2:])
        except Exception as error:  # Hydra's override parser: not a valid override
            problems.append(f"{where}: {error}")
            continue
        problems += [f"{where}: no option file for {v}" for v in swept_options(tokens[2:])]
        if not any(flag in job for flag in ("--help", "--cfg")):
            job += ["--cfg", "job"]
        jobs.setdefault(tuple(job), where)
    assert len(jobs) >= 20, f"only {len(jobs)} src/run.py commands found in the docs"
    workers = min(4, os.cpu_count() or 1)  # each is a Python start-up, mostly one core's
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda job: run_cli(*job, cwd=tmp_path, timeout=180), jobs)
        for (job, where), result in zip(jobs.items(), results, strict=True):
            if result.returncode != 0:
                said = result.stderr.strip()[-600:]
                problems.append(f"{where}: {shlex.join(job)} exits {result.returncode}: {said}")
    assert not problems, "\n".join(problems)
