"""Why a run fails: gradient flow, dead and saturated units, clipping.

Everything is measured on the training device and accumulated in device tensors, so the batch
loop never waits for the host; the values come back with the epoch's one transfer.

Per epoch, `metrics.csv` gets (layers are numbered from the input, `out` is the output layer):
- `grad_rms_<layer>`: mean over the epoch's steps of the RMS of that layer's weight gradient (its
  L2 norm over the square root of its element count: per weight, so that a 784x128 layer and a
  128x10 one compare). Eager steps measure every k-th step, from the first, so that at most
  `DIAGNOSTIC_STEPS` (32) of an epoch are measured (all of them up to 32 steps an epoch); CUDA
  graphs measure every step;
- `grad_norm_total`: mean global gradient norm (all parameters) before clipping, over the same
  steps (over every step with `optimizer.grad_clip`, which computes it anyway);
- `clip_fraction`: share of steps where clipping fired, over every step (0 without
  `optimizer.grad_clip`);
- `act_mean_<i>`, `act_std_<i>`: mean and std of hidden layer i's outputs (over units and
  samples) on a fixed validation batch (the first `DIAGNOSTIC_BATCH` validation samples), eval
  mode;
- `signal_<i>`: on that batch, each unit's std across the samples, root-mean-square over the
  layer's units: how much the layer's output still depends on the input (a forward signal
  that collapses leaves the deep layers the same output, set by their biases, for every input);
- `dead_<i>` (ReLU family): share of layer i's units whose pre-activation is <= 0 for every
  sample of that batch (they pass no gradient through the ReLU's flat side);
- `dead_out` (with `model.final_activation`): share of the output units (logits, after the
  activation that follows the output layer) that are constant, zero for a ReLU, for every
  sample of that batch: a dead logit never changes its class's score;
- `saturated_<i>` (sigmoid, tanh): share of layer i's unit outputs on that batch within
  `SATURATION_MARGIN` of the activation's bounds (sigmoid: 0 or 1; tanh: -1 or 1), as Glorot &
  Bengio (2010) measure saturation.

Epoch 0 is the network as initialized: the same columns, its gradients from one pass over a fixed
training batch (`initial_gradients`), no optimizer step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fitscope.config import ACTIVATIONS
from fitscope.rundir import GRADIENT_COLUMNS, layer_column
from fitscope.train.models import activation_class

DIAGNOSTIC_BATCH = 1024
# Eager steps measure the gradients of at most this many evenly spaced steps per epoch.
DIAGNOSTIC_STEPS = 32
DEAD_FAMILY = ("relu", "leaky", "elu", "selu", "gelu", "silu", "mish", "softplus")
# A unit output this close to one of its activation's bounds counts as saturated (Glorot &
# Bengio 2010): sigmoid outputs below 0.01 or above 0.99, tanh outputs beyond +-0.99.
SATURATION_MARGIN = 0.01
SATURATION_BOUNDS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def activation_of(model: nn.Module) -> str | None:
    """The `activation` config name of the model's first activation module."""
    for module in model.modules():
        for name in ACTIVATIONS:
            if type(module) is activation_class(name):
                return name
    return None


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def layer_names(model: nn.Module) -> list[str]:
    """`1`, `2`, ... for hidden layers, `out` for the output layer."""
    count = len(linear_layers(model))
    return [str(i) for i in range(1, count)] + ["out"]


def unit_measure(activation: str | None) -> str | None:
    """`dead`, `saturated` or None: which unit statistic this activation has."""
    if activation in DEAD_FAMILY:
        return "dead"
    if activation in SATURATION_BOUNDS:
        return "saturated"
    return None


def has_final_activation(model: nn.Module) -> bool:
    """True when an activation follows the output layer (`model.final_activation`)."""
    modules = list(model.children())
    return bool(modules) and not isinstance(modules[-1], (nn.Linear, nn.Dropout))


def diagnostic_columns(model: nn.Module, activation: str | None) -> list[str]:
    """The `metrics.csv` columns that `GradientMonitor` and `activation_statistics` fill."""
    names = layer_names(model)
    columns = [layer_column("grad_rms", n) for n in names] + list(GRADIENT_COLUMNS)
    measure = unit_measure(activation)
    for hidden in names[:-1]:
        columns += [layer_column(m, hidden) for m in ("act_mean", "act_std", "signal")]
        if measure:
            columns.append(layer_column(measure, hidden))
    if has_final_activation(model):
        columns.append(layer_column("dead", "out"))
    return columns


