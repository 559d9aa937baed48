"""The plan of a sweep: read the sweep file, build and validate every recording's Spec.

Nothing here renders or starts a cluster: :func:`load_sweep` turns a sweep file (or mapping)
into a :class:`Sweep`, every grid point's Spec built and checked before any work starts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..spec import Spec, field_bounds, field_info

#: Grids with at least this many points show a progress bar while they are validated.
PROGRESS_POINTS = 500


class SweepError(ValueError):
    """The sweep file is invalid (unknown key or Spec path, value out of range, clashing points)."""


class SweepFile(BaseModel):
    """The sweep file's model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    base: str | dict[str, Any] = Field(
        "generic_1p", description="preset name, path to a spec.json (relative to the sweep file) "
                                  "or an inline Spec mapping")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted overrides for every recording")
    grid: dict[str, list[Any]] = Field(default_factory=dict,
                                       description="dotted Spec path -> values (Cartesian product)")
    seeds: list[int] | None = Field(None, description="replicate recording.seed values")
    output: str = Field("sweep", description="folder of stores, relative to the sweep file")
    chunks: dict[str, int] | None = Field(
        None, description="movie blocks, e.g. {frame: 64, height: 256, width: 256}; never changes bytes")


@dataclass
class Point:
    """One recording of a sweep: its swept values, seed, Spec and store name."""

    params: dict[str, Any]
    seed: int
    spec: Spec
    hash: str = field(init=False)

    def __post_init__(self):
        self.hash = spec_hash(self.spec)

    @property
    def store_name(self) -> str:
        return f"rec-{self.hash}.zarr"


@dataclass
class Sweep:
    """A validated sweep: every recording's Spec, and where the stores go."""

    points: list[Point]
    output: Path
    grid_paths: list[str]
    chunks: dict[str, int] | None = None
    root: Path = Path(".")

    def __len__(self) -> int:
        return len(self.points)


def spec_hash(spec: Spec) -> str:
    """Stable name of a Spec: the first 16 hex digits of sha256 of its JSON text."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]


def _read_mapping(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SweepError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, "
                             f"column {e.colno}") from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise SweepError(f"{path} is not valid YAML: {problem}{where}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: a sweep file must be a mapping with keys {list(SweepFile.model_fields)}")
    return data


def _base_spec(base: str | dict[str, Any], root: Path) -> Spec:
    from .. import presets

    if isinstance(base, dict):
        try:
            return Spec.model_validate(base)
        except ValidationError as e:
            raise SweepError(f"sweep base (inline Spec) is invalid: {e}") from None
    if base in presets.names():
        return presets.scope(base)
    path = (root / base) if not Path(base).is_absolute() else Path(base)
    if not path.is_file():
        raise SweepError(f"sweep base {base!r} is neither a preset ({presets.names()}) nor a spec file "
                         f"(looked for {path})")
    try:
        return Spec.model_validate_json(path.read_bytes())
    except ValidationError as e:
        # name the fields and what is wrong, never the file's text (it may be any file)
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}"
                             for err in e.errors(include_input=False, include_url=False)[:5])
        raise SweepError(f"sweep base {base!r} ({path}) is not a valid Spec JSON file: {problems}") from None


def _allowed_range(dotted: str) -> str:
    """What the field at ``dotted`` accepts, e.g. ``float > 0.0 and <= 1000.0``."""
    try:
        info, bounds = field_info(dotted), field_bounds(dotted)
    except KeyError:  # an error's location inside a list or a section-wide check
        return "see minisim.Spec"
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    text = " and ".join(f"{symbols[k]} {v}" for k, v in bounds.items())
    kind = getattr(info.annotation, "__name__", str(info.annotation))
    return f"{kind} {text}" if text else kind


def _spec_for(base: Spec, updates: dict[str, Any], where: str) -> Spec:
    try:
        return base.with_updates(updates)
    except KeyError as e:
        raise SweepError(f"{where}: {e.args[0]}") from None
    except ValidationError as e:
        lines = []
        for err in e.errors():
            path = ".".join(str(p) for p in err["loc"])
            value = updates.get(path, err.get("input"))
            lines.append(f"{path}={value!r}: {err['msg']} (allowed: {_allowed_range(path)})")
        raise SweepError(f"{where}: " + "; ".join(lines)) from None


def load_sweep(sweep: str | Path | dict[str, Any] | SweepFile, root: str | Path | None = None,
               progress: bool = True) -> Sweep:
    """Read and validate a sweep file (or mapping): every grid point's Spec is built here.

    Raises :class:`SweepError` naming the path, the value and the allowed range for the first
    invalid point, before any work starts. A grid of :data:`PROGRESS_POINTS` points or more shows
    a progress bar (on stderr) while it is validated, unless ``progress=False``.
    """
    if isinstance(sweep, (str, Path)):
        path = Path(sweep)
        if not path.is_file():
            raise FileNotFoundError(f"no sweep file at {path}")
        data, root = _read_mapping(path), path.resolve().parent if root is None else Path(root)
    else:
        data = sweep.model_dump() if isinstance(sweep, SweepFile) else dict(sweep)
        root = Path(root) if root is not None else Path.cwd()
    try:
        sf = SweepFile.model_validate(data)
    except ValidationError as e:
        raise SweepError(f"invalid sweep file: {e}") from None
    for p, values in sf.grid.items():
        if not values:
            raise SweepError(f"grid[{p!r}] has no values")
    if sf.seeds is not None and "recording.seed" in {**sf.grid, **sf.set}:
        raise SweepError("give replicate seeds either as `seeds` or as recording.seed in grid/set, not both")
    base = _spec_for(_base_spec(sf.base, root), sf.set, "sweep `set`")
    grid_paths = list(sf.grid)
    points, seen = [], {}
    n_points = math.prod(len(v) for v in sf.grid.values()) * (len(sf.seeds) if sf.seeds else 1)
    bar = None
    if progress and n_points >= PROGRESS_POINTS:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_points, unit="point", desc="validating sweep grid", file=sys.stderr)
    for values in itertools.product(*sf.grid.values()):
        params = dict(zip(grid_paths, values))
        for seed in sf.seeds if sf.seeds is not None else [None]:
            updates = dict(params) if seed is None else {**params, "recording.seed": seed}
            where = "sweep grid point " + (", ".join(f"{k}={v!r}" for k, v in updates.items()) or "(base)")
            spec = _spec_for(base, updates, where)
            pt = Point(params, spec.recording.seed, spec)
            if pt.hash in seen:
                raise SweepError(f"{where} gives the same Spec as {seen[pt.hash]}; remove the duplicate")
            seen[pt.hash] = where
            points.append(pt)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if sf.chunks is not None:
        from ..render import normalize_chunks

        try:
            normalize_chunks(base, sf.chunks)
        except ValueError as e:
            raise SweepError(f"sweep `chunks`: {e}") from None
    output = Path(sf.output) if Path(sf.output).is_absolute() else root / sf.output
    if output.exists() and not output.is_dir():
        raise SweepError(f"sweep output {output} exists and is not a folder")
    return Sweep(points, output, grid_paths, sf.chunks, root)
