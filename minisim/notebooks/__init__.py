"""Notebooks shipped with minisim, and how to copy one out to work on it.

``minisim-notebooks list`` shows them; ``minisim-notebooks copy NAME [DEST]`` copies a
notebook's folder to ``./minisim-notebooks/NAME`` (or DEST), refusing to overwrite an
existing copy unless ``--force``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import _safe_io

_HERE = Path(__file__).parent

#: name -> (folder inside this package, one-line description)
NOTEBOOKS: dict[str, tuple[str, str]] = {
    "01_anatomy": ("tutorials/01_anatomy",
                   "tutorial: the physics of a 1p image, one effect at a time"),
    "03_metrics": ("tutorials/03_metrics", "tutorial: scoring a pipeline, each metric on a small recording"),
    "build_recording": ("studio/build_recording",
                        "studio: build a Spec with widgets, preview it, generate it"),
}


def list_notebooks() -> dict[str, str]:
    """Name -> description of every shipped notebook.

    >>> sorted(list_notebooks())
    ['01_anatomy', '03_metrics', 'build_recording']
    """
    return {name: desc for name, (_, desc) in NOTEBOOKS.items()}


def notebook_folder(name: str) -> Path:
    """The packaged folder of notebook ``name``."""
    if name not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {name!r}; choose one of {sorted(NOTEBOOKS)}")
    return _HERE / NOTEBOOKS[name][0]


def copy_notebook(name: str, dest: str | Path | None = None, force: bool = False) -> Path:
    """Copy notebook ``name``'s folder to ``dest`` (default ``./minisim-notebooks/NAME``).

    Raises FileExistsError if ``dest`` exists, unless ``force``, which replaces only an earlier
    copy made by this function (it leaves a marker file in the folder), never another folder,
    and never the current folder or one above it. The copy is made beside ``dest`` and swapped
    in when complete, so a failed copy leaves the old one as it was.
    """
    src = notebook_folder(name)
    dest = Path(dest) if dest is not None else Path.cwd() / "minisim-notebooks" / name
    _safe_io.refuse_cwd_or_parent(dest, "notebook destination")
    if dest.exists() or dest.is_symlink():
        if not force:
            raise FileExistsError(f"{dest} exists; pass --force (force=True) to replace it")
        _safe_io.check_overwritable(dest, "notebook")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _safe_io.exclusive_lock(dest):
        partial = _safe_io.write_aside(dest)
        try:
            shutil.copytree(src, partial, ignore=shutil.ignore_patterns(
                "__pycache__", ".ipynb_checkpoints", "*.zarr", "*.avi"))
            (partial / _safe_io.NOTEBOOK_MARKER).write_text(
                f"a copy of the minisim notebook {name!r}: minisim-notebooks copy --force may "
                "replace this folder\n")
            _safe_io.swap_into_place(partial, dest)
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
    return dest
