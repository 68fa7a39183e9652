"""tagface studio: a FastAPI app that serves a single-page studio (src/tagface/static/) and a JSON API.

One generator is loaded once, at start; every request reuses it. Model calls run in worker threads behind a
`Gate`: at most `max_concurrent` draw at once, at most `queue` more wait (each at most `wait_s` seconds), and
anything beyond that is answered at once with 503 and Retry-After, so load never piles up unboundedly.

A face is reproducible from its `FaceRef`: tags, the seed, how many faces that seed drew (`batch`; the noise is
drawn in whole blocks of 16 faces, so row `index` is the same for any batch that holds it), its row `index`, the
truncation, and any variation steps applied on top (z' = z + strength * noise from another seed).
"""
from __future__ import annotations

import base64
import io
import math
import secrets
import socket
import sys
import threading
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import anyio
import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import __version__
from .data import to_uint8
from .errors import TagfaceError
from .losses import Labels
from .numpy_tagger import load_reader
from .sampling import FaceGenerator
from .strict import RedrawMisread
from .tags import EYE_COLOURS, HAIR_COLOURS, SYNONYMS, Tags, eye_index, hair_index, one_hot

MAX_FACES = 64
MAX_FRAMES = 32
MAX_SEED = 2**32 - 1
MAX_STEPS = 16
STRICT_DRAWS = 8  # as `tagface generate --strict-tags`
MAX_COLOUR_CHARS = 32  # a colour name or spelling is short; a longer field is a mistake, not worth echoing back
RANDOM = "random"

# Display colours of the swatches (the page's only notion of colour; the model only knows the names).
HAIR_SWATCHES = {
    "orange": "#f08a2c", "white": "#eeeef3", "aqua": "#2cc9d0", "gray": "#8d929e", "green": "#3fae5a",
    "red": "#d8343f", "purple": "#8b55d6", "pink": "#f39bc4", "blue": "#3c6fe2", "black": "#1c1c24",
    "brown": "#7c4b27", "blonde": "#f1d57a",
}
EYE_SWATCHES = {
    "gray": "#8d929e", "black": "#1c1c24", "orange": "#f08a2c", "pink": "#f39bc4", "yellow": "#f2d43c",
    "aqua": "#2cc9d0", "purple": "#8b55d6", "green": "#3fae5a", "brown": "#7c4b27", "red": "#d8343f",
    "blue": "#3c6fe2",
}

# The studio page may load nothing but its own files (and data: images the API returns).
STUDIO_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
              "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def static_dir() -> Path:
    return Path(str(resources.files("tagface") / "static"))


# --------------------------------------------------------------------------- request and response models
_HAIR_DOC = f"hair colour: one of {' '.join(HAIR_COLOURS)}, a common spelling (blond, grey, ...) or 'random'"
_EYES_DOC = f"eye colour: one of {' '.join(EYE_COLOURS)}, a common spelling or 'random'"
_TRUNC_DOC = ("noise intensity (truncation) in (0, 2]: z ~ N(0, t^2); lower is safer and less varied; "
              "null means the model's default")
_SEED_FIELD = dict(ge=0, le=MAX_SEED)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateRequest(_Strict):
    hair: str = Field(RANDOM, max_length=MAX_COLOUR_CHARS, description=_HAIR_DOC, examples=["blue"])
    eyes: str = Field(RANDOM, max_length=MAX_COLOUR_CHARS, description=_EYES_DOC, examples=["red"])
    n: int = Field(8, ge=1, le=MAX_FACES, description=f"number of faces, 1..{MAX_FACES}")
    seed: int | None = Field(None, **_SEED_FIELD, description="noise seed; omitted or null: the server picks one "
                             "and returns it. The same seed, tags, n and truncation always give the same faces")
    truncation: float | None = Field(None, gt=0, le=2, description=_TRUNC_DOC)
    strict_tags: bool = Field(False, description="draw a face again while the shipped tagger misreads its colours "
                              f"(up to {STRICT_DRAWS} draws): truer colours, less varied faces; each face's "
                              "reference then names the seed that drew it")


