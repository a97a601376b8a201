"""Video readers: axis order and dtype as on disk, spacing, frame order, and a one-line DataError naming the file for
every bad input."""
from __future__ import annotations

import os
import zlib

import cv2
import nibabel as nib
import numpy as np
import pytest

from core.errors import MedVidSegError
from data_schedule.sources.avi import AviSource, read_avi
from data_schedule.sources.base import DataError, VideoRecord, VideoSource, file_key
from data_schedule.sources.frames import FrameFolderSource, list_frames, natural_key, read_frame_folder
from data_schedule.sources.volume import MhdSource, NiftiSource, read_mhd, read_nifti
from data_schedule.synthetic.raw_fixtures import write_mhd


def one_line_error(excinfo, *names) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for n in names:
        assert str(n) in msg, (n, msg)
    return msg


def save_nifti(path, data_whx, zooms=None, units=None):
    """Write an array exactly as nibabel will hand it back: axes (W, H, ...)."""
    img = nib.Nifti1Image(data_whx, np.eye(4))
    img.set_data_dtype(data_whx.dtype)
    if zooms is not None:
        img.header.set_zooms(zooms)
    if units is not None:
        img.header.set_xyzt_units(*([units] if isinstance(units, str) else units))  # space unit[, time unit]
    nib.save(img, str(path))
    return path


# ------------------------------------------------------------------------------------------------ VideoRecord

def record(**kw) -> VideoRecord:
    frames = np.zeros((4, 6, 5), np.uint8)
    return VideoRecord(**{"frames": frames, "source": "vid.nii.gz", **kw})


def test_record_properties_and_empty_annotated_frame_is_valid():
    lab = np.zeros((6, 5), np.int8)
    r = record(labels={3: lab, 0: lab + 1})
    assert (r.num_frames, r.frame_size, r.annotated_frames) == (4, (6, 5), [0, 3])
    assert r.validate(num_classes=1) is r  # frame 3 is annotated and empty: allowed


@pytest.mark.parametrize("labels,needle", [
    ({0: np.zeros((6, 4), np.uint8)}, "shape (6, 4)"),
    ({0: np.zeros((6, 5), np.float32)}, "float32"),
    ({1: np.full((6, 5), 4, np.uint8)}, "values 4..4, expected 0..3"),
    ({1: np.full((6, 5), -1, np.int8)}, "values -1..-1"),
    ({4: np.zeros((6, 5), np.uint8)}, "frame 4 is outside"),
    ({-1: np.zeros((6, 5), np.uint8)}, "frame -1 is outside"),
])
def test_record_validate_names_the_source(labels, needle):
    with pytest.raises(DataError) as e:
        record(labels=labels).validate(num_classes=3)
    one_line_error(e, "vid.nii.gz", needle)
    assert isinstance(e.value, MedVidSegError)


def test_file_key_changes_with_content_and_names_missing_files(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"1234")
    k1 = file_key(p)
    assert k1 == file_key(p)
    p.write_bytes(b"12345")
    assert file_key(p) != k1
    with pytest.raises(DataError) as e:
        file_key(tmp_path / "nope.bin")
    one_line_error(e, "nope.bin")


# ------------------------------------------------------------------------------------------------ NIfTI

def test_nifti_3d_becomes_thw_with_dtype_and_spacing(tmp_path):
    w, h, t = 5, 4, 3
    data = np.arange(w * h * t, dtype=np.int16).reshape(w, h, t) - 20  # on disk (W, H, T)
    p = save_nifti(tmp_path / "v.nii.gz", data, zooms=(0.2, 0.4, 1.0), units="mm")
    r = read_nifti(p)
    assert r.frames.shape == (t, h, w) and r.frames.dtype == np.int16
    assert r.frames[2, 1, 4] == data[4, 1, 2]
    np.testing.assert_array_equal(r.frames, data.transpose(2, 1, 0))
    assert r.spacing == (0.4, 0.2)  # (dy, dx) from pixdim (dx, dy)
    assert r.labels == {} and r.fps is None and r.source == str(p)


