"""Paper 004's perturbed loss (PTLoss), its proxy teacher and the quality score Q-hat.

PTLoss perturbs the Maclaurin series of the log in KL(p_t || p_s) (Eq. 4-7):

    l_PT-M(p_t, p_s) = KL(p_t || p_s) + sum_c p_t,c sum_{m=1..M} eps_{c,m} (1 - p_s,c)^m

With every eps = 0 it is exactly KL. Choices where the paper is ambiguous:
- coefficients: the paper writes a per-class matrix eps_{c,m} (Fig. 2 uses "eps = [1, 1]" for
  two classes at order 1) but samples "from [-1, 10]^M" (Fig. 4b), i.e. one vector shared by
  all classes. Every function here accepts an (M,) vector (shared), a (C, M) matrix
  (per class) or a (B, C, M) array (per example, as in the subsumption identities of App. A.1);
- temperature: the paper's PTLoss has none; `temperature` divides teacher and student logits
  like `kl_divergence_at_temperature` (no T^2 factor) and defaults to 1, the paper's loss;
- proxy teacher (Eq. 8-10): Eq. 10 read literally is one scalar equation for C unknowns. The
  reading used is the one the paper motivates ("the minimizer ... close to the final learned
  student"): per example, p_px = argmin_q l_PT-M(p_t, q), found from the stationarity condition
  q_j = (p_t,j + h_j(q)) / (1 + sum_c h_c(q)),  h_c(q) = p_t,c q_c sum_m m eps_{c,m} (1 - q_c)^(m-1).
  The paper solves it with scipy's fsolve from x0 = p_t; here a batched damped Newton method in
  logit space starts from the teacher's logits and only takes steps that lower l_PT-M, so with
  negative eps (where several stationary points may exist, which the paper does not discuss)
  it returns the local minimum reached by descending from the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ptloss",
    "ptloss_terms",
    "ptloss_with_teacher_probs",
    "ptloss_proxy_teacher",
    "ProxyTeacherReport",
    "ptloss_quality_score",
]


def _coefficients(epsilon: Tensor | list, like: Tensor) -> Tensor:
    """eps as a tensor broadcastable to (B, C, M): (M,) -> (1, 1, M), (C, M) -> (1, C, M)."""
    eps = torch.as_tensor(epsilon, dtype=like.dtype, device=like.device)
    if eps.dim() == 1:
        return eps.view(1, 1, -1)
    if eps.dim() == 2:
        return eps.unsqueeze(0)
    if eps.dim() == 3:
        return eps
    raise ValueError(f"epsilon has shape {tuple(eps.shape)}; allowed: (M,), (C, M) or (B, C, M)")


def _powers(base: Tensor, order: int) -> Tensor:
    """(..., C) -> (..., C, M): base^1 .. base^M."""
    exponents = torch.arange(1, order + 1, dtype=base.dtype, device=base.device)
    return base.unsqueeze(-1) ** exponents


def _perturbation(teacher_probs: Tensor, student_probs: Tensor, eps: Tensor) -> Tensor:
    """Per example sum_c p_t,c sum_m eps_{c,m} (1 - p_s,c)^m, shape (B,)."""
    pows = _powers(1.0 - student_probs, eps.shape[-1])
    return (teacher_probs.unsqueeze(-1) * eps * pows).sum(dim=(-1, -2))


def _kl_per_example(teacher_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    # xlogy makes 0 * log 0 = 0 for classes the teacher rules out
    return (torch.xlogy(teacher_probs, teacher_probs) - teacher_probs * student_log_probs).sum(-1)


def ptloss_with_teacher_probs(student_logits: Tensor, teacher_probs: Tensor, epsilon,
                              reduction: str = "mean") -> Tensor:
    """l_PT-M(p_t, softmax(z_s)) for teacher probabilities p_t (B, C); mean over the batch or per example."""
    student_log_probs = F.log_softmax(student_logits, dim=-1)
    eps = _coefficients(epsilon, student_logits)
    per_example = (_kl_per_example(teacher_probs, student_log_probs)
                   + _perturbation(teacher_probs, student_log_probs.exp(), eps))
    return per_example.mean() if reduction == "mean" else per_example


def ptloss_terms(student_logits: Tensor, teacher_logits: Tensor, epsilon,
                 temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """(KL(p_t^T || p_s^T), perturbation term), each averaged over the batch; their sum is `ptloss`."""
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_probs = F.softmax(teacher_logits / temperature, dim=-1)
    eps = _coefficients(epsilon, student_logits)
    kl = _kl_per_example(teacher_probs, student_log_probs).mean()
    perturbation = _perturbation(teacher_probs, student_log_probs.exp(), eps).mean()
    return kl, perturbation


def ptloss(student_logits: Tensor, teacher_logits: Tensor, epsilon, temperature: float = 1.0) -> Tensor:
    """Truncated PTLoss (Eq. 7), batch mean. Takes teacher *logits*, like `kd_loss`.

    epsilon: (M,) shared by all classes, (C, M) per class, or (B, C, M) per example.
    temperature: divides both logits (default 1 = the paper's loss; no T^2 factor).
    """
    kl, perturbation = ptloss_terms(student_logits, teacher_logits, epsilon, temperature)
    return kl + perturbation


@dataclass
class ProxyTeacherReport:
    """How the proxy-teacher solve ended.

    max_residual is the largest |q_j - (p_j + h_j) / (1 + H)| over examples and classes (the
    fixed-point form of the stationarity condition); `unconverged` counts examples above `tol`.
    """

    iterations: int
    max_residual: float
    converged: bool
    unconverged: int


def _solver_terms(logits: Tensor, teacher_probs: Tensor, eps: Tensor):
    """q, the logit gradient of l_PT-M and h, for logits (B, C)."""
    q = torch.softmax(logits, dim=-1)
    order = eps.shape[-1]
    u = 1.0 - q
    m = torch.arange(1, order + 1, dtype=q.dtype, device=q.device)
    # psi = sum_m m eps u^(m-1) = -phi'(q); chi = sum_m m (m-1) eps u^(m-2) = phi''(q)
    psi = (m * eps * u.unsqueeze(-1) ** (m - 1)).sum(-1)
    chi = (m * (m - 1) * eps * u.unsqueeze(-1) ** (m - 2).clamp_min(0)).sum(-1)
    h = teacher_probs * q * psi
    grad = q - teacher_probs - h + q * h.sum(-1, keepdim=True)
    return q, grad, h, psi, chi


def _objective(logits: Tensor, teacher_probs: Tensor, eps: Tensor) -> Tensor:
    """l_PT-M(p_t, softmax(z)) per example; logits may carry extra leading dims (line search)."""
    log_q = torch.log_softmax(logits, dim=-1)
    return _kl_per_example(teacher_probs, log_q) + _perturbation(teacher_probs, log_q.exp(), eps)


def _hessian(q: Tensor, teacher_probs: Tensor, h: Tensor, psi: Tensor, chi: Tensor) -> Tensor:
    """d^2 l_PT-M / dz dz for logits z (B, C, C), derived from q_c = softmax(z)_c.

    With a_c = -h_c, A = sum a, b_c = p_c q_c (phi'' q_c + phi') = p_c q_c (chi q_c - psi), B = sum b:
    H = diag(q) - q q^T + diag(b - A q) - b q^T - q b^T + (A + B) q q^T.
    """
    a_sum = -h.sum(-1, keepdim=True)
    b = teacher_probs * q * (chi * q - psi)
    b_sum = b.sum(-1, keepdim=True)
    outer_q = q.unsqueeze(-1) * q.unsqueeze(-2)
    cross = b.unsqueeze(-1) * q.unsqueeze(-2)
    return (torch.diag_embed(q + b - a_sum * q) - cross - cross.transpose(-1, -2)
            + (a_sum + b_sum - 1.0).unsqueeze(-1) * outer_q)


def ptloss_proxy_teacher(teacher_probs: Tensor, epsilon, tol: float = 1e-9, max_iterations: int = 100,
                         ) -> tuple[Tensor, ProxyTeacherReport]:
    """The proxy teacher p_px = argmin_q l_PT-M(p_t, q), per example, and a convergence report.

    teacher_probs: (N, C); epsilon: (M,), (C, M) or (N, C, M). Works in float64 and returns
    the teacher's dtype. Method: Newton steps on the logits with the logit of each example's
    most probable teacher class pinned (logits are shift-invariant; pinning the largest class
    keeps the reduced Hessian well conditioned), Levenberg-Marquardt damping where the Hessian
    is not positive definite, and a backtracking line search that accepts only steps lowering
    l_PT-M. Teacher probabilities of exactly 0 stay (numerically) 0, as the fixed-point form
    requires. With eps = 0 the proxy is the teacher itself.
    """
    dtype = teacher_probs.dtype
    p = teacher_probs.detach().to(torch.float64)
    p = p / p.sum(-1, keepdim=True)
    n, classes = p.shape
    eps = _coefficients(epsilon, p)
    if eps.shape[0] not in (1, n) or eps.shape[1] not in (1, classes):
        raise ValueError(f"epsilon of shape {tuple(eps.shape)} does not fit teacher probabilities {tuple(p.shape)}")
    eps = eps.expand(n, classes, eps.shape[-1])
    # Move each example's largest class last, so the pinned logit is the best-conditioned one.
    pinned = p.argmax(-1)
    order_idx = torch.arange(classes).repeat(n, 1)
    order_idx[torch.arange(n), pinned] = classes - 1
    order_idx[:, classes - 1] = pinned
    p = p.gather(1, order_idx)
    eps = eps.gather(1, order_idx.unsqueeze(-1).expand_as(eps))

    logits = torch.log(p.clamp_min(torch.finfo(torch.float64).tiny))
    logits = logits - logits[:, -1:]
    damping = torch.full((n,), 1e-6, dtype=torch.float64)
    steps = torch.tensor([1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 1e-3, 0.0], dtype=torch.float64)
    eye = torch.eye(classes - 1, dtype=torch.float64)
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        q, grad, h, psi, chi = _solver_terms(logits, p, eps)
        residual = (q - (p + h) / (1.0 + h.sum(-1, keepdim=True))).abs().amax(-1)
        active = residual > tol
        if not active.any():
            iterations -= 1
            break
        hessian = _hessian(q, p, h, psi, chi)[:, :-1, :-1]
        g = grad[:, :-1]
        # Raise the damping until the damped Hessian is positive definite (Cholesky succeeds).
        for _ in range(30):
            factor, info = torch.linalg.cholesky_ex(hessian + damping.view(-1, 1, 1) * eye)
            failed = info != 0
            if not failed.any():
                break
            damping = torch.where(failed, damping * 10.0, damping)
        direction = -torch.cholesky_solve(g.unsqueeze(-1), factor).squeeze(-1)
        direction = torch.cat([direction, torch.zeros(n, 1, dtype=torch.float64)], dim=-1)
        current = _objective(logits, p, eps)
        trial_logits = logits.unsqueeze(1) + steps.view(1, -1, 1) * direction.unsqueeze(1)
        trial = _objective(trial_logits, p.unsqueeze(1), eps.unsqueeze(1))
        # Largest step that does not raise the loss (step 0 always qualifies, so one is found).
        slack = 1e-12 * current.abs().unsqueeze(1) + 1e-15
        accepted = (trial <= current.unsqueeze(1) + slack).to(torch.float64).argmax(1)
        step = steps[accepted]
        step = torch.where(active, step, torch.zeros_like(step))
        logits = logits + step.unsqueeze(-1) * direction
        # Full steps: trust the Newton model more; short or no steps: damp harder.
        damping = torch.where(accepted == 0, (damping / 10.0).clamp_min(1e-12), damping * 10.0)
    q, _, h, _, _ = _solver_terms(logits, p, eps)
    residual = (q - (p + h) / (1.0 + h.sum(-1, keepdim=True))).abs().amax(-1)
    proxy = torch.empty_like(q).scatter_(1, order_idx, q)
    unconverged = int((residual > tol).sum())
    report = ProxyTeacherReport(iterations=iterations, max_residual=float(residual.max()) if n else 0.0,
                                converged=unconverged == 0, unconverged=unconverged)
    return proxy.to(dtype), report


def ptloss_quality_score(proxy_probs: Tensor, labels: Tensor) -> Tensor:
    """Q-hat of Eq. 11 (lower is better): (mean_n ||p_px - y_n||_2)^2 + mean_n (p_px^T log p_px)^2.

    The first term is the square of the mean L2 distance to the one-hot label (not the mean of
    squared distances); the second the mean squared negative entropy; 0 log 0 = 0; unweighted.
    """
    one_hot = F.one_hot(labels.long(), proxy_probs.shape[-1]).to(proxy_probs.dtype)
    distance = torch.linalg.vector_norm(proxy_probs - one_hot, dim=-1).mean()
    negative_entropy = torch.xlogy(proxy_probs, proxy_probs).sum(-1)
    return distance**2 + (negative_entropy**2).mean()