class VariationStep(_Strict):
    seed: int = Field(**_SEED_FIELD, description="seed of the perturbation noise")
    batch: int = Field(ge=1, le=MAX_FACES, description="how many perturbations that seed drew")
    index: int = Field(ge=0, lt=MAX_FACES, description="which of them (row of the perturbation noise)")
    strength: float = Field(ge=0, le=2, description="z' = z + strength * perturbation")

    @model_validator(mode="after")
    def _index_in_batch(self):
        if self.index >= self.batch:
            raise ValueError(f"index {self.index} is not below batch {self.batch}")
        return self


class FaceRef(_Strict):
    """Everything that makes one face: the API returns one per image, and takes them back to vary or interpolate."""

    hair: str = Field(RANDOM, max_length=MAX_COLOUR_CHARS,
                      description=_HAIR_DOC + " ('random' resolves from the seed as in /api/generate)")
    eyes: str = Field(RANDOM, max_length=MAX_COLOUR_CHARS, description=_EYES_DOC)
    seed: int = Field(**_SEED_FIELD, description="the seed that drew the face")
    batch: int = Field(1, ge=1, le=MAX_FACES, description="how many faces that seed drew (the n of the request): "
                       "the face is row `index` of the noise drawn for `batch` faces")
    index: int = Field(0, ge=0, lt=MAX_FACES, description="which face of the batch, from 0")
    truncation: float | None = Field(None, gt=0, le=2, description=_TRUNC_DOC)
    steps: list[VariationStep] = Field(default_factory=list, max_length=MAX_STEPS,
                                       description="variations applied on top of the base noise, in order")

    @model_validator(mode="after")
    def _index_in_batch(self):
        if self.index >= self.batch:
            raise ValueError(f"index {self.index} is not below batch {self.batch}")
        return self


class GenerateResponse(BaseModel):
    seed: int = Field(description="the seed used (the server's pick when none was given)")
    hair: str = Field(description="the hair colour used ('random' resolved)")
    eyes: str = Field(description="the eye colour used ('random' resolved)")
    truncation: float = Field(description="the truncation used")
    images: list[str] = Field(description="one base64 PNG data URL per face")
    faces: list[FaceRef] = Field(description="one reference per image, for /api/vary and /api/interpolate")
    notes: list[str] = Field(description="what was resolved, e.g. a random colour and where it came from")


class VaryRequest(FaceRef):
    strength: float = Field(0.3, ge=0, le=2, description="how far to move: z' = z + strength * noise(other seed)")
    n: int = Field(8, ge=1, le=MAX_FACES, description=f"number of variations, 1..{MAX_FACES}")
    variation_seed: int | None = Field(None, **_SEED_FIELD, description="seed of the perturbation noise; "
                                       "omitted or null: the server picks one and returns it")


class VaryResponse(BaseModel):
    base: str = Field(description="the face that was varied, as a PNG data URL")
    hair: str = Field(description="hair colour of the variations")
    eyes: str = Field(description="eye colour of the variations")
    truncation: float = Field(description="noise intensity of the base face")
    strength: float = Field(description="how far each variation moved from the base: z + strength * noise")
    variation_seed: int = Field(description="seed of the variations' noise; send it back to get the same ones")
    images: list[str] = Field(description="one PNG data URL per variation")
    faces: list[FaceRef] = Field(description="one reference per variation (the base face plus one step)")


class InterpolateRequest(_Strict):
    a: FaceRef = Field(description="the first face")
    b: FaceRef = Field(description="the last face")
    frames: int = Field(8, ge=2, le=MAX_FRAMES, description=f"images in the strip, both ends included, 2..{MAX_FRAMES}")
    frame_ms: int = Field(120, ge=20, le=2000, description="GIF: milliseconds per frame")
    boomerang: bool = Field(True, description="GIF: play a -> b -> a (2 * frames - 2 frames) instead of a -> b")
    gif_scale: int = Field(2, ge=1, le=4, description="GIF: upscale factor (nearest neighbour)")


class InterpolateResponse(BaseModel):
    frames: list[str] = Field(description="the strip, a to b, as PNG data URLs")
    gif: str = Field(description="animated GIF data URL (loops forever)")
    gif_frames: int = Field(description="frames the GIF holds")


class ErrorResponse(BaseModel):
    detail: str = Field(description="what was wrong, in one line")