def test_nifti_spacing_units_and_float_dtype(tmp_path):
    data = np.random.default_rng(0).random((5, 4, 2)).astype(np.float32)
    r = read_nifti(save_nifti(tmp_path / "m.nii", data, zooms=(0.0003, 0.0005, 1.0), units="meter"))
    assert r.frames.dtype == np.float32
    assert r.spacing == pytest.approx((0.5, 0.3))


@pytest.mark.parametrize("shape", [(7, 6), (7, 6, 1)])
def test_nifti_2d_or_single_slice_is_one_frame(tmp_path, shape):
    data = np.arange(42, dtype=np.uint8).reshape(shape)
    r = read_nifti(save_nifti(tmp_path / "ed.nii.gz", data, zooms=(0.15, 0.3, 1.0)[:len(shape)]))
    assert r.frames.shape == (1, 6, 7)
    np.testing.assert_array_equal(r.frames[0], data.reshape(7, 6).T)
    assert r.spacing == (0.3, 0.15)


def test_nifti_trailing_colour_axis(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (5, 4, 3, 3), dtype=np.uint8)  # (W, H, T, C)
    r = read_nifti(save_nifti(tmp_path / "rgb.nii.gz", data))
    assert r.frames.shape == (3, 4, 5, 3)
    np.testing.assert_array_equal(r.frames[1, 2, 3], data[3, 2, 1])


def test_nifti_rgb24_volume(tmp_path):
    data = np.zeros((5, 4, 3), np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]))  # (W, H, T) of RGB24 voxels
    data["R"] = np.arange(60).reshape(5, 4, 3)
    data["B"] = 7
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "rgb24.nii.gz"))
    r = read_nifti(tmp_path / "rgb24.nii.gz")
    assert r.frames.shape == (3, 4, 5, 3) and r.frames.dtype == np.uint8
    assert r.frames[2, 1, 3].tolist() == [int(data["R"][3, 1, 2]), 0, 7]


@pytest.mark.parametrize("shape,units", [((5, 4, 3, 2), None), ((5, 4, 3, 3), ("mm", "sec"))])
def test_nifti_ambiguous_4d_is_an_error(tmp_path, shape, units):
    p = save_nifti(tmp_path / "fmri.nii.gz", np.zeros(shape, np.int16), units=units)  # 3-D + time, not colour
    with pytest.raises(DataError) as e:
        read_nifti(p)
    one_line_error(e, p, str(shape), "colour channels")


def test_nifti_labels_annotated_modes(tmp_path):
    img = np.zeros((5, 4, 4), np.uint8)
    lab = np.zeros((5, 4, 4), np.uint8)
    lab[1:3, 1:3, 2] = 2  # only frame 2 has foreground
    ip, lp = save_nifti(tmp_path / "i.nii.gz", img), save_nifti(tmp_path / "l.nii.gz", lab)
    r = read_nifti(ip, lp)
    assert r.annotated_frames == [0, 1, 2, 3]  # "all" is the default: empty frames count as annotated
    assert r.labels[2].shape == (4, 5) and r.labels[2][1, 1] == 2 and r.labels[2].dtype == np.uint8
    assert read_nifti(ip, lp, annotated="nonzero").annotated_frames == [2]
    assert read_nifti(ip, lp, annotated=[3, 0]).annotated_frames == [0, 3]
    with pytest.raises(DataError) as e:
        read_nifti(ip, lp, annotated=[4])
    one_line_error(e, lp, "[4]")


def test_nifti_label_shape_mismatch_names_both_files(tmp_path):
    ip = save_nifti(tmp_path / "p_image.nii.gz", np.zeros((5, 4, 3), np.uint8))
    lp = save_nifti(tmp_path / "p_label.nii.gz", np.zeros((5, 3, 3), np.uint8))
    with pytest.raises(DataError) as e:
        read_nifti(ip, lp)
    one_line_error(e, ip, lp, "(3, 3, 5)", "(3, 4, 5)")


def test_nifti_unreadable_and_missing_files(tmp_path):
    p = save_nifti(tmp_path / "cut.nii.gz", np.zeros((20, 20, 5), np.uint8))
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(DataError) as e:
        read_nifti(p)
    one_line_error(e, p, "NIfTI")
    with pytest.raises(DataError) as e:
        read_nifti(tmp_path / "none.nii.gz")
    one_line_error(e, "none.nii.gz", "not found")
    ok = save_nifti(tmp_path / "ok.nii.gz", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError) as e:
        read_nifti(ok, tmp_path / "missing_gt.nii.gz")
    one_line_error(e, "missing_gt.nii.gz", "label")


