"""Leakage across a run's split: shared patients, identical files, near-duplicate images.

A run's split is ``split.json`` (``{"train", "val", "test"}`` patient
lists) or, for k-fold runs, ``folds.json`` (``{"folds": [{"fold", "train",
"val"}]}``); :func:`read_partitions` reads whichever the run holds (both
when it has both) as :class:`Partition` objects, and every pair of their
sides is a *boundary* the audit checks:

* **patients on both sides** of a boundary (:func:`shared_patients`);
* **identical content** on both sides (:func:`cross_matches`): the same
  bytes (SHA-1 of each file, :func:`file_hashes`) or, so that a re-exported
  or re-encoded copy is caught too, the same decoded pixels (SHA-1 of the
  pixel array, :func:`pixel_hash`: a DICOM file's stored pixels, a picture's
  decoded grey levels, each non-blank slice of a CT series in HU);
* **near-duplicate images** on both sides (:func:`near_duplicate_pairs`):
  perceptual hashes (:func:`perceptual_hash`, ImageHash's DCT ``phash``)
  within a Hamming distance, *confirmed* by the pixels: the grey-level
  difference of small thumbnails (:func:`thumbnail`,
  :func:`thumbnail_difference`) within :data:`MAX_DIFFERENCE`. A CT series
  is compared on a few representative slices taken at the same relative
  heights, and counts as a near duplicate only when every one of them is
  within both thresholds.

Findings name records by their pseudonymous patient id and record key
(:func:`covid_keras.preprocess.cache.record_key`), never by file name: a
file or folder name can hold a patient's name.

Example:
    >>> partitions = read_partitions("runs/xray_cnn/synthetic-xray-1a2b3c4d")  # doctest: +SKIP
    >>> [p.name for p in partitions]                                            # doctest: +SKIP
    ['split']
"""

import dataclasses
import hashlib
import itertools
import json
import os

import numpy as np

from covid_keras import errors
from covid_keras.data.splits import files_under

