"""Paper 001 (MultiScale): CT slices -> uint8 [224, 224] inputs of the slice classifier.

Garg et al. preprocess two datasets. Each step is a small pure function with
its constants as keyword parameters, chained in the paper's order:

COVID-CT-MD (DICOM series, :func:`ct_slices`):

1. :func:`to_uint8` - "normalise to 0-255, cast to uint8".
2. :func:`body_mask` + :func:`apply_body_roi` - Gaussian smoothing ->
   threshold -> binary image -> largest-area external contour, filled = the
   patient's body; mask x image removes the table and the background.
3. :func:`brighten` - brightness x 2 "to match COVIDx-CT".
4. :func:`interpolate_slices` - spline interpolation between neighbouring
   slices to add training slices, never between an infected and a clean
   slice (training set of the slice classifier only, so it is a separate
   call, not part of :func:`ct_slices`).
5. :func:`resize_slice` - 224 x 224.

COVIDx-CT (PNG slices, :func:`covidx_slice`): optional crop to the split
file's body box, the same body RoI, resize 224 (no brightness step).

ResNet50's ``preprocess_input`` is the model's first layer, not done here.

Choices of ours (the paper does not say):

* Min-max normalisation is per volume, of the HU clipped to
  ``window`` = [-1024, 3071] (the 12-bit CT range) first, so padding
  (-3024 and the like) or out-of-range artefacts of lossy files do not
  stretch the range; ``normalization="window"`` maps the window linearly
  instead (the same grey for the same HU across patients).
* The threshold is Otsu's on the smoothed slice unless a grey level is
  given; ``sigma`` is in pixels of the slice as read (512 x 512 for
  COVID-CT-MD), since the body RoI is taken before resizing.
* Resizing uses ``cv2.INTER_AREA`` along an axis that shrinks and
  ``cv2.INTER_CUBIC`` along one that grows.
* Interpolation uses a cubic spline along z per run of equally labelled
  slices (``k = min(3, run length - 1)``, not-a-knot ends).
"""

import numbers
import warnings

import cv2
import numpy as np

from covid_keras import errors

#: Output side of every slice (ResNet50 input).
SIZE = 224
#: COVID-CT-MD brightness factor.
BRIGHTNESS = 2.0
#: HU range clipped before normalisation (the 12-bit CT range).
HU_WINDOW = (-1024.0, 3071.0)
NORMALIZATIONS = ("minmax", "window")
#: Gaussian smoothing before the body threshold, standard deviation in pixels.
SIGMA = 2.0
#: Slices added between two neighbours are ``factor - 1``.
INTERPOLATION_FACTOR = 2


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


def _check_size(size):
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise errors.ConfigurationError(
            f"`size` must be a positive integer (224 for ResNet50). Received: size={size!r}"
        )
    return int(size)