class ModelInfo(BaseModel):
    name: str = Field(description="the generator file the studio serves")
    recipe: str = Field(description="the recipe it was trained with (`tagface recipes`)")
    step: int = Field(description="training steps behind it")
    resolution: int = Field(description="side of each face in pixels")
    z_dim: int = Field(description="length of its noise vector")
    default_truncation: float = Field(description="noise intensity used when a request gives none")


class Vocabulary(BaseModel):
    hair: list[str] = Field(description="the 12 hair colours, in the order of the model's tag vector")
    eyes: list[str] = Field(description="the 11 eye colours, in the order of the model's tag vector")
    random: str = Field(description="the word that asks for a colour drawn from the training data's frequencies")
    swatches: dict[str, dict[str, str]] = Field(description="display colour (#rrggbb) of each hair and eye colour")
    synonyms: dict[str, str] = Field(description="accepted spellings and the colour each means")
    limits: dict[str, int] = Field(description="the largest values requests may ask for (faces, frames, ...)")
    model: ModelInfo = Field(description="the generator being served")


class Health(BaseModel):
    status: str = Field(description="'ok' when the studio answers")
    version: str = Field(description="the tagface version serving")
    model: ModelInfo = Field(description="the generator being served")
    in_flight: int = Field(description="model calls running or waiting now")
    max_concurrent: int = Field(description="model calls that may run at once (--max-concurrent)")
    queue: int = Field(description="model calls that may wait for a turn before requests get 503 (--queue)")


_ERRORS = {422: {"model": ErrorResponse, "description": "bad input: unknown colour, value out of range, bad JSON"},
           503: {"model": ErrorResponse, "description": "busy: too many requests at once; retry after Retry-After s"}}


# --------------------------------------------------------------------------- bounded work
class Busy(Exception):
    pass


class Gate:
    """At most `limit` model calls at once (each in a worker thread), at most `queue` more waiting for a slot,
    each at most `wait_s` seconds; beyond that, or after the wait, `Busy` (the app answers 503)."""

    def __init__(self, limit: int, queue: int, wait_s: float):
        if limit < 1 or queue < 0 or wait_s < 0:
            raise TagfaceError(f"bad limits: max_concurrent {limit} (>= 1), queue {queue} (>= 0), wait {wait_s} (>= 0)")
        self.limit, self.queue, self.wait_s = limit, queue, wait_s
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def in_flight(self) -> int:
        return self._admitted

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.wait_s))

    @contextmanager
    def slot(self, timeout: float | None = None) -> Iterator[None]:
        """Hold one of the `limit` slots (blocking up to `timeout` s, default wait_s)."""
        if not self._slots.acquire(timeout=self.wait_s if timeout is None else timeout):
            raise Busy(f"busy: {self.limit} model call(s) running and none finished within {self.wait_s:g} s; retry")
        try:
            yield
        finally:
            self._slots.release()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self.slot():
            return fn(*args)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            if self._admitted >= self.limit + self.queue:
                raise Busy(f"busy: {self._admitted} requests running or waiting (limit {self.limit + self.queue}); retry")
            self._admitted += 1
        try:
            return await anyio.to_thread.run_sync(self._call, fn, *args)
        finally:
            with self._lock:
                self._admitted -= 1


# --------------------------------------------------------------------------- drawing
def png_data_url(image) -> str:
    """uint8 [3, H, W] (torch or numpy) -> 'data:image/png;base64,...'."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image).transpose(1, 2, 0)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def gif_data_url(images: torch.Tensor, frame_ms: int, scale: int = 1) -> tuple[str, int]:
    """uint8 [N, 3, H, W] -> (looping GIF data URL, frames it holds)."""
    frames = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    if scale > 1:
        frames = [f.resize((f.width * scale, f.height * scale), Image.Resampling.NEAREST) for f in frames]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    with Image.open(io.BytesIO(buf.getvalue())) as gif:
        count = gif.n_frames  # Pillow merges identical consecutive frames
    return "data:image/gif;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), count


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of two noise vectors [Z] at times t [T] -> [T, Z]; exact at t = 0 and 1."""
    t = t[:, None]
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4 or (math.pi - omega).abs() < 1e-4:
        out = (1 - t) * a + t * b
    else:
        out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    out[t[:, 0] == 0] = a
    out[t[:, 0] == 1] = b
    return out


