"""Embedded text-classification tasks, generated from a seed: the default text run and the tests need no download.

Two tasks, written so that a small transformer learns them in minutes on a CPU and a teacher's soft
labels carry information a one-hot label does not:

- `sentiment` (one text, 2 classes): a review of one or two clauses ("the plot was not dull but the
  acting was superb"). Each clause has a polarity, flipped by a negation; two clauses joined by "and"
  agree, and after "but" the second clause decides. A `label_noise_rate` share of labels is then
  flipped at random, so the Bayes-optimal accuracy is below 1 and the Bayes probabilities are not
  one-hot.
- `entailment` (a premise and a hypothesis, 3 classes as MNLI: entailment, neutral, contradiction):
  the premise describes an animal by colour, size and action; the hypothesis repeats some attributes
  (entailment), changes one (contradiction), or adds one the premise does not state (neutral).

The texts are made from a fixed vocabulary, so the embedded tokenizers (kdrun/data/embedded_tokenizers,
built by scripts/make_embedded_tokenizers.py from `tokenizer_corpus()`) cover every word.
"""

from __future__ import annotations

import numpy as np

POSITIVE = ("good", "great", "superb", "moving", "clever", "charming", "gripping", "fresh", "funny", "brilliant")
NEGATIVE = ("bad", "dull", "awful", "boring", "clumsy", "flat", "tedious", "weak", "silly", "bland")
SUBJECTS = ("the plot", "the acting", "the music", "the script", "the ending", "the cast", "the pacing",
            "the dialogue", "the camera work", "the story")
INTENSIFIERS = ("", "", "very ", "quite ", "really ", "rather ")
NEGATIONS = ("not ", "never ")
FILLERS = ("", "", "honestly ", "overall ", "to be fair ", "in the end ")

COLOURS = ("red", "blue", "green", "black", "white", "brown", "grey", "yellow")
SIZES = ("small", "big", "tiny", "huge", "young", "old")
ANIMALS = ("dog", "cat", "horse", "bird", "fox", "rabbit", "mouse", "goat")
ACTIONS = ("runs", "sleeps", "eats", "jumps", "swims", "sings", "waits", "hides")
PLACES = ("in the park", "near the river", "on the hill", "in the barn", "by the road", "under the tree")

ENTAILMENT, NEUTRAL, CONTRADICTION = 0, 1, 2
TASKS = {"sentiment": ("negative", "positive"), "entailment": ("entailment", "neutral", "contradiction")}


def clause(rng: np.random.Generator, label: int) -> str:
    """A clause of polarity `label` (1 positive, 0 negative): an adjective of that polarity, or a negated one of
    the other."""
    negated = rng.random() < 0.3
    positive = bool(label) != negated
    adjective = rng.choice(POSITIVE if positive else NEGATIVE)
    negation = rng.choice(NEGATIONS) if negated else ""
    return f"{rng.choice(SUBJECTS)} was {negation}{rng.choice(INTENSIFIERS)}{adjective}"


def review(rng: np.random.Generator) -> tuple[str, int]:
    """A review and its clean label: one clause, two of the same polarity joined by "and", or two of opposite
    polarity joined by "but", where the second decides."""
    label = int(rng.integers(2))
    shape = rng.choice(["one", "and", "but"], p=[0.4, 0.3, 0.3])
    if shape == "one":
        text = clause(rng, label)
    elif shape == "and":
        text = f"{clause(rng, label)} and {clause(rng, label)}"
    else:
        text = f"{clause(rng, 1 - label)} but {clause(rng, label)}"
    return f"{rng.choice(FILLERS)}{text}", label


def entailment_pair(rng: np.random.Generator) -> tuple[tuple[str, str], int]:
    """(premise, hypothesis) and its relation."""
    colour, size, animal, action = (rng.choice(options) for options in (COLOURS, SIZES, ANIMALS, ACTIONS))
    place = rng.choice(PLACES) if rng.random() < 0.5 else ""
    premise = f"a {size} {colour} {animal} {action} {place}".strip()
    label = int(rng.integers(3))
    keep_size, keep_colour = bool(rng.integers(2)), bool(rng.integers(2))
    h_size, h_colour, h_animal, h_action, h_place = size if keep_size else "", colour if keep_colour else "", \
        animal, action, ""
    if label == CONTRADICTION:  # one stated attribute changed
        attribute = rng.choice(["colour", "animal", "action"])
        if attribute == "colour":
            h_colour = rng.choice([c for c in COLOURS if c != colour])
        elif attribute == "animal":
            h_animal = rng.choice([a for a in ANIMALS if a != animal])
        else:
            h_action = rng.choice([a for a in ACTIONS if a != action])
    elif label == NEUTRAL:  # an attribute the premise does not state
        if place:
            h_size = h_size or (size if rng.random() < 0.5 else "")
            h_action = f"{action} happily"
        else:
            h_place = rng.choice(PLACES)
    words = [w for w in ("a", h_size, h_colour, h_animal, h_action, h_place) if w]
    return (premise, " ".join(words)), label


def generate(task: str, count: int, seed: int, label_noise_rate: float = 0.0) -> tuple[list[tuple[str, ...]], np.ndarray,
                                                                                        np.ndarray]:
    """(texts, labels, clean labels) of `count` examples: each text a tuple of one or two strings."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(count):
        if task == "sentiment":
            text, label = review(rng)
            texts.append((text,))
        else:
            pair, label = entailment_pair(rng)
            texts.append(pair)
        labels.append(label)
    clean = np.asarray(labels, dtype=np.int64)
    noisy = clean.copy()
    flip = rng.random(count) < label_noise_rate
    classes = len(TASKS[task])
    noisy[flip] = (clean[flip] + rng.integers(1, classes, flip.sum())) % classes
    return texts, noisy, clean


def tokenizer_corpus() -> list[str]:
    """Every word the generators use, in sentences: what the embedded tokenizers are trained on."""
    texts, _, _ = generate("sentiment", 3000, seed=12345)
    pairs, _, _ = generate("entailment", 3000, seed=12345)
    vocabulary = [" ".join(words) for words in (POSITIVE, NEGATIVE, SUBJECTS, INTENSIFIERS, NEGATIONS, FILLERS, COLOURS,
                                                 SIZES, ANIMALS, ACTIONS, PLACES, TASKS["sentiment"],
                                                 TASKS["entailment"])]
    return [t for (t,) in texts] + [s for pair in pairs for s in pair] + vocabulary
