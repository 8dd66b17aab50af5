"""Synthetic sources of the papers. Where the Bayes probabilities p*(y|x) have a closed
form they are exposed per sample as `Split.oracle_probs`, for oracle teachers and metrics."""

from __future__ import annotations

import numpy as np

from kdrun.data.registry import register_source
from kdrun.data.sources import SourceSplits, Split, tensor_split
from kdrun.config.checks import (check_choice, check_fraction, check_number, check_seed,
                                check_whole_number)

SEPARATION_MODES = ("mean_scale", "euclidean_distance")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=1, keepdims=True)


def _positive_int(cfg, key: str, meaning: str | None = None) -> int:
    return check_whole_number(cfg.get(key), f"data.{key}", minimum=1, meaning=meaning)


def _check_draws(cfg) -> None:
    """What every synthetic source shares: the split sizes and the seed of the draw."""
    for key in ("n_train", "n_val", "n_test"):
        _positive_int(cfg, key, "samples drawn for the split")
    check_seed(cfg.get("generator_seed"), "data.generator_seed", meaning="draws the samples")


def _number(cfg, key: str, **bounds):
    return check_number(cfg.get(key), f"data.{key}", **bounds)


def _splits(draw, cfg, num_classes: int, input_shape, bayes_probs=None) -> SourceSplits:
    sizes = {key: cfg[key] for key in ("n_train", "n_val", "n_test")}
    return SourceSplits(train=draw(sizes["n_train"]), val=draw(sizes["n_val"]), test=draw(sizes["n_test"]),
                        num_classes=num_classes, input_shape=tuple(input_shape), bayes_probs=bayes_probs)


# --- paper 001, section 5.1 -------------------------------------------------------------

def gaussian_binary_mean_scale(cfg) -> float:
    """mu such that the class means are +-mu*(1,...,1).

    Paper 001 sweeps a separation r without saying how r maps to the means, hence
    `separation_mode`: `mean_scale` (mu = r) or `euclidean_distance` (|mu_+ - mu_-| = r).
    """
    if cfg.get("separation") is None:
        return float(cfg.mean_scale)
    r = float(cfg.separation)
    mode = check_choice(cfg.get("separation_mode", "mean_scale"), "data.separation_mode", SEPARATION_MODES)
    if mode == "euclidean_distance":
        return r / (2.0 * np.sqrt(cfg.dim))
    return r


def gaussian_binary_bayes_probs(x: np.ndarray, mean_scale: float, prior: float = 0.5) -> np.ndarray:
    """p*(y|x) for x|y ~ N(+-mu*1, I): p*(y=1|x) = sigmoid(theta*.x + log(pi/(1-pi))), theta* = 2*mu*1."""
    logit = 2.0 * mean_scale * x.sum(axis=1) + np.log(prior / (1.0 - prior))
    p1 = _sigmoid(logit)
    return np.stack([1.0 - p1, p1], axis=1)


def _check_gaussian_binary(cfg) -> None:
    _check_draws(cfg)
    _positive_int(cfg, "dim", "input dimensions")
    _number(cfg, "mean_scale", low=0, meaning="mu: the class means are +-mu*(1,...,1)")
    _number(cfg, "separation", low=0, allow_none=True, meaning="r; null: use mean_scale")
    check_choice(cfg.get("separation_mode", "mean_scale"), "data.separation_mode", SEPARATION_MODES)
    check_fraction(cfg.get("prior", 0.5), "data.prior", False, False, meaning="P(y = 1)")


@register_source("gaussian_binary", options=_check_gaussian_binary)
def load_gaussian_binary(cfg) -> SourceSplits:
    """Two Gaussians with means +-mu*(1,...,1), identity covariance, P(y=1) = prior."""
    mu, prior = gaussian_binary_mean_scale(cfg), float(cfg.get("prior", 0.5))
    rng = np.random.default_rng(cfg.generator_seed)

    def draw(n: int) -> Split:
        y = (rng.random(n) < prior).astype(np.int64)
        x = np.where(y == 1, 1.0, -1.0)[:, None] * mu + rng.standard_normal((n, cfg.dim))
        return tensor_split(x.astype(np.float32), y, gaussian_binary_bayes_probs(x, mu, prior))

    return _splits(draw, cfg, 2, (cfg.dim,), lambda x: gaussian_binary_bayes_probs(x, mu, prior))


# --- paper 001, section 5.2 -------------------------------------------------------------

def linf_slab_bayes_probs(x: np.ndarray, sharpness: float, offset: float) -> np.ndarray:
    """p*(y=1|x) = sigmoid(k * (||x||_inf - c)): negatives concentrate in a square around 0."""
    p1 = _sigmoid(sharpness * (np.abs(x).max(axis=1) - offset))
    return np.stack([1.0 - p1, p1], axis=1)


def _check_linf_slab_2d(cfg) -> None:
    _check_draws(cfg)
    _number(cfg, "scale", low=0, low_inclusive=False, meaning="x ~ N(0, scale^2 I_2)")
    _number(cfg, "sharpness", low=0, meaning="k in sigmoid(k (||x||_inf - c))")
    _number(cfg, "offset", meaning="c in sigmoid(k (||x||_inf - c))")


@register_source("linf_slab_2d", options=_check_linf_slab_2d)
def load_linf_slab_2d(cfg) -> SourceSplits:
    """x ~ N(0, s^2 I_2), y ~ Bernoulli(p*(y=1|x))."""
    rng = np.random.default_rng(cfg.generator_seed)

    def draw(n: int) -> Split:
        x = cfg.scale * rng.standard_normal((n, 2))
        probs = linf_slab_bayes_probs(x, cfg.sharpness, cfg.offset)
        y = (rng.random(n) < probs[:, 1]).astype(np.int64)
        return tensor_split(x.astype(np.float32), y, probs)

    return _splits(draw, cfg, 2, (2,), lambda x: linf_slab_bayes_probs(x, cfg.sharpness, cfg.offset))