def _is_random(colour: str) -> bool:
    return colour.strip().lower() in (RANDOM, "", "any", "?")


class Studio:
    """The loaded generator and the drawing the endpoints need; every method is called in a worker thread."""

    def __init__(self, gen: FaceGenerator, gate: Gate):
        self.gen, self.gate = gen, gate
        self._reader = None  # the shipped tagger, loaded at the first strict_tags request

    def reader(self):
        if self._reader is None:
            self._reader = load_reader(None, self.gen.resolution)
        return self._reader

    @property
    def info(self) -> ModelInfo:
        g = self.gen
        return ModelInfo(name=g.source.parent.name + "/" + g.source.name if g.source.parent.name else g.source.name,
                         recipe=g.recipe.name, step=g.step, resolution=g.resolution, z_dim=g.z_dim,
                         default_truncation=g.recipe.sample.truncation)

    def truncation(self, t: float | None) -> float:
        return float(self.gen.recipe.sample.truncation if t is None else t)

    def resolve(self, hair: str, eyes: str, seed: int) -> tuple[Tags, list[str]]:
        """Colour names (or 'random') -> vocabulary colours; TagfaceError names the allowed colours."""
        h = None if _is_random(hair) else HAIR_COLOURS[hair_index(hair)]
        e = None if _is_random(eyes) else EYE_COLOURS[eye_index(eyes)]
        return self.gen.complete(Tags(h, e), seed)

    def latent(self, face: FaceRef) -> torch.Tensor:
        z = self.gen.noise(face.batch, face.seed, self.truncation(face.truncation))[face.index]
        for s in face.steps:
            z = z + s.strength * torch.randn(s.batch, self.gen.z_dim, generator=torch.Generator().manual_seed(s.seed))[s.index]
        return z

    def draw(self, z: torch.Tensor, tags: Tags) -> torch.Tensor:
        n = z.shape[0]
        labels = Labels(torch.full((n,), HAIR_COLOURS.index(tags.hair)), torch.full((n,), EYE_COLOURS.index(tags.eyes)))
        return self.gen.draw(z, labels)

    def generate(self, req: GenerateRequest, seed: int, tags: Tags) -> tuple[list[str], list[int], list[str]]:
        """(images, the seed that drew each face, notes)."""
        t = self.truncation(req.truncation)
        if not req.strict_tags:
            return [png_data_url(im) for im in self.draw(self.gen.noise(req.n, seed, t), tags)], [seed] * req.n, []
        strict = RedrawMisread(self.gen, self.reader(), tries=STRICT_DRAWS)
        images = strict.generate(tags, req.n, seed, t)
        return [png_data_url(im) for im in images], strict.seeds, [f"strict tags: {strict.summary()}"]

    def vary(self, req: VaryRequest, tags: Tags, variation_seed: int) -> tuple[str, list[str]]:
        z = self.latent(req)
        eps = torch.randn(req.n, self.gen.z_dim, generator=torch.Generator().manual_seed(variation_seed))
        images = self.draw(torch.cat([z[None], z[None] + req.strength * eps]), tags)
        return png_data_url(images[0]), [png_data_url(im) for im in images[1:]]

    @torch.no_grad()
    def interpolate(self, req: InterpolateRequest, tags_a: Tags, tags_b: Tags) -> tuple[list[str], str, int]:
        t = torch.linspace(0, 1, req.frames)
        z = slerp(self.latent(req.a), self.latent(req.b), t)
        if tags_a == tags_b:
            images = self.draw(z, tags_a)
        else:  # blend the tag vectors too: the hair and eye colours fade from a's to b's
            def onehot(tags: Tags) -> torch.Tensor:
                return one_hot(torch.tensor([HAIR_COLOURS.index(tags.hair)]), torch.tensor([EYE_COLOURS.index(tags.eyes)]))
            labels = (1 - t[:, None]) * onehot(tags_a) + t[:, None] * onehot(tags_b)
            device = next(self.gen.G.parameters()).device
            images = to_uint8(self.gen.G(z.to(device), labels.to(device))).cpu()
        sequence = torch.cat([images, images.flip(0)[1:-1]]) if req.boomerang else images
        gif, count = gif_data_url(sequence, req.frame_ms, req.gif_scale)
        return [png_data_url(im) for im in images], gif, count