def _check_normalization(normalization, window):
    if normalization not in NORMALIZATIONS:
        raise errors.ConfigurationError(
            f"`normalization` must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
        )
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise errors.ConfigurationError(
            f"`window` must be two HU values (low, high). Received: window={window!r}"
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise errors.ConfigurationError(
            f"`window` must be two finite HU values with low < high. Received: window={window!r}"
        )
    return lo, hi


def _check_brightness(factor):
    ok = isinstance(factor, numbers.Real) and not isinstance(factor, bool)
    if not ok or not np.isfinite(factor) or factor <= 0:
        raise errors.ConfigurationError(
            f"`brightness` must be a positive number (2 for COVID-CT-MD, 1 for none). Received: brightness={factor!r}"
        )
    return float(factor)


def _check_mask_args(sigma, threshold):
    ok = isinstance(sigma, numbers.Real) and not isinstance(sigma, bool)
    if not ok or not np.isfinite(sigma) or sigma < 0:
        raise errors.ConfigurationError(
            f"`sigma` must be a non-negative number of pixels (0 for no smoothing). Received: sigma={sigma!r}"
        )
    if threshold is not None:
        ok = isinstance(threshold, numbers.Real) and not isinstance(threshold, bool)
        if not ok or not 0 <= threshold <= 255:
            raise errors.ConfigurationError(
                f"`threshold` must be None (Otsu) or a grey level in [0, 255]. Received: threshold={threshold!r}"
            )
    return float(sigma), threshold


def _check_u8_slice(img, name="img"):
    img = np.asarray(img)
    if img.ndim != 2 or img.dtype != np.uint8:
        raise errors.ConfigurationError(
            f"`{name}` must be a uint8 [H, W] slice (use to_uint8 first). "
            f"Received: shape={img.shape}, dtype={img.dtype}"
        )
    return img


# --------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------


def to_uint8(hu, normalization="minmax", window=HU_WINDOW):
    """HU -> uint8 grey in 0-255 (paper 001, COVID-CT-MD step 1).

    The paper says "normalise to 0-255, cast to uint8". Ours: the HU are
    clipped to ``window`` first; ``"minmax"`` then maps the clipped volume's
    own minimum to 0 and maximum to 255 (per volume, so every slice of a
    series shares one scale), ``"window"`` maps ``window`` itself linearly
    to 0-255. The clip keeps padding values (-3024, -2000) and artefacts
    from stretching the min-max range. Values are rounded to the nearest
    grey level. A uniform volume becomes all 0 under ``"minmax"``.

    Args:
        hu: float array of any shape in HU (a volume [z, y, x] or a slice).
        normalization: ``"minmax"`` (default) or ``"window"``.
        window: (low, high) HU clip range, and the mapped range for
            ``"window"``. Default [-1024, 3071], the 12-bit CT range.

    Returns:
        uint8 array of the shape of ``hu``.

    Raises:
        ConfigurationError: unknown ``normalization`` or a bad ``window``.
        PreprocessingError: ``hu`` is empty or holds NaN / infinite values.

    Example:
        >>> to_uint8(np.array([[-3024.0, -1024.0], [0.0, 1024.0]]))
        array([[  0,   0],
               [128, 255]], dtype=uint8)
        >>> to_uint8(np.array([-1024.0, 3071.0, 1023.5]), normalization="window")
        array([  0, 255, 128], dtype=uint8)
    """
    lo, hi = _check_normalization(normalization, window)
    hu = np.asarray(hu, dtype=np.float32)
    if hu.size == 0:
        raise errors.PreprocessingError(
            f"The HU array is empty (shape {hu.shape}); pass a volume with at least one slice."
        )
    if not np.all(np.isfinite(hu)):
        raise errors.PreprocessingError(
            "The HU array holds NaN or infinite values; fix or drop the series before preprocessing."
        )
    grey = np.clip(hu, lo, hi)  # a new array: the steps below work in place
    if normalization == "minmax":
        lo, hi = float(grey.min()), float(grey.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    grey -= np.float32(lo)
    grey *= np.float32(scale)
    np.rint(grey, out=grey)
    np.clip(grey, 0, 255, out=grey)
    return grey.astype(np.uint8)


def body_mask(img_u8, sigma=SIGMA, threshold=None):
    """The patient's body in one slice (paper 001, body RoI).

    Gaussian smoothing (``cv2.GaussianBlur``) -> threshold -> binary image
    -> the largest-area external contour (``cv2.findContours``), filled
    (``cv2.drawContours``, thickness -1): the body with the lungs inside it,
    without the table or anything else that does not touch it. Foreground
    is grey > threshold.

    Args:
        img_u8: uint8 [H, W] slice.
        sigma: standard deviation of the Gaussian in pixels; 0 skips it.
        threshold: grey level, or None for Otsu's threshold of the smoothed
            slice.

    Returns:
        bool [H, W] mask. All False when the slice has no contour (a blank
        slice, or a uniform one under Otsu) - not an error.

    Raises:
        ConfigurationError: ``img_u8`` is not a uint8 [H, W] slice, or
            ``sigma`` / ``threshold`` is out of range.

    Example:
        >>> img = np.zeros((8, 10), np.uint8)
        >>> img[1:5, 1:6] = 200   # a body
        >>> img[7, 0:10] = 90     # a thin table below it
        >>> int(body_mask(img, sigma=0).sum())
        20
        >>> bool(body_mask(np.zeros((8, 8), np.uint8)).any())
        False
    """
    img = _check_u8_slice(img_u8, "img_u8")
    sigma, threshold = _check_mask_args(sigma, threshold)
    mask = np.zeros(img.shape, dtype=np.uint8)
    if img.size == 0:
        return mask.astype(bool)
    smooth = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma) if sigma > 0 else img
    smooth = np.ascontiguousarray(smooth)
    if threshold is None:
        if int(smooth.min()) == int(smooth.max()):
            return mask.astype(bool)  # uniform: Otsu has nothing to split
        _, binary = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    else:
        _, binary = cv2.threshold(smooth, float(threshold), 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return mask.astype(bool)
    largest = max(contours, key=cv2.contourArea)
    cv2.drawContours(mask, [largest], -1, 1, thickness=cv2.FILLED)
    return mask.astype(bool)


def apply_body_roi(img_u8, mask):
    """Mask x image: keeps the body, sets table and background to 0 (paper 001).

    Args:
        img_u8: [H, W] slice (any dtype; uint8 in the pipeline).
        mask: bool [H, W] from :func:`body_mask`.

    Returns:
        The slice, same dtype, with 0 outside ``mask``.

    Raises:
        ConfigurationError: the shapes differ.

    Example:
        >>> apply_body_roi(np.full((2, 2), 7, np.uint8), np.array([[1, 0], [0, 1]], bool))
        array([[7, 0],
               [0, 7]], dtype=uint8)
    """
    img = np.asarray(img_u8)
    mask = np.asarray(mask, dtype=bool)
    if img.shape != mask.shape:
        raise errors.ConfigurationError(
            f"`mask` must have the slice's shape {img.shape}. Received: mask.shape={mask.shape}"
        )
    return np.where(mask, img, np.zeros((), img.dtype)).astype(img.dtype)


def brighten(img_u8, factor=BRIGHTNESS):
    """Brightness x ``factor``, saturating at 255 (paper 001, COVID-CT-MD only).

    Garg et al. double the brightness of COVID-CT-MD slices "to match the
    brightness of COVIDx-CT".

    Args:
        img_u8: uint8 array.
        factor: positive multiplier (default 2).

    Returns:
        uint8 array, ``min(round(img x factor), 255)``.

    Raises:
        ConfigurationError: ``factor`` is not a positive number.

    Example:
        >>> brighten(np.array([0, 100, 127, 128, 200], np.uint8))
        array([  0, 200, 254, 255, 255], dtype=uint8)
    """
    factor = _check_brightness(factor)
    img = np.asarray(img_u8)
    out = np.rint(img.astype(np.float32) * np.float32(factor))
    return np.clip(out, 0, 255).astype(np.uint8)


def resize_grey(img, size=SIZE):
    """Resizes a grey [H, W] image to float32 [size, size], no clipping.

    ``cv2.INTER_AREA`` along an axis that shrinks, ``cv2.INTER_CUBIC``
    along one that grows (two 1-D passes when one axis shrinks and the other
    grows). Cubic can overshoot the input range: callers clip.

    Args:
        img: [H, W] numeric array.
        size: output side.

    Returns:
        float32 [size, size].

    Raises:
        ConfigurationError: ``size`` is not a positive integer.
        PreprocessingError: ``img`` is empty.

    Example:
        >>> resize_grey(np.ones((4, 6), np.uint8), 3).shape
        (3, 3)
    """
    size = _check_size(size)
    img = np.ascontiguousarray(img, dtype=np.float32)
    if img.ndim != 2:
        raise errors.ConfigurationError(
            f"`img` must be a grey [H, W] image. Received: shape={img.shape}"
        )
    if img.size == 0:
        raise errors.PreprocessingError(f"The image is empty (shape {img.shape}); nothing to resize.")
    rows, cols = img.shape

    def flag(n):
        return cv2.INTER_AREA if size <= n else cv2.INTER_CUBIC

    if (rows, cols) == (size, size):
        return img.copy()
    if (rows - size) * (cols - size) >= 0:  # both shrink or both grow (or one stays)
        return cv2.resize(img, (size, size), interpolation=flag(min(rows, cols)))
    out = cv2.resize(img, (size, rows), interpolation=flag(cols))  # along x
    return cv2.resize(out, (size, size), interpolation=flag(rows))  # along y


def resize_slice(img, size=SIZE):
    """Resizes one slice to uint8 [size, size] (paper 001: 224 x 224).

    ``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_CUBIC`` when enlarging
    (see :func:`resize_grey`), clipped to 0-255 and rounded.

    Args:
        img: [H, W] slice, uint8 (or any numeric in 0-255).
        size: output side (default 224).

    Returns:
        uint8 [size, size].

    Raises:
        ConfigurationError: ``size`` is not a positive integer or ``img`` is
            not 2-D.
        PreprocessingError: ``img`` is empty.

    Example:
        >>> resize_slice(np.full((512, 512), 9, np.uint8)).shape
        (224, 224)
    """
    out = resize_grey(img, size)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _body_roi_slice(img_u8, sigma, threshold):
    return apply_body_roi(img_u8, body_mask(img_u8, sigma=sigma, threshold=threshold))


def _series_name(ct):
    meta = getattr(ct, "meta", None)
    series = meta.get("series") if isinstance(meta, dict) else None
    pid = getattr(ct, "patient_id", None)
    if series and pid:
        return f"series {series} of patient {pid}"
    return f"the series of patient {pid}" if pid else "the volume"


def ct_slices(ct, *, size=SIZE, brightness=BRIGHTNESS, normalization="minmax", window=HU_WINDOW,
              sigma=SIGMA, threshold=None):
    """A COVID-CT-MD series -> uint8 [n, size, size] slices (paper 001).

    The paper's order: :func:`to_uint8` (per volume) -> body RoI per slice
    (:func:`body_mask`, :func:`apply_body_roi`) at the series' own
    resolution -> :func:`brighten` x ``brightness`` -> :func:`resize_slice`.
    Slice interpolation (training only) is :func:`interpolate_slices`,
    called on this output.

    Args:
        ct: a :class:`~covid_keras.data.dicom.CTSeries` (or a [z, y, x] HU
            array).
        size: output side (224).
        brightness: brightness factor (2 for COVID-CT-MD; 1 for none).
        normalization: ``"minmax"`` or ``"window"`` (see :func:`to_uint8`).
        window: HU clip / mapping range.
        sigma: body-mask Gaussian standard deviation in pixels.
        threshold: body-mask grey threshold, None for Otsu.

    Returns:
        uint8 [n, size, size], one per input slice, in volume order.

    Raises:
        ConfigurationError: a bad ``size``, ``brightness``,
            ``normalization``, ``window``, ``sigma`` or ``threshold``.
        PreprocessingError: the volume is empty, not 3-D, or holds NaN.

    Example:
        >>> from covid_keras.data import synthetic
        >>> hu, _, spacing = synthetic.phantom_volume("covid", n_slices=3, size=32)
        >>> out = ct_slices(synthetic.as_ct_series(hu, spacing), size=16)
        >>> out.shape, out.dtype
        ((3, 16, 16), dtype('uint8'))
    """
    size, brightness, grey = _grey_volume(ct, size, brightness, normalization, window, sigma, threshold)
    return _slices_of(grey, size, brightness, sigma, threshold)


def _grey_volume(ct, size, brightness, normalization, window, sigma, threshold):
    """:func:`ct_slices`' checks, then the volume's grey levels: ``(size, brightness, uint8 [n, H, W])``."""
    size = _check_size(size)
    brightness = _check_brightness(brightness)
    _check_normalization(normalization, window)
    _check_mask_args(sigma, threshold)
    hu = np.asarray(getattr(ct, "hu", ct))
    where = _series_name(ct)
    if hu.ndim != 3:
        raise errors.PreprocessingError(
            f"{where}: expected a [z, y, x] volume, got shape {hu.shape}; pass a CT series."
        )
    if hu.size == 0:
        raise errors.PreprocessingError(
            f"{where}: the volume is empty (shape {hu.shape}); the series has no usable slice."
        )
    try:
        return size, brightness, to_uint8(hu, normalization, window)
    except errors.PreprocessingError as e:
        raise errors.PreprocessingError(f"{where}: {e}") from None


def _slices_of(grey, size, brightness, sigma, threshold):
    """Grey slices -> body RoI, brightened, resized: uint8 [n, size, size]."""
    out = np.empty((grey.shape[0], size, size), dtype=np.uint8)
    for k, img in enumerate(grey):
        roi = _body_roi_slice(img, sigma, threshold)
        out[k] = resize_slice(brighten(roi, brightness), size)
    return out


def _as_u8_image(img):
    """uint8 [H, W] from uint8 or float [0, 1] (``read_xray``'s output)."""
    img = np.asarray(img)
    if img.ndim != 2:
        raise errors.ConfigurationError(
            f"`img` must be a grey [H, W] slice (read_xray returns one). Received: shape={img.shape}"
        )
    if img.size == 0:
        raise errors.PreprocessingError(f"The slice is empty (shape {img.shape}); check the image file.")
    if img.dtype == np.uint8:
        return img
    if not np.issubdtype(img.dtype, np.floating):
        raise errors.ConfigurationError(
            f"`img` must be uint8 or float in [0, 1] (read_xray's output). Received: dtype={img.dtype}"
        )
    if not np.all(np.isfinite(img)):
        raise errors.PreprocessingError("The slice holds NaN or infinite values; check the image file.")
    lo, hi = float(img.min()), float(img.max())
    if lo < -1e-6 or hi > 1.0 + 1e-6:
        raise errors.ConfigurationError(
            f"A float `img` must lie in [0, 1] (read_xray's output); scale it or pass uint8. "
            f"Received: values in [{lo:g}, {hi:g}]"
        )
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _crop(img, box):
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        values = None
    if values is None or len(values) != 4 or not all(np.isfinite(v) and v == int(v) for v in values):
        raise errors.ConfigurationError(
            f"`box` must be four integers (xmin, ymin, xmax, ymax), as in the COVIDx-CT split files. "
            f"Received: box={box!r}"
        )
    xmin, ymin, xmax, ymax = (int(v) for v in values)
    rows, cols = img.shape
    cx0, cy0, cx1, cy1 = max(xmin, 0), max(ymin, 0), min(xmax, cols), min(ymax, rows)
    if cx0 >= cx1 or cy0 >= cy1:
        raise errors.PreprocessingError(
            f"The body box {tuple(box)} leaves nothing of a {rows} x {cols} slice; "
            "check that the split file matches the image."
        )
    if (cx0, cy0, cx1, cy1) != (xmin, ymin, xmax, ymax):
        warnings.warn(
            f"The body box {tuple(box)} reaches outside the {rows} x {cols} slice; cropped to "
            f"{(cx0, cy0, cx1, cy1)}.",
            stacklevel=3,
        )
    return img[cy0:cy1, cx0:cx1]


def covidx_slice(img, *, size=SIZE, sigma=SIGMA, threshold=None, box=None):
    """A COVIDx-CT PNG slice -> uint8 [size, size] (paper 001).

    Optional crop to the split file's body box (``image[ymin:ymax,
    xmin:xmax]``, max exclusive, as COVIDNet-CT reads it) -> body RoI
    (:func:`body_mask`, :func:`apply_body_roi`) -> :func:`resize_slice`.
    No brightness step (that one is COVID-CT-MD only).

    Args:
        img: grey [H, W] slice, uint8 or float in [0, 1] (what
            :func:`covid_keras.data.read_xray` returns for a PNG).
        size: output side (224).
        sigma: body-mask Gaussian standard deviation in pixels.
        threshold: body-mask grey threshold, None for Otsu.
        box: (xmin, ymin, xmax, ymax) in pixels, or None for no crop. A box
            reaching outside the image is cut to it with a warning.

    Returns:
        uint8 [size, size].

    Raises:
        ConfigurationError: ``img`` is not [H, W] uint8 / float in [0, 1],
            or a bad ``box``, ``size``, ``sigma`` or ``threshold``.
        PreprocessingError: ``img`` is empty or holds NaN, or ``box``
            leaves nothing of it.

    Warns:
        UserWarning: ``box`` reaches outside the image.

    Example:
        >>> img = np.zeros((40, 40), np.float32)
        >>> img[5:30, 8:32] = 0.6
        >>> out = covidx_slice(img, size=16, box=(4, 2, 36, 34))
        >>> out.shape, out.dtype
        ((16, 16), dtype('uint8'))
    """
    size = _check_size(size)
    sigma, threshold = _check_mask_args(sigma, threshold)
    img = _as_u8_image(img)
    if box is not None:
        img = np.ascontiguousarray(_crop(img, box))
    return resize_slice(_body_roi_slice(img, sigma, threshold), size)


def _runs(labels):
    """(start, stop) of each run of equal consecutive labels, stop exclusive."""
    n = len(labels)
    if n == 0:
        return []
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    bounds = np.concatenate([[0], change, [n]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _spline_run(run, positions, chunk=1 << 16):
    """Cubic (or lower) spline along axis 0 of a uint8 run, at ``positions``."""
    from scipy.interpolate import make_interp_spline

    n = run.shape[0]
    k = min(3, n - 1)
    z = np.arange(n, dtype=np.float64)
    flat = run.reshape(n, -1)
    out = np.empty((len(positions), flat.shape[1]), dtype=np.uint8)
    for c in range(0, flat.shape[1], chunk):  # bounds memory on 512 x 512 stacks
        spline = make_interp_spline(z, flat[:, c:c + chunk].astype(np.float64), k=k, axis=0)
        out[:, c:c + chunk] = np.clip(np.rint(spline(positions)), 0, 255).astype(np.uint8)
    return out.reshape((len(positions),) + run.shape[1:])


def interpolate_slices(slices, labels=None, factor=INTERPOLATION_FACTOR):
    """Adds slices by spline interpolation along z, within equally labelled runs (paper 001).

    Garg et al. add COVID-CT-MD training slices by spline interpolation and
    "didn't interpolate the infected slices with non infected slices". Ours:
    the stack is split into runs of consecutive slices with the same label;
    inside each run of length >= 2, ``factor - 1`` slices are inserted
    between each neighbouring pair, from a spline along z through the run's
    slices (``scipy.interpolate.make_interp_spline``,
    ``k = min(3, run length - 1)``) evaluated at fractional positions,
    clipped to 0-255 and rounded. Original slices are kept unchanged; a run
    of length 1 stays as it is, and nothing is ever created between runs.

    Args:
        slices: uint8 [n, H, W] (the output of :func:`ct_slices`).
        labels: per-slice labels (length n, any comparable values), or None
            to treat the stack as one run.
        factor: integer >= 1; 1 returns the input unchanged.

    Returns:
        ``(new_slices, new_labels, positions)``: uint8 [m, H, W]; the label
        of each output slice (its run's label; None when ``labels`` is
        None); float64 [m], the fractional original z index of each output
        slice (integers for the originals).

    Raises:
        ConfigurationError: ``slices`` is not uint8 [n, H, W], ``labels``
            has another length, or ``factor`` is not an integer >= 1.
        PreprocessingError: ``slices`` is empty.

    Example:
        >>> s = np.arange(4, dtype=np.uint8).reshape(4, 1, 1) * 10
        >>> out, lab, pos = interpolate_slices(s, [0, 0, 1, 1], factor=2)
        >>> out.ravel().tolist(), lab.tolist(), pos.tolist()
        ([0, 5, 10, 20, 25, 30], [0, 0, 0, 1, 1, 1], [0.0, 0.5, 1.0, 2.0, 2.5, 3.0])
    """
    slices = np.asarray(slices)
    if slices.ndim != 3 or slices.dtype != np.uint8:
        raise errors.ConfigurationError(
            f"`slices` must be a uint8 [n, H, W] stack (ct_slices' output). "
            f"Received: shape={slices.shape}, dtype={slices.dtype}"
        )
    if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or factor < 1:
        raise errors.ConfigurationError(
            f"`factor` must be an integer of at least 1 (1 = no interpolation). Received: factor={factor!r}"
        )
    n = slices.shape[0]
    if n == 0:
        raise errors.PreprocessingError("The slice stack is empty; there is nothing to interpolate.")
    lab = None
    if labels is not None:
        lab = np.asarray(labels)
        if lab.ndim != 1 or len(lab) != n:
            raise errors.ConfigurationError(
                f"`labels` must hold one label per slice ({n}). Received: shape={lab.shape}"
            )
    factor = int(factor)
    if factor == 1:
        return slices.copy(), (None if lab is None else lab.copy()), np.arange(n, dtype=np.float64)

    runs = _runs(lab) if lab is not None else [(0, n)]
    parts, part_labels, part_pos = [], [], []
    for a, b in runs:
        length = b - a
        if length == 1:
            pos = np.zeros(1)
            parts.append(slices[a:b])
        else:
            pos = np.arange((length - 1) * factor + 1, dtype=np.float64) / factor
            run_out = _spline_run(slices[a:b], pos)
            run_out[::factor] = slices[a:b]  # the originals, bit for bit
            parts.append(run_out)
        part_pos.append(a + pos)
        if lab is not None:
            part_labels.append(np.repeat(lab[a:a + 1], len(pos)))
    new_slices = np.concatenate(parts, axis=0)
    positions = np.concatenate(part_pos)
    new_labels = np.concatenate(part_labels) if lab is not None else None
    return new_slices, new_labels, positions


# --------------------------------------------------------------------------
# ct_slices chunk by chunk (for callers that overlap it with other work)
# --------------------------------------------------------------------------


def _check_chunk_size(chunk_size):
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise errors.ConfigurationError(
            f"`chunk_size` must be a positive integer (slices per chunk). Received: chunk_size={chunk_size!r}"
        )
    return int(chunk_size)


def ct_slice_chunks(ct, chunk_size, *, size=SIZE, brightness=BRIGHTNESS, normalization="minmax",
                    window=HU_WINDOW, sigma=SIGMA, threshold=None):
    """:func:`ct_slices`' output, ``chunk_size`` slices at a time (paper 001).

    For a caller that runs something beside the preprocessing
    (:func:`covid_keras.serving.predict_study` runs the model on one chunk
    while the next is made). The checks and the volume's grey levels
    (:func:`to_uint8`: the min-max normalisation is over the whole volume)
    are done by this call, as :func:`ct_slices` does them; each chunk's
    body RoI, brightness and resize are done when the chunk is asked for.
    Concatenated, the chunks equal ``ct_slices(ct, ...)`` bit for bit.

    Args:
        ct: a :class:`~covid_keras.data.dicom.CTSeries` (or a [z, y, x] HU
            array). It must not change while the chunks are made.
        chunk_size: slices per chunk (the last one may hold fewer).
        size, brightness, normalization, window, sigma, threshold: as for
            :func:`ct_slices`.

    Returns:
        An iterator of uint8 [<= chunk_size, size, size] arrays, in volume
        order.

    Raises:
        ConfigurationError: a bad ``chunk_size`` or, as for
            :func:`ct_slices`, a bad ``size``, ``brightness``,
            ``normalization``, ``window``, ``sigma`` or ``threshold``.
        PreprocessingError: as for :func:`ct_slices` (the same messages):
            the volume is empty, not 3-D, or holds NaN.

    Example:
        >>> from covid_keras.data import synthetic
        >>> hu, _, spacing = synthetic.phantom_volume("covid", n_slices=5, size=32)
        >>> ct = synthetic.as_ct_series(hu, spacing)
        >>> [c.shape for c in ct_slice_chunks(ct, 2, size=16)]
        [(2, 16, 16), (2, 16, 16), (1, 16, 16)]
        >>> bool((np.concatenate(list(ct_slice_chunks(ct, 2, size=16))) == ct_slices(ct, size=16)).all())
        True
    """
    chunk_size = _check_chunk_size(chunk_size)
    size, brightness, grey = _grey_volume(ct, size, brightness, normalization, window, sigma, threshold)
    return (_slices_of(grey[start:start + chunk_size], size, brightness, sigma, threshold)
            for start in range(0, grey.shape[0], chunk_size))
