"""Volume readers: NIfTI (via nibabel) and MetaImage ``.mhd`` + ``.raw`` (parsed here), each to a ``VideoRecord``.

Both formats store x fastest: nibabel hands us (W, H[, T]) arrays and a MetaImage ``DimSize`` lists (W, H[, T]).
Every reader returns (T, H, W) frames in the stored dtype; a 2-D file is a video of one frame (CAMUS ED / ES files).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, Union

import numpy as np

from data_schedule.sources.base import DataError, VideoRecord, file_key

__all__ = ["MhdSource", "NiftiSource", "read_mhd", "read_mhd_header", "read_nifti"]

Annotated = Union[Literal["all", "nonzero"], Sequence[int]]

# millimetres per unit of a NIfTI spatial unit code ("unknown" is taken as mm, the common case)
_NIFTI_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}


def _annotated_labels(label: np.ndarray, annotated: Annotated, label_path: Path) -> dict[int, np.ndarray]:
    """{t: label[t]} for the frames ``annotated`` names: "all", "nonzero" (frames with a non-zero pixel) or a list
    of 0-based indices."""
    n = len(label)
    if isinstance(annotated, str):
        if annotated == "all":
            idx = list(range(n))
        elif annotated == "nonzero":
            idx = [int(t) for t in np.flatnonzero(label.reshape(n, -1).any(1))]
        else:
            raise ValueError(f"annotated must be 'all', 'nonzero' or a list of frame indices, got {annotated!r}")
    else:
        idx = sorted({int(t) for t in annotated})
        bad = [t for t in idx if not 0 <= t < n]
        if bad:
            raise DataError(f"label file {label_path}: annotated frames {bad} are outside its frames 0..{n - 1}")
    return {t: label[t] for t in idx}


def _pair(image: np.ndarray, image_path: Path, label: np.ndarray | None, label_path: Path | None,
          annotated: Annotated, spacing, fps=None) -> VideoRecord:
    """The record of an image and its optional label volume, both already (T, H, W[, C])."""
    labels: dict[int, np.ndarray] = {}
    if label is not None:
        if label.shape != image.shape[:3]:
            raise DataError(f"label file {label_path}: shape (T, H, W)={label.shape} differs from its image "
                            f"{image_path} {image.shape[:3]}")
        labels = _annotated_labels(label, annotated, label_path)
    elif not isinstance(annotated, str) and len(annotated):
        raise DataError(f"{image_path}: annotated frames {list(annotated)} given but no label file")
    return VideoRecord(frames=image, labels=labels, spacing=spacing, fps=fps, source=str(image_path))


# ------------------------------------------------------------------------------------------------ NIfTI

def _nifti_to_thw(arr: np.ndarray, path: Path, kind: str, header) -> np.ndarray:
    """nibabel (W, H), (W, H, T) or (W, H, T, C) -> (T, H, W) or (T, H, W, C).

    A 4th axis is read as colour only when it clearly is: 3 or 4 long and either a vector / RGB intent or no time
    unit in the header (a 4-D file with a time unit is a 3-D + time series, not a video)."""
    if arr.dtype.names is not None:  # RGB24 / RGBA32 NIfTI: a structured dtype with one field per channel
        arr = np.stack([arr[name] for name in arr.dtype.names], axis=-1)
        if arr.ndim == 3:  # (W, H, C): a single colour frame
            arr = arr[:, :, None]
        if arr.ndim != 4:
            raise DataError(f"{kind} file {path}: colour volume of shape {arr.shape[:-1]}, expected (W, H[, T])")
    elif arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return np.ascontiguousarray(arr.T[None])  # (W, H) -> (1, H, W)
    if arr.ndim == 3:
        return np.ascontiguousarray(arr.transpose(2, 1, 0))  # (W, H, T) -> (T, H, W)
    intent, time_unit = header.get_intent()[0], header.get_xyzt_units()[1]
    colour = intent in ("vector", "rgb vector", "rgba vector") or time_unit == "unknown"
    if arr.ndim == 4 and arr.shape[3] in (3, 4) and colour:
        return np.ascontiguousarray(arr.transpose(2, 1, 0, 3))  # (W, H, T, C) -> (T, H, W, C)
    raise DataError(f"{kind} file {path}: shape {arr.shape} is not a video; expected (W, H), (W, H, T) or "
                    f"(W, H, T, C) with C = 3 or 4 colour channels and no time unit")


def _load_nifti(path: Path, kind: str):
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"{kind} file {path}: file not found (expected a NIfTI .nii / .nii.gz)")
    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)  # stored dtype; float only if the header asks for intensity scaling
    except Exception as e:  # truncated gzip, bad header, not a NIfTI file
        raise DataError(f"Cannot read {kind} file {path} as NIfTI: {type(e).__name__}: {e}") from None
    return img, _nifti_to_thw(arr, path, kind, img.header)


def _nifti_spacing(img) -> tuple[float, float] | None:
    """(dy, dx) in mm from pixdim: nibabel's zooms follow its (W, H, ...) axes, i.e. (dx, dy, ...)."""
    zooms = img.header.get_zooms()
    if len(zooms) < 2:
        return None
    # pixdim is float32: keep its shortest decimal form (0.4, not 0.4000000059604645)
    dx, dy = (float(str(np.float32(z))) for z in zooms[:2])
    if not (np.isfinite(dx) and np.isfinite(dy) and dx > 0 and dy > 0):
        return None
    unit = img.header.get_xyzt_units()[0]
    scale = _NIFTI_MM.get(unit, 1.0)
    return dy * scale, dx * scale


