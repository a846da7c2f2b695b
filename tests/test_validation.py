"""Bad input stops a run before any work with one line that names the key, the value and what
is allowed; nothing already written is lost."""

from __future__ import annotations

import pytest

from conftest import CONF, compose_cfg, quick_cfg, run_cli
from fitscope.conf_keys import all_keys, command_line_problem, default_options
from fitscope.config import ConfigError
from fitscope.train.data import DataError, load_arrays
from fitscope.train.runner import run
from fitscope.train.settings import validate

BAD_VALUES = [
    ("model.depth=-1", "an integer >= 0"),
    ("model.width=0", "an integer >= 1"),
    ("optimizer.lr=0", "a finite number > 0"),
    ("optimizer.lr=nan", "a finite number > 0"),
    ("optimizer.lr=inf", "a finite number > 0"),
    ("optimizer.weight_decay=nan", "a finite number >= 0"),
    ("trainer.divergence_loss=inf", "null or a finite number > 0"),
    ("trainer.batch_size=0", "an integer >= 1"),
    ("trainer.epochs=0", "an integer >= 1"),
    ("trainer.train_eval_samples=0", "auto, null (all training samples) or an integer >= 1"),
    ("trainer.train_eval_samples=half", "auto, null (all training samples) or an integer >= 1"),
    ("data.val_fraction=1.5", "a number in (0, 1)"),
    ("model.dropout=1", "a number in [0, 1)"),
    ("model.depth=abc", "an integer >= 0"),
    ("model.final_activation=maybe", "true or false"),
    ("model.init=magic", "one of auto, default"),
    ("optimizer.grad_clip=-1", "null or a finite number > 0"),
    ("trainer.device=tpu", "auto, cpu, cuda, cuda:N or mps"),
    ("trainer.console=loud", "one of auto, epochs, runs, quiet"),
    ("trainer.early_stopping.patience=0", "an integer >= 1"),
    ("report.patience=0", "an integer >= 1"),
    ("report.underfit_train_acc=2", "a number in [0, 1]"),
    ("report.name=a/b", "null or a folder name"),
    ("report.name=..", "null or a folder name"),
    ("report.name=.", "null or a folder name"),
]


