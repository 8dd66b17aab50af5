"""Closed forms of the papers' theory, checked numerically (they need no training, so no preset).

Paper 000, section 4.1 and Theorem 4.1: in gradient flow on least squares from zero, self-distillation
(the student regresses on the teacher's training outputs) exaggerates gradient descent's bias toward
the top eigendirections of XX^T."""

from __future__ import annotations

import numpy as np
import pytest


def gradient_descent(x: np.ndarray, targets: np.ndarray, steps: int, lr: float) -> np.ndarray:
    """Plain GD on (1/2) ||X beta - targets||^2 from beta = 0."""
    beta = np.zeros(x.shape[1])
    for _ in range(steps):
        beta -= lr * x.T @ (x @ beta - targets)
    return beta


def test_self_distillation_multiplies_the_eigenvalue_filters():
    """Eqs. (3)-(6): the teacher's component along v_k is alpha_k(T) (u_k . y) / s_k and the student's,
    trained on the teacher's outputs, alpha_k(t) alpha_k(T) (u_k . y) / s_k. Discrete GD with step lr
    has the filter 1 - (1 - lr lambda_k)^steps, the flow's 1 - exp(-lambda_k t) at t = lr * steps."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 30)) / np.sqrt(30)  # n < p: XX^T invertible
    y = rng.normal(size=12)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    lam, lr, teacher_steps, student_steps = s ** 2, 0.1, 40, 25
    teacher = gradient_descent(x, y, teacher_steps, lr)
    student = gradient_descent(x, x @ teacher, student_steps, lr)

    def filter_(steps):
        return 1 - (1 - lr * lam) ** steps

    coefficient = (u.T @ y) / s
    assert vt @ teacher == pytest.approx(filter_(teacher_steps) * coefficient, rel=1e-8, abs=1e-10)
    assert vt @ student == pytest.approx(filter_(student_steps) * filter_(teacher_steps) * coefficient,
                                         rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("alpha_star", [0.1, 0.5, 0.9])
def test_theorem_4_1_the_student_fits_less_of_every_lower_eigendirection(alpha_star):
    """With T_te = t~ chosen so that alpha~_1 = alpha*, every teacher that fits the top direction as
    well (alpha_1(t) >= alpha*) fits each lower direction better than the student does."""
    lam = np.sort(np.random.default_rng(1).uniform(0.05, 3.0, size=8))[::-1]
    top = lam[0]
    t_student = -np.log(1 - np.sqrt(alpha_star)) / top  # (1 - exp(-lambda_1 t))^2 = alpha*
    student = (1 - np.exp(-lam * t_student)) ** 2
    assert student[0] == pytest.approx(alpha_star)
    # alpha_k(t) grows with t, so the least-trained teacher with alpha_1(t) >= alpha* is the binding case
    for t in -np.log(1 - alpha_star) / top * np.array([1.0, 1.5, 4.0]):
        teacher = 1 - np.exp(-lam * t)
        assert teacher[0] >= alpha_star - 1e-12
        assert np.all(student[1:] < teacher[1:])


def test_theorem_4_1_closed_form_at_the_notes_check_values():
    """(1 - (1 - sqrt(a))^k)^2 < 1 - (1 - a)^k for a = 0.5, k = 0.5: 0.2105 < 0.2929."""
    a, k = 0.5, 0.5
    student, teacher = (1 - (1 - np.sqrt(a)) ** k) ** 2, 1 - (1 - a) ** k
    assert student == pytest.approx(0.2105, abs=1e-4) and teacher == pytest.approx(0.2929, abs=1e-4)
    grid = np.linspace(0.01, 0.99, 99)
    ratios = grid[:, None]
    a_values = grid[None, :]
    assert np.all((1 - (1 - np.sqrt(a_values)) ** ratios) ** 2 < 1 - (1 - a_values) ** ratios)