def test_nifti_source_protocol_and_key(tmp_path):
    p = save_nifti(tmp_path / "v.nii.gz", np.zeros((3, 2, 2), np.uint8))
    src = NiftiSource(str(p))
    assert isinstance(src, VideoSource)
    assert src.read().frames.shape == (2, 2, 3)
    k = src.key()
    os.utime(p, ns=(1, 1))
    assert src.key() != k


# ------------------------------------------------------------------------------------------------ MetaImage

def hand_mhd(tmp_path, name, header_lines, raw: bytes | None):
    """A MetaImage written by hand (not by our writer), so the reader is checked against the format itself."""
    (tmp_path / f"{name}.mhd").write_text("\n".join(header_lines + [f"ElementDataFile = {name}.raw"]) + "\n")
    if raw is not None:
        (tmp_path / f"{name}.raw").write_bytes(raw)
    return tmp_path / f"{name}.mhd"


def test_mhd_x_fastest_layout_becomes_thw(tmp_path):
    w, h, t = 5, 3, 2
    raw = np.arange(w * h * t, dtype="<i2").tobytes()  # sample k sits at x = k % W, y = k // W % H, t = k // (W H)
    p = hand_mhd(tmp_path, "seq", ["ObjectType = Image", "NDims = 3", f"DimSize = {w} {h} {t}",
                                   "ElementType = MET_SHORT", "ElementSpacing = 0.154 0.308 1",
                                   "BinaryDataByteOrderMSB = False"], raw)
    r = read_mhd(p)
    assert r.frames.shape == (t, h, w) and r.frames.dtype == np.int16
    assert r.frames[1, 2, 4] == 4 + w * (2 + h * 1)
    assert r.spacing == (0.308, 0.154)


def test_mhd_2d_big_endian_and_zlib(tmp_path):
    vals = np.array([[1, 2, 3], [400, 500, 600]], dtype=">u2")  # (H, W) = (2, 3)
    p = hand_mhd(tmp_path, "ed", ["NDims = 2", "DimSize = 3 2", "ElementType = MET_USHORT",
                                  "BinaryDataByteOrderMSB = True", "CompressedData = True"],
                 zlib.compress(vals.tobytes()))
    r = read_mhd(p)
    assert r.frames.shape == (1, 2, 3) and r.frames.dtype == np.uint16 and r.frames.dtype.isnative
    np.testing.assert_array_equal(r.frames[0], vals)
    assert r.spacing is None


@pytest.mark.parametrize("compressed,msb", [(False, False), (True, False), (False, True)])
def test_mhd_writer_round_trip_with_labels(tmp_path, compressed, msb):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (4, 6, 5), dtype=np.uint8)
    lab = (img > 128).astype(np.uint8) * 3
    ip = write_mhd(tmp_path / "p_2CH_sequence.mhd", img, spacing=(0.3, 0.15), compressed=compressed, msb=msb)
    lp = write_mhd(tmp_path / "p_2CH_sequence_gt.mhd", lab, compressed=compressed, msb=msb)
    r = read_mhd(ip, lp)
    np.testing.assert_array_equal(r.frames, img)
    assert r.annotated_frames == [0, 1, 2, 3] and r.spacing == (0.3, 0.15)
    np.testing.assert_array_equal(r.labels[2], lab[2])
    floats = rng.random((2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(read_mhd(write_mhd(tmp_path / "f.mhd", floats, msb=msb)).frames, floats)


def test_mhd_errors_name_the_file(tmp_path):
    good = ["NDims = 2", "DimSize = 3 2", "ElementType = MET_UCHAR"]
    cases = [  # (file stem, header lines, raw bytes or None for no raw file, what the message must hold)
        ("noraw", good, None, ("noraw.raw", "missing")),
        ("short", good, b"\x00" * 5, ("5 bytes, expected 6",)),
        ("weird", ["NDims = 2", "DimSize = 3 2", "ElementType = MET_FLOAT16"], b"\x00" * 12, ("MET_FLOAT16",)),
        ("nozlib", good + ["CompressedData = True"], b"\x00" * 6, ("zlib",)),
        ("dims", ["NDims = 3", "DimSize = 3 2", "ElementType = MET_UCHAR"], b"\x00" * 6,
         ("DimSize has 2 values, expected 3",)),
    ]
    for stem, header, raw, expected in cases:
        p = hand_mhd(tmp_path, stem, header, raw)
        with pytest.raises(DataError) as e:
            read_mhd(p)
        one_line_error(e, p, *expected)
    with pytest.raises(DataError) as e:
        read_mhd(tmp_path / "absent.mhd")
    one_line_error(e, "absent.mhd")


def test_mhd_source_key_covers_the_raw_file(tmp_path):
    p = write_mhd(tmp_path / "v.mhd", np.zeros((2, 3, 4), np.uint8))
    src = MhdSource(str(p))
    k = src.key()
    os.utime(tmp_path / "v.raw", ns=(5, 5))
    assert src.key() != k
    assert isinstance(src, VideoSource) and src.read().frames.shape == (2, 3, 4)


# ------------------------------------------------------------------------------------------------ AVI

def write_video(path, frames_rgb, fps, codec):
    t, h, w, _ = frames_rgb.shape
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h), True)
    assert vw.isOpened()
    for f in frames_rgb:
        vw.write(f[:, :, ::-1].copy())  # OpenCV writes BGR
    vw.release()
    return path


