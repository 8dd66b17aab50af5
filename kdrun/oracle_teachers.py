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


def build_oracle_teacher(cfg, source) -> OracleTeacher:
    """The oracle teacher `cfg.teacher.oracle` for `source`, with its options checked."""
    kind = cfg.teacher.oracle
    if kind not in ORACLES:
        raise ConfigError(f"teacher.oracle={kind!r}; allowed: null (a trained network), {', '.join(ORACLES)}")
    if source.bayes_probs is None:
        raise ConfigError(
            f"teacher.oracle={kind} needs the exact p*(y|x), which data.source={cfg.data.source!r} does not know; "
            f"allowed sources: gaussian_binary, linf_slab_2d, gaussian_mixture"
        )
    options = cfg.teacher.get("oracle_options") or {}
    bias, sigma = float(options.get("bias", 0.0)), float(options.get("sigma", 0.0))
    distortion = float(options.get("distortion", 1.0))
    noise_scale, psi_form = options.get("noise_scale", "sigma_squared"), options.get("psi_form", "corrected")
    where = "teacher.oracle_options"
    if not 0.0 <= bias <= 1.0:
        raise ConfigError(f"{where}.bias={bias} is outside [0, 1] (eq. 16's alpha: the weight of the uniform part)")
    if sigma < 0:
        raise ConfigError(f"{where}.sigma={sigma} must be >= 0 (eq. 16's noise scale)")
    if noise_scale not in NOISE_SCALES:
        raise ConfigError(f"{where}.noise_scale={noise_scale!r}; allowed: {', '.join(NOISE_SCALES)}")
    if distortion < 1:
        raise ConfigError(f"{where}.distortion={distortion} must be >= 1 (Psi_alpha keeps the accuracy only for "
                          f"alpha >= 1; 1 = no distortion)")
    if psi_form not in PSI_FORMS:
        raise ConfigError(f"{where}.psi_form={psi_form!r}; allowed: {', '.join(PSI_FORMS)}")
    return OracleTeacher(source.bayes_probs, kind, bias, sigma, noise_scale, distortion, psi_form,
                         int(options.get("seed", 0)))
