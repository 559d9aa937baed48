"""The studio's shared state: one Spec that every panel reads and writes, and a debouncer.

No widgets here: :class:`SpecModel` holds the Spec and notifies observers when it changes;
:class:`Debouncer` turns a burst of changes into one call, with at most one call in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..spec import Spec


class SpecModel:
    """Holds one :class:`~minisim.spec.Spec`; panels update it and observe its changes.

    Observers are called as ``fn(old_spec, new_spec)`` after every change (never for an
    update that leaves the Spec equal). ``render_speed_px_per_s`` is the last measured render
    speed (pixels x frames per second), which the Generate panel uses for its estimate.
    """

    def __init__(self, spec: Spec | None = None):
        self._spec = spec if spec is not None else Spec()
        self._observers: list[Callable[[Spec, Spec], None]] = []
        self.render_speed_px_per_s: float | None = None

    @property
    def spec(self) -> Spec:
        return self._spec

    @spec.setter
    def spec(self, spec: Spec) -> None:
        self.set(spec)

    def set(self, spec: Spec) -> bool:
        """Replace the Spec; returns whether it changed (and observers were told)."""
        if not isinstance(spec, Spec):
            raise TypeError(f"expected a Spec, got {type(spec).__name__}")
        if spec == self._spec:
            return False
        old, self._spec = self._spec, spec
        for fn in list(self._observers):
            fn(old, spec)
        return True

    def update(self, updates: dict[str, Any]) -> bool:
        """Apply dotted-path updates (validated; a bad value raises and changes nothing)."""
        return self.set(self._spec.with_updates(updates))

    def observe(self, fn: Callable[[Spec, Spec], None]) -> None:
        self._observers.append(fn)

    def unobserve(self, fn: Callable[[Spec, Spec], None]) -> None:
        self._observers.remove(fn)

    def save(self, path: str | Path) -> Path:
        """Write the Spec as JSON to ``path``."""
        path = Path(path)
        self._spec.to_json(path)
        return path

    def load(self, path_or_text: str | Path) -> Spec:
        """Read a Spec from a JSON file (or JSON text) and make it the current one."""
        self.set(Spec.from_json(path_or_text))
        return self._spec


class Debouncer:
    """Call ``fn`` once, ``delay_s`` after the last of a burst of :meth:`schedule` calls.

    A schedule while ``fn`` runs does not start a second run beside it: it marks the result
    stale and ``fn`` runs again (once) when the current run ends. ``delay_s = 0`` runs
    synchronously, which is what tests use; :meth:`run_now` always does.
    """

    def __init__(self, fn: Callable[[], None], delay_s: float = 0.3):
        self.fn = fn
        self.delay_s = float(delay_s)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._running = False
        self._stale = False
        self.runs = 0

    def schedule(self) -> None:
        if self.delay_s <= 0:
            self.run_now()
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.delay_s, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            if self._running:
                self._stale = True
                return
            self._running = True
        try:
            self.fn()
            self.runs += 1
        finally:
            with self._lock:
                self._running = False
                again, self._stale = self._stale, False
            if again:
                self.schedule()

    def cancel(self) -> None:
        """Drop a scheduled run (one in flight finishes)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def run_now(self) -> None:
        self.cancel()
        self.fn()
        self.runs += 1

    @property
    def busy(self) -> bool:
        """True while a run is scheduled or in flight."""
        return self._timer is not None or self._running
