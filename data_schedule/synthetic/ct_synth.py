"""CTSynth: an embedded synthetic abdominal CT in BTCV's file layout, generated on first use (nothing can be
downloaded), so that volume methods (in-context segmentation, 3D metrics) run offline and in CI.

    root = ensure_ct_synth("datasets")     # -> datasets/ct_synth, generated once (seeded, atomic)
    # datasets/ct_synth/RawData/Training/img/img0001.nii.gz  (int16 HU)   label/label0001.nii.gz  (uint8)

What is modelled (axial slices, image left = patient right as radiologists view them):
- geometry: 128 × 128 pixels of 3.0 mm (a 384 mm field of view) and 40 slices of 5 mm (200 mm of abdomen; BTCV's
  scans have 0.6–0.9 mm pixels and 2.5–5 mm slices, 85–198 slices: REFERENCE §1.5 and the BTCV description);
- anatomy: an elliptical body (subcutaneous fat, muscle wall, soft tissue and bowel with gas pockets), the
  vertebra and the aorta as distractors, and four labelled organs: 1 spleen, 2 right kidney, 3 left kidney,
  4 liver (its own contiguous values, NOT BTCV's 1/2/3/6), each a smooth blob (an ellipsoid whose radius is
  modulated by low-frequency noise; the liver a large right lobe with a left-lobe extension, the kidneys
  bean-shaped with a medial hilum and a brighter cortex) at its usual place: liver and spleen high, kidneys
  lower and posterior, so the top and bottom slices show some organs only and some slices none;
- intensities (portal-venous phase, standard CT tables, e.g. Hounsfield units in Radiopaedia's "Hounsfield unit"
  article): air −1000, fat −100, muscle 50, liver 60, spleen 50 (liver and spleen differ by ~10 HU: position, not
  brightness, separates them), kidney cortex 160 / medulla 110 (enhancing), aorta 170, bone 450–700, bowel −20 … 40;
- image formation: each 5 mm slice is the mean of four 1.25 mm sub-slices (partial volume at organ ends), in-plane
  Gaussian blur (σ 0.8 px, the reconstruction kernel), Gaussian noise σ 14 HU (typical abdominal CT at 5 mm);
- variation between volumes (seeded): body size, organ positions (±10 mm), sizes (×0.85–1.15), z extents, bowel.

It is a calibration aid, not an anatomy atlas: the shapes are blobs, there is no pathology, and the labels are
exact (no inter-rater variation). A per-slice U-Net on it is the reference the in-context methods must beat.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

DATASET_DIRNAME = "ct_synth"
CLASS_NAMES = ["spleen", "kidney_R", "kidney_L", "liver"]  # label values 1..4
SIZE, SLICES, PIXEL_MM, SLICE_MM, SUB = 128, 40, 3.0, 5.0, 4
HU = dict(air=-1000.0, fat=-100.0, muscle=50.0, soft=30.0, liver=60.0, spleen=50.0, cortex=160.0, medulla=110.0,
          aorta=170.0, bone=550.0)
NOISE_HU, BLUR_PX = 14.0, 0.8
MARKER = ".ct_synth"  # written last: its presence means a complete CTSynth folder


def _grid(nz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Millimetre coordinates (z, y, x) of the fine grid, centred in-plane; z from 0 at the top."""
    z = (np.arange(nz) + 0.5) * (SLICE_MM / SUB)
    y = (np.arange(SIZE) - SIZE / 2 + 0.5) * PIXEL_MM
    x = (np.arange(SIZE) - SIZE / 2 + 0.5) * PIXEL_MM
    return np.meshgrid(z, y, x, indexing="ij")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return n / (n.std() + 1e-8)


