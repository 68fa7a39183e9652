"""Checkpoints as safetensors, written atomically, with no pickle anywhere.

Imports torch only inside the functions that need it: `tagface generate` reads metadata and writes images
through this module without torch (numpy_generator).

A training state is a nested structure of dicts, lists, tensors and plain values (model and optimizer
state dicts, RNG states, counters). `flatten` splits it into a flat {key: tensor} map for safetensors and a
JSON skeleton for everything else; `unflatten` puts it back together.
"""
from __future__ import annotations

import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import safe_open

from .errors import TagfaceError

if TYPE_CHECKING:
    import torch

SKELETON_KEY = "tagface.state"
DEFAULT_MODEL = "default.safetensors"
DEFAULT_TAGGER = "tagger.safetensors"
_UMASK = os.umask(0)
os.umask(_UMASK)


def output_file(path: str | Path, flag: str = "--out") -> Path:
    """An output path that must name a file: a folder there is a one-line error, checked before any work."""
    path = Path(path)
    if path.is_dir():
        raise TagfaceError(f"{flag} {path} is a folder; give a file path")
    return path


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path) then rename over path: readers see the old file or the new one, never half."""
    path = output_file(path, "output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # name the file asked for, not the temporary one
        raise type(err)(err.errno, err.strerror, str(path)) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp (and safetensors) make 0600; give the file the usual permissions
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Replace every tensor in obj by {'__tensor__': key}, collecting the tensors."""
    import torch
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[flatten(k, tensors, f"{prefix}.k{i}"), flatten(v, tensors, f"{prefix}.{i}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        out = [flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": out} if isinstance(obj, tuple) else out
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {unflatten(k, tensors): unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def save_state(state: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Save a nested training state atomically as one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors, "s")
    meta = dict(metadata or {})
    meta[SKELETON_KEY] = json.dumps(skeleton)
    # safetensors refuses tensors that share memory; clone the rare aliases (e.g. tied buffers).
    seen: set[int] = set()
    for k, t in tensors.items():
        ident = t.untyped_storage().data_ptr() if t.numel() else id(t)
        if ident in seen:
            tensors[k] = t.clone()
        seen.add(ident)
    atomic_save_tensors(tensors, path, meta)


def read_metadata(path: str | Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="numpy") as fh:  # metadata only: no need for torch
            return dict(fh.metadata() or {})
    except FileNotFoundError:
        raise TagfaceError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise TagfaceError(f"{path} is not a readable safetensors checkpoint ({err})") from None


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except FileNotFoundError:
        raise TagfaceError(f"checkpoint {path} does not exist") from None
    except Exception as err:
        raise TagfaceError(f"{path} is not a readable safetensors checkpoint ({err})") from None


def load_state(path: str | Path) -> tuple[dict, dict[str, str]]:
    """Inverse of save_state: (state, metadata)."""
    meta = read_metadata(path)
    if SKELETON_KEY not in meta:
        raise TagfaceError(f"{path} is a weights file, not a training checkpoint (no {SKELETON_KEY} metadata)")
    return unflatten(json.loads(meta[SKELETON_KEY]), load_tensors(path)), meta


def run_file(path: str | Path, names: tuple[str, ...], hint: str = "") -> Path:
    """A run directory -> the first of `names` found in it; a file -> itself. Errors say what was looked for."""
    p = Path(path)
    if p.is_dir():
        for name in names:
            if (p / name).exists():
                return p / name
        raise TagfaceError(f"{p} holds no {' or '.join(names)}{hint}")
    if not p.exists():
        raise TagfaceError(f"checkpoint {p} does not exist")
    return p


def default_model_path() -> Path:
    return Path(str(resources.files("tagface") / "weights" / DEFAULT_MODEL))


def default_tagger_path() -> Path:
    return Path(str(resources.files("tagface") / "weights" / DEFAULT_TAGGER))


def resolve_tagger(path: str | Path | None) -> Path:
    """--tagger: a tagger file, or None for the one shipped in the package; checks that the file is a tagger."""
    p = Path(path) if path else default_tagger_path()
    if p.is_dir():
        raise TagfaceError(f"--tagger {p} is a folder; give a tagger .safetensors file")
    if path is None and not p.exists():
        raise TagfaceError("no default tagger is shipped in this install; pass --tagger FILE "
                           "(train one with `tagface tagger train`)")
    if read_metadata(p).get("tagface.kind") != "tagger":
        raise TagfaceError(f"{p} is not a tagface tagger (train one with `tagface tagger train`)")
    return p


def resolve_checkpoint(path: str | Path | None) -> Path:
    """--checkpoint: a generator or training file, a run directory, or None (or 'default', as `train --init` takes
    it, unless a file or folder of that name is here) for the model shipped in the package."""
    if path is None or (str(path) == "default" and not Path(path).exists()):
        p = default_model_path()
        if not p.exists():
            raise TagfaceError("no default model is shipped in this install; pass --checkpoint RUN_DIR_OR_FILE "
                               "(train one with `tagface train`)")
        return p
    return run_file(path, ("generator.safetensors", "checkpoint.safetensors"))


def load_resume_state(path: Path, kind: str | None = None, what: str = "training") -> dict:
    """The state `--resume` continues from, with the same one-line errors for every trainer."""
    if not path.exists():
        raise TagfaceError(f"--resume: {path} does not exist; start without --resume")
    state, meta = load_state(path)
    if kind is not None and meta.get("tagface.kind") != kind:
        raise TagfaceError(f"{path} is not a {what} checkpoint (kind {meta.get('tagface.kind', 'none')})")
    return state


def is_grown(module: torch.nn.Module, name: str) -> bool:
    """Whether `name` (a parameter or submodule of module) is under one of the module's `grown` prefixes: layers
    that start neutral, so weights saved before they existed still load (models.DCGANGenerator's gains)."""
    prefixes = tuple(getattr(module, "grown", ()))
    return bool(prefixes) and name.startswith(prefixes)


def load_weights(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load stored weights into module, each cast to the dtype of the module's own (fp16 files compute in fp32).
    Grown parameters (is_grown) may be absent. A mismatch raises torch's RuntimeError, for the caller to name in
    its own one-line error."""
    own = module.state_dict()
    missing = [k for k in own if k not in tensors and not is_grown(module, k)]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=False)