class GradientMonitor:
    """Gradient norms of an epoch's steps in a device table (a row per measured step);
    `epoch_values` gives the epoch's means.

    A measured step costs one norm per parameter tensor and one copy into its row; totals, RMS
    and the clip fraction are computed once per epoch from the table. With `stride` k > 1 (eager
    steps of a long epoch, see `measure_stride`) every k-th step is measured, from the first:
    reading every gradient once more costs an eager CPU step about 7%, the sample of at most
    `DIAGNOSTIC_STEPS` a fraction of that. With clipping every step's global norm is needed
    anyway and is kept, so `grad_norm_total` and `clip_fraction` always cover every step.
    Everything `step` does is a device operation writing into tensors made here, so it can be
    captured in a CUDA graph (stride 1) and replayed with the step number as a device counter:
    that is why the caller numbers the steps."""

    def __init__(
        self, model: nn.Module, grad_clip: float | None = None, steps: int = 1, stride: int = 1
    ) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        weights = [layer.weight for layer in linear_layers(model)]
        self.grad_clip = grad_clip
        self.stride = stride
        device = self.params[0].device
        self.weight_index = torch.tensor(
            [next(i for i, p in enumerate(self.params) if p is w) for w in weights], device=device
        )
        # 1 / sqrt(element count) per weight matrix: a norm times it is the RMS
        self.rms_scale = torch.tensor([w.numel() ** -0.5 for w in weights], device=device)
        rows = math.ceil(steps / stride)
        self.norms = torch.zeros(rows, len(self.params), device=device)  # a measured step each
        # with clipping, every step's global norm (clipping computes it anyway)
        self.totals = torch.zeros(steps if grad_clip is not None else 0, device=device)

    def step(self, step: int | torch.Tensor = 0) -> torch.Tensor | None:
        """Record step `step` of the epoch (call after backward): a step number, or with stride
        1 a one-element index tensor on the device (a graph step's counter). Returns the global
        norm when clipping needs it, else None."""
        grads = [p.grad for p in self.params]
        assert isinstance(step, int) or self.stride == 1, "a device step counter needs stride 1"
        measured = not isinstance(step, int) or step % self.stride == 0
        if not measured:
            if self.grad_clip is None:
                return None
            stacked = torch.stack(torch._foreach_norm(grads))
        elif isinstance(step, int):
            stacked = torch.stack(torch._foreach_norm(grads), out=self.norms[step // self.stride])
        else:
            stacked = torch.stack(torch._foreach_norm(grads))
            self.norms.index_copy_(0, step, stacked[None])
        if self.grad_clip is None:
            return None
        total = torch.linalg.vector_norm(stacked)
        if isinstance(step, int):
            self.totals[step] = total
        else:
            self.totals.index_copy_(0, step, total[None])
        return total

    def clip(self, total: torch.Tensor | None) -> None:
        """Clip the gradients to `grad_clip` using the norm `step` already computed."""
        if self.grad_clip is not None and total is not None:
            nn.utils.clip_grads_with_norm_(self.params, self.grad_clip, total)

    def epoch_values(self, steps: int) -> torch.Tensor:
        """Mean per-layer weight-gradient RMS and mean global norm over the measured steps of the
        epoch's first `steps`, and the clip fraction (with clipping, global norm and clip
        fraction over every step)."""
        norms = self.norms[: math.ceil(max(steps, 1) / self.stride)]
        rms = norms[:, self.weight_index].mean(dim=0) * self.rms_scale
        if self.grad_clip is None:
            total = torch.linalg.vector_norm(norms, dim=1).mean()
            clipped = torch.zeros((), device=norms.device)
        else:
            totals = self.totals[: max(steps, 1)]
            total, clipped = totals.mean(), (totals > self.grad_clip).float().mean()
        return torch.cat([rms, total[None], clipped[None]])

    def reset(self) -> None:
        self.norms.zero_()
        self.totals.zero_()


def measure_stride(steps: int, every_step: bool) -> int:
    """Every how many steps an epoch of `steps` measures its gradients: 1 for `every_step` (a
    CUDA graph replays the same recorded step, where the norms cost next to nothing), else the
    fewest that measure at most `DIAGNOSTIC_STEPS` of them."""
    return 1 if every_step else max(1, math.ceil(steps / DIAGNOSTIC_STEPS))


@torch.inference_mode()
def activation_statistics(
    model: nn.Sequential, x: torch.Tensor, activation: str | None
) -> torch.Tensor:
    """Per hidden layer: mean and std of its outputs on `x`, its signal (per-unit std across
    the samples, RMS over units), then its dead or saturated share (when the activation has
    one); then, with an activation after the output layer, the share of output units constant
    over `x`: in the order of `diagnostic_columns`."""
    model.eval()
    measure = unit_measure(activation)
    hidden = len(linear_layers(model)) - 1
    values: list[torch.Tensor] = []
    pre = None
    h = x
    for module in model:
        out = module(h)
        if isinstance(module, nn.Linear):
            pre = out
        elif pre is not None and len(values) < hidden * (4 if measure else 3):
            # the activation after a hidden layer (not the opt-in one after the output layer)
            signal = out.float().std(dim=0).square().mean().sqrt()
            values += [out.mean(), out.std(), signal]
            if measure == "dead":
                values.append((pre <= 0).all(dim=0).float().mean())
            elif measure == "saturated":
                low, high = SATURATION_BOUNDS[activation]
                near = (out < low + SATURATION_MARGIN) | (out > high - SATURATION_MARGIN)
                values.append(near.float().mean())
            pre = None
        h = out
    if has_final_activation(model):
        values.append((h.amax(dim=0) == h.amin(dim=0)).float().mean())
    if not values:
        return torch.zeros(0, device=x.device)
    return torch.stack(values)


def initial_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, grad_clip: float | None = None
) -> torch.Tensor:
    """Epoch 0's gradient columns: the per-layer RMS and the global norm of the gradient of the
    mean loss on (x, y) (one pass, eval mode: dropout off, no random numbers drawn), and 1.0
    where clipping would fire on it. The gradients are then dropped (no optimizer step)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x).float(), y).backward()
    monitor = GradientMonitor(model, grad_clip, steps=1)
    monitor.step(0)
    model.zero_grad(set_to_none=True)
    return monitor.epoch_values(1)
