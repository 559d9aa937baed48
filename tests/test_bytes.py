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
PINNED_ALGORITHM = 1

PINNED = {
    "generic_1p": {
        "A": "5ae958fe729f62d7",
        "A_planted": "02e5c70b1342553b",
        "C": "82d88bb674269322",
        "S": "60555e559d367682",
        "active": "c9cfef7b240bac7e",
        "b": "e665718f1d4fb060",
        "band": "6183af9619fb74e6",
        "defocus_um": "a6ff82d30459b296",
        "detectable": "585de629c91a2eac",
        "dff": "cee9120ce33366fb",
        "f": "472c255c2234389c",
        "in_focus": "baede0ace2823e8d",
        "motion": "954d7b8196232c9a",
        "movie": "cde2dd14fe310885",
        "pnr": "175c74fdf6cccd21",
        "position": "0fd6205d4924a7be",
        "psf_sigma_um": "6895a722e85eddf7",
        "radius_um": "e984bde9642cc805",
        "rate_hz": "061d32e13ad08ba8",
        "spike_time_s": "b5c5c1577bdddef1",
        "spike_unit_id": "469d5ff2982b0b61",
        "vessel_dilation": "ef462512f1080e61",
        "vessel_mask": "66f5bb6ba102a87d",
        "vessel_overlap_fraction": "67baf27df65f9974",
    },
    "miniscope_v4_ca1": {
        "A": "6e2b7dcd19edde03",
        "A_planted": "32752686ec815298",
        "C": "43bf25b75fda7451",
        "S": "ca163b976fbda8cf",
        "active": "715c0edb1ace1df9",
        "b": "f750fc7af1b4b61c",
        "band": "94e56bfcc1216cbb",
        "defocus_um": "7bf04eaf750f50ec",
        "detectable": "55844b5c1b8b8820",
        "dff": "7189b27ed562991c",
        "f": "472c255c2234389c",
        "in_focus": "513aef742a19c5ac",
        "motion": "ad433f2f46dc5b5d",
        "movie": "283a9cb844b640c6",
        "pnr": "7a0df058a095e43a",
        "position": "554757c08e2891cf",
        "psf_sigma_um": "e3aa255d361584d3",
        "radius_um": "2acce5e2838e6be8",
        "rate_hz": "cb81b1dd0762dd0d",
        "spike_time_s": "e5e334997805c9e7",
        "spike_unit_id": "0e4611ba2cc9e9ad",
        "vessel_dilation": "ef462512f1080e61",
        "vessel_mask": "fa86aed6a69286df",
        "vessel_overlap_fraction": "ff843839831d625a",
    },
    "miniscope_v4_cortex_l23": {
        "A": "0d2beababcb4e0de",
        "A_planted": "ca376fa862a926e6",
        "C": "35eddd4e9c6fb110",
        "S": "5563bf8325e7b169",
        "active": "e3ae71c763af1712",
        "b": "eb3c9bd203c654ad",
        "band": "91f6bd95be35b65c",
        "defocus_um": "31d368c6329df842",
        "detectable": "560a3c9862acefad",
        "dff": "4c0f79eae3b8a6bf",
        "f": "472c255c2234389c",
        "in_focus": "c347e10f46690f27",
        "motion": "ad433f2f46dc5b5d",
        "movie": "1fe01451ec151c2f",
        "pnr": "fb7b9b228b002ffd",
        "position": "39b441e757b843a3",
        "psf_sigma_um": "5a1057c7ed99a901",
        "radius_um": "9c7c9d953515439a",
        "rate_hz": "12b355fd80418647",
        "spike_time_s": "eae594a559f006f2",
        "spike_unit_id": "e87119c3a19429ac",
        "vessel_dilation": "ef462512f1080e61",
        "vessel_mask": "6ee7c4e11494ef7c",
        "vessel_overlap_fraction": "a91ab96a3f0f82e3",
    },
}


@pytest.mark.parametrize("name", hash_presets.PRESETS)
def test_every_array_of_the_preset_keeps_its_pinned_bytes(name):
    assert render.RENDER_ALGORITHM == PINNED_ALGORITHM, "bytes changed on purpose: re-pin them"
    got = hash_presets.preset_digests(name)
    assert got == PINNED[name]
