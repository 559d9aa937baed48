"""Serve the studio as an app: Voilà runs the packaged ``build_recording`` notebook.

``minisim studio`` (or ``python -m minisim.studio.serve``) copies the notebook to a working
folder (default ``./minisim-studio``; recordings and Spec files are written there) and runs
``voila build_recording.ipynb`` in it, which opens the studio in the browser without the
notebook's code. Voilà comes with the notebook extra (``pip install -e ".[notebook]"``).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path


def voila_command(notebook: Path, port: int | None = None, open_browser: bool = True) -> list[str]:
    """The ``voila`` command line that serves ``notebook`` (run it in the notebook's folder)."""
    cmd = [sys.executable, "-m", "voila", notebook.name]
    if port is not None:
        cmd.append(f"--port={int(port)}")
    if not open_browser:
        cmd.append("--no-browser")
    return cmd


def prepare(folder: str | Path = "minisim-studio") -> Path:
    """Copy the studio notebook into ``folder`` (an existing copy is kept); returns its path."""
    import shutil

    from ..notebooks import notebook_folder

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nb = folder / "build_recording.ipynb"
    if not nb.is_file():
        shutil.copyfile(notebook_folder("build_recording") / "build_recording.ipynb", nb)
    return nb


def serve(folder: str | Path = "minisim-studio", port: int | None = None,
          open_browser: bool = True) -> int:
    """Serve the studio with Voilà until interrupted; returns Voilà's exit status."""
    if importlib.util.find_spec("voila") is None:
        raise RuntimeError("the studio app needs Voilà: install minisim from its checkout with "
                           "the notebook extra, pip install -e \".[notebook]\"")
    nb = prepare(folder)
    print(f"serving {nb} with Voilà (Ctrl-C stops it)")
    try:
        return subprocess.call(voila_command(nb, port, open_browser), cwd=nb.parent)
    except KeyboardInterrupt:
        return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``minisim studio`` options."""
    p.add_argument("folder", nargs="?", default="minisim-studio",
                   help="working folder for the notebook and what it writes (default ./minisim-studio)")
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: Voilà's)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minisim studio", description="serve the studio as an app")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return serve(args.folder, args.port, not args.no_browser)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
