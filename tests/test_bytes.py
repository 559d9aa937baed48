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
PINNED_ALGORITHM = 2

PINNED = {
    "generic_1p": {
        "A": "f6b2825d59cb70c1",
        "A_planted": "02e5c70b1342553b",
        "C": "7c74f4e1887c7e52",
        "S": "86b0c90317c9ae53",
        "active": "c9cfef7b240bac7e",
        "b": "fec0f380c5b2bcce",
        "band": "6183af9619fb74e6",
        "compactness": "f38d9c24ed7df809",
        "defocus_um": "a6ff82d30459b296",
        "detectable": "585de629c91a2eac",
        "dff": "fa14c61b4122fbb7",
        "f": "15c2a6aa8256a1c5",
        "in_focus": "baede0ace2823e8d",
        "motion": "efcb00b3f6977722",
        "movie": "e5694638a23841b3",
        "oracle_r": "e87b31d3cbc9cbd1",
        "pnr": "175c74fdf6cccd21",
        "position": "0fd6205d4924a7be",
        "psf_sigma_um": "6895a722e85eddf7",
        "radius_um": "e984bde9642cc805",
        "rate_hz": "061d32e13ad08ba8",
        "visibility": "d79e6f3fd009e170",
        "vessel_dilation": "ef462512f1080e61",
        "vessel_mask": "980027f2e34e91e9",
        "vessel_overlap_fraction": "b851fecc853b4538",
    },
    "miniscope_v4_ca1": {
        "A": "7d46402a767d3d63",
        "A_planted": "32752686ec815298",
        "C": "9964e2cfa5d77007",
        "S": "808f2eeacf4f0fd1",
        "active": "715c0edb1ace1df9",
        "b": "6c2f579002d16a2f",
        "band": "94e56bfcc1216cbb",
        "compactness": "12a24dd819e2b93b",
        "defocus_um": "7bf04eaf750f50ec",
        "detectable": "55844b5c1b8b8820",
        "dff": "81c368a14c591270",
        "f": "15c2a6aa8256a1c5",
        "in_focus": "513aef742a19c5ac",
        "motion": "ae6a7a25c39dd3f0",
        "movie": "46be004f39e81e7f",
        "oracle_r": "d3430d3b93c8abb8",
        "pnr": "02464cd07c7faf08",
        "position": "554757c08e2891cf",
        "psf_sigma_um": "e3aa255d361584d3",
        "radius_um": "2acce5e2838e6be8",
        "rate_hz": "cb81b1dd0762dd0d",
        "visibility": "8e26d0232fa5488d",
        "vessel_dilation": "ef462512f1080e61",
        "vessel_mask": "0b5b11f2e2120bce",
        "vessel_overlap_fraction": "6ca164205f07f598",
    },
    "miniscope_v4_cortex_l23": {
        "A": "9f8e7a6b33624a05",
        "A_planted": "ca376fa862a926e6",
        "C": "da222c097b2ca91c",
        "S": "b3cc38893afbaafa",
        "active": "e3ae71c763af1712",
        "b": "9fea247b26d6db03",
        "band": "91f6bd95be35b65c",
        "compactness": "36e161a31a1ae5e7",
        "defocus_um": "31d368c6329df842",
        "detectable": "560a3c9862acefad",
        "dff": "3fa83e1d54d553ca",
        "f": "15c2a6aa8256a1c5",
        "in_focus": "c347e10f46690f27",
        "motion": "ae6a7a25c39dd3f0",
        "movie": "7c65b8b8621f7119",
        "oracle_r": "805bd8e2bfc28df5",
        "pnr": "624e246a47269a10",
        "position": "39b441e757b843a3",
        "psf_sigma_um": "5a1057c7ed99a901",
        "radius_um": "9c7c9d953515439a",
        "rate_hz": "12b355fd80418647",
        "visibility": "73d2a078d8af010f",
        "vessel_dilation": "ef462512f1080e61",
        "vessel_mask": "0b5b11f2e2120bce",
        "vessel_overlap_fraction": "184e48b97571e7ff",
    },
}


@pytest.mark.parametrize("name", hash_presets.PRESETS)
def test_every_array_of_the_preset_keeps_its_pinned_bytes(name):
    assert render.RENDER_ALGORITHM == PINNED_ALGORITHM, "bytes changed on purpose: re-pin them"
    got = hash_presets.preset_digests(name)
    assert got == PINNED[name]
