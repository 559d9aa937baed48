"""The package version, in a module of its own so that no module imports back from the package root."""

__version__ = "2.0.0.dev0"
