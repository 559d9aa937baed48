"""Video export: AVI files that open, hold the right frames, and carry their Spec beside them."""

from __future__ import annotations

import json
import threading

import av
import dask.array as da
import imageio.v3 as iio
import numba
import numpy as np
import pytest
import xarray as xr

import minisim
from minisim import Recording, Spec, _compute, render
from minisim.activity import SEGMENT_FRAMES
from minisim.cli import main as cli_main
from minisim.video import CODECS, read_metadata, recording_to_video, to_uint8

SPEC = Spec(sensor={"width_px": 50, "height_px": 38}, recording={"duration_s": 1.0, "fps": 10})


def read_gray(path) -> np.ndarray:
    return iio.imread(path, plugin="pyav", format="gray")


def stream_info(path) -> tuple[int, int, int, float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.frames, s.codec_context.height, s.codec_context.width, float(s.average_rate)


def synthetic_recording(frames: int, height: int, width: int, fail_at: int | None = None):
    """A Recording around a made-up movie (writer-only tests); block k raises if k == fail_at."""
    spec = Spec(sensor={"width_px": width, "height_px": height},
                recording={"duration_s": frames / 10, "fps": 10})
    top = 2**spec.sensor.bit_depth - 1

    def block(block_info=None):
        (t0, t1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        if fail_at is not None and t0 // 4 == fail_at:
            raise RuntimeError("render failed")
        t, y, x = np.mgrid[t0:t1, y0:y1, x0:x1]
        return ((t * 97 + y * 31 + x * 13) % (top + 1)).astype(np.uint16)

    movie = da.map_blocks(block, chunks=((4,) * (frames // 4) + ((frames % 4,) if frames % 4 else ()),
                                         (height,), (width,)), dtype=np.uint16)
    ds = xr.Dataset({"movie": (("frame", "height", "width"), movie)})
    return Recording(ds, spec), top


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One simulated ffv1 video and the zarr store of the same Spec."""
    folder = tmp_path_factory.mktemp("video")
    avi = minisim.simulate_video(SPEC, folder / "out.avi", progress=False, mapping="full")
    store = folder / "rec.zarr"
    minisim.simulate(SPEC).save(store)
    return avi, store


# --------------------------------------------------------------------------- the file
def test_avi_opens_with_right_frame_count_size_and_fps(exported):
    avi, _ = exported
    frames = read_gray(avi)
    assert frames.shape == (SPEC.recording.n_frames, 38, 50) and frames.dtype == np.uint8
    assert stream_info(avi) == (10, 38, 50, 10.0)


def test_ffv1_frames_equal_to_uint8_of_the_saved_movie(exported):
    avi, store = exported
    movie = Recording.load(store).dataset["movie"].values
    assert SPEC.sensor.bit_depth == 12
    np.testing.assert_array_equal(read_gray(avi), to_uint8(movie, 0, 4095))


def test_companions_written_and_no_partial_left(exported):
    avi, _ = exported
    assert sorted(p.name for p in avi.parent.glob("out*")) == [
        "out.avi", "out.spec.json", "out.video.json"]
    meta = read_metadata(avi)
    assert meta["mapping"] | {"formula": None} == {
        "kind": "full", "bit_depth": 12, "low_adu": 0, "high_adu": 4095, "formula": None}
    assert (meta["codec"], meta["pixel_format"], meta["lossless"]) == ("ffv1", "gray", True)
    assert (meta["fps"], meta["frame_count"], meta["height_px"], meta["width_px"]) == (10.0, 10, 38, 50)
    assert meta["minisim_version"] == minisim.__version__
    assert (meta["numpy_version"], meta["numba_version"]) == (np.__version__, numba.__version__)


def test_spec_json_round_trips_and_resimulates_the_same_frames(exported):
    avi, _ = exported
    text = avi.with_suffix(".spec.json").read_text()
    assert text.rstrip("\n") == SPEC.model_dump_json(indent=2)
    again = Spec.model_validate_json(text)
    assert again == SPEC
    movie = minisim.simulate(again).dataset["movie"].values
    np.testing.assert_array_equal(to_uint8(movie, 0, 4095), read_gray(avi))


def test_loaded_recording_exports_the_same_frames(exported, tmp_path):
    avi, store = exported
    out = Recording.load(store).to_video(tmp_path / "loaded.avi", progress=False, mapping="full")
    np.testing.assert_array_equal(read_gray(out), read_gray(avi))
    assert Spec.model_validate_json(out.with_suffix(".spec.json").read_text()) == SPEC


def test_chunking_never_changes_the_video(exported, tmp_path):
    avi, _ = exported
    out = minisim.simulate_video(SPEC, tmp_path / "c.avi", chunks={"frame": 3, "width": 16},
                                 progress=False, mapping="full")
    np.testing.assert_array_equal(read_gray(out), read_gray(avi))
    with pytest.raises(ValueError, match="unknown dims"):
        minisim.simulate_video(SPEC, tmp_path / "d.avi", chunks={"time": 3}, progress=False)


# --------------------------------------------------------------------------- codecs
@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_codec_keeps_an_odd_frame_size(codec, tmp_path):
    rec, top = synthetic_recording(9, 37, 51)
    out = recording_to_video(rec, tmp_path / f"{codec}.avi", codec=codec, progress=False,
                             mapping="full")
    frames = read_gray(out)
    assert frames.shape == (9, 37, 51)
    assert stream_info(out)[:3] == (9, 37, 51)
    expected = to_uint8(rec.dataset["movie"].values, 0, top)
    error = np.abs(frames.astype(int) - expected)
    if CODECS[codec].lossless:
        assert error.max() == 0
    else:
        assert error.mean() < 20  # a saw-tooth test card: hard for lossy codecs, still close


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_opencv_reads_every_codec(codec, tmp_path):
    """OpenCV (its FFmpeg backend), the reader most pipelines use, gets every frame back."""
    cv2 = pytest.importorskip("cv2")
    rec, top = synthetic_recording(9, 37, 51)
    out = recording_to_video(rec, tmp_path / f"{codec}.avi", codec=codec, progress=False,
                             mapping="full")
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened()
    assert (cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)) == (9, 10)
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    bgr = np.array(frames)
    assert bgr.shape == (9, 37, 51, 3)
    assert (bgr[..., 0] == bgr[..., 1]).all() and (bgr[..., 1] == bgr[..., 2]).all()  # gray in BGR
    error = np.abs(bgr[..., 0].astype(int) - to_uint8(rec.dataset["movie"].values, 0, top))
    assert error.max() == 0 if CODECS[codec].lossless else error.mean() < 20


@pytest.mark.parametrize(("codec", "fourcc", "bits"), [("rawvideo", b"Y800", 8), ("mjpeg", b"MJPG", 24)])
def test_imagej_codecs_carry_the_fourcc_its_avi_reader_knows(codec, fourcc, bits, tmp_path):
    """ImageJ's built-in AVI reader takes uncompressed 8-bit (Y800) and MJPG; check the RIFF header."""
    rec, _ = synthetic_recording(5, 37, 51)
    head = recording_to_video(rec, tmp_path / f"{codec}.avi", codec=codec, progress=False).read_bytes()[:4096]
    assert head[:4] == b"RIFF" and head[8:12] == b"AVI "
    strh = head.index(b"strh") + 8
    assert head[strh:strh + 8] == b"vids" + fourcc
    bih = head.index(b"strf") + 8  # BITMAPINFOHEADER: biBitCount at 14, biCompression at 16
    assert int.from_bytes(head[bih + 14:bih + 16], "little") == bits
    assert head[bih + 16:bih + 20] == fourcc


@pytest.mark.parametrize("codec", ["mjpeg", "h264"])
def test_lossy_codecs_stay_close_on_a_real_movie(codec, exported, tmp_path):
    avi, store = exported
    out = recording_to_video(Recording.load(store), tmp_path / "lossy.avi", codec=codec,
                             progress=False, mapping="full")
    error = np.abs(read_gray(out).astype(int) - read_gray(avi))
    assert error.mean() < 2.0
    assert read_metadata(out)["lossless"] is False


def test_bad_codec_names_the_codec_and_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match=r"codec='divx'.*ffv1, rawvideo, mjpeg, h264"):
        minisim.simulate_video(SPEC, tmp_path / "x.avi", codec="divx", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        minisim.simulate_video(SPEC, tmp_path / "missing" / "x.avi", progress=False)
    with pytest.raises(ValueError, match=r"must end in \.avi"):
        minisim.simulate_video(SPEC, tmp_path / "x.mp4", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_mapping_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="mapping='auto'.*full, percentile"):
        minisim.simulate_video(SPEC, tmp_path / "x.avi", mapping="auto", progress=False)
    with pytest.raises(ValueError, match="percentiles"):
        minisim.simulate_video(SPEC, tmp_path / "x.avi", mapping="percentile",
                               percentiles=(99, 1), progress=False)


# --------------------------------------------------------------------------- never clobber
def test_existing_video_is_kept_unless_overwrite(exported, tmp_path):
    _, store = exported
    rec = Recording.load(store)
    out = tmp_path / "v.avi"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        rec.to_video(out, progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        minisim.simulate_video(SPEC, out, progress=False)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.avi"]
    # overwrite=True replaces only a minisim video (an .avi with its .spec.json), not this file
    with pytest.raises(FileExistsError, match="not a minisim video"):
        rec.to_video(out, overwrite=True, progress=False)
    assert out.read_bytes() == b"precious"
    out.unlink()
    rec.to_video(out, progress=False)
    rec.to_video(out, overwrite=True, progress=False)  # its own video: replaced
    assert read_gray(out).shape == (10, 38, 50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.avi", "v.spec.json", "v.video.json"]


def test_a_different_spec_json_beside_it_is_kept(exported, tmp_path):
    _, store = exported
    other = tmp_path / "v.spec.json"
    kept = SPEC.with_updates({"recording.seed": 5}).to_json()
    other.write_text(kept)
    with pytest.raises(FileExistsError, match="another Spec"):
        Recording.load(store).to_video(tmp_path / "v.avi", progress=False)
    assert other.read_text() == kept  # the other Spec survived, and nothing was written beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.spec.json"]
    # ...but the very Spec being exported may sit there already (`minisim video v.spec.json`)
    SPEC.to_json(other)
    Recording.load(store).to_video(tmp_path / "v.avi", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.avi", "v.spec.json", "v.video.json"]
    assert read_gray(tmp_path / "v.avi").shape == (10, 38, 50)
    assert Spec.model_validate_json(other.read_text()) == SPEC


def test_a_failed_render_leaves_no_video_behind(tmp_path):
    rec, _ = synthetic_recording(12, 16, 16, fail_at=1)
    with pytest.raises(RuntimeError, match="render failed"):
        recording_to_video(rec, tmp_path / "broken.avi", progress=False)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the mapping
@pytest.mark.parametrize("preset", minisim.presets.names())
def test_default_video_uses_at_least_100_grey_levels(preset, tmp_path):
    """The default mapping is the movie's own range: a 128 x 128 px crop of each scope preset."""
    spec = minisim.presets.scope(preset).with_updates({
        "sensor.width_px": 128, "sensor.height_px": 128, "sensor.noise_tile_px": 64,
        "recording.duration_s": 2.0, "recording.fps": 10.0})
    avi = minisim.simulate_video(spec, tmp_path / "v.avi", progress=False)
    assert read_metadata(avi)["mapping"]["kind"] == "percentile"
    assert len(np.unique(read_gray(avi))) >= 100
    full = minisim.simulate_video(spec, tmp_path / "f.avi", progress=False, mapping="full")
    if spec.sensor.bit_depth > 8:  # the full 12-bit range leaves a real movie nearly flat
        assert len(np.unique(read_gray(full))) < 50


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
def test_full_range_mapping_matches_the_documented_formula(bits):
    top = 2**bits - 1
    adu = np.arange(top + 1, dtype=np.uint16)
    expected = np.floor(adu.astype(np.float64) * 255 / top + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(to_uint8(adu, 0, top), expected)
    if bits == 8:
        np.testing.assert_array_equal(to_uint8(adu, 0, top), adu.astype(np.uint8))


def test_levels_outside_clip_and_bad_levels_are_refused():
    np.testing.assert_array_equal(to_uint8(np.array([0, 99, 100, 150, 200, 65535], np.uint16),
                                           100, 200), [0, 0, 0, 128, 255, 255])
    with pytest.raises(ValueError, match="low < high"):
        to_uint8(np.zeros(3, np.uint16), 200, 100)
    with pytest.raises(ValueError, match="whole number"):
        to_uint8(np.zeros(3, np.uint16), 0.5, 100)


def test_percentile_mapping_is_deterministic_and_stored(exported, tmp_path):
    _, store = exported
    rec = Recording.load(store)
    a = rec.to_video(tmp_path / "a.avi", mapping="percentile", progress=False)
    b = rec.to_video(tmp_path / "b.avi", mapping="percentile", progress=False)
    ma, mb = read_metadata(a)["mapping"], read_metadata(b)["mapping"]
    assert ma == mb and ma["kind"] == "percentile" and ma["percentiles"] == [0.5, 99.5]
    movie = rec.dataset["movie"].values
    lo, hi = np.percentile(movie[ma["preview_frames"]], [0.5, 99.5])
    assert (ma["low_adu"], ma["high_adu"]) == (int(np.floor(lo)), int(np.ceil(hi)))
    frames = read_gray(a)
    np.testing.assert_array_equal(frames, read_gray(b))
    np.testing.assert_array_equal(frames, to_uint8(movie, ma["low_adu"], ma["high_adu"]))
    assert frames.max() > 200  # the stretch uses the 8 bits


def test_percentile_levels_do_not_depend_on_saved_or_simulated(exported, tmp_path):
    _, store = exported
    saved = Recording.load(store).to_video(tmp_path / "s.avi", mapping="percentile",
                                           progress=False)
    fresh = minisim.simulate(SPEC).to_video(tmp_path / "f.avi", mapping="percentile",
                                            progress=False)
    assert read_metadata(saved)["mapping"] == read_metadata(fresh)["mapping"]


# --------------------------------------------------------------------------- memory
def counted_computations(monkeypatch) -> list[tuple[threading.Thread, list[int]]]:
    """Every dask computation the export starts: (its thread, tasks in each graph handed over)."""
    seen = []
    compute = _compute.compute

    def counting(*objs, **kwargs):
        seen.append((threading.current_thread(), [len(o.__dask_graph__()) for o in objs]))
        return compute(*objs, **kwargs)

    monkeypatch.setattr(_compute, "compute", counting)
    return seen


def test_a_blocks_graph_does_not_grow_with_the_recording(tmp_path, monkeypatch):
    """Each time-block is computed from a graph of its own tiles: the same tasks for 4x the
    frames. (Sliced out of the whole movie, a block's graph held every block of the recording,
    and dask's fusion of the slice into the render renamed each block's tasks, adding ~19
    names a block at 608 x 608 px to dask's cache of key names.)"""
    import dask.utils

    chunks = {"frame": 4, "height": 10, "width": 8}  # 2 x 3 tiles a block
    tasks, key_names = {}, {}
    for frames in (40, 160):
        spec = Spec(sensor={"width_px": 24, "height_px": 20},
                    recording={"duration_s": frames / 10, "fps": 10})
        seen = counted_computations(monkeypatch)
        names = dask.utils.key_split.cache_info().currsize
        minisim.simulate_video(spec, tmp_path / f"{frames}.avi", chunks=chunks, mapping="full",
                               scheduler="threads", progress=False)
        key_names[frames] = dask.utils.key_split.cache_info().currsize - names
        assert len(seen) == frames // 4  # one computation a block
        tasks[frames] = {n for _, sizes in seen for n in sizes}
    assert tasks == {40: {6}, 160: {6}}
    assert key_names == {40: 0, 160: 0}


def test_trace_segments_are_built_in_the_calling_thread(tmp_path, monkeypatch):
    """With the threaded scheduler every computation starts in the caller's thread (a
    computation started in another thread gets a pool of its own, 6 threads on 2 cores), and
    every trace segment is built there before its frames are computed, the preview's included:
    built by whichever worker thread came first, the segments spread over the workers' malloc
    arenas, whose freed space grew with the number of segments (the recording's length)."""
    frames = 2 * SEGMENT_FRAMES + 100
    spec = Spec(sensor={"width_px": 24, "height_px": 20},
                recording={"duration_s": frames / 10, "fps": 10})
    built = []
    build_segment = render.World.build_segment

    def recording_build(world, seg):
        built.append((threading.current_thread(), seg))
        return build_segment(world, seg)

    monkeypatch.setattr(render.World, "build_segment", recording_build)
    seen = counted_computations(monkeypatch)
    avi = minisim.simulate_video(spec, tmp_path / "long.avi", chunks={"frame": 64},
                                 scheduler="threads", progress=False)
    here = threading.current_thread()
    assert {t for t, _ in built} == {here} and {s for _, s in built} == {0, 1, 2}
    assert {t for t, _ in seen} == {here}
    preview = read_metadata(avi)["mapping"]["preview_frames"]
    n_preview = len({i // SEGMENT_FRAMES for i in preview})  # one computation per segment
    assert n_preview == 3 and len(seen) == n_preview + -(-frames // 64)
    assert read_gray(avi).shape == (frames, 20, 24)


def test_the_video_writers_segments_keep_only_what_the_render_reads(tmp_path):
    """The writer's World renders only: its cached segments hold C, the neuropil course and the
    motion, not the Activity's dF/F, S and bleaching (3 of ~26 MB segments at 608 x 608 px V4
    grew the writer's memory with the recording's length). A ground-truth reader of that World
    still gets the whole segment, the same values as a full World's."""
    frames = SEGMENT_FRAMES + 50
    spec = Spec(sensor={"width_px": 24, "height_px": 20},
                recording={"duration_s": frames / 10, "fps": 10, "seed": 5})
    minisim.simulate_video(spec, tmp_path / "slim.avi", scheduler="sync", progress=False)
    sj = spec.model_dump_json()
    world = render.get_world(sj)
    cached = list(world._segments.values())
    assert world.truth is False and len(cached) == 2
    assert all(s.activity is None for s in cached)
    full = render.build_world(spec)
    for seg in (0, 1):
        mine, whole = world.segment(seg), full.segment(seg)
        np.testing.assert_array_equal(mine.C, whole.C)
        np.testing.assert_array_equal(mine.f_np, whole.f_np)
        read = render._segment_of(sj, seg)[0]
        np.testing.assert_array_equal(read.activity.dff, whole.activity.dff)
        np.testing.assert_array_equal(read.activity.spikes, whole.activity.spikes)
    assert all(s.activity is None for s in world._segments.values())  # the reader cached nothing


# --------------------------------------------------------------------------- CLI
def test_cli_video_writes_the_video_and_both_companions(tmp_path, capsys):
    spec_file = tmp_path / "small.json"
    SPEC.to_json(spec_file)
    out = tmp_path / "cli.avi"
    assert cli_main(["video", str(spec_file), "-o", str(out), "--codec", "rawvideo", "-q"]) == 0
    assert read_gray(out).shape == (10, 38, 50)
    assert Spec.model_validate_json((tmp_path / "cli.spec.json").read_text()) == SPEC
    assert json.loads((tmp_path / "cli.video.json").read_text())["codec"] == "rawvideo"
    assert cli_main(["video", str(spec_file), "-o", str(out), "-q"]) == 2  # exists
    assert "overwrite" in capsys.readouterr().err
