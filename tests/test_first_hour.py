"""What a new user meets first: the main job's recording, its summary, the studio command."""

from __future__ import annotations

import json

import pytest
from helpers import small_spec

from minisim import Recording, simulate
from minisim.cli import default_spec, main
from minisim.studio.serve import prepare, voila_command


@pytest.mark.slow
def test_default_recording_has_hundreds_of_cells_in_view_and_30_detectable():
    """`minisim simulate -o recording.zarr` without a Spec: ground truth only (no movie rendered)."""
    spec = default_spec()
    assert spec.sensor.width_px == 608 and spec.recording.duration_s == 30.0
    ds = simulate(spec).dataset
    h, w = spec.fov_um
    y, x = ds["position"].values[:, 1], ds["position"].values[:, 2]
    in_view = int(((abs(y) <= h / 2) & (abs(x) <= w / 2)).sum())
    assert in_view >= 200
    assert int(ds["detectable"].sum()) >= 30


def test_simulate_prints_path_size_cells_and_how_to_open_it(tmp_path, capsys):
    spec_file = tmp_path / "spec.json"
    small_spec().to_json(spec_file)
    out = tmp_path / "rec.zarr"
    assert main(["simulate", str(spec_file), "-o", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "MB on disk" in text
    assert "centred in the field" in text and "detectable" in text
    assert f"Recording.load({str(out)!r})" in text
    rec = Recording.load(out)  # the line it prints works
    assert rec.spec == small_spec()


def test_minisim_studio_serves_a_copy_of_the_studio_notebook(tmp_path):
    nb = prepare(tmp_path / "studio")
    assert nb.name == "build_recording.ipynb"
    cells = json.loads(nb.read_text())["cells"]
    assert any("Studio(" in "".join(c["source"]) for c in cells)
    nb.write_text(nb.read_text().replace("Build a recording", "My studio"))
    assert "My studio" in prepare(tmp_path / "studio").read_text()  # a copy is kept, not replaced
    cmd = voila_command(nb, port=8899, open_browser=False)
    assert cmd[1:4] == ["-m", "voila", "build_recording.ipynb"]
    assert "--port=8899" in cmd and "--no-browser" in cmd
