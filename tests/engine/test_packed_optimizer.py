"""The pack's optimiser with per-member learning rates and weight decays takes, for each member, the step
torch.optim takes on that member alone, under a learning-rate schedule and with a group kept out of decay."""

from __future__ import annotations

import pytest
import torch

from kdrun.engine.packed_optimizer import StackedOptimizer

LR = [0.1, 0.03, 0.007]
DECAY = [0.0, 1e-3, 5e-2]


def SCHEDULE(step: int) -> float:  # a LambdaLR factor, the same for every member
    return 1.0 / (1.0 + 0.5 * step)


def _torch_optimizer(name, params, lr, decay, momentum, nesterov):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=decay)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](params, lr=lr, weight_decay=decay,
                                                                          betas=(0.8, 0.99))


@pytest.mark.parametrize("name, momentum, nesterov", [("sgd", 0.0, False), ("sgd", 0.9, False), ("sgd", 0.9, True),
                                                      ("adam", 0.0, False), ("adamw", 0.0, False)])
def test_each_member_takes_torchs_step_with_its_own_rate_and_decay(name, momentum, nesterov):
    generator = torch.Generator().manual_seed(0)
    # a weight matrix (decayed) and a bias (kept out of decay: its group's member decays are zero), stacked
    weight = torch.randn(3, 4, 5, generator=generator, dtype=torch.float64)
    bias = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    stacked = [weight.clone().requires_grad_(), bias.clone().requires_grad_()]
    pack = StackedOptimizer([{"params": [stacked[0]]}, {"params": [stacked[1]], "member_weight_decay": [0.0] * 3}],
                            name, LR, DECAY, momentum=momentum, nesterov=nesterov, betas=(0.8, 0.99))
    pack_schedule = torch.optim.lr_scheduler.LambdaLR(pack, SCHEDULE)
    members, schedules = [], []
    for k in range(3):
        params = [weight[k].clone().requires_grad_(), bias[k].clone().requires_grad_()]
        optimizer = _torch_optimizer(name, [{"params": [params[0]], "weight_decay": DECAY[k]},
                                            {"params": [params[1]], "weight_decay": 0.0}], LR[k], DECAY[k],
                                     momentum, nesterov)
        members.append((params, optimizer))
        schedules.append(torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULE))
    x = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    for step in range(6):
        pack.zero_grad()
        torch.einsum("koi,ni->kno", stacked[0], x * (step + 1)).add(stacked[1][:, None]).tanh().sum().backward()
        pack.step()
        pack_schedule.step()
        for (params, optimizer), schedule in zip(members, schedules):
            optimizer.zero_grad()
            (x * (step + 1) @ params[0].T + params[1]).tanh().sum().backward()
            optimizer.step()
            schedule.step()
    for k, (params, _) in enumerate(members):
        for packed, alone in zip(stacked, params):
            # float64, the same formulas: rounding only (torch's foreach kernels order a few operations otherwise)
            torch.testing.assert_close(packed[k], alone, rtol=1e-12, atol=1e-14)
    assert not torch.equal(stacked[0][0], weight[0])  # the members moved


def test_hyper_parameters_must_match_the_pack():
    parameter = torch.zeros(3, 2, requires_grad=True)
    with pytest.raises(ValueError, match="stacked over 3 members, hyper-parameters for 2"):
        StackedOptimizer([parameter], "sgd", [0.1, 0.1], [0.0, 0.0])
    with pytest.raises(ValueError, match="one learning rate and one weight decay per member"):
        StackedOptimizer([parameter], "adam", [0.1, 0.1, 0.1], [0.0])
    with pytest.raises(ValueError, match="optimizer 'rmsprop'; allowed: sgd, adam, adamw"):
        StackedOptimizer([parameter], "rmsprop", [0.1] * 3, [0.0] * 3)
