"""One optimiser over a pack's stacked parameters (kdrun.engine.packed_students) whose learning rate and weight
decay may differ per member: kdrun's three optimisers (sgd, adam, adamw) written element-wise with per-member
hyper-parameter tensors broadcast along the stacked dimension.

With equal hyper-parameters, torch.optim over the stacked tensors already takes each member's step. Members
that differ in `lr` or `weight_decay` need this one: the group's `lr` stays a plain number, a factor that
learning-rate schedulers (LambdaLR and the like) scale as usual, and member k's rate is `lr * member_lr[k]`, so
every member follows the same schedule from its own peak rate. Momentum, nesterov and betas are shared by the
pack (jobs that differ in them go to different packs). Each step is the torch.optim formula for that member
(tests/engine/test_packed_optimizer.py checks it against torch.optim, run per member).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

STACKED_OPTIMIZERS = ("sgd", "adam", "adamw")


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) values shaped to broadcast over a stacked tensor (K, ...)."""
    values = torch.as_tensor(values, dtype=torch.float64)  # also a list, from a group added or loaded later
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer(torch.optim.Optimizer):
    """`name` (sgd | adam | adamw) over stacked parameters, member k with peak rate `member_lr[k]` and weight
    decay `member_weight_decay[k]` (a group may set its own `member_weight_decay`, e.g. zeros for biases)."""

    def __init__(self, params: Iterable, name: str, member_lr: Sequence[float],
                 member_weight_decay: Sequence[float], momentum: float = 0.0, nesterov: bool = False,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if name not in STACKED_OPTIMIZERS:
            raise ValueError(f"optimizer {name!r}; allowed: {', '.join(STACKED_OPTIMIZERS)}")
        member_lr = torch.as_tensor(member_lr, dtype=torch.float64)
        member_weight_decay = torch.as_tensor(member_weight_decay, dtype=torch.float64)
        if member_lr.shape != member_weight_decay.shape or member_lr.dim() != 1:
            raise ValueError(f"one learning rate and one weight decay per member; got {list(member_lr.shape)} and "
                             f"{list(member_weight_decay.shape)}")
        if nesterov and momentum <= 0:
            raise ValueError("nesterov needs a momentum > 0 (as torch.optim.SGD)")
        self.name = name
        defaults = {"lr": 1.0, "member_lr": member_lr, "member_weight_decay": member_weight_decay,
                    "momentum": momentum, "nesterov": nesterov, "betas": tuple(betas), "eps": eps}
        super().__init__(params, defaults)
        self._shaped: dict = {}  # per-member values shaped for each parameter, made once (not once per step)
        for group in self.param_groups:
            for key in ("member_lr", "member_weight_decay"):
                group[key] = torch.as_tensor(group[key], dtype=torch.float64)
            for p in group["params"]:
                if p.shape[0] != len(member_lr):
                    raise ValueError(f"a parameter stacked over {p.shape[0]} members, hyper-parameters for "
                                     f"{len(member_lr)}")

    @torch.no_grad()
    def freeze_member(self, member: int) -> None:
        """Member `member` takes no further steps: a zero rate and zeroed optimiser state (a zero rate alone
        would still add 0 x a non-finite update)."""
        for group in self.param_groups:
            group["member_lr"] = group["member_lr"].clone()
            group["member_lr"][member] = 0.0
            for p in group["params"]:
                for value in self.state.get(p, {}).values():
                    if isinstance(value, torch.Tensor) and value.dim() > 0:
                        value[member].zero_()
        self._shaped.clear()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._shaped.clear()  # the loaded groups' per-member values, shaped anew

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                lr = group["lr"] * self._per_member(group, "member_lr", p)
                decay = self._per_member(group, "member_weight_decay", p)
                state = self.state[p]
                if self.name == "sgd":
                    self._sgd(p, p.grad, state, lr, decay, group)
                else:
                    self._adam(p, p.grad, state, lr, decay, group)
        return loss

    def _per_member(self, group: dict, key: str, p: torch.Tensor) -> torch.Tensor:
        """group[key] (K,) on p's device and dtype, shaped to broadcast over p (K, ...)."""
        cached = self._shaped.get((id(p), key))
        if cached is None or cached.device != p.device or cached.dtype != p.dtype:
            cached = self._shaped[(id(p), key)] = _per_member(group[key], p)
        return cached

    @staticmethod
    def _sgd(p, grad, state, lr, decay, group) -> None:
        d_p = grad + decay * p
        momentum = group["momentum"]
        if momentum > 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = d_p.clone()
            else:
                buffer.mul_(momentum).add_(d_p)
            d_p = d_p + momentum * buffer if group["nesterov"] else buffer
        p.sub_(lr * d_p)

    def _adam(self, p, grad, state, lr, decay, group) -> None:
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        if self.name == "adamw":
            p.mul_(1 - lr * decay)  # decoupled decay, before the moment update (torch.optim.AdamW)
        else:
            grad = grad + decay * p  # L2 in the gradient (torch.optim.Adam)
        state["step"] += 1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** state["step"]
        bias_correction2_sqrt = (1 - beta2 ** state["step"]) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(group["eps"])
        p.sub_((lr / bias_correction1) * exp_avg / denom)