#: Side names of ``split.json`` in the order boundaries are listed.
SPLIT_SIDES = ("train", "val", "test")
#: ImageHash's phash side: 16 gives 256 bits. The 64-bit default (8) puts
#: different chest films at distance 0 (they all look alike at 8 x 8 DCT
#: coefficients).
PHASH_SIZE = 16
#: Largest Hamming distance (of the 256 bits) at which two images are
#: near-duplicate *candidates*; :data:`MAX_DIFFERENCE` decides. The hash
#: alone cannot: distinct phantoms come closer than copies do. Measured
#: (256 bits; a copy's figure is the largest over 40-48 images copied):
#:
#: * distinct X-ray phantoms (``XrayPhantomConfig`` defaults, 128 px, seeds
#:   0-1, 28,680 pairs): minimum 4, 50 pairs <= 8, 504 <= 16, median 64.
#:   Copies: JPEG q75 <= 10, q90 <= 8, Gaussian noise sigma 1 / 2 / 3 grey
#:   levels <= 8 / 10 / 16, +-1 grey level <= 4, resized x0.75 / x0.5 / x2
#:   <= 6 / 8 / 4. At 64 px: noise sigma 3 and JPEG q75 of a x0.75 copy
#:   reach 22-24.
#: * CT series (``CTPhantomConfig`` defaults, slices at 30 / 50 / 70 %,
#:   lung window; the largest of the three): distinct minimum 14, median
#:   86; copies move much further, the phantoms (and chests) being nearly
#:   left-right symmetric, so that half the DCT coefficients lie near the
#:   median and flip with any noise: noise sigma 1 / 2 / 3 <= 32 / 46 / 54,
#:   JPEG q75 <= 38, resized x2 <= 22.
#:
#: Hence a loose candidate threshold, a quarter of the bits.
PHASH_THRESHOLD = 64
#: Side of the thumbnails the candidates are confirmed on: the grey image
#: (0-255) averaged over cells (OpenCV ``INTER_AREA``) to 16 x 16, each
#: thumbnail's mean subtracted (a brightness shift does not count).
THUMBNAIL_SIZE = 16
#: Largest thumbnail difference of a near duplicate: the root mean square
#: difference of the two mean-subtracted 16 x 16 thumbnails, in grey levels
#: (of 255; a CT series: the largest over its slices). Measured as above:
#:
#: * distinct X-ray phantoms (128 px): minimum 1.08 of 28,680 pairs (seeds
#:   0-1, 240 films), 1.00 of 114,960 (seeds 0-3, 480 films), 0.66 of
#:   460,320 (seeds 0-7, 960 films: two normal films), 0.1 % quantile 2.1,
#:   median 19.8; 64 px: minimum 1.63 (120 films). The floor (one geometry,
#:   two draws of the films' noise of 2.55 grey levels) is 0.39-0.47, so
#:   that the more phantoms, the closer the closest two. Distinct CT series:
#:   minimum 1.53 (1,128 pairs); CT-slice pictures (``CTImagePhantomConfig``
#:   defaults): minimum 3.78.
#: * copies of 128 px films: JPEG q75 <= 0.32, q90 <= 0.13, noise sigma 1
#:   / 2 / 3 <= 0.16 / 0.33 / 0.52, +1 / -1 grey level <= 0.09 / 0.21, +5
#:   <= 0.72 (clipped at 0 and 255), resized x0.75 / x0.5 (area) <= 0.06 /
#:   0.08, x1.5 / x2 (bicubic) <= 0.36 / 0.43, x2 (bilinear) <= 0.75. CT
#:   series: JPEG q90 / q75 <= 0.15 / 0.33, noise sigma 1 / 2 <= 0.15 /
#:   0.29, +1 <= 0.07, x0.75 / x0.5 <= 0.06 / 0.08, x1.5 / x2 (bicubic) <=
#:   0.60 / 0.69. 64 px films: JPEG q75 <= 0.67, noise sigma 2 <= 0.57,
#:   x2 (bicubic) <= 0.90.
#:
#: 0.6 flags the slight copies (re-encoded, noise of a grey level or two,
#: a grey level brighter or darker, resized down, a film resized up by
#: bicubic interpolation) and no distinct phantom of runs up to about a
#: thousand films. Not caught: a copy with other contrast (x1.1: 2.9-6.3),
#: a CT slice resized up, heavy noise or re-encoding of a small image, and
#: a CT-slice picture with sharp body edges resized to another aspect ratio
#: by rounding (x0.75 of an odd size: up to 7.9): half a pixel moves those
#: edges by a tenth of a cell.
MAX_DIFFERENCE = 0.6
#: How many findings of one kind a boundary lists (all are counted).
MAX_LISTED = 100
_CHUNK = 1 << 20
#: Pairs compared at once by :func:`near_duplicate_pairs`: about 110 MB of
#: temporaries for 256-bit hashes and 16 x 16 thumbnails, whatever the
#: number of pairs (1e8 pairs took 12 s on 2 busy cores; a quarter of the
#: chunk, 19 s).
PAIRS_PER_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Partition:
    """One split of a run's patients into sides.

    Attributes:
        name: ``"split"`` for ``split.json``, ``"fold <i>"`` for a fold of
            ``folds.json``.
        sides: ``{side name: frozenset of patient ids}``, only non-empty sides.
    """

    name: str
    sides: dict

    def boundaries(self):
        """The ``(side_a, side_b)`` pairs to check, in side order."""
        return list(itertools.combinations(self.sides, 2))

    def side_of(self, patient_id):
        """The names of the sides that hold ``patient_id``."""
        return [name for name, patients in self.sides.items() if patient_id in patients]


def read_partitions(run_dir):
    """The run's split (``split.json``) and folds (``folds.json``) as :class:`Partition` objects.

    Args:
        run_dir: the run folder.

    Returns:
        A list of partitions: the split first (when present), then each fold.

    Raises:
        ConfigurationError: the run has neither file, or one of them does
            not hold patient lists.

    Example:
        >>> read_partitions("runs/volume3d/synthetic-ct-0a1b2c3d")[0].name  # doctest: +SKIP
        'fold 1'
    """
    run_dir = os.fspath(run_dir)
    split_path, folds_path = os.path.join(run_dir, "split.json"), os.path.join(run_dir, "folds.json")
    if not os.path.exists(split_path) and not os.path.exists(folds_path):
        raise errors.ConfigurationError(
            f"{run_dir}: holds neither split.json nor folds.json; pass the folder of a training run."
        )
    partitions = []
    if os.path.exists(split_path):
        split = _load(split_path)
        partitions.append(_partition("split", {s: split.get(s) for s in SPLIT_SIDES}, split_path))
    if os.path.exists(folds_path):
        folds = _load(folds_path).get("folds")
        if not isinstance(folds, list):
            raise errors.ConfigurationError(f"{folds_path}: has no \"folds\" list; train the run again.")
        for i, fold in enumerate(folds, start=1):
            fold = fold if isinstance(fold, dict) else {}
            name = f"fold {fold.get('fold', i)}"
            partitions.append(_partition(name, {s: fold.get(s) for s in ("train", "val")}, folds_path))
    return partitions


