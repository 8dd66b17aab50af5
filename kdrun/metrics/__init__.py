"""Metrics as pure functions (tensors or arrays in, floats out).

Keys that `kdrun.evaluation.evaluate` writes to metrics.json; {role} is teacher | student | bayes (the
Bayes classifier, synthetic sources only), {split} is train (the student's training samples,
labels as trained on) | test. Knobs are `evaluation.*` in configs/train.yaml. Papers: 001 =
Bayes/teacher-MSE view of distillation, 002 = dataset size (fidelity, CKA), 003 = functional
similarity and its asymmetry.

| key | definition | paper | knob |
|---|---|---|---|
| {role}/{split}/acc | top-1 accuracy | all | |
| {role}/{split}/nll | mean −log p(y ∣ x) | all | |
| {role}/{split}/ece | top-label ECE, equal-width confidence bins, L1 | 001 | ece_bins |
| {role}/{split}/auroc | ROC AUC; 2 classes: score p(y=1 ∣ x); K>2: one-vs-rest averaged (classifiers only) | 001 | auroc_average |
| {role}/{split}/precision@{k} | mean #(top-k classes ∩ labels) / k; one label per input: = top{k}_acc / k | 001 | precision_at_k (k < K only) |
| {role}/{split}/top{k}_acc | fraction of inputs whose label is among the top k | 001 | precision_at_k |
| {teacher,student}/{split}/mse_to_bayes | mean_x ‖p(x) − p*(x)‖² (where p* is known) | 001 | mse_binary (vector or scalar) |
| student/{split}/agreement | P(argmax p_s = argmax p_t) (fidelity) | 002, 003 | |
| student/{split}/prediction_disagreement | 1 − agreement | 003 | |
| student/{split}/agreement_teacher_correct | agreement on inputs the teacher gets right (absent if there are none) | 003 | |
| student/{split}/agreement_teacher_incorrect | agreement on inputs the teacher gets wrong: same mistake (absent if none) | 003 | |
| student/{split}/agreement_incorrect_minus_correct | A_incorrect − A_correct; its KD-minus-control difference is Δ_incorrect − Δ_correct (> 0: negative asymmetry) | 003 | |
| student/{split}/kl_teacher_student | mean KL(p_t ‖ p_s), natural log | — | |
| student/{split}/kl_student_teacher | mean KL(p_s ‖ p_t), natural log | — | |
| student/{split}/activation_distance | mean ‖p_s − p_t‖₂ (no leading "1 −") | 003 | |
| student/{split}/js_divergence | mean JS(p_t, p_s), natural log, from log-softmax (finite on underflow) | 003 | |
| student/{split}/rank_disagreement | fraction of rank positions whose class differs (normalised by K) | 003 | |
| student/{split}/phi_gap_q{1..4} | mean φ_s − φ_t on the teacher's top class (φ = log-odds) in each quarter of the samples by teacher confidence, q1 least confident | 000 | |
| student/{split}/phi_gap_q1_minus_q4 | q1 − q4: the scatter's shape without the student's overall confidence level; < 0 = low-confidence points underfit more | 000 | |
| student/{split}/kl_q{1..4} | mean KL(p_t ‖ p_s) in the same quarters (M5: higher where the teacher is unsure) | 000 | |
| student/{split}/phi_gap_true_{q1,q4,q1_minus_q4} | the φ gap on the true (clean) class, quarters by the teacher's φ on it (M2) | 000 | |
| student/train/phi_gap_{noisy,clean} | the same on the training samples whose labels label noise flipped / kept | 000 | |
| {teacher,student}/train/phi_{noisy,clean} | mean φ of the model's own top class on the flipped / kept training samples | 000 | |
| {role}/{split}/perplexity | exp(nll): language models (next-token sources), where every row above is a token position | 003 | |
| {teacher,student}/test/probe_{positions,adversarial_count,adversarial_rate,expected_rate,adversarial_prob,expected_prob} | greedy completions (and mean probabilities: the expected sampled rates) where clean text reads data.corruption's pattern (e.g. the "e" of "the": "a" = the adversarial teacher's error) | 003 | data.probe_whole_word |
| student/test/cka | linear CKA of penultimate features `model.features(x)`; zoo teachers only | 002 | cka_samples (0 = off) |

Across runs (not in metrics.json): `bias_variance_decomposition(teacher_probs (R, N, K), bayes_probs (N, K))`
gives mse = bias2 + variance of R teacher draws to p* (paper 001), with the same `binary` convention.
"""

from kdrun.metrics.completion_probe import completion_probe
from kdrun.metrics.classification import (accuracy, agreement, auroc, classification_metrics,
                                          expected_calibration_error, nll, precision_at_k, top_k_accuracy)
from kdrun.metrics.per_sample import confidence_by_noise, confidence_deviations
from kdrun.metrics.oracle import BINARY_CONVENTIONS, bias_variance_decomposition, mse_to_bayes
from kdrun.metrics.representation import linear_cka
from kdrun.metrics.similarity import (activation_distance, conditional_agreement, js_divergence, kl_divergence,
                                      rank_disagreement, similarity_metrics)

__all__ = [
    "accuracy", "agreement", "auroc", "classification_metrics", "expected_calibration_error", "nll", "precision_at_k",
    "top_k_accuracy", "BINARY_CONVENTIONS", "bias_variance_decomposition", "mse_to_bayes", "linear_cka",
    "activation_distance", "conditional_agreement", "js_divergence", "kl_divergence", "rank_disagreement",
    "similarity_metrics", "confidence_by_noise", "confidence_deviations", "completion_probe",
]