def read_nifti(image_path: str | Path, label_path: str | Path | None = None,
               annotated: Annotated = "all") -> VideoRecord:
    """Read a NIfTI video (and optionally its label volume) as a ``VideoRecord``.

    image_path: ``.nii`` / ``.nii.gz`` of shape (W, H) or (W, H, 1) (one frame), (W, H, T) or (W, H, T, C) with
                C = 3 / 4 (colour); returned as (T, H, W[, C]) in the stored dtype.
    label_path: a label volume with the image's (W, H[, T]) shape, or None (no annotated frames).
    annotated:  which label frames count as annotated: "all" (default: every frame, empty ones included),
                "nonzero" (frames with at least one non-zero pixel: the CardiacUDC convention) or a list of
                0-based frame indices.

    Spacing comes from pixdim (converted to mm from the header's spatial unit; "unknown" is taken as mm).
    fps is None: a NIfTI video keeps time on its third, nominally spatial, axis, so pixdim[3] is no frame rate.
    """
    image_path = Path(image_path)
    img, image = _load_nifti(image_path, "image")
    label = None
    if label_path is not None:
        label_path = Path(label_path)
        _, label = _load_nifti(label_path, "label")
    return _pair(image, image_path, label, label_path, annotated, _nifti_spacing(img))


# ------------------------------------------------------------------------------------------------ MetaImage
# nibabel cannot read MetaImage and SimpleITK is not a dependency, so the small text header is parsed here.
# A header is ``Key = Value`` lines; ``ElementDataFile`` is the last key and names the raw file (relative to the
# header), or is LOCAL when the data follows the header in the same file (.mha).

_MET_TYPES = {
    "MET_CHAR": np.int8, "MET_UCHAR": np.uint8, "MET_SHORT": np.int16, "MET_USHORT": np.uint16,
    "MET_INT": np.int32, "MET_UINT": np.uint32, "MET_LONG": np.int32, "MET_ULONG": np.uint32,
    "MET_LONG_LONG": np.int64, "MET_ULONG_LONG": np.uint64, "MET_FLOAT": np.float32, "MET_DOUBLE": np.float64,
}


