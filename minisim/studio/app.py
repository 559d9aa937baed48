"""The Studio: the three panels in tabs around one shared Spec, with JSON load and save."""

from __future__ import annotations

from pathlib import Path

from ..spec import Spec
from .model import SpecModel
from .panels import ActivityPanel, AnatomyPanel, GeneratePanel


class Studio:
    """Anatomy, Activity and Generate panels over one :class:`SpecModel`.

    Parameters
    ----------
    spec : the starting Spec (default ``Spec()``, the Generic 1p scope).
    debounce_s : delay before a redraw after the last change (0: redraw synchronously).
    path : the Generate panel's default output path.
    """

    def __init__(self, spec: Spec | None = None, debounce_s: float = 0.3,
                 path: str = "recording.zarr"):
        import ipywidgets as W

        self.model = SpecModel(spec)
        self.anatomy = AnatomyPanel(self.model, debounce_s)
        self.activity = ActivityPanel(self.model, debounce_s)
        self.generate = GeneratePanel(self.model, debounce_s, path=path, auto_measure=False)
        self.panels = [self.anatomy, self.activity, self.generate]
        self.spec_path = W.Text(value="spec.json", description="Spec file")
        self.save_button = W.Button(description="Save Spec")
        self.load_button = W.Button(description="Load Spec")
        self.save_button.on_click(lambda _b: self._io(self.save_spec))
        self.load_button.on_click(lambda _b: self._io(self.load_spec))
        self.io_status = W.HTML("")
        self.tabs = W.Tab(children=[p.widget for p in self.panels])
        for i, p in enumerate(self.panels):
            self.tabs.set_title(i, p.title)
        # Generate's knobs (fps, seed), and any change while another tab is shown, leave Panel 1
        # out of date instead of rebuilding it; the Generate estimate's probe save runs only
        # while its tab is shown
        self.anatomy.defer_recording_changes = True
        self.tabs.observe(self._on_tab, names="selected_index")
        self.widget = W.VBox([
            W.HTML("<h3 style='margin:0'>minisim studio</h3>"),
            W.HBox([self.spec_path, self.save_button, self.load_button, self.io_status]),
            self.tabs,
        ])
        self.widget.add_class("minisim-studio")

    @property
    def spec(self) -> Spec:
        return self.model.spec

    def _on_tab(self, change) -> None:
        self.anatomy.hidden = change["new"] != 0
        if change["new"] == 0:
            self.anatomy.refresh()
        elif change["new"] == 2:
            self.generate.auto_measure = True
            self.generate.schedule_redraw()
        if change["new"] != 2:
            self.generate.auto_measure = False

    def save_spec(self, path: str | Path | None = None) -> Path:
        """Write the current Spec as JSON (default: the path in the Spec file box).

        Raises ``FileNotFoundError`` naming the folder when it does not exist.
        """
        path = Path(path if path is not None else self.spec_path.value).expanduser()
        if not str(path).strip() or path.is_dir():
            raise ValueError(f"Save Spec: {str(path)!r} is not a file name (e.g. spec.json)")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"Save Spec: the folder {path.parent} does not exist; "
                                    "create it or choose another path")
        return self.model.save(path)

    def load_spec(self, path: str | Path | None = None) -> Spec:
        """Load a Spec from JSON; every panel follows.

        Raises ``FileNotFoundError`` naming the path when there is no such file, and
        ``ValueError`` naming the file when it is not a valid Spec.
        """
        path = Path(path if path is not None else self.spec_path.value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Load Spec: no file {path} (give the path of a Spec JSON "
                                    "file, e.g. one written by Save Spec)")
        try:
            return self.model.load(path)
        except ValueError as e:
            first = str(e).splitlines()
            raise ValueError(f"Load Spec: {path} is not a valid Spec: "
                             f"{' '.join(first[:3])}") from e

    def _io(self, fn) -> None:
        try:
            out = fn()
            self.io_status.value = f"ok: {out if isinstance(out, Path) else 'loaded'}"
        except Exception as e:  # noqa: BLE001 -- shown beside the buttons
            self.io_status.value = f"<span style='color:#b00'>{type(e).__name__}: {e}</span>"
        self.io_status.add_class("minisim-io-status")

    def redraw_now(self) -> None:
        for p in self.panels:
            p.redraw_now()

    def close(self) -> None:
        for p in self.panels:
            p.close()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
