"""Paper 000 (Volume3D): a CT series -> float32 [224, 224, 224] in [0, 1].

The steps, in the paper's order, each a small function with its constants
as parameters:

1. :func:`normalize` - HU -> grey in [0, 1]: per-volume min-max (the
   paper) or an HU window (ours, documented alternative).
2. :func:`resample` - pixel spacing x 2.3 and slice thickness x 0.5 with
   cubic interpolation: [N, 512, 512] -> [2N, 223, 223].
3. :func:`segment_lungs` - 2-D lung mask per slice
   (:mod:`covid_keras.preprocess.lung_mask`), then mask x image.
4. :func:`select_range` - lung area per slice over its maximum; the slices
   from the first to the last with a ratio >= 0.7 are kept (ours: one
   contiguous range, so the volume stays a volume).
5. :func:`resize_volume` - the kept sub-volume, cubic, to 224 x 224 x 224.

Min-max normalisation is affine and cubic interpolation is linear, so the
volume is resampled in HU and normalised afterwards with the original
volume's minimum and maximum: the same numbers, on a quarter of the voxels.

Minority-class augmentation (CAP and Normal only, paper 000 Table 1):
:func:`augment_minority` returns (a) the study re-run with pixel spacing
x 1.75 and slice thickness x 0.7, and (b) a random centre crop of every
slice with a window in [0.75, 0.9] of the slice size, resized back.
"""

import dataclasses

import numpy as np

from covid_keras import errors
from covid_keras.preprocess import lung_mask
from covid_keras.preprocess.body_slices import _series_name
from covid_keras.preprocess.resample import resize_depth, resize_slices, resize_volume, zoom_shape

OUTPUT_SHAPE = (224, 224, 224)
#: (slice thickness factor, pixel spacing factor): new spacing = old x factor.
SPACING_FACTORS = (0.5, 2.3)
#: The minority-class second resampling.
MINORITY_SPACING_FACTORS = (0.7, 1.75)
AREA_RATIO = 0.7
HU_WINDOW = (-1024.0, 400.0)
CROP_WINDOW = (0.75, 0.9)
NORMALIZATIONS = ("minmax", "window")
#: Grey levels of a cached volume: the [0, 1] output is stored as uint8
#: ``round(v * 255)`` (11 MB for 224^3 instead of float32's 45 MB). Each
#: voxel moves by at most 0.5 / 255 = 0.00196 (float16 would keep 2.4e-4 near
#: 1 at twice the size); prediction quantizes the same way, so a served
#: model sees exactly the values training saw.
QUANTIZATION_LEVELS = 255


@dataclasses.dataclass
class Volume3DSteps:
    """Intermediate results of :func:`volume3d`, for previews and tests."""

    resampled: np.ndarray  # grey [2N, y, x] in [0, 1], before masking
    mask: np.ndarray  # bool lung masks of ``resampled``
    area_ratio: np.ndarray  # lung area per slice / its maximum
    kept: tuple  # (start, stop) slice range kept, stop exclusive
    output: np.ndarray  # the final [224, 224, 224] input


def _grey_range(hu, normalization, window):
    if normalization == "minmax":
        return float(np.min(hu)), float(np.max(hu))
    if normalization == "window":
        return float(window[0]), float(window[1])
    raise errors.ConfigurationError(
        f"`normalization` must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
    )


def normalize(hu, normalization="minmax", window=HU_WINDOW):
    """HU -> grey in [0, 1] by per-volume min-max or an HU window."""
    lo, hi = _grey_range(hu, normalization, window)
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((np.asarray(hu, np.float32) - lo) * scale, 0.0, 1.0)


def resample(volume, factors=SPACING_FACTORS):
    """Cubic resampling by spacing factors (slice, pixel): new spacing = old x factor."""
    slice_f, pixel_f = factors
    z, y, x = np.shape(volume)
    new_z, new_y, new_x = zoom_shape((z, y, x), (slice_f, pixel_f, pixel_f))
    out = resize_slices(volume, (new_y, new_x), "cubic")
    return resize_depth(out, new_z, "cubic")


def segment_lungs(grey, threshold=lung_mask.THRESHOLD, stretch=lung_mask.STRETCH):
    """Lung masks of a grey [z, y, x] volume, per slice; returns (masks, grey x masks)."""
    masks = lung_mask.lung_masks(grey, threshold, stretch)
    return masks, grey * masks


