"""Oracle teachers: frozen modules that answer with the source's exact p*(y|x) or a distortion of it.

`teacher.oracle` selects one for synthetic sources that know p* in closed form
(`SourceSplits.bayes_probs`): `bayes` (Bayes distillation, paper 001 eq. 7), `noisy_biased`
(eq. 16: `oracle_options.bias` is its alpha, `sigma` its noise) or `calibration_distorted`
(Psi_alpha, appendix B.2: `oracle_options.distortion` is its alpha); the formulas and the paper's
ambiguities are in `kdrun.losses.functional.oracle`. Nothing is trained or stored.

A teacher's noise must be fixed per example (one teacher draw), yet a module sees only inputs,
not dataset indices. The noise of each input is therefore drawn from a generator seeded by the
input's bytes and `teacher.oracle_options.seed`: the same example always gets the same eps,
different examples independent ones, and another seed is another teacher draw.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import torch
from torch import nn

from kdrun.errors import ConfigError
from kdrun.losses.functional.oracle import (NOISE_SCALES, PSI_FORMS, calibration_distorted_probs,
                                            noisy_biased_probs)
from kdrun.config.checks import (check_choice, check_fraction, check_keys, check_mapping, check_number,
                                check_seed, fail)

ORACLES = ("bayes", "noisy_biased", "calibration_distorted")


class OracleTeacher(nn.Module):
    """x -> log p_t(y|x) (log-probabilities serve as logits: softmax gives p_t back)."""

    def __init__(self, bayes_probs: Callable[[np.ndarray], np.ndarray], kind: str, bias: float = 0.0,
                 sigma: float = 0.0, noise_scale: str = "sigma_squared", distortion: float = 1.0,
                 psi_form: str = "corrected", seed: int = 0):
        super().__init__()
        self.bayes_probs, self.kind, self.seed = bayes_probs, kind, seed
        self.bias, self.sigma, self.noise_scale = bias, sigma, noise_scale
        self.distortion, self.psi_form = distortion, psi_form
        self.register_buffer("device_anchor", torch.zeros(()), persistent=False)  # follows .to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().flatten(1).to("cpu", torch.float64).numpy()
        probs = torch.as_tensor(self.bayes_probs(flat), dtype=torch.float64)
        if self.kind == "noisy_biased":
            probs = noisy_biased_probs(probs, self.bias, self.sigma, self._noise(flat, probs.shape[-1]),
                                       self.noise_scale)
        elif self.kind == "calibration_distorted":
            probs = calibration_distorted_probs(probs, self.distortion, self.psi_form)
        return probs.clamp_min(1e-30).log().to(x.device, torch.float32)

    def _noise(self, flat: np.ndarray, num_classes: int) -> torch.Tensor:
        rows = []
        for row in flat.astype(np.float32):  # the float32 bytes the models see, so train and eval agree
            digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=str(self.seed).encode()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") & 0x7FFFFFFFFFFFFFFF)
            rows.append(torch.randn(num_classes, generator=generator, dtype=torch.float64))
        return torch.stack(rows)


ORACLE_OPTIONS = {"bias": 0.0, "sigma": 0.0, "noise_scale": "sigma_squared", "distortion": 1.0,
                  "psi_form": "corrected", "seed": 0}


def check_oracle_config(teacher_cfg) -> dict:
    """`teacher.oracle` and `teacher.oracle_options` (defaults filled in), from the config alone.

    The options are checked even without an oracle: they are one block with documented defaults, and
    a bad value there is a mistake whether or not this run reads it."""
    where = "teacher.oracle_options"
    check_choice(teacher_cfg.get("oracle"), "teacher.oracle", (None, *ORACLES),
                 meaning="null: a trained or imported network")
    options = check_mapping(teacher_cfg.get("oracle_options"), where, allow_none=True) or {}
    check_keys(options, where, tuple(ORACLE_OPTIONS))
    options = {**ORACLE_OPTIONS, **options}
    check_fraction(options["bias"], f"{where}.bias", meaning="eq. 16's alpha: the weight of the uniform part")
    check_number(options["sigma"], f"{where}.sigma", low=0, meaning="eq. 16's noise scale")
    check_choice(options["noise_scale"], f"{where}.noise_scale", NOISE_SCALES)
    check_number(options["distortion"], f"{where}.distortion", low=1,
                 meaning="Psi_alpha keeps the accuracy only for alpha >= 1; 1 = no distortion")
    check_choice(options["psi_form"], f"{where}.psi_form", PSI_FORMS)
    check_seed(options["seed"], f"{where}.seed", meaning="the noise draw")
    return options


def build_oracle_teacher(cfg, source, options: dict | None = None) -> OracleTeacher:
    """The oracle teacher `cfg.teacher.oracle` for `source`; `options`: the checked oracle options
    (check_oracle_config, which runs here when they are not given)."""
    options = options if options is not None else check_oracle_config(cfg.teacher)
    kind = cfg.teacher.oracle
    if kind is None:
        fail("teacher.oracle", kind, "names no oracle", ", ".join(ORACLES))
    if source.bayes_probs is None:
        raise ConfigError(
            f"teacher.oracle={kind} needs the exact p*(y|x), which data.source={cfg.data.source!r} does not know; "
            f"allowed sources: gaussian_binary, linf_slab_2d, gaussian_mixture"
        )
    return OracleTeacher(source.bayes_probs, kind, float(options["bias"]), float(options["sigma"]),
                         options["noise_scale"], float(options["distortion"]), options["psi_form"], options["seed"])