def _blob(coords, centre, radii, rng, wobble: float = 0.12) -> np.ndarray:
    """An ellipsoid (centre, radii in mm, (z, y, x)) whose normalised radius is modulated by smooth noise."""
    zz, yy, xx = coords
    d = np.sqrt(((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2
                + ((xx - centre[2]) / radii[2]) ** 2)
    noise = _smooth_noise(rng, (8, 8, 8), 1.2)
    noise = ndimage.zoom(noise, [s / 8 for s in d.shape], order=1)[: d.shape[0], : d.shape[1], : d.shape[2]]
    return d + wobble * noise < 1.0


def render_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One volume: (HU int16 (SLICES, SIZE, SIZE), labels uint8 same shape), axis order (z, y, x)."""
    nz = SLICES * SUB
    coords = _grid(nz)
    zz, yy, xx = coords
    u = rng.uniform
    # body: an ellipse in-plane, slightly larger lower down
    ax, ay = u(150, 172), u(105, 125)
    body = (xx / ax) ** 2 + (yy / ay) ** 2 < 1.0
    fat_w = u(10, 24)
    inner = (xx / (ax - fat_w)) ** 2 + (yy / (ay - fat_w)) ** 2 < 1.0
    wall = inner & ~((xx / (ax - fat_w - 8)) ** 2 + (yy / (ay - fat_w - 8)) ** 2 < 1.0)
    img = np.full(zz.shape, HU["air"], np.float32)
    img[body] = HU["fat"]
    img[inner] = HU["soft"]
    img[wall] = HU["muscle"]
    # bowel texture and gas inside the abdomen
    tex = _smooth_noise(rng, (nz // 4, SIZE // 4, SIZE // 4), 1.0)
    tex = ndimage.zoom(tex, 4, order=1)
    img = np.where(inner & ~wall, img + 25 * tex, img)
    gas = inner & ~wall & (ndimage.zoom(_smooth_noise(rng, (nz // 4, SIZE // 4, SIZE // 4), 0.8), 4, order=1) > 2.2)
    img[gas] = HU["air"] + 150
    # spine and aorta (posterior midline): distractors
    spine_y = ay - fat_w - 30
    spine = ((xx / 22) ** 2 + ((yy - spine_y) / 20) ** 2 < 1.0) & inner
    img[spine] = HU["bone"] + 60 * _smooth_noise(rng, spine.shape, 2.0)[spine]
    aorta = (((xx - u(5, 15)) / 12) ** 2 + ((yy - (spine_y - 34)) / 12) ** 2 < 1.0) & inner
    img[aorta] = HU["aorta"]

    lab = np.zeros(zz.shape, np.uint8)
    s = lambda lo, hi: u(lo, hi)  # noqa: E731
    zlen = nz * SLICE_MM / SUB
    scale = s(0.85, 1.15)
    # liver: image left (patient right), upper abdomen; right lobe + left-lobe extension over the midline
    liver = _blob(coords, (zlen * s(0.22, 0.30), s(-5, 15), -ax * 0.40 + s(-10, 10)),
                  (zlen * 0.32 * scale, 82 * scale, 72 * scale), rng)
    liver |= _blob(coords, (zlen * s(0.15, 0.22), s(-45, -25), s(-10, 20)), (zlen * 0.14, 35 * scale, 45 * scale), rng)
    # spleen: image right, posterior, upper
    spleen = _blob(coords, (zlen * s(0.25, 0.35), s(25, 45), ax * 0.55 + s(-10, 8)),
                   (zlen * 0.16 * s(0.85, 1.15), 40, 28), rng)
    kidneys = []
    for side in (-1, 1):  # -1: image left = right kidney (a little lower), +1: left kidney
        cz = zlen * (s(0.55, 0.62) if side < 0 else s(0.48, 0.56))
        cy, cx = spine_y - s(4, 14), side * s(50, 62)
        k = _blob(coords, (cz, cy, cx), (zlen * 0.15 * s(0.9, 1.1), 26, 20), rng, wobble=0.08)
        hilum = _blob(coords, (cz, cy - 4, cx - side * 16), (zlen * 0.08, 10, 10), rng, wobble=0.05)
        kidneys.append((k & ~hilum, (cz, cy, cx)))
    inside = inner & ~wall & ~spine & ~aorta
    for value, mask, hu in ((4, liver, HU["liver"]), (1, spleen, HU["spleen"])):
        mask &= inside & (lab == 0)
        lab[mask] = value
        img[mask] = hu + 6 * tex[mask]
    for value, (mask, (cz, cy, cx)) in zip((2, 3), kidneys):
        mask &= inside & (lab == 0)
        lab[mask] = value
        core = ndimage.binary_erosion(mask, iterations=3)
        img[mask] = HU["cortex"]
        img[core] = HU["medulla"]
    # image formation: partial volume along z, reconstruction blur, noise
    img = img.reshape(SLICES, SUB, SIZE, SIZE).mean(1)
    img = ndimage.gaussian_filter(img, (0, BLUR_PX, BLUR_PX))
    img += rng.normal(0, NOISE_HU, img.shape)
    # a slice's label: the fine sub-slice at its centre (what a rater draws on the reconstructed slice)
    lab = lab.reshape(SLICES, SUB, SIZE, SIZE)[:, SUB // 2]
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16), lab


def _save(path: Path, arr_zyx: np.ndarray) -> None:
    import nibabel as nib

    affine = np.diag([PIXEL_MM, PIXEL_MM, SLICE_MM, 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(arr_zyx.transpose(2, 1, 0)), affine)  # (x, y, z) on disk
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def generate_ct_synth(root: str | os.PathLike, seed: int = 0, volumes: int = 16) -> Path:
    """Write CTSynth into ``<root>/ct_synth`` (a new folder; an existing one raises FileExistsError)."""
    root = Path(root)
    final = root / DATASET_DIRNAME
    if final.exists():
        raise FileExistsError(f"{final} exists; CTSynth never overwrites a folder")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ct_synth.", dir=root))
    try:
        img_dir, lab_dir = tmp / "RawData" / "Training" / "img", tmp / "RawData" / "Training" / "label"
        img_dir.mkdir(parents=True)
        lab_dir.mkdir(parents=True)
        for i in range(1, volumes + 1):
            img, lab = render_volume(np.random.default_rng([seed, i]))
            _save(img_dir / f"img{i:04d}.nii.gz", img)
            _save(lab_dir / f"label{i:04d}.nii.gz", lab)
        (tmp / MARKER).write_text(f"seed={seed} volumes={volumes}\n")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def ensure_ct_synth(root: str | os.PathLike, seed: int = 0, volumes: int = 16) -> Path:
    """``<root>/ct_synth``, generated there first if missing (serialised across processes with a lock file)."""
    root = Path(root)
    final = root / DATASET_DIRNAME
    if (final / MARKER).exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{DATASET_DIRNAME}.lock", "a+") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:
            pass
        if (final / MARKER).exists():
            return final
        if final.exists():
            from data_schedule.sources.nifti import DataError

            raise DataError(f"{final} exists but is not a complete CTSynth folder (no {MARKER}); move it away")
        msg = f"CTSynth: {final} not found; generating the embedded synthetic CT (seed={seed}, {volumes} volumes) ..."
        logger.info(msg)
        if not logger.hasHandlers():
            print(msg, flush=True)
        try:
            return generate_ct_synth(root, seed=seed, volumes=volumes)
        except FileExistsError:
            return final