def _load(path):
    """A JSON object from ``path``; a clear error when it is not one."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise errors.ConfigurationError(
            f"{path}: cannot be read as JSON ({type(e).__name__}); train the run again."
        ) from None
    if not isinstance(value, dict):
        raise errors.ConfigurationError(f"{path}: does not hold a JSON object; train the run again.")
    return value


def _partition(name, sides, path):
    """A :class:`Partition` from ``{side: patient list or None}``; checks the lists."""
    kept = {}
    for side, patients in sides.items():
        if patients is None:
            continue
        if not isinstance(patients, list) or not all(isinstance(p, str) for p in patients):
            raise errors.ConfigurationError(
                f"{path}: the {name} side {side!r} is not a list of patient ids; train the run again."
            )
        if patients:
            kept[side] = frozenset(patients)
    if len(kept) < 2:
        raise errors.ConfigurationError(
            f"{path}: the {name} has fewer than two non-empty sides, so it has no boundary to audit."
        )
    return Partition(name, kept)


# --------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------


def file_hashes(path):
    """SHA-1 of the bytes of each non-empty file under ``path`` (a file, or a series folder).

    Args:
        path: a file or a folder.

    Returns:
        A set of hex digests.

    Raises:
        OSError: a file cannot be read.

    Example:
        >>> file_hashes("chest.png")  # doctest: +SKIP
        {'5f0c3d2e...'}
    """
    digests = set()
    for name in files_under(os.fspath(path)):
        digest = hashlib.sha1()
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
        if os.path.getsize(name):
            digests.add(digest.hexdigest())
    return digests


def pixel_hash(pixels):
    """SHA-1 of a pixel array's shape, dtype and values: the same image however it was stored.

    Args:
        pixels: a numpy array (stored DICOM pixels, decoded grey levels, a
            slice in HU).

    Returns:
        The hex digest, or None for a blank (constant) image: blank slices
        of different studies are alike without being copies.

    Example:
        >>> pixel_hash(np.zeros((4, 4))) is None
        True
        >>> pixel_hash(np.eye(4)) == pixel_hash(np.eye(4).copy())
        True
    """
    pixels = np.ascontiguousarray(pixels)
    if pixels.size == 0 or pixels.min() == pixels.max():
        return None
    digest = hashlib.sha1(f"{pixels.shape}|{pixels.dtype.str}|".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def to_grey_u8(image):
    """A [0, 1] grey image as uint8 grey levels (rounded)."""
    return np.rint(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def perceptual_hash(image, hash_size=PHASH_SIZE):
    """ImageHash's DCT perceptual hash of one grey image, as a bool bit vector.

    Args:
        image: float [H, W] in [0, 1] (``read_xray``'s output, a windowed CT slice).
        hash_size: the side of the DCT block kept; the hash has
            ``hash_size ** 2`` bits.

    Returns:
        bool array of ``hash_size ** 2`` bits.

    Raises:
        ConfigurationError: ``hash_size`` is below 2.

    Example:
        >>> perceptual_hash(np.random.default_rng(0).random((64, 64)), hash_size=8).shape
        (64,)
    """
    import imagehash
    from PIL import Image

    if int(hash_size) != hash_size or hash_size < 2:
        raise errors.ConfigurationError(f"`hash_size` must be an integer of at least 2. Received: {hash_size}")
    return imagehash.phash(Image.fromarray(to_grey_u8(image)), hash_size=int(hash_size)).hash.ravel().copy()


def thumbnail(image, size=THUMBNAIL_SIZE):
    """The grey image as a small mean-subtracted thumbnail: what near duplicates are confirmed on.

    Args:
        image: float [H, W] in [0, 1] (as :func:`perceptual_hash` takes it).
        size: the thumbnail's side.

    Returns:
        float32 ``[size * size]``: the image's grey levels (0-255, rounded as
        :func:`to_grey_u8` rounds them) averaged over ``size`` x ``size``
        cells (OpenCV ``INTER_AREA``), less their mean.

    Raises:
        ConfigurationError: ``size`` is below 2.

    Example:
        >>> ramp = np.tile(np.linspace(0.0, 1.0, 64), (64, 1))
        >>> cells = thumbnail(ramp, size=4)
        >>> cells.shape, round(float(cells.mean()), 6)
        ((16,), 0.0)
    """
    import cv2

    if isinstance(size, bool) or int(size) != size or size < 2:
        raise errors.ConfigurationError(f"`size` must be an integer of at least 2. Received: {size}")
    cells = cv2.resize(to_grey_u8(image).astype(np.float32), (int(size), int(size)), interpolation=cv2.INTER_AREA)
    return (cells - cells.mean(dtype=np.float64)).astype(np.float32).ravel()


def hamming(a, b):
    """Hamming distances between two sets of bit vectors, as one dense matrix.

    For small sets (tests, a few records): :func:`near_duplicate_pairs`
    finds the near pairs of large ones without the [n, m] matrix.

    Args:
        a: bool [n, k, bits]: ``n`` items of ``k`` hashes each.
        b: bool [m, k, bits].

    Returns:
        int [n, m]: for each pair the largest distance over the ``k``
        aligned hashes (so a pair is near only when all its hashes are).
    """
    a, b = _packed(a), _packed(b)
    return np.concatenate([_hamming_rows(a[s:s + 64], b) for s in range(0, len(a), 64)] or
                          [np.zeros((0, len(b)), np.int64)])


def thumbnail_difference(a, b):
    """Thumbnail differences between two sets of thumbnails, as one dense matrix.

    Args:
        a: float [n, k, d]: ``n`` items of ``k`` :func:`thumbnail` each.
        b: float [m, k, d].

    Returns:
        float64 [n, m]: for each pair the largest over the ``k`` aligned
        thumbnails of the root mean square difference, in grey levels.

    Example:
        >>> a = np.zeros((1, 1, 4)); b = np.full((1, 1, 4), 2.0)
        >>> thumbnail_difference(a, b).tolist()
        [[2.0]]
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return _difference_rows(a, _by_slice(b), _squares(b))