# --- paper 004, section 5.1 / appendix A.5 ----------------------------------------------

def gaussian_mixture_means(num_classes: int, dim: int, seed: int) -> np.ndarray:
    """Class means with entries drawn uniformly from {-1, 0, 1}."""
    return np.random.default_rng(seed).integers(-1, 2, size=(num_classes, dim)).astype(np.float64)


def gaussian_mixture_bayes_probs(x: np.ndarray, means: np.ndarray, sigma: float) -> np.ndarray:
    """p*(y=k|x) proportional to exp(-||x - mu_k||^2 / (2 sigma^2)) (equal priors)."""
    squared = ((x[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    return _softmax(-squared / (2.0 * sigma**2))


def _check_gaussian_mixture(cfg) -> None:
    _check_draws(cfg)
    _positive_int(cfg, "dim", "input dimensions")
    _positive_int(cfg, "num_classes", "one Gaussian per class")
    _number(cfg, "sigma", low=0, low_inclusive=False, meaning="x | y=k ~ N(mu_k, sigma^2 I)")
    check_seed(cfg.get("means_seed"), "data.means_seed", meaning="draws the class means")


@register_source("gaussian_mixture", options=_check_gaussian_mixture)
def load_gaussian_mixture(cfg) -> SourceSplits:
    """Uniform labels, x | y=k ~ N(mu_k, sigma^2 I)."""
    means = gaussian_mixture_means(cfg.num_classes, cfg.dim, cfg.means_seed)
    rng = np.random.default_rng(cfg.generator_seed)

    def draw(n: int) -> Split:
        y = rng.integers(0, cfg.num_classes, size=n)
        x = means[y] + cfg.sigma * rng.standard_normal((n, cfg.dim))
        return tensor_split(x.astype(np.float32), y, gaussian_mixture_bayes_probs(x, means, cfg.sigma))

    return _splits(draw, cfg, int(cfg.num_classes), (cfg.dim,),
                   lambda x: gaussian_mixture_bayes_probs(x, means, cfg.sigma))


# --- paper 000, appendix C.5 ------------------------------------------------------------

def _sphere(rng, n: int, dim: int) -> np.ndarray:
    z = rng.standard_normal((n, dim))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _aligned_channel(rng, centres: np.ndarray, alpha: float) -> np.ndarray:
    """alpha*mu + (1-alpha)*z with z uniform on the sphere, truncated (by rejection) to a positive margin."""
    out = alpha * centres + (1 - alpha) * _sphere(rng, len(centres), centres.shape[1])
    bad = (out * centres).sum(axis=1) <= 0
    while bad.any():
        out[bad] = alpha * centres[bad] + (1 - alpha) * _sphere(rng, int(bad.sum()), centres.shape[1])
        bad = (out * centres).sum(axis=1) <= 0
    return out


def _check_kchannel(cfg) -> None:
    _check_draws(cfg)
    k = _positive_int(cfg, "num_classes", "K channels, one per class")
    _positive_int(cfg, "channel_dim", "D dimensions per channel")
    check_fraction(cfg.get("alpha"), "data.alpha", meaning="the target channel is alpha*mu_y + (1-alpha)*z")
    check_whole_number(cfg.get("num_similar"), "data.num_similar", minimum=0, maximum=k - 1,
                       meaning="similar classes per sample, at most num_classes-1")
    for key in ("beta_a", "beta_b"):
        _number(cfg, key, low=0, low_inclusive=False, meaning="a parameter of Beta(beta_a, beta_b)")
    check_choice(cfg.get("similar_scaling"), "data.similar_scaling", ("literal", "margin"))
    check_seed(cfg.get("means_seed"), "data.means_seed", meaning="draws the class means")


@register_source("kchannel", options=_check_kchannel)
def load_kchannel(cfg) -> SourceSplits:
    """K channels of D dims; the target channel carries the class signal, `num_similar` other
    (similar) channels a weaker copy of theirs, the rest are zero. Input is flattened (K*D,).

    The similar channels' scale beta = Beta(a, b) * 0.8 * margin_y is ambiguous in the paper:
    `similar_scaling=literal` multiplies the channel by beta as printed; `margin` scales it so
    that its own margin x_k.mu_k equals beta, below the target margin as the text intends.
    p* has no closed form here, so no oracle is exposed.
    """
    k, d, alpha = int(cfg.num_classes), int(cfg.channel_dim), float(cfg.alpha)
    means = np.random.default_rng(cfg.means_seed).standard_normal((k, d))
    rng = np.random.default_rng(cfg.generator_seed)

    def draw(n: int) -> Split:
        y = rng.integers(0, k, size=n)
        x = np.zeros((n, k, d))
        rows = np.arange(n)
        x[rows, y] = _aligned_channel(rng, means[y], alpha)
        margin = (x[rows, y] * means[y]).sum(axis=1)
        for _ in range(int(cfg.num_similar)):  # drawn with replacement, as the notes read the paper
            similar = (y + rng.integers(1, k, size=n)) % k
            channel = _aligned_channel(rng, means[similar], alpha)
            beta = rng.beta(cfg.beta_a, cfg.beta_b, size=n) * 0.8 * margin
            if cfg.similar_scaling == "margin":
                beta = beta / (channel * means[similar]).sum(axis=1)
            x[rows, similar] = beta[:, None] * channel
        return tensor_split(x.reshape(n, k * d).astype(np.float32), y)

    return _splits(draw, cfg, k, (k * d,))
