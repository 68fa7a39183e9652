"""Exporting a trained generator: ONNX for use outside PyTorch (run with e.g. onnxruntime), or a slim
safetensors file (EMA generator and metadata only, fp16 if asked) such as the shipped default model.

The ONNX graph has two inputs and one output, all float32, with a dynamic batch axis:
  z       [B, z_dim]   noise (N(0, 1), times the truncation you want)
  labels  [B, 23]      one-hot tags: 12 hair colours then 11 eye colours, in the order stored in the
                       model's metadata (tagface.hair_colours, tagface.eye_colours), as Labels.onehot makes
  images  [B, 3, R, R] faces in [-1, 1] (x * 127.5 + 127.5 gives uint8 RGB)
metadata_props carry the recipe (name and full JSON), the vocabulary order, z_dim, resolution, truncation,
training step and tag frequencies, so a consumer needs nothing but the .onnx file.

Exporter: the TorchScript-based one (`torch.onnx.export(..., dynamo=False)`) by default. It needs only the
`onnx` package, works offline on every torch this package supports (>= 2.2) and exports both generators
exactly (tested against onnxruntime to 1e-4). torch >= 2.9 defaults to the torch.export-based exporter,
which additionally needs `onnxscript` (and `onnx-ir`); it is available as exporter="dynamo" for when the
TorchScript exporter is removed from torch.
"""
from __future__ import annotations

import importlib.util
import io
import json
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from . import __version__
from .checkpoint import atomic_save_tensors, atomic_write, load_state, read_metadata, run_file
from .errors import TagfaceError
from .losses import Labels
from .tags import EYE_COLOURS, HAIR_COLOURS, N_TAGS

FORMATS = ("onnx", "safetensors")
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 17          # onnxruntime >= 1.11 runs it; the TorchScript exporter supports up to 20
DYNAMO_DEFAULT_OPSET = 18   # the lowest opset the torch.export-based exporter writes
MIN_OPSET = 11              # the oldest opset both generators are checked with
GUIDANCE_KEY = "tagface.tag_guidance"  # metadata of a guided generator file: the strength folded in, and how


class _Wrapped(nn.Module):
    """Fixes the graph's argument names to (z, labels) whatever the generator calls them."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.G(z, labels)


def _example_inputs(z_dim: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, z_dim, generator=g)
    labels = Labels(torch.randint(0, len(HAIR_COLOURS), (batch,), generator=g),
                    torch.randint(0, len(EYE_COLOURS), (batch,), generator=g))
    return z, labels.onehot


def _max_opset(exporter: str) -> int:
    if exporter == "dynamo":
        import onnx
        return onnx.defs.onnx_opset_version()
    try:
        from torch.onnx import _constants
        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET))
    except (ImportError, AttributeError):
        return 17


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise TagfaceError("ONNX export needs the 'onnx' package: pip install 'tagface[export]'") from None
    return onnx


def _graph_bytes_torchscript(model: nn.Module, args, opset: int) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # torch >= 2.9 warns on every call that this exporter is the legacy one; that is a deliberate choice here
        warnings.filterwarnings("ignore", message=r".*(legacy TorchScript|feature will be removed|TorchScript-based).*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(model, args, buf, input_names=["z", "labels"], output_names=["images"],
                          opset_version=opset, dynamic_axes={"z": {0: "batch"}, "labels": {0: "batch"},
                                                             "images": {0: "batch"}},
                          do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def _graph_bytes_dynamo(model: nn.Module, args, opset: int) -> bytes:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, args, None, input_names=["z", "labels"], output_names=["images"],
                                    opset_version=opset, dynamic_shapes={"z": {0: batch}, "labels": {0: batch}},
                                    dynamo=True, external_data=False, verbose=False)
    return program.model_proto.SerializeToString()


def metadata(recipe, step: int = 0, freq=None) -> dict[str, str]:
    """The strings stored in the ONNX model's metadata_props."""
    meta = {
        "tagface.version": __version__,
        "tagface.kind": "generator",
        "tagface.recipe_name": recipe.name,
        "tagface.recipe": json.dumps(recipe.to_dict()),
        "tagface.hair_colours": json.dumps(list(HAIR_COLOURS)),
        "tagface.eye_colours": json.dumps(list(EYE_COLOURS)),
        "tagface.labels": f"one-hot [B, {N_TAGS}]: index i < {len(HAIR_COLOURS)} is hair_colours[i], "
                          f"index {len(HAIR_COLOURS)} + j is eye_colours[j]; exactly one of each set",
        "tagface.z_dim": str(recipe.model.z_dim),
        "tagface.resolution": str(recipe.train.resolution),
        "tagface.truncation": str(recipe.sample.truncation),
        "tagface.output": "images [B, 3, R, R] RGB in [-1, 1]",
        "tagface.step": str(step),
    }
    if freq is not None:
        meta["tagface.tag_frequencies"] = json.dumps({"hair": list(freq.hair), "eyes": list(freq.eyes)})
    return meta