@pytest.mark.parametrize(("override", "allowed"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_names_key_value_and_what_is_allowed(override, allowed):
    with pytest.raises(ConfigError) as error:
        validate(compose_cfg(override))
    message = str(error.value)
    assert message.startswith(f"{override} is invalid: expected ")
    assert allowed in message
    assert "\n" not in message


def test_default_config_is_valid():
    validate(compose_cfg())


def test_activation_parameter_that_does_not_exist_is_named():
    with pytest.raises(ConfigError, match=r"activation.beta is not a parameter of activation=relu"):
        validate(compose_cfg("+activation.beta=2"))


def test_unavailable_cuda_device_says_what_to_use(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(
        ConfigError, match=r"trainer.device=cuda:1 is invalid: .*use trainer.device=auto"
    ):
        validate(compose_cfg("trainer.device=cuda:1"))


def test_a_refused_config_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="model.width=0 is invalid: expected an integer >= 1"):
        run(compose_cfg("model.width=0"), tmp_path / "new")
    assert not (tmp_path / "new").exists()
    # a folder that holds a completed run keeps it as it was
    done = tmp_path / "done"
    run(quick_cfg(), done)
    before = {p: p.read_bytes() for p in done.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError):
        run(quick_cfg("model.width=0"), done)
    assert {p: p.read_bytes() for p in done.rglob("*") if p.is_file()} == before


def test_missing_torchvision_files_say_where_and_how_to_fix(tmp_path):
    with pytest.raises(DataError) as error:
        load_arrays("fashion_mnist", str(tmp_path), False)
    message = str(error.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "data.download=true" in message and "data.root=" in message


@pytest.mark.slow
@pytest.mark.parametrize("override", [b[0] for b in BAD_VALUES[:7]])
def test_command_line_bad_value_exits_nonzero_with_one_line(override, tmp_path):
    result = run_cli(override, cwd=tmp_path)
    assert result.returncode != 0
    assert f"{override} is invalid: expected" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not list(tmp_path.glob("multirun/*"))  # no run folder for a refused config


@pytest.mark.slow
def test_unknown_option_keeps_hydras_list_of_choices(tmp_path):
    result = run_cli("activation=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'activation/nope'" in result.stderr
    for choice in ("relu", "leaky", "selu", "mish"):
        assert f"\t{choice}\n" in result.stderr


@pytest.mark.slow
def test_command_line_missing_dataset_says_where_it_looked(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("data=mnist", "data.download=false", f"data.root={empty}", cwd=tmp_path)
    assert result.returncode != 0
    assert f"no MNIST files in {empty / 'MNIST' / 'raw'}" in result.stderr
    assert "set data.download=true" in result.stderr
    assert "Traceback" not in result.stderr


UNKNOWN_KEYS = [
    ("+model.dpeth=3", "did you mean model.depth?"),  # Hydra's own hint for model.dpeth=3
    ("+trainer.epoch=3", "did you mean trainer.epochs?"),
    ("+lr=0.1", "did you mean optimizer.lr?"),
    ("+trainer.early_stopping.mode=min", "trainer.early_stopping."),
    ("+report.patiense=2", "did you mean report.patience?"),
    ("+foo.bar=1", "the keys are listed in conf/"),
]


@pytest.mark.parametrize(("override", "hint"), UNKNOWN_KEYS, ids=[u[0] for u in UNKNOWN_KEYS])
def test_a_key_fitscope_does_not_know_is_refused_with_the_nearest_known_one(override, hint):
    with pytest.raises(ConfigError) as error:
        validate(compose_cfg(override))
    key_value = override.removeprefix("+")
    key = key_value.partition("=")[0]
    message = str(error.value)
    assert message.startswith(f"{key_value} is invalid: fitscope has no key {key}; ")
    assert hint in message and "\n" not in message


def test_a_value_that_cannot_be_resolved_is_refused_in_one_line(monkeypatch):
    monkeypatch.delenv("FITSCOPE_UNSET", raising=False)
    with pytest.raises(ConfigError) as error:
        validate(compose_cfg("optimizer.lr=${oc.env:FITSCOPE_UNSET}"))
    message = str(error.value)
    assert message.startswith("optimizer.lr cannot be resolved: ") and "\n" not in message
    assert "FITSCOPE_UNSET" in message


@pytest.mark.slow
def test_command_line_unresolvable_value_leaves_no_run_folder(tmp_path):
    result = run_cli("optimizer.lr=${oc.env:FITSCOPE_UNSET}", cwd=tmp_path)
    assert result.returncode != 0
    assert "optimizer.lr cannot be resolved" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not list(tmp_path.glob("multirun/*"))


# ---------------------------------------------------------------- misspelled keys and --help


def _typo(key: str) -> str:
    """`key` with the last two letters of its last part swapped (`depth` -> `depht`), or a
    letter doubled where swapping changes nothing."""
    head, _, last = key.rpartition(".")
    swapped = last[:-2] + last[-1] + last[-2] if len(last) > 2 else last + last[-1]
    if swapped == last:
        swapped = last + last[-1]
    return f"{head}.{swapped}" if head else swapped


KEYS_BY_GROUP = {
    group: [k for k in all_keys(CONF) if k.name.startswith(group + ".") and k.option.endswith(
        "/" + default_options(CONF).get(group, ""))]
    for group in ("data", "model", "activation", "optimizer", "trainer", "report", "logger")
}  # fmt: skip


@pytest.mark.parametrize("group", sorted(KEYS_BY_GROUP))
def test_a_misspelled_key_of_any_group_names_the_key_meant(group):
    keys = [k for k in all_keys(CONF) if k.name.startswith(group + ".")]
    keys = [k for k in keys if not k.name.endswith(".name")]
    assert keys or group == "logger"  # logger=none has no keys; its other options do
    for key in keys:
        for plus in ("", "+"):
            typed = f"{plus}{_typo(key.name)}=1"
            problem = command_line_problem([typed], CONF)
            assert problem is not None, typed
            assert problem.startswith(f"{typed} is invalid: fitscope has no key ")
            meant = problem.split("did you mean ", 1)[1].split("?")[0].split(" or ")
            assert key.name in meant, problem
            assert "\n" not in problem


def test_every_key_of_every_option_is_known():
    overrides = [f"{k.name}={k.default}" for k in all_keys(CONF)]
    assert len(overrides) > 60
    assert command_line_problem(overrides, CONF) is None
    # group choices and Hydra's own keys are Hydra's to check
    hydra = ["activation=tanh", "hydra/launcher=cpu", "hydra.sweep.dir=x", "-m", "--cfg", "job"]
    assert command_line_problem(hydra, CONF) is None


def test_the_command_line_refuses_a_misspelled_key_in_one_line_and_writes_nothing(tmp_path):
    for override in ("model.depht=3", "+model.depht=3"):
        result = run_cli("-m", override, "trainer.epochs=1", cwd=tmp_path, timeout=120)
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()  # one line, no traceback
        assert line.startswith(
            f"{override} is invalid: fitscope has no key model.depht; did you mean model.depth "
        )
        assert line.endswith(
            "the keys of model: depth, dropout, final_activation, init, name, width"
        )
        assert "+model.depht" not in result.stderr.replace(override, "")  # no advice to add it
    assert not (tmp_path / "multirun").exists()


def test_help_lists_every_key_of_every_group_with_its_default_and_comment(tmp_path):
    result = run_cli("--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0
    for key in all_keys(CONF):
        if key.name.endswith(".name"):
            continue
        head = f"{key.name}={key.default}"
        lines = [text.strip() for text in result.stdout.splitlines()]
        assert any(
            text.startswith(head) and text.removeprefix(head).strip() == key.comment
            for text in lines
        ), key
    for group, default in default_options(CONF).items():
        options = next(text for text in result.stdout.splitlines() if text.startswith(group + ":"))
        assert f"{default}*" in options
