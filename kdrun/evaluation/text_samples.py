"""samples.txt: the teacher's and the student's continuations of a few fixed prompts, for a person to read.

Prompts are `evaluation.sample_prompts`, or by default the opening characters of the first test
windows (text the models never trained on). Sampling is seeded (the run's seed) and at
`evaluation.sample_temperature` (0: greedy), so reruns write the same text.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kdrun.atomic_files import write_text

DEFAULT_PROMPTS = 3


@torch.inference_mode()
def continue_text(model: nn.Module, prompts: list[list[int]], new_tokens: int, temperature: float, block_size: int,
                  generator: torch.Generator) -> list[list[int]]:
    """`new_tokens` tokens after each prompt (prompts of one length, generated together as one batch), one at
    a time from the model's last-position logits, the context cut to the last `block_size` tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sequence = torch.as_tensor(prompts, dtype=torch.long, device=device)
    try:
        for _ in range(new_tokens):
            logits = model(sequence[:, -block_size:])[:, -1].float()
            if temperature == 0:
                chosen = logits.argmax(-1, keepdim=True)
            else:
                probs = (logits / temperature).softmax(-1).cpu()
                chosen = torch.multinomial(probs, 1, generator=generator).to(device)
            sequence = torch.cat([sequence, chosen], dim=1)
    finally:
        model.train(was_training)
    return sequence[:, len(prompts[0]):].tolist()


def default_prompts(source, length: int) -> list[str]:
    """The first `length` tokens of the first test windows, as text."""
    windows = source.test.dataset
    count = min(DEFAULT_PROMPTS, len(windows))
    return [source.tokenizer.decode(windows[i][0][:length].tolist()) for i in range(count)]


def write_samples(output_dir: Path, models: dict[str, nn.Module], source, options, seed: int) -> Path:
    """Each model's continuation of each prompt, in one text file."""
    block_size = source.input_shape[0]
    prompts = list(options.sample_prompts) if options.sample_prompts else default_prompts(source,
                                                                                         max(1, block_size // 2))
    sections = [f"# continuations of {len(prompts)} prompts: {options.sample_tokens} tokens at temperature "
                f"{options.sample_temperature:g} (0 = greedy), seed {seed}\n"]
    encoded = [source.tokenizer.encode(prompt) for prompt in prompts]
    continued: dict[str, dict[int, str]] = {role: {} for role in models}
    for length in sorted({len(tokens) for tokens in encoded}):  # prompts of one length form one batch
        numbers = [number for number, tokens in enumerate(encoded) if len(tokens) == length]
        for role, model in models.items():
            generator = torch.Generator().manual_seed(seed + length)  # the same draws for every model
            texts = continue_text(model, [encoded[number] for number in numbers], options.sample_tokens,
                                  options.sample_temperature, block_size, generator)
            continued[role].update({number: source.tokenizer.decode(text) for number, text in zip(numbers, texts)})
    for number, prompt in enumerate(prompts):
        sections.append(f"\n=== prompt {number + 1} ===\n{prompt}\n")
        for role in models:
            sections.append(f"\n--- {role} ---\n{prompt}{continued[role][number]}\n")
    path = output_dir / "samples.txt"
    write_text(path, "".join(sections))
    return path