def export_onnx(G: nn.Module, recipe, out: str | Path, opset: int | None = None, step: int = 0, freq=None,
                exporter: str = "torchscript", verify: bool = True) -> dict:
    """Write G (put in eval mode, on CPU) as an ONNX model at `out`, atomically.

    Returns {"path", "opset", "exporter", "bytes", "max_abs_diff"}; max_abs_diff is onnxruntime's largest
    deviation from PyTorch on batches of 1 and 3 (None when verify is off or onnxruntime is missing).
    """
    onnx = _require_onnx()
    if exporter not in EXPORTERS:
        raise TagfaceError(f"unknown exporter '{exporter}'; allowed: {' '.join(EXPORTERS)}")
    if exporter == "dynamo":
        if importlib.util.find_spec("onnxscript") is None:
            raise TagfaceError("exporter 'dynamo' needs the 'onnxscript' package (pip install onnxscript); "
                               "or use the default exporter 'torchscript'")
    opset = (DYNAMO_DEFAULT_OPSET if exporter == "dynamo" else DEFAULT_OPSET) if opset is None else opset
    low = DYNAMO_DEFAULT_OPSET if exporter == "dynamo" else MIN_OPSET
    if not low <= opset <= _max_opset(exporter):
        raise TagfaceError(f"--opset {opset}: the {exporter} exporter supports opsets {low} to {_max_opset(exporter)}")
    was_training = G.training
    device = next(G.parameters()).device
    model = _Wrapped(G.to("cpu").eval())
    args = _example_inputs(recipe.model.z_dim)
    try:
        with torch.no_grad():
            raw = (_graph_bytes_dynamo if exporter == "dynamo" else _graph_bytes_torchscript)(model, args, opset)
    except TagfaceError:
        raise
    except Exception as err:  # an exporter failure is not the user's fault, but keep it to one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TagfaceError(f"ONNX export failed ({type(err).__name__}: {first[:300]})") from err
    finally:
        G.to(device).train(was_training)
    proto = onnx.load_from_string(raw)
    res = recipe.train.resolution
    for value in proto.graph.output:  # the TorchScript exporter leaves H and W symbolic; they are fixed
        if value.name == "images":
            for dim, size in zip(value.type.tensor_type.shape.dim, ("batch", 3, res, res)):
                if isinstance(size, int):
                    dim.dim_value = size
                else:
                    dim.dim_param = size
    del proto.metadata_props[:]
    for key, value in metadata(recipe, step, freq).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"tagface {recipe.name} generator: z [B,{recipe.model.z_dim}] + one-hot labels [B,{N_TAGS}] "
                        f"-> images [B,3,{recipe.train.resolution},{recipe.train.resolution}] in [-1,1]")
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    out = Path(out)
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    diff = verify_onnx(data, G, recipe.model.z_dim) if verify else None
    return {"path": str(out), "opset": opset, "exporter": exporter, "bytes": len(data), "max_abs_diff": diff}


