"""The package version, in a module of its own so that no module imports back from the package root."""

__version__ = "2.0.0.dev0"


def numba_version() -> str:
    """numba compiles the sensor and warp kernels (render algorithm 3): part of what decides the bytes."""
    import numba

    return numba.__version__
