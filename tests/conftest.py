"""Shared fixtures: small, fast Specs. Real zarr stores, real schedulers, no mocks.

Plain helpers (``small_spec``, ``ALL_EFFECTS_OFF``, ``digest``, ``dataset_digests``) live in
``tests/helpers.py``: import them with ``from helpers import ...``.
"""

from __future__ import annotations

import pytest
from helpers import small_spec

from minisim import Spec


@pytest.fixture
def spec() -> Spec:
    return small_spec()
