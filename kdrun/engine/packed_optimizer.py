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
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # each formula runs over the group's tensors at once (torch._foreach_*, as torch.optim's foreach
            # implementations): a pack's many small tensors would otherwise pay a dispatch per op and tensor
            lrs = torch._foreach_mul([self._per_member(group, "member_lr", p) for p in params], group["lr"])
            decays = [self._per_member(group, "member_weight_decay", p) for p in params]
            states = [self.state[p] for p in params]
            grads = [p.grad for p in params]
            if self.name == "sgd":
                self._sgd(params, grads, states, lrs, decays, group)
            else:
                self._adam(params, grads, states, lrs, decays, group)
        return loss

    def _per_member(self, group: dict, key: str, p: torch.Tensor) -> torch.Tensor:
        """group[key] (K,) on p's device and dtype, shaped to broadcast over p (K, ...)."""
        cached = self._shaped.get((id(p), key))
        if cached is None or cached.device != p.device or cached.dtype != p.dtype:
            cached = self._shaped[(id(p), key)] = _per_member(group[key], p)
        return cached

    @staticmethod
    def _sgd(params, grads, states, lrs, decays, group) -> None:
        d_ps = torch._foreach_add(grads, torch._foreach_mul(decays, params))  # grad + decay * p
        momentum = group["momentum"]
        if momentum > 0:
            fresh = {i for i, state in enumerate(states) if "momentum_buffer" not in state}
            for i in fresh:  # the first step: the buffer starts at d_p (torch.optim.SGD)
                states[i]["momentum_buffer"] = d_ps[i].clone()
            ongoing = [i for i, state in enumerate(states) if i not in fresh]
            if ongoing:
                buffers = [states[i]["momentum_buffer"] for i in ongoing]
                torch._foreach_mul_(buffers, momentum)
                torch._foreach_add_(buffers, [d_ps[i] for i in ongoing])
            buffers = [state["momentum_buffer"] for state in states]
            d_ps = (torch._foreach_add(d_ps, torch._foreach_mul(buffers, momentum)) if group["nesterov"]
                    else buffers)
        torch._foreach_sub_(params, torch._foreach_mul(lrs, d_ps))  # p -= lr * d_p

    def _adam(self, params, grads, states, lrs, decays, group) -> None:
        beta1, beta2 = group["betas"]
        for p, state in zip(params, states):
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        if self.name == "adamw":  # decoupled decay, before the moment update (torch.optim.AdamW)
            factors = torch._foreach_mul(lrs, decays)
            torch._foreach_neg_(factors)
            torch._foreach_add_(factors, 1.0)  # 1 - lr * decay
            torch._foreach_mul_(params, factors)
        else:  # L2 in the gradient (torch.optim.Adam)
            grads = torch._foreach_add(grads, torch._foreach_mul(decays, params))
        for state in states:
            state["step"] += 1
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        bias_corrections1 = [1 - beta1 ** state["step"] for state in states]
        bias_corrections2_sqrt = [(1 - beta2 ** state["step"]) ** 0.5 for state in states]
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, bias_corrections2_sqrt)
        torch._foreach_add_(denominators, group["eps"])
        updates = torch._foreach_mul(torch._foreach_div(lrs, bias_corrections1), exp_avgs)  # (lr / bc1) * m
        torch._foreach_div_(updates, denominators)
        torch._foreach_sub_(params, updates)
