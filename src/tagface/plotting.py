"""A dependency-free loss-curve plot (Pillow), so training needs no plotting library."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from .checkpoint import atomic_write

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _smooth(values: list[float], weight: float = 0.9) -> list[float]:
    out, last = [], values[0]
    for v in values:
        last = weight * last + (1 - weight) * v
        out.append(last)
    return out


def plot_losses(history: list[dict], path: str | Path, size: tuple[int, int] = (720, 360)) -> None:
    """One smoothed line per logged loss over training steps, with a legend and min/max labels."""
    keys = [k for k in (history[0] if history else {}) if k not in ("step", "img_per_s")]
    if len(history) < 2 or not keys:
        return
    w, h, m = size[0], size[1], 40
    steps = [r["step"] for r in history]
    series = {k: _smooth([r.get(k, 0.0) for r in history]) for k in keys}
    lo = min(min(v) for v in series.values())
    hi = max(max(v) for v in series.values())
    hi = hi if hi > lo else lo + 1
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([m, 10, w - 10, h - m], outline=(0, 0, 0))
    x = lambda s: m + (s - steps[0]) / max(steps[-1] - steps[0], 1) * (w - m - 10)  # noqa: E731
    y = lambda v: h - m - (v - lo) / (hi - lo) * (h - m - 10)  # noqa: E731
    for i, (k, vals) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        draw.line([(x(s), y(v)) for s, v in zip(steps, vals)], fill=colour, width=2)
        draw.text((m + 8 + 90 * i, h - m + 16), k, fill=colour)
    draw.text((4, 10), f"{hi:.2f}", fill=(0, 0, 0))
    draw.text((4, h - m - 10), f"{lo:.2f}", fill=(0, 0, 0))
    draw.text((m, h - m + 2), f"step {steps[0]}", fill=(0, 0, 0))
    draw.text((w - 90, h - m + 2), f"step {steps[-1]}", fill=(0, 0, 0))
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