def verify_onnx(model: bytes | str | Path, G: nn.Module, z_dim: int, batches: tuple[int, ...] = (1, 3),
                seed: int = 0) -> float | None:
    """Largest |onnxruntime - PyTorch| over the given batch sizes, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    device = next(G.parameters()).device
    was_training = G.training
    G.eval()
    worst = 0.0
    try:
        for b in batches:
            z, labels = _example_inputs(z_dim, b, seed + b)
            got = session.run(["images"], {"z": z.numpy(), "labels": labels.numpy()})[0]
            with torch.no_grad():
                want = G(z.to(device), labels.to(device)).cpu().numpy()
            worst = max(worst, float(abs(got - want).max()))
    finally:
        G.train(was_training)
    return worst


def export_safetensors(gen, out: str | Path, half: bool = False, extra_meta: dict[str, str] | None = None) -> dict:
    """The generator alone (no D, no optimizer state) as safetensors, fp16 if `half`; what `generate` and
    `serve` load. Returns {"path", "bytes", "dtype", "max_abs_diff"}: the reloaded file's largest deviation
    from the source generator on batches of 1 and 3 (image values in [-1, 1])."""
    from .sampling import FaceGenerator, save_generator
    dtype = torch.float16 if half else torch.float32
    out = Path(out)
    save_generator(gen.G, gen.recipe, gen.freq, out, step=gen.step, dtype=dtype, extra_meta=extra_meta)
    back = FaceGenerator.load(out)
    worst = 0.0
    with torch.no_grad():
        for b in (1, 3):
            z, labels = _example_inputs(gen.recipe.model.z_dim, b, b)
            worst = max(worst, float((back.G(z, labels) - gen.G(z, labels)).abs().max()))
    return {"path": str(out), "bytes": out.stat().st_size, "dtype": str(dtype).removeprefix("torch."),
            "max_abs_diff": worst}


def export_checkpoint(checkpoint: str | Path | None, out: str | Path, fmt: str = "onnx", opset: int | None = None,
                      exporter: str = "torchscript", verify: bool = True, half: bool = False,
                      standing_stats: int = 0, standing_uniform: float | None = None, tag_guidance: float = 0.0,
                      guidance_tagger: str | Path | None = None, guidance_per_pair: int = 120) -> dict:
    """`tagface export`: a run directory, generator or checkpoint file -> an exported generator.
    `standing_stats` > 0 first recomputes G's BatchNorm statistics over that many generated batches (for
    generators written before runs did so, or full checkpoints, which keep the live statistics), their tags
    `standing_uniform` even over the pairs (default: the recipe's `sample.standing_uniform`). `tag_guidance` > 0
    then folds tag guidance of that strength into G (guidance.py), its shifts measured by `guidance_tagger`
    (default: the shipped tagger) over `guidance_per_pair` faces per hair x eye pair."""
    if fmt.lower() not in FORMATS:
        raise TagfaceError(f"unknown export format '{fmt}'; allowed: {' '.join(FORMATS)}")
    fmt = fmt.lower()
    suffix = "." + fmt
    if not str(out).lower().endswith(suffix):
        raise TagfaceError(f"--out {out}: the {fmt} format writes a file ending in {suffix}")
    if half and fmt != "safetensors":
        raise TagfaceError("--half: only the safetensors format stores fp16 weights")
    if standing_uniform is not None and standing_stats <= 0:
        raise TagfaceError("--standing-uniform: only with --standing-stats (it says which tags those batches draw)")
    if opset is not None and fmt != "onnx":
        raise TagfaceError(f"--opset {opset}: only the onnx format has an opset")
    if guidance_tagger is not None and not tag_guidance > 0:
        raise TagfaceError("--guidance-tagger: only with --tag-guidance STRENGTH (it measures that guidance)")
    if tag_guidance > 0 and guidance_tagger is not None and not Path(guidance_tagger).is_file():
        raise TagfaceError(f"--guidance-tagger {guidance_tagger}: no such file (a tagger from `tagface tagger train`)")
    if fmt == "onnx":
        _require_onnx()  # before loading weights: say what is missing first
    from .sampling import FaceGenerator, standing_batchnorm
    gen = FaceGenerator.load(checkpoint, device="cpu")
    guided_before = read_metadata(gen.source).get(GUIDANCE_KEY)
    if tag_guidance > 0 and guided_before:
        raise TagfaceError(f"--tag-guidance: {gen.source} is already guided ({guided_before}); export from the "
                           "unguided generator, or the two would add up")
    if standing_stats > 0:  # the written recipe then says how its statistics were gathered
        gen.recipe.sample.standing_stats = standing_stats
        if standing_uniform is not None:
            gen.recipe.sample.standing_uniform = standing_uniform
        gen.G = standing_batchnorm(gen.G, gen.recipe.sample.standing_tags(gen.freq), gen.z_dim, standing_stats)
    extra = {GUIDANCE_KEY: guided_before} if guided_before else {}
    if tag_guidance != 0:  # nan and negatives too: guide_generator says why they are refused
        from .guidance import guide_generator
        from .tagger import load_tagger
        record = guide_generator(gen, lambda: load_tagger(guidance_tagger), tag_guidance, guidance_per_pair)
        if not all(bool(t.isfinite().all()) for t in gen.G.state_dict().values() if t.is_floating_point()):
            raise TagfaceError(f"--tag-guidance {tag_guidance}: the guided weights overflow; the measured strengths "
                               "are 0.5 and 1")
        extra = {GUIDANCE_KEY: json.dumps({**record, "tagger": str(guidance_tagger) if guidance_tagger else "shipped"})}
    if fmt == "safetensors":
        return export_safetensors(gen, out, half, extra)
    return export_onnx(gen.G, gen.recipe, out, opset=opset, step=gen.step, freq=gen.freq, exporter=exporter,
                       verify=verify)


def discriminator_path(generator: str | Path) -> Path:
    """Where a generator file's discriminator lives, if it has one: beside it, `<name>-discriminator.safetensors`.
    The shipped default has one, so that `tagface train --init default` fine-tunes with a trained D."""
    generator = Path(generator)
    return generator.with_name(f"{generator.stem}-discriminator.safetensors")


def export_discriminator(checkpoint: str | Path, out: str | Path, half: bool = False) -> dict:
    """`tagface export --discriminator`: D's weights from a training checkpoint, with its step and recipe."""
    if not str(out).lower().endswith(".safetensors"):
        raise TagfaceError(f"--out {out}: a discriminator is written as a .safetensors file")
    if checkpoint is None:
        raise TagfaceError("--discriminator needs --checkpoint: a run directory or its checkpoint.safetensors")
    path = run_file(checkpoint, ("checkpoint.safetensors",), " (D is only in a run's training checkpoint)")
    meta = read_metadata(path)
    if "tagface.state" not in meta or "tagface.recipe" not in meta:
        raise TagfaceError(f"{path} is not a GAN training checkpoint: only those hold a discriminator")
    state = load_state(path)[0]
    dtype = torch.float16 if half else torch.float32
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state["D"].items()}
    atomic_save_tensors(tensors, out, {"tagface.version": __version__, "tagface.kind": "discriminator",
                                       "tagface.step": str(state["step"]), "tagface.recipe": meta["tagface.recipe"]})
    return {"path": str(out), "bytes": Path(out).stat().st_size, "dtype": str(dtype).replace("torch.", ""),
            "step": state["step"]}