def _new_seed() -> int:
    return secrets.randbelow(2**31)


# --------------------------------------------------------------------------- the app
def _validation_message(errors: list[dict]) -> str:
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            why = (err.get("ctx") or {}).get("error", "")
            parts.append(f"the request body is not valid JSON{': ' + str(why) if why else ''}")
        elif err.get("type") == "missing" and not loc:
            parts.append("the request body is missing: send a JSON object, e.g. {\"hair\": \"blue\", \"eyes\": \"red\"}")
        else:
            parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(gen: FaceGenerator, max_concurrent: int = 2, queue: int = 8, wait_s: float = 5.0) -> FastAPI:
    """The studio app for a loaded generator. No model loading happens per request."""
    studio = Studio(gen, Gate(max_concurrent, queue, wait_s))
    app = FastAPI(title="tagface studio", version=__version__,
                  description="Anime faces from hair and eye colour tags. Images are base64 PNG data URLs. "
                              "Bad input is a 422 with a one-line `detail`; too much load at once is a 503 with "
                              "Retry-After.")
    app.state.studio = studio

    @app.exception_handler(TagfaceError)
    async def _tagface_error(request: Request, exc: TagfaceError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        # the inputs are not echoed back: the client sent them, and one may be NaN, which JSON cannot carry
        errors = [{k: v for k, v in err.items() if k != "input"} for err in exc.errors()]
        detail = _validation_message(errors)
        sent = request.headers.get("content-length", "0") != "0"
        if sent and "json" not in request.headers.get("content-type", "") and any(e.get("loc") == ("body",) for e in errors):
            detail = "send the body as JSON, with the header Content-Type: application/json"  # e.g. curl -d alone
        return JSONResponse({"detail": detail, "errors": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy):
        return JSONResponse({"detail": str(exc)}, status_code=503,
                            headers={"Retry-After": str(studio.gate.retry_after)})

    @app.post("/api/generate", response_model=GenerateResponse, responses=_ERRORS,
              summary="Draw n faces with the given hair and eye colours")
    async def api_generate(req: GenerateRequest) -> GenerateResponse:
        seed = _new_seed() if req.seed is None else req.seed
        tags, notes = studio.resolve(req.hair, req.eyes, seed)
        images, seeds, drawn = await studio.gate.run(studio.generate, req, seed, tags)
        t = studio.truncation(req.truncation)
        faces = [FaceRef(hair=tags.hair, eyes=tags.eyes, seed=s, batch=req.n, index=i, truncation=t)
                 for i, s in enumerate(seeds)]
        return GenerateResponse(seed=seed, hair=tags.hair, eyes=tags.eyes, truncation=t, images=images,
                                faces=faces, notes=notes + drawn)

    @app.post("/api/vary", response_model=VaryResponse, responses=_ERRORS,
              summary="Small variations around one face: z' = z + strength * noise(variation_seed)")
    async def api_vary(req: VaryRequest) -> VaryResponse:
        if len(req.steps) >= MAX_STEPS:
            raise TagfaceError(f"this face already has {len(req.steps)} variation steps, the most a face can have")
        tags, _ = studio.resolve(req.hair, req.eyes, req.seed)
        vseed = _new_seed() if req.variation_seed is None else req.variation_seed
        base, images = await studio.gate.run(studio.vary, req, tags, vseed)
        t = studio.truncation(req.truncation)
        parent = FaceRef(hair=tags.hair, eyes=tags.eyes, seed=req.seed, batch=req.batch, index=req.index,
                         truncation=t, steps=req.steps)
        faces = [parent.model_copy(update={"steps": [*req.steps, VariationStep(seed=vseed, batch=req.n, index=i,
                                                                                strength=req.strength)]})
                 for i in range(req.n)]
        return VaryResponse(base=base, hair=tags.hair, eyes=tags.eyes, truncation=t, strength=req.strength,
                            variation_seed=vseed, images=images, faces=faces)

    @app.post("/api/interpolate", response_model=InterpolateResponse, responses=_ERRORS,
              summary="A strip of faces from a to b (noise and tags blended) and an animated GIF")
    async def api_interpolate(req: InterpolateRequest) -> InterpolateResponse:
        tags_a, _ = studio.resolve(req.a.hair, req.a.eyes, req.a.seed)
        tags_b, _ = studio.resolve(req.b.hair, req.b.eyes, req.b.seed)
        frames, gif, count = await studio.gate.run(studio.interpolate, req, tags_a, tags_b)
        return InterpolateResponse(frames=frames, gif=gif, gif_frames=count)

    @app.get("/api/vocabulary", response_model=Vocabulary, summary="Colours, their swatches, spellings and limits")
    async def api_vocabulary() -> Vocabulary:
        return Vocabulary(hair=list(HAIR_COLOURS), eyes=list(EYE_COLOURS), random=RANDOM,
                          swatches={"hair": HAIR_SWATCHES, "eyes": EYE_SWATCHES}, synonyms=dict(SYNONYMS),
                          limits={"max_faces": MAX_FACES, "max_frames": MAX_FRAMES, "max_seed": MAX_SEED,
                                  "max_steps": MAX_STEPS},
                          model=studio.info)

    @app.get("/api/health", response_model=Health, summary="Liveness, the model and the current load")
    async def api_health() -> Health:
        g = studio.gate
        return Health(status="ok", version=__version__, model=studio.info, in_flight=g.in_flight,
                      max_concurrent=g.limit, queue=g.queue)

    index = static_dir() / "index.html"

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(index, headers={"Content-Security-Policy": STUDIO_CSP, "Cache-Control": "no-cache",
                                            "X-Content-Type-Options": "nosniff"})

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    return app


# --------------------------------------------------------------------------- `tagface serve`
def listen(host: str, port: int) -> socket.socket:
    """A listening socket, so a taken port is a one-line error and --port 0 picks a free one."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, socket.gaierror) as err:
        raise TagfaceError(f"--host {host}: cannot listen there ({err})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise TagfaceError(f"cannot listen on {host}:{port}: {err.strerror or err}; "
                           f"choose another --port (0 picks a free one)") from None
    return sock


def serve(checkpoint: str | None = None, host: str = "127.0.0.1", port: int = 8000, max_concurrent: int | None = None,
          queue: int = 8, wait_s: float = 5.0, threads: int = 1, access_log: bool = True) -> None:
    import os

    import uvicorn

    if not 0 <= port <= 65535:
        raise TagfaceError(f"--port {port}: allowed range is 0..65535 (0 picks a free port)")
    gen = FaceGenerator.load(checkpoint)  # once; a missing default model is a TagfaceError (one line)
    # Small batches gain little from intra-op threads and lose a lot when cores are shared; serve requests
    # side by side instead, one thread each, as many as there are cores.
    torch.set_num_threads(threads)
    limit = max_concurrent or max(1, min(os.cpu_count() or 1, 4))
    app = create_app(gen, limit, queue, wait_s)
    gen.generate(Tags(HAIR_COLOURS[0], EYE_COLOURS[0]), 1)  # warm-up: the first request is as fast as the rest
    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"tagface: studio for {gen.source} ({gen.recipe.name}, step {gen.step}) at http://{shown}:{bound_port}/ "
          f"({limit} at once, {threads} thread(s) each); Ctrl-C stops", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="info", access_log=access_log, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


@contextmanager
def serve_process(args: list[str], start_timeout: float = 60.0) -> Iterator[tuple[str, list[str]]]:
    """`tagface serve --port 0 ARGS` as a child process on loopback; yields (url, its output so far) once it
    listens, and stops it on exit. For tests and benchmarks that need a real server, not a test client."""
    import queue as queue_mod
    import re
    import subprocess
    import time

    proc = subprocess.Popen([sys.executable, "-m", "tagface", "serve", "--host", "127.0.0.1", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue_mod.Queue[str] = queue_mod.Queue()
    log: list[str] = []

    def drain() -> None:
        for line in proc.stdout:
            log.append(line)
            lines.put(line)
    threading.Thread(target=drain, daemon=True).start()
    url, deadline = None, time.monotonic() + start_timeout
    try:
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                m = re.search(r"at (http://127\.0\.0\.1:\d+/)", lines.get(timeout=0.5))
                url = m.group(1) if m else None
            except queue_mod.Empty:
                pass
        if url is None:
            raise RuntimeError("tagface serve did not start:\n" + "".join(log))
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
