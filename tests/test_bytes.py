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
        "C": "fb069b42f75c46f0",
        "S": "afb74ce9014dd5e9",
        "active": "c9cfef7b240bac7e",
        "b": "fec0f380c5b2bcce",
        "band": "6183af9619fb74e6",
        "compactness": "f38d9c24ed7df809",
        "defocus_um": "a6ff82d30459b296",
        "detectable": "585de629c91a2eac",
        "dff": "30a548c286c264ee",
        "f": "7a653d20c7f58275",
        "in_focus": "baede0ace2823e8d",
        "motion": "2566a96b19696fc9",
        "movie": "f5dc31952e74179b",
        "oracle_r": "04ef3007fa8c4f50",
        "pnr": "175c74fdf6cccd21",
        "position": "0fd6205d4924a7be",
        "psf_sigma_um": "6895a722e85eddf7",
        "radius_um": "e984bde9642cc805",
        "rate_hz": "061d32e13ad08ba8",
        "visibility": "51ca8de313277381",
        "vessel_dilation": "ef462512f1080e61",
        "vessel_mask": "980027f2e34e91e9",
        "vessel_overlap_fraction": "b851fecc853b4538",
    },
    "miniscope_v4_ca1": {
        "A": "7d46402a767d3d63",
        "A_planted": "32752686ec815298",
        "C": "a2c1bb8104957fad",
        "S": "a148abeea4b4eea2",
        "active": "715c0edb1ace1df9",
        "b": "6c2f579002d16a2f",
        "band": "94e56bfcc1216cbb",
        "compactness": "12a24dd819e2b93b",
        "defocus_um": "7bf04eaf750f50ec",
        "detectable": "55844b5c1b8b8820",
        "dff": "017e15fc32e60d28",
        "f": "7a653d20c7f58275",
        "in_focus": "513aef742a19c5ac",
        "motion": "e132d28c62c83d26",
        "movie": "48c4115693f07df3",
        "oracle_r": "e6b461370b9415dc",
        "pnr": "075c14c3ca1aa7f3",
        "position": "554757c08e2891cf",
        "psf_sigma_um": "e3aa255d361584d3",
        "radius_um": "2acce5e2838e6be8",
        "rate_hz": "cb81b1dd0762dd0d",
        "visibility": "782e518f0461e4fa",
        "vessel_dilation": "ef462512f1080e61",
        "vessel_mask": "0b5b11f2e2120bce",
        "vessel_overlap_fraction": "6ca164205f07f598",
    },
    "miniscope_v4_cortex_l23": {
        "A": "9f8e7a6b33624a05",
        "A_planted": "ca376fa862a926e6",
        "C": "f353f98b8c1d76fa",
        "S": "1035f261b21b3618",
        "active": "e3ae71c763af1712",
        "b": "9fea247b26d6db03",
        "band": "91f6bd95be35b65c",
        "compactness": "36e161a31a1ae5e7",
        "defocus_um": "31d368c6329df842",
        "detectable": "560a3c9862acefad",
        "dff": "53c2c8f16af45220",
        "f": "7a653d20c7f58275",
        "in_focus": "c347e10f46690f27",
        "motion": "e132d28c62c83d26",
        "movie": "32ce028ccfe948c8",
        "oracle_r": "f9b93f5a58dca220",
        "pnr": "929ce103712e4196",
        "position": "39b441e757b843a3",
        "psf_sigma_um": "5a1057c7ed99a901",
        "radius_um": "9c7c9d953515439a",
        "rate_hz": "12b355fd80418647",
        "visibility": "20586b390d519acb",
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
