"""tagface studio in a real browser: `tagface serve` on a free loopback port, driven by studio.mjs
(playwright-core + Debian's /usr/bin/chromium). Skips when the browser, node or playwright-core is missing.

TAGFACE_STUDIO_CHECKPOINT=runs/x serves that model instead of a tiny one made here, and
TAGFACE_STUDIO_SCREENSHOT=docs/images/studio.png keeps the screenshot there.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    if shutil.which("node") is None:
        return "node is not installed"
    if not (HERE / "node_modules" / "playwright-core" / "package.json").exists():
        return "playwright-core is not installed (npm install --prefix tests/browser)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture
def checkpoint(tmp_path) -> str:
    if os.environ.get("TAGFACE_STUDIO_CHECKPOINT"):
        return os.environ["TAGFACE_STUDIO_CHECKPOINT"]
    from tagface.training import Trainer
    from test_models_losses import random_faces, tiny_recipe
    Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path / "run", progress=False).fit(1)
    return str(tmp_path / "run")


@pytest.fixture
def server(checkpoint):
    """`tagface serve --port 0` as a real process; yields its URL once it listens."""
    from tagface.serving import serve_process
    with serve_process(["--checkpoint", checkpoint, "--no-access-log"]) as (url, _log):
        yield url


def test_studio_in_chromium(server, checkpoint, tmp_path):
    shot = Path(os.environ.get("TAGFACE_STUDIO_SCREENSHOT") or tmp_path / "studio.png").resolve()
    shot.parent.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["node", str(HERE / "studio.mjs"), server, str(shot)], cwd=HERE, capture_output=True,
                         text=True, timeout=180, env={**os.environ, "CHROMIUM": CHROMIUM})
    assert run.returncode == 0, f"studio.mjs failed:\n{run.stdout}\n{run.stderr}"
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["strip_frames"] == 8 and report["history_entries"] >= 3
    assert "seed" in report["bad_seed_message"]
    # blue hair / red eyes: the page passes on the server's note when the model's training data lacked either
    from tagface.sampling import FaceGenerator
    from tagface.tags import parse_tags
    _, notes = FaceGenerator.load(checkpoint).complete(parse_tags("blue hair red eyes"), seed=1234)
    assert all(n in report["first_notes"] for n in notes) and bool(notes) == bool(report["first_notes"])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