def read_mhd_header(path: str | Path) -> dict[str, str]:
    """The ``key = value`` pairs of a MetaImage header, plus ``_data_offset``: the byte where the header ends (where
    LOCAL data starts)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"Cannot read MetaImage header {path}: {e.strerror or e}") from None
    header: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        end = len(raw) if end < 0 else end + 1
        line = raw[pos:end].decode("latin-1").strip()
        pos = end
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DataError(f"MetaImage header {path}: line {line[:40]!r} is not 'Key = Value'")
        header[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    header["_data_offset"] = str(pos)
    return header


def _mhd_field(header: dict, key: str, path: Path, cast, count: int | None = None):
    if key not in header:
        raise DataError(f"MetaImage header {path}: missing key {key}")
    try:
        values = [cast(v) for v in header[key].split()]
    except ValueError:
        raise DataError(f"MetaImage header {path}: {key} = {header[key]!r} is not a list of {cast.__name__}") \
            from None
    if count is not None and len(values) != count:
        raise DataError(f"MetaImage header {path}: {key} has {len(values)} values, expected {count} (NDims)")
    return values


def _true(header: dict, *keys: str) -> bool:
    return any(header.get(k, "False").lower() in ("true", "1") for k in keys)


def _load_mhd(path: Path, kind: str) -> tuple[np.ndarray, tuple[float, float] | None]:
    """One MetaImage as (T, H, W[, C]) plus its (dy, dx) spacing (MetaImage spacing is in mm by convention)."""
    h = read_mhd_header(path)
    if h.get("ObjectType", "Image").lower() != "image":
        raise DataError(f"{kind} file {path}: ObjectType = {h['ObjectType']}, expected Image")
    ndims = _mhd_field(h, "NDims", path, int, 1)[0]
    if ndims not in (2, 3):
        raise DataError(f"{kind} file {path}: NDims = {ndims}, expected 2 (one frame) or 3 (W, H, T)")
    dims = _mhd_field(h, "DimSize", path, int, ndims)
    etype = h.get("ElementType", "")
    if etype not in _MET_TYPES:
        raise DataError(f"{kind} file {path}: unknown ElementType {etype!r}, expected one of "
                        f"{', '.join(_MET_TYPES)}")
    channels = int(h.get("ElementNumberOfChannels", "1"))
    dtype = np.dtype(_MET_TYPES[etype]).newbyteorder(
        ">" if _true(h, "BinaryDataByteOrderMSB", "ElementByteOrderMSB") else "<")
    data_name = h.get("ElementDataFile", "")
    if data_name.upper() == "LOCAL":
        data_path, offset = path, int(h["_data_offset"])
    elif not data_name or data_name.upper() == "LIST" or "%" in data_name:
        raise DataError(f"{kind} file {path}: ElementDataFile = {data_name!r}; expected one raw file or LOCAL")
    else:
        data_path, offset = path.parent / data_name, 0
    try:
        buf = data_path.read_bytes()[offset:]
    except FileNotFoundError:
        raise DataError(f"{kind} file {path}: its raw data file {data_path} is missing") from None
    except OSError as e:
        raise DataError(f"Cannot read raw data file {data_path} of {path}: {e.strerror or e}") from None
    header_size = int(h.get("HeaderSize", "0"))
    n_bytes = int(np.prod(dims)) * channels * dtype.itemsize
    if _true(h, "CompressedData"):
        try:
            buf = zlib.decompress(buf)
        except zlib.error as e:
            raise DataError(f"{kind} file {path}: CompressedData = True but {data_path} is not zlib data: "
                            f"{e}") from None
    if header_size == -1:  # the data is the last n_bytes of the file, after a header of unknown size
        buf = buf[len(buf) - n_bytes:] if len(buf) >= n_bytes else buf
    elif header_size > 0:
        buf = buf[header_size:]
    if len(buf) != n_bytes:
        raise DataError(f"{kind} file {path}: raw data {data_path} holds {len(buf)} bytes, expected {n_bytes} "
                        f"(DimSize {' '.join(map(str, dims))} × {channels} channel(s) × {etype})")
    # x varies fastest on disk, so the C-order shape is DimSize reversed: (T, H, W), channels innermost
    shape = tuple(reversed(dims)) + ((channels,) if channels > 1 else ())
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if ndims == 2:
        arr = arr[None]
    spacing = None
    if "ElementSpacing" in h or "ElementSize" in h:
        sp = _mhd_field(h, "ElementSpacing" if "ElementSpacing" in h else "ElementSize", path, float, ndims)
        spacing = (sp[1], sp[0])  # (sx, sy[, st]) -> (dy, dx)
    return arr, spacing


def read_mhd(image_path: str | Path, label_path: str | Path | None = None,
             annotated: Annotated = "all") -> VideoRecord:
    """Read a MetaImage video (legacy CAMUS release: ``patientXXXX_2CH_ED.mhd`` + ``.raw``) as a ``VideoRecord``.

    DimSize (W, H) -> one frame (1, H, W); (W, H, T) -> (T, H, W); ElementNumberOfChannels C > 1 -> (T, H, W, C).
    Supported: the MET_* element types above, BinaryDataByteOrderMSB, CompressedData (zlib), HeaderSize,
    ElementDataFile = <raw file> or LOCAL. ``label_path`` / ``annotated`` as in :func:`read_nifti`.
    Spacing is ElementSpacing (sx, sy) as (dy, dx); fps is None.
    """
    image_path = Path(image_path)
    image, spacing = _load_mhd(image_path, "image")
    label = None
    if label_path is not None:
        label_path = Path(label_path)
        label, _ = _load_mhd(label_path, "label")
    return _pair(image, image_path, label, label_path, annotated, spacing)


# ------------------------------------------------------------------------------------------------ sources

@dataclass(frozen=True)
class NiftiSource:
    """A ``VideoSource`` for one NIfTI image (+ label) pair."""

    image_path: str
    label_path: str | None = None
    annotated: Annotated = "all"

    def read(self) -> VideoRecord:
        return read_nifti(self.image_path, self.label_path, self.annotated)

    @property
    def where(self) -> str:
        return str(self.image_path)

    def key(self) -> str:
        return file_key(*[p for p in (self.image_path, self.label_path) if p is not None])


@dataclass(frozen=True)
class MhdSource:
    """A ``VideoSource`` for one MetaImage image (+ label) pair; the key covers the headers and their raw files."""

    image_path: str
    label_path: str | None = None
    annotated: Annotated = "all"

    def read(self) -> VideoRecord:
        return read_mhd(self.image_path, self.label_path, self.annotated)

    @property
    def where(self) -> str:
        return str(self.image_path)

    def key(self) -> str:
        files = []
        for p in (self.image_path, self.label_path):
            if p is not None:
                data = read_mhd_header(p).get("ElementDataFile", "LOCAL")
                files += [p] if data.upper() == "LOCAL" else [p, Path(p).parent / data]
        return file_key(*files)
