"""Keyed randomness: every random draw in minisim comes from here.

A stream is keyed by *what it describes* -- (seed, stream, *indices), e.g. a cell, a frame and
a fixed noise tile -- never by a dask block, a call order, Python's salted string hashing or
numpy's global state. Any piece of a recording can therefore be drawn on its own, on any
worker, in any order, and comes out bit for bit the same.

The entropy handed to ``numpy.random.SeedSequence`` is
``(seed, stream_id, len(indices), *zigzag(indices))``: the stream ids are fixed integers
(stable across processes and releases), the length stops ``(..., 1)`` and ``(..., 1, 0)``
from colliding (SeedSequence pads its entropy with zeros), and the zigzag map lets indices be
negative (tissue columns left of the optical axis).
"""

from __future__ import annotations

import numpy as np

# Fixed stream ids. Never renumber: they are part of the bytes of every recording.
STREAMS: dict[str, int] = {
    "cells": 1,            # candidate somata per (band, column_y, column_x)
    "cell_shape": 2,       # per unit: radius, ellipticity, orientation, dendrites
    "cell_brightness": 3,  # per unit: expression gain
    "vessels": 4,          # per trunk
    "neuropil_map": 5,     # spatial modes of the neuropil
    "glow": 6,
    "sensor_fixed": 7,     # PRNU / DSNU / hot pixels per noise tile
    "sensor_noise": 8,     # per (frame, noise tile)
    "motion": 9,           # per motion segment
    "activity_unit": 10,   # per (unit, segment): gate, rate, spikes
    "activity_params": 11, # per unit: rate, kinetics jitter, amplitude
    "ensembles": 12,       # per (ensemble, segment): shared drive
    "ensemble_membership": 13,  # per unit
    "hemodynamics": 14,
    "neuropil_trace": 15,
    "bleaching": 16,
}


def _zigzag(i: int) -> int:
    i = int(i)
    return 2 * i if i >= 0 else -2 * i - 1


def seed_sequence(seed: int, stream: str, *indices: int) -> np.random.SeedSequence:
    """The SeedSequence of one keyed stream."""
    try:
        sid = STREAMS[stream]
    except KeyError:
        raise KeyError(f"unknown RNG stream {stream!r}; known: {sorted(STREAMS)}") from None
    return np.random.SeedSequence([int(seed), sid, len(indices), *(_zigzag(i) for i in indices)])


def rng(seed: int, stream: str, *indices: int) -> np.random.Generator:
    """A numpy Generator for (seed, stream name, *indices).

    Examples
    --------
    >>> from minisim.rng import rng
    >>> a = rng(1, "cells", 0, -3, 4).standard_normal(3)
    >>> b = rng(1, "cells", 0, -3, 4).standard_normal(3)
    >>> bool((a == b).all())
    True
    """
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, stream, *indices)))
