"""The optimizer of a pack: torch.optim's SGD, momentum (with Nesterov), Adam and AdamW update
rules over stacked parameters ([members, ...]), every hyperparameter a per-member tensor, and
only the members that step this step updated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

OPTIMIZER_KINDS = ("sgd", "momentum", "adam", "adamw")


def _per_member(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """A [members, 1, 1] float32 tensor, broadcast against stacked [members, a, b] tensors."""
    return torch.tensor([float(v) for v in values], device=device).view(-1, 1, 1)


class PackOptimizer:
    """SGD, SGD with momentum, Adam or AdamW over stacked parameters ([members, ...]), each
    member with its own hyperparameters, updating only the members marked active. The update
    rules are torch.optim's (`torch/optim/sgd.py`, `adam.py`), elementwise, so each member's
    slice gets what its own optimizer would give it; every operation is a device tensor op, so
    the step can be captured in a CUDA graph."""

    def __init__(self, params: Sequence[torch.Tensor], configs: Sequence[Mapping[str, Any]]):
        kinds = {c["name"] for c in configs}
        if len(kinds) != 1 or next(iter(kinds)) not in OPTIMIZER_KINDS:
            raise ValueError(f"a pack needs one optimizer kind of {OPTIMIZER_KINDS}, got {kinds}")
        self.kind = next(iter(kinds))
        device = params[0].device
        self.params = list(params)
        self.lr = _per_member([c["lr"] for c in configs], device)
        self.weight_decay = _per_member([c.get("weight_decay", 0.0) for c in configs], device)
        self.decays = any(c.get("weight_decay", 0.0) for c in configs)
        if self.kind == "momentum":
            self.momentum = _per_member([c["momentum"] for c in configs], device)
            self.nesterov = bool(configs[0]["nesterov"])
            self.buffers = [torch.zeros_like(p) for p in self.params]
        if self.kind in ("adam", "adamw"):
            self.beta1 = _per_member([c["betas"][0] for c in configs], device)
            self.beta2 = _per_member([c["betas"][1] for c in configs], device)
            self.eps = _per_member([c["eps"] for c in configs], device)
            self.steps = torch.zeros(len(configs), 1, 1, device=device)
            self.exp_avg = [torch.zeros_like(p) for p in self.params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def state(self) -> list[torch.Tensor]:
        """Every state tensor (zeroed for a fresh start)."""
        if self.kind == "momentum":
            return self.buffers
        if self.kind in ("adam", "adamw"):
            return [self.steps, *self.exp_avg, *self.exp_avg_sq]
        return []

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One update of the members where `active` ([members, 1, 1] bool) is set. The others
        are left exactly as they are: their step size and mixing weights are 0 (their
        gradients are finite: a member that ended is zeroed), so every update is one in-place
        pass over the stacked tensors, as torch.optim's own."""
        on = active.float()
        if self.kind in ("adam", "adamw"):
            self._adam(active, on)
            return
        lr = self.lr * on
        keep = torch.where(active, self.momentum, 1.0) if self.kind == "momentum" else None
        for i, p in enumerate(self.params):
            d_p = p.grad
            if self.decays and self.kind != "adamw":
                d_p = torch.addcmul(d_p, p, self.weight_decay)
            if self.kind == "momentum":
                buf = self.buffers[i]
                buf.mul_(keep).addcmul_(d_p, on)
                d_p = torch.addcmul(d_p, buf, self.momentum) if self.nesterov else buf
            p.addcmul_(d_p, lr, value=-1)

    def _adam(self, active: torch.Tensor, on: torch.Tensor) -> None:
        self.steps.add_(on)
        step = self.steps.clamp(min=1)
        bias_correction2_sqrt = (1 - self.beta2.pow(step)).sqrt()
        step_size = self.lr / (1 - self.beta1.pow(step)) * on
        first, second = (1 - self.beta1) * on, (1 - self.beta2) * on
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            grad = p.grad
            if self.decays and self.kind == "adamw":
                p.mul_(1 - self.lr * self.weight_decay * on)
            elif self.decays:
                grad = torch.addcmul(grad, p, self.weight_decay)
            m.lerp_(grad, first)
            v.lerp_(grad * grad, second)
            denom = v.sqrt().div_(bias_correction2_sqrt).add_(self.eps)
            p.addcdiv_(m * step_size, denom, value=-1)
