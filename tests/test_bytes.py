"""The bytes of three presets are pinned: a change that alters any array must say so.

A refactor keeps every digest. A change that means to alter the bytes bumps
``render.RENDER_ALGORITHM`` and replaces the digests below with those that
``python benchmarks/hash_presets.py`` prints (and says what changed in docs/).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from minisim import render

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "hash_presets.py"
_spec = importlib.util.spec_from_file_location("hash_presets", _BENCH)
hash_presets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hash_presets)

#: The render algorithm these digests belong to.
PINNED_ALGORITHM = 6

PINNED = {
    "generic_1p": {
        "A": "603595a39f49e5fe",
        "A_planted": "02e5c70b1342553b",
        "C": "b100d1ec63a0c9af",
        "S": "3dbbe79281c05c7b",
        "active": "c9cfef7b240bac7e",
        "b": "fec0f380c5b2bcce",
        "band": "6183af9619fb74e6",
        "compactness": "f38d9c24ed7df809",
        "defocus_um": "a6ff82d30459b296",
        "detectable": "585de629c91a2eac",
        "dff": "60a3f50b3b3df4be",
        "f": "15c2a6aa8256a1c5",
        "in_focus": "baede0ace2823e8d",
        "motion": "efcb00b3f6977722",
        "movie": "699a1531f77c9e3d",
        "oracle_r": "f9d1210d78ec2e40",
        "pnr": "175c74fdf6cccd21",
        "position": "0fd6205d4924a7be",
        "psf_sigma_um": "6895a722e85eddf7",
        "radius_um": "e984bde9642cc805",
        "rate_hz": "061d32e13ad08ba8",
        "vessel_dilation": "ef462512f1080e61",
        "vessel_mask": "980027f2e34e91e9",
        "vessel_overlap_fraction": "b851fecc853b4538",
        "visibility": "46678c54faa3960a",
    },
    "miniscope_v4_ca1": {
        "A": "8cf55a03252fcbde",
        "A_planted": "4c0ce874b836f170",
        "C": "f206444fddd39f07",
        "S": "460af58fe1d4b3c8",
        "active": "bb66dfa3f32990ef",
        "b": "4c11c5187fb559b4",
        "band": "4f8a2e8753f7dac9",
        "compactness": "a2ef587372c6de00",
        "defocus_um": "884f5aed1a54e41c",
        "detectable": "f5a96382b359e267",
        "dff": "8a3cfa3aef832ed6",
        "f": "15c2a6aa8256a1c5",
        "in_focus": "1b45cd73011ba793",
        "motion": "7faabf98470a6317",
        "movie": "58a64a7f8d641118",
        "oracle_r": "477ff523f1868eb5",
        "pnr": "48d0f87d999ad541",
        "position": "b683a1e4fe1e7ce6",
        "psf_sigma_um": "baceac035a5de002",
        "radius_um": "a7ead4978cc3e36e",
        "rate_hz": "4365c62f658c4a28",
        "vessel_dilation": "ef462512f1080e61",
        "vessel_mask": "0b5b11f2e2120bce",
        "vessel_overlap_fraction": "612db5a4056ba36c",
        "visibility": "a706b19e34c77772",
    },
    "miniscope_v4_cortex_l23": {
        "A": "a690696ad4f8cdbc",
        "A_planted": "ba6842b97adca5e1",
        "C": "4ea606518830adfa",
        "S": "fb5c6367a4362d18",
        "active": "edfd588c176c1f13",
        "b": "9fea247b26d6db03",
        "band": "103545f9619c694d",
        "compactness": "9440ee0dc5a043f8",
        "defocus_um": "7fe0c1f076b8ac04",
        "detectable": "54288aaa60a036c2",
        "dff": "c8a35247c52201de",
        "f": "15c2a6aa8256a1c5",
        "in_focus": "28e6cfdbf9eb7d6d",
        "motion": "7faabf98470a6317",
        "movie": "ae50e6b3fa951859",
        "oracle_r": "d58cc3aebf56f41b",
        "pnr": "18ba702a29b5804c",
        "position": "792e84f6af95d316",
        "psf_sigma_um": "136795a9b111e0e0",
        "radius_um": "95aa4ed515c8fb15",
        "rate_hz": "d17c061b52de2cb6",
        "vessel_dilation": "ef462512f1080e61",
        "vessel_mask": "0b5b11f2e2120bce",
        "vessel_overlap_fraction": "2fb4d57ad71bd0e5",
        "visibility": "c7add6d0f5eab00d",
    },
}


@pytest.mark.parametrize("name", hash_presets.PRESETS)
def test_every_array_of_the_preset_keeps_its_pinned_bytes(name):
    assert render.RENDER_ALGORITHM == PINNED_ALGORITHM, "bytes changed on purpose: re-pin them"
    got = hash_presets.preset_digests(name)
    assert got == PINNED[name]