def select_range(masks, min_ratio=AREA_RATIO):
    """Slices from the first to the last whose lung area / max area >= ``min_ratio``.

    Returns:
        ``(start, stop, ratio)``: the kept range (stop exclusive) and the
        per-slice area ratio. ``start == stop`` when no lung was found.
    """
    area = masks.reshape(masks.shape[0], -1).sum(axis=1).astype(np.float64)
    peak = area.max() if area.size else 0.0
    if peak <= 0:
        return 0, 0, np.zeros_like(area)
    ratio = area / peak
    kept = np.flatnonzero(ratio >= min_ratio)
    return int(kept[0]), int(kept[-1]) + 1, ratio


def center_crop(volume, fractions):
    """Centre-crops slice k to ``fractions[k]`` of its size and resizes it back."""
    z, y, x = volume.shape
    out = np.empty_like(volume)
    import cv2

    for k in range(z):
        f = float(fractions[k])
        h, w = max(1, int(round(y * f))), max(1, int(round(x * f)))
        top, left = (y - h) // 2, (x - w) // 2
        out[k] = cv2.resize(volume[k, top:top + h, left:left + w], (x, y), interpolation=cv2.INTER_CUBIC)
    return np.clip(out, 0.0, 1.0)



def _largest_region(mask2d):
    """Pixel count of the largest 8-connected region of a 2-D mask."""
    import cv2

    n, _, stats, _ = cv2.connectedComponentsWithStats(mask2d.astype(np.uint8), connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0


def _check_lungs(ct, hu_range, masks, kept, resampled, min_lung_fraction, lung_max_hu, min_slices):
    start, stop = kept
    slice_area = masks.shape[1] * masks.shape[2]
    areas = masks.reshape(masks.shape[0], -1).sum(axis=1)
    # Lungs are large regions: specks of air inside a head's field of view or
    # in bowel gas add up to some area but no single region is lung-sized.
    largest = _largest_region(masks[int(np.argmax(areas))]) if masks.size else 0
    where = _series_name(ct)
    if largest < min_lung_fraction * slice_area:
        raise errors.NoLungError(
            f"{where}: no lungs found (largest lung region {100.0 * largest / slice_area:.2f} % of a "
            f"slice, needed {100.0 * min_lung_fraction:.1f} %); use chest CT series, a head or "
            "abdomen series cannot go through the Volume3D pipeline."
        )
    lo, hi = hu_range
    mean_hu = float(resampled[masks].mean()) * (hi - lo) + lo
    if mean_hu > lung_max_hu:
        raise errors.NoLungError(
            f"{where}: no lungs found (the dark regions average {mean_hu:.0f} HU, aerated "
            f"lung is below {lung_max_hu:.0f} HU); use chest CT series, a head or abdomen "
            "series cannot go through the Volume3D pipeline."
        )
    if stop - start < min_slices:
        raise errors.NoLungError(
            f"{where}: only {stop - start} slices have a lung area of at least the selection "
            f"ratio (needed {min_slices}); the series covers too little of the lungs for the "
            "Volume3D pipeline."
        )


def volume3d(ct, *, normalization="minmax", window=HU_WINDOW, spacing_factors=SPACING_FACTORS,
             threshold=lung_mask.THRESHOLD, stretch=lung_mask.STRETCH, min_area_ratio=AREA_RATIO,
             output_shape=OUTPUT_SHAPE, min_lung_fraction=0.02, lung_max_hu=-400.0, min_slices=4,
             return_steps=False):
    """Paper 000's preprocessing: a CT series -> float32 [224, 224, 224] in [0, 1].

    Args:
        ct: a :class:`covid_keras.data.CTSeries` (``hu`` [z, y, x]).
        normalization: ``"minmax"`` (per volume, the paper) or ``"window"``.
        window: the HU window for ``normalization="window"``.
        spacing_factors: (slice thickness, pixel spacing) multipliers.
        threshold: binarisation threshold after the contrast stretch.
        stretch: the saturated fractions (low, high) of the stretch.
        min_area_ratio: lung area / maximum area a kept slice needs.
        output_shape: the final [z, y, x] shape.
        min_lung_fraction: the area of the largest connected lung region
            (on the slice where the lungs are widest), as a fraction of the
            slice, below which the series has no lungs. A chest's lungs
            cover 10-25 % of a slice there.
        lung_max_hu: the mean HU of the masks above which they are not
            aerated lung (a head CT's brain, an abdomen's soft tissue).
        min_slices: fewest kept (resampled) slices accepted.
        return_steps: also return a :class:`Volume3DSteps`.

    Returns:
        float32 [224, 224, 224] in [0, 1] (z, y, x), or ``(volume, steps)``.

    Raises:
        NoLungError: no lungs, or too few slices with lungs.
        ConfigurationError: an unknown ``normalization``.

    Example:
        >>> from covid_keras.data import synthetic
        >>> from covid_keras.preprocess import volume3d
        >>> hu, _, spacing = synthetic.phantom_volume("covid", n_slices=24, size=64)
        >>> ct = synthetic.as_ct_series(hu, spacing)
        >>> volume3d(ct, output_shape=(32, 32, 32)).shape
        (32, 32, 32)
    """
    hu = np.asarray(ct.hu, dtype=np.float32)
    lo, hi = _grey_range(hu, normalization, window)
    # Resample in HU, then normalise: identical for min-max, 4x fewer voxels.
    resampled = resample(hu, spacing_factors)
    if resampled is hu or np.shares_memory(resampled, ct.hu):  # factors of 1: never edit the caller's HU
        resampled = resampled.copy()
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    resampled -= lo
    resampled *= scale
    np.clip(resampled, 0.0, 1.0, out=resampled)
    masks, masked = segment_lungs(resampled, threshold, stretch)
    start, stop, ratio = select_range(masks, min_area_ratio)
    _check_lungs(ct, (lo, hi), masks, (start, stop), resampled, min_lung_fraction, lung_max_hu, min_slices)
    out = resize_volume(masked[start:stop], output_shape, "cubic")
    np.clip(out, 0.0, 1.0, out=out)
    if return_steps:
        return out, Volume3DSteps(resampled, masks, ratio, (start, stop), out)
    return out


def quantize(volume):
    """float [0, 1] volume -> uint8 ``round(v * 255)`` (the cache's storage, see QUANTIZATION_LEVELS)."""
    return np.rint(np.clip(np.asarray(volume, np.float32), 0.0, 1.0) * QUANTIZATION_LEVELS).astype(np.uint8)


def dequantize(volume):
    """uint8 cached volume -> float32 in [0, 1] (``v / 255``; the training pipeline does the same in TensorFlow)."""
    return np.asarray(volume).astype(np.float32) / np.float32(QUANTIZATION_LEVELS)


def require_lungs(ct, **options):
    """Raises :class:`NoLungError` unless ``ct`` shows lungs (Volume3D's checks).

    Runs the pipeline's normalisation, resampling, lung segmentation and
    range selection (about 0.5 s for 512 x 512 x 300 on 2 cores) without the
    final resize; the prediction command line uses it to refuse a head or
    abdomen series before a chest model gives it an answer.

    Args:
        ct: the study. **options: :func:`volume3d`'s keyword arguments.
    """
    volume3d(ct, output_shape=(1, 1, 1), **options)


def augment_minority(ct, seed=0, *, crop_window=CROP_WINDOW,
                     spacing_factors=MINORITY_SPACING_FACTORS, base=None, **options):
    """Paper 000's extra inputs for a minority-class (CAP, Normal) study.

    Args:
        ct: the study.
        seed: random seed of the crop fractions.
        crop_window: range of the per-slice centre-crop fraction.
        spacing_factors: the second resampling's (slice, pixel) factors.
        base: the study's standard :func:`volume3d` output when the caller
            has it already (saves computing it again).
        **options: passed to :func:`volume3d`.

    Returns:
        ``[resampled, cropped]``: the study through :func:`volume3d` with the
        second spacing factors, and the standard input with every slice
        centre-cropped to a random fraction in ``crop_window`` and resized
        back. Both float32 in [0, 1] of the output shape.
    """
    rng = np.random.default_rng(seed)
    second = volume3d(ct, spacing_factors=spacing_factors, **options)
    base = volume3d(ct, **options) if base is None else base
    fractions = rng.uniform(crop_window[0], crop_window[1], size=base.shape[0])
    return [second, center_crop(base, fractions)]