def _packed(bits):
    return np.packbits(np.asarray(bits, bool), axis=-1)


def _squares(thumbs):
    return np.einsum("nkd,nkd->nk", thumbs, thumbs)


def _by_slice(thumbs):
    """[m, k, d] thumbnails as k contiguous [d, m] matrices (the right operand of each product)."""
    return [np.ascontiguousarray(thumbs[:, k].T) for k in range(thumbs.shape[1])]


def _hamming_rows(a, b):
    """int [s, m] of packed ``a`` [s, k, bytes] against packed ``b`` [m, k, bytes]."""
    xor = np.bitwise_xor(a[:, None], b[None])  # [s, m, k, bytes]
    return np.bitwise_count(xor).sum(axis=-1, dtype=np.int64).max(axis=-1)


def _difference_rows(a, b_slices, b_squares):
    """float64 [s, m]: the RMS difference of ``a`` [s, k, d] and ``b`` (:func:`_by_slice`), largest over k.

    ``|x - y|^2 = |x|^2 + |y|^2 - 2 x.y``, one matrix product per slice
    (BLAS), in float64: the thumbnails' squares (about 1e5) leave the
    differences (1e2) many digits.
    """
    squares = np.zeros((a.shape[0], b_squares.shape[0]))
    a_squares = _squares(a)
    for k, b in enumerate(b_slices):
        d2 = a_squares[:, k, None] + b_squares[None, :, k] - 2.0 * (a[:, k] @ b)
        np.maximum(squares, d2, out=squares)
    return np.sqrt(np.maximum(squares, 0.0) / max(1, a.shape[2]))


