"""Where does a training iteration's time go? torch.profiler over a few `Trainer.train_step` calls of one
recipe on synthetic 64 px data, operators sorted by their own CPU time (docs/performance.md).

    python benchmarks/profile_step.py seed-acgan-dcgan [KEY=VALUE ...] [--threads 1] [--steps 3]
"""
import argparse
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

from tagface.bench import synthetic_faces
from tagface.config import load_recipe
from tagface.training import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="recipe overrides, e.g. train.reuse_fakes=true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, args.overrides)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(recipe, synthetic_faces(256, recipe.train.resolution), out, progress=False)
        for _ in range(2):  # allocations and Adam state
            trainer.train_step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                trainer.train_step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
