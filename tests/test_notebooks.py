"""The packaged notebooks run top to bottom, and `minisim-notebooks` lists and copies them."""

from __future__ import annotations

import pytest

from minisim.cli import notebooks_main
from minisim.notebooks import copy_notebook, list_notebooks, notebook_folder

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


@pytest.mark.parametrize("name", ["01_anatomy", "03_metrics", "build_recording"])
def test_notebook_executes_top_to_bottom(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (nb_path,) = notebook_folder(name).glob("*.ipynb")
    nb = nbformat.read(nb_path, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if name == "01_anatomy":
        assert sum("image/png" in o.get("data", {}) for o in outputs) >= 9
    elif name == "03_metrics":
        import re

        text = "".join(o.get("text", "") for o in outputs)
        assert "minisim: F1 1.000 (precision 1.000, recall 1.000" in text   # the perfect estimate
        drop = re.search(r"recall (\S+) = \((\d+) - 3\) / \d+ = (\S+)", text)   # dropping 3 cells
        assert drop and drop.group(1) == drop.group(3)
        assert "{'duplicate': 1," in text                                  # the split cell
    else:
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


def test_list_shows_both_notebooks(capsys):
    assert notebooks_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "01_anatomy" in out and "03_metrics" in out and "build_recording" in out
    assert set(list_notebooks()) == {"01_anatomy", "03_metrics", "build_recording"}


def test_copy_to_the_default_place_and_refuse_to_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert notebooks_main(["copy", "01_anatomy"]) == 0
    dest = tmp_path / "minisim-notebooks" / "01_anatomy"
    assert (dest / "01_anatomy.ipynb").exists()
    assert notebooks_main(["copy", "01_anatomy"]) == 2
    assert "exists" in capsys.readouterr().err and "--force" in str(pytest.raises(
        FileExistsError, copy_notebook, "01_anatomy").value)
    (dest / "01_anatomy.ipynb").write_text("changed")
    assert notebooks_main(["copy", "01_anatomy", "--force"]) == 0
    assert (dest / "01_anatomy.ipynb").read_text() != "changed"


def test_copy_to_a_chosen_folder_and_unknown_names(tmp_path, capsys):
    assert notebooks_main(["copy", "build_recording", str(tmp_path / "here")]) == 0
    assert (tmp_path / "here" / "build_recording.ipynb").exists()
    assert notebooks_main(["copy", "nope"]) == 2
    assert "unknown notebook" in capsys.readouterr().err


def _execute_repository_notebook(name: str, cwd) -> list:
    """Run notebooks/<name> (the repository's, not the package's) in ``cwd``; its code outputs,
    after checking that no cell raised."""
    from pathlib import Path

    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return outputs


@pytest.mark.slow
def test_repository_quickstart_notebook_executes(tmp_path, monkeypatch):
    """notebooks/quickstart.ipynb (in the repository, not the package) runs top to bottom."""
    monkeypatch.chdir(tmp_path)
    outputs = _execute_repository_notebook("quickstart.ipynb", tmp_path)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
    assert (tmp_path / "quickstart.zarr").is_dir()


@pytest.mark.slow
def test_repository_score_minian_notebook_executes(tmp_path, monkeypatch):
    """notebooks/score_minian.ipynb runs top to bottom without minian: it exports with to_minian,
    reads the export back as minian's open_minian does, and scores a minian-layout output read
    back from disk (the stand-in finds exactly the detectable cells, in a registered frame)."""
    import re

    monkeypatch.chdir(tmp_path)
    outputs = _execute_repository_notebook("score_minian.ipynb", tmp_path)
    text = "".join(o.get("text", "") for o in outputs)
    assert {p.name for p in (tmp_path / "score_minian_export").iterdir()} >= {
        "varr.zarr", "A.zarr", "C.zarr", "spec.json"}
    found = re.search(r"minisim: F1 \S+ \(precision 1\.000, recall \S+; recall 1\.00 on (\d+) "
                      r"detectable vs 0\.00 on the rest\)", text)
    assert found and int(found.group(1)) > 0
    assert "registration shift of the true footprints (px): (3.0, -2.0)" in text