def near_duplicate_pairs(bits_a, bits_b, thumbs_a, thumbs_b, threshold=PHASH_THRESHOLD,
                         max_difference=MAX_DIFFERENCE, pairs_per_chunk=PAIRS_PER_CHUNK):
    """The pairs within ``threshold`` hash bits *and* ``max_difference`` grey levels, chunk by chunk.

    The rows of ``a`` are taken a chunk at a time (``pairs_per_chunk // m``
    rows), each chunk's distances thresholded and only its pairs kept: the
    memory is that of one chunk and of the pairs found, not of [n, m]
    matrices (NIH ChestX-ray14's 78,000 x 22,000 images: 1.7e9 pairs).

    Args:
        bits_a: bool [n, k, bits] hashes (:func:`perceptual_hash`).
        bits_b: bool [m, k, bits].
        thumbs_a: float [n, k, d] thumbnails (:func:`thumbnail`), aligned with ``bits_a``.
        thumbs_b: float [m, k, d].
        threshold: largest Hamming distance (the largest over ``k``).
        max_difference: largest :func:`thumbnail_difference`; ``inf``
            leaves the hashes alone to decide.
        pairs_per_chunk: pairs compared at once.

    Returns:
        ``(rows_a, rows_b, distances, differences)``: int, int, int and
        float64 arrays, one entry per pair, in row-major order; the same as
        thresholding :func:`hamming` and :func:`thumbnail_difference`.

    Example:
        >>> bits = np.zeros((2, 1, 64), bool); bits[1, 0, :40] = True
        >>> thumbs = np.zeros((2, 1, 16))
        >>> [x.tolist() for x in near_duplicate_pairs(bits, bits, thumbs, thumbs, threshold=8)]
        [[0, 1], [0, 1], [0, 0], [0.0, 0.0]]
    """
    packed_a, packed_b = _packed(bits_a), _packed(bits_b)
    thumbs_a, thumbs_b = np.asarray(thumbs_a, np.float64), np.asarray(thumbs_b, np.float64)
    b_slices, b_squares = _by_slice(thumbs_b), _squares(thumbs_b)
    step = max(1, int(pairs_per_chunk) // max(1, len(packed_b)))
    found = []
    for start in range(0, len(packed_a), step):
        distance = _hamming_rows(packed_a[start:start + step], packed_b)
        near = distance <= threshold
        if not near.any():
            continue
        difference = _difference_rows(thumbs_a[start:start + step], b_slices, b_squares)
        rows, cols = np.nonzero(near & (difference <= max_difference))
        found.append((rows + start, cols, distance[rows, cols], difference[rows, cols]))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return tuple(np.concatenate(parts) for parts in zip(*found))


# --------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Fingerprint:
    """What the leakage checks know of one record.

    Attributes:
        key: the record key. patient_id: the pseudonymous patient id.
        file_hashes: set of SHA-1 digests of its files' bytes.
        pixel_hashes: set of SHA-1 digests of its decoded images / slices.
        phashes: list of bool [k, bits] arrays, one per image of the record
            (a CT series: one array of its representative slices).
        thumbnails: list of float32 [k, d] arrays (:func:`thumbnail`),
            aligned with ``phashes``.
    """

    key: str
    patient_id: str
    file_hashes: set
    pixel_hashes: set
    phashes: list
    thumbnails: list


def shared_patients(partition):
    """Patients on both sides of each boundary of ``partition``.

    Returns:
        A list of ``{"partition", "boundary": "a/b", "count", "patients"}``,
        one per boundary with shared patients (at most :data:`MAX_LISTED`
        ids listed, sorted).
    """
    found = []
    for a, b in partition.boundaries():
        both = sorted(partition.sides[a] & partition.sides[b])
        if both:
            found.append({"partition": partition.name, "boundary": f"{a}/{b}", "count": len(both),
                          "patients": both[:MAX_LISTED]})
    return found


def _on_side(fingerprints, patients):
    return [f for f in fingerprints if f.patient_id in patients]


def _identical_pairs(left, right, attribute):
    """``{(i, j)}`` of records on two sides sharing a digest of ``attribute``, of different patients."""
    owners = {}
    for i, fp in enumerate(left):
        for digest in getattr(fp, attribute):
            owners.setdefault(digest, set()).add(i)
    pairs = set()
    for j, fp in enumerate(right):
        for digest in getattr(fp, attribute):
            pairs.update((i, j) for i in owners.get(digest, ()) if left[i].patient_id != fp.patient_id)
    return pairs


def _near_pairs(left, right, threshold, max_difference):
    """``{(i, j): (distance, difference)}`` of near-duplicate records on two sides, of different patients.

    Images are compared with those of the same kind (hash and thumbnail
    shapes: a radiograph is never compared with a CT series); a pair of
    records with several near images keeps its smallest difference.
    """
    def stacked(side):
        groups = {}
        for i, fp in enumerate(side):
            for bits, thumbs in zip(fp.phashes, fp.thumbnails):
                rows, all_bits, all_thumbs = groups.setdefault((np.shape(bits), np.shape(thumbs)), ([], [], []))
                rows.append(i)
                all_bits.append(bits)
                all_thumbs.append(thumbs)
        return groups

    pairs = {}
    right_groups = stacked(right)
    for shape, (rows_a, bits_a, thumbs_a) in stacked(left).items():
        if shape not in right_groups:
            continue
        rows_b, bits_b, thumbs_b = right_groups[shape]
        found = near_duplicate_pairs(np.stack(bits_a), np.stack(bits_b), np.stack(thumbs_a), np.stack(thumbs_b),
                                     threshold, max_difference)
        for ia, ib, distance, difference in zip(*found):
            i, j = rows_a[ia], rows_b[ib]
            if left[i].patient_id != right[j].patient_id:
                found_pair = (int(distance), round(float(difference), 3))
                if (i, j) not in pairs or found_pair[1] < pairs[(i, j)][1]:
                    pairs[(i, j)] = found_pair
    return pairs


def _listed(pairs, left, right, a, b, extra=None):
    rows = []
    for i, j in sorted(pairs, key=lambda ij: (left[ij[0]].key, right[ij[1]].key)):
        row = {a: {"key": left[i].key, "patient_id": left[i].patient_id},
               b: {"key": right[j].key, "patient_id": right[j].patient_id}}
        if extra is not None:
            row["distance"], row["difference"] = extra[(i, j)]
        rows.append(row)
    return rows[:MAX_LISTED]


def cross_matches(partition, fingerprints, threshold=PHASH_THRESHOLD, max_difference=MAX_DIFFERENCE):
    """Identical and near-duplicate records on both sides of each boundary of ``partition``.

    Pairs of records of one patient are left out: a patient on both sides
    is :func:`shared_patients`' finding. A pair identical by bytes is not
    listed again as identical by pixels, nor an identical pair as a near
    duplicate.

    Args:
        partition: a :class:`Partition`.
        fingerprints: :class:`Fingerprint` of the run's readable records.
        threshold: largest Hamming distance of a near-duplicate candidate.
        max_difference: largest thumbnail difference (grey levels) that confirms it.

    Returns:
        ``{"identical": [...], "near_duplicates": [...]}``: one entry per
        boundary with findings, ``{"partition", "boundary", "count", "pairs"}``;
        an identical pair says ``"by": "bytes"`` or ``"pixels"``, a near
        duplicate its hash ``"distance"`` (bits) and thumbnail
        ``"difference"`` (grey levels).
    """
    identical, near = [], []
    for a, b in partition.boundaries():
        left, right = _on_side(fingerprints, partition.sides[a]), _on_side(fingerprints, partition.sides[b])
        by_bytes = _identical_pairs(left, right, "file_hashes")
        by_pixels = _identical_pairs(left, right, "pixel_hashes") - by_bytes
        close = {ij: d for ij, d in _near_pairs(left, right, threshold, max_difference).items()
                 if ij not in by_bytes and ij not in by_pixels}
        where = {"partition": partition.name, "boundary": f"{a}/{b}"}
        if by_bytes or by_pixels:
            pairs = ([dict(p, by="bytes") for p in _listed(by_bytes, left, right, a, b)]
                     + [dict(p, by="pixels") for p in _listed(by_pixels, left, right, a, b)])
            identical.append({**where, "count": len(by_bytes) + len(by_pixels), "pairs": pairs[:MAX_LISTED]})
        if close:
            near.append({**where, "count": len(close), "pairs": _listed(close, left, right, a, b, close)})
    return {"identical": identical, "near_duplicates": near}


__all__ = [
    "MAX_DIFFERENCE",
    "PHASH_SIZE",
    "PHASH_THRESHOLD",
    "THUMBNAIL_SIZE",
    "Fingerprint",
    "Partition",
    "cross_matches",
    "file_hashes",
    "hamming",
    "near_duplicate_pairs",
    "perceptual_hash",
    "pixel_hash",
    "read_partitions",
    "shared_patients",
    "thumbnail",
    "thumbnail_difference",
]