def smooth_rgb(t=6, h=24, w=32):
    y, x = np.mgrid[:h, :w]
    frames = [np.stack([x * 6 + k * 5, y * 8, np.full_like(x, 40 + 20 * k)], -1) for k in range(t)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def test_avi_lossless_round_trip_is_rgb_with_fps(tmp_path):
    frames = smooth_rgb()
    r = read_avi(write_video(tmp_path / "v.avi", frames, 25, "FFV1"))
    assert r.frames.shape == (6, 24, 32, 3) and r.frames.dtype == np.uint8
    np.testing.assert_array_equal(r.frames, frames)  # RGB order, not BGR
    assert r.fps == 25.0 and r.labels == {} and r.spacing is None


def test_avi_mjpg_round_trip_within_codec_tolerance(tmp_path):
    frames = smooth_rgb()
    r = read_avi(write_video(tmp_path / "m.avi", frames, 50, "MJPG"))
    assert r.frames.shape == frames.shape and r.fps == 50.0
    err = np.abs(r.frames.astype(int) - frames)  # (R and B swapped: a mean error near 36)
    assert err.mean() < 3 and np.percentile(err, 99) < 16


def test_avi_errors_name_the_file(tmp_path):
    with pytest.raises(DataError) as e:
        read_avi(tmp_path / "none.avi")
    one_line_error(e, "none.avi", "not found")
    bad = tmp_path / "text.avi"
    bad.write_text("not a video")
    with pytest.raises(DataError) as e:
        read_avi(bad)
    one_line_error(e, bad, "cannot open")
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"FFV1"), 25, (8, 8), True).release()
    with pytest.raises(DataError) as e:
        read_avi(empty)
    one_line_error(e, empty, "no frame")
    noise = np.random.default_rng(3).integers(0, 255, (8, 24, 32, 3), dtype=np.uint8)  # frames of similar size
    cut = write_video(tmp_path / "cut.avi", noise, 25, "FFV1")
    data = cut.read_bytes()
    cut.write_bytes(data[:len(data) * 3 // 4])  # header and 5-6 frames survive, the index and the rest do not
    with pytest.raises(DataError) as e:
        read_avi(cut)
    one_line_error(e, cut, "of the 8 frames")


def test_avi_source(tmp_path):
    src = AviSource(str(write_video(tmp_path / "v.avi", smooth_rgb(t=2), 30, "FFV1")))
    assert isinstance(src, VideoSource) and src.read().num_frames == 2 and len(src.key()) == 40


# ------------------------------------------------------------------------------------------------ frame folders

def test_natural_key_orders_numbers_numerically():
    names = ["img10.jpg", "img2.jpg", "img1.jpg", "x_a10_ayy_image0001.jpg", "x_a9_ayy_image0002.jpg",
             "x_a9_ayy_image0001.jpg"]
    assert sorted(names, key=natural_key) == ["img1.jpg", "img2.jpg", "img10.jpg", "x_a9_ayy_image0001.jpg",
                                              "x_a9_ayy_image0002.jpg", "x_a10_ayy_image0001.jpg"]
    assert sorted(["b1", "B2", "a3"], key=natural_key) == ["a3", "b1", "B2"]
    assert sorted(["f01", "f1"], key=natural_key) == ["f01", "f1"]  # equal numbers: total order by name


def write_frames(folder, n, colour=True, h=8, w=10, ext=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(1, n + 1):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = 10 * k  # red encodes the frame number
        rgb[..., 2] = 200
        cv2.imwrite(str(folder / f"img{k}{ext}"), rgb[:, :, ::-1] if colour else rgb[..., 0])
    return folder


def test_frame_folder_colour_rgb_in_numeric_order(tmp_path):
    d = write_frames(tmp_path / "case", 11)
    assert [p.name for p in list_frames(d)][:3] == ["img1.png", "img2.png", "img3.png"]
    r = read_frame_folder(d)
    assert r.frames.shape == (11, 8, 10, 3) and r.frames.dtype == np.uint8
    assert r.frames[:, 0, 0, 0].tolist() == [10 * k for k in range(1, 12)]  # img10 after img9, red first
    assert (r.frames[..., 2] == 200).all() and r.labels == {}


def test_frame_folder_grey_stays_thw(tmp_path):
    r = read_frame_folder(write_frames(tmp_path / "g", 3, colour=False))
    assert r.frames.shape == (3, 8, 10) and r.frames[2, 0, 0] == 30


def test_frame_folder_gt_binarised_or_kept_and_every_frame_annotated(tmp_path):
    d = write_frames(tmp_path / "Frame" / "c", 3, ext=".jpg")
    gt = tmp_path / "GT" / "c"
    gt.mkdir(parents=True)
    for k in range(1, 4):
        m = np.zeros((8, 10), np.uint8)
        if k != 2:  # frame 2: annotated, no polyp
            m[2:5, 3:7] = 255
        cv2.imwrite(str(gt / f"img{k}.png"), m)
    r = read_frame_folder(d, gt)
    assert r.annotated_frames == [0, 1, 2]
    assert r.labels[0].dtype == np.uint8 and set(np.unique(r.labels[0])) == {0, 1} and r.labels[0].sum() == 12
    assert r.labels[1].sum() == 0
    kept = read_frame_folder(d, gt, binarize=False)
    assert set(np.unique(kept.labels[2])) == {0, 255}
    r.validate(num_classes=1)


def test_frame_folder_errors_name_the_file(tmp_path):
    d = write_frames(tmp_path / "c", 3)
    gt = tmp_path / "gt"
    gt.mkdir()
    for k in (1, 3):
        cv2.imwrite(str(gt / f"img{k}.png"), np.zeros((8, 10), np.uint8))
    with pytest.raises(DataError) as e:
        read_frame_folder(d, gt)
    one_line_error(e, d / "img2.png", gt / "img2.png", "missing")
    cv2.imwrite(str(gt / "img2.png"), np.zeros((8, 9), np.uint8))
    with pytest.raises(DataError) as e:
        read_frame_folder(d, gt)
    one_line_error(e, gt / "img2.png", "(8, 9)")
    cv2.imwrite(str(d / "img4.png"), np.zeros((9, 10, 3), np.uint8))
    with pytest.raises(DataError) as e:
        read_frame_folder(d)
    one_line_error(e, d / "img4.png", "(9, 10, 3)", "img1.png")
    (d / "img4.png").write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        read_frame_folder(d)
    one_line_error(e, d / "img4.png", "cannot decode")
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "absent"):
        with pytest.raises(DataError) as e:
            read_frame_folder(folder)
        one_line_error(e, folder)


def test_frame_folder_source_key_sees_a_new_frame(tmp_path):
    d = write_frames(tmp_path / "c", 2)
    src = FrameFolderSource(str(d))
    k = src.key()
    write_frames(d, 3)
    assert src.key() != k and src.read().num_frames == 3 and isinstance(src, VideoSource)
