"""Is bf16 autocast worth it on this CPU? Times one forward + backward of the seed-acgan-dcgan discriminator
(64 faces, 64 px, 1 thread) in fp32 and in bf16, with and without D's weight gradients (G's step needs only the
input gradient). Without native bf16 instructions (AVX512-BF16 or AMX) oneDNN emulates bf16, many times slower
than fp32: docs/performance.md.

    python benchmarks/bf16_conv_check.py
"""
import contextlib
import statistics
import time

import torch

from tagface.config import load_recipe
from tagface.models import build_discriminator
from tagface.training import cpu_has_native_bf16


def seconds(D, x, dtype, weight_grads: bool, runs: int = 4) -> float:
    D.requires_grad_(weight_grads)
    times = []
    for _ in range(runs + 1):
        xi = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext():
            score = D(xi).adv.float().sum()
        score.backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first run allocates


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"native bf16: {cpu_has_native_bf16()}; torch CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    recipe = load_recipe("seed-acgan-dcgan")
    D = build_discriminator(recipe.model, 64, condition=False, heads=True)
    x = torch.rand(64, 3, 64, 64) * 2 - 1
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        for weight_grads in (True, False):
            grads = "weights + input" if weight_grads else "input only"
            print(f"{name} forward + backward ({grads}): {seconds(D, x, dtype, weight_grads):.3f} s")


if __name__ == "__main__":
    main()
