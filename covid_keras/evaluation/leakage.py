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
* **near-duplicate images** on both sides: perceptual hashes
  (:func:`perceptual_hash`, ImageHash's DCT ``phash``) within a Hamming
  distance threshold; a CT series is compared on a few representative
  slices taken at the same relative heights, and counts as a near
  duplicate only when every one of them is within the threshold.

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
#: coefficients); 256 bits tell them apart and still match re-encoded,
#: resized or slightly noised copies within a few bits.
PHASH_SIZE = 16
#: Largest Hamming distance (of the 256 bits) at which two images count as
#: near duplicates: JPEG re-encoding, resizing, a brightness change and
#: noise of one or two grey levels move a phantom film's hash by 2-6 bits.
PHASH_THRESHOLD = 8
#: How many findings of one kind a boundary lists (all are counted).
MAX_LISTED = 100
_CHUNK = 1 << 20


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


def hamming(a, b):
    """Hamming distances between two sets of bit vectors.

    Args:
        a: bool [n, k, bits]: ``n`` items of ``k`` hashes each.
        b: bool [m, k, bits].

    Returns:
        int [n, m]: for each pair the largest distance over the ``k``
        aligned hashes (so a pair is near only when all its hashes are).
    """
    a, b = np.packbits(np.asarray(a, bool), axis=-1), np.packbits(np.asarray(b, bool), axis=-1)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int64)
    step = max(1, (1 << 22) // max(1, b.size))
    for start in range(0, a.shape[0], step):
        xor = np.bitwise_xor(a[start:start + step, None], b[None])  # [s, m, k, bytes]
        out[start:start + step] = np.bitwise_count(xor).sum(axis=-1, dtype=np.int64).max(axis=-1)
    return out


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
    """

    key: str
    patient_id: str
    file_hashes: set
    pixel_hashes: set
    phashes: list


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


def _phash_pairs(left, right, threshold):
    """``{(i, j): distance}`` of records on two sides with images within ``threshold``, of different patients."""
    def stacked(side):
        groups = {}
        for i, fp in enumerate(side):
            for bits in fp.phashes:
                groups.setdefault(np.shape(bits), ([], []))
                groups[np.shape(bits)][0].append(i)
                groups[np.shape(bits)][1].append(bits)
        return groups

    pairs = {}
    right_groups = stacked(right)
    for shape, (rows_a, bits_a) in stacked(left).items():
        if shape not in right_groups:
            continue  # a radiograph is never compared with a CT series
        rows_b, bits_b = right_groups[shape]
        distances = hamming(np.stack(bits_a), np.stack(bits_b))
        for ia, ib in zip(*np.nonzero(distances <= threshold)):
            i, j = rows_a[ia], rows_b[ib]
            if left[i].patient_id != right[j].patient_id:
                d = int(distances[ia, ib])
                pairs[(i, j)] = min(d, pairs.get((i, j), d))
    return pairs


def _listed(pairs, left, right, a, b, extra=None):
    rows = []
    for i, j in sorted(pairs, key=lambda ij: (left[ij[0]].key, right[ij[1]].key)):
        row = {a: {"key": left[i].key, "patient_id": left[i].patient_id},
               b: {"key": right[j].key, "patient_id": right[j].patient_id}}
        if extra is not None:
            row["distance"] = extra[(i, j)]
        rows.append(row)
    return rows[:MAX_LISTED]


def cross_matches(partition, fingerprints, threshold=PHASH_THRESHOLD):
    """Identical and near-duplicate records on both sides of each boundary of ``partition``.

    Pairs of records of one patient are left out: a patient on both sides
    is :func:`shared_patients`' finding. A pair identical by bytes is not
    listed again as identical by pixels, nor an identical pair as a near
    duplicate.

    Args:
        partition: a :class:`Partition`.
        fingerprints: :class:`Fingerprint` of the run's readable records.
        threshold: largest Hamming distance of a near duplicate.

    Returns:
        ``{"identical": [...], "near_duplicates": [...]}``: one entry per
        boundary with findings, ``{"partition", "boundary", "count", "pairs"}``;
        an identical pair says ``"by": "bytes"`` or ``"pixels"``, a near
        duplicate its ``"distance"``.
    """
    identical, near = [], []
    for a, b in partition.boundaries():
        left, right = _on_side(fingerprints, partition.sides[a]), _on_side(fingerprints, partition.sides[b])
        by_bytes = _identical_pairs(left, right, "file_hashes")
        by_pixels = _identical_pairs(left, right, "pixel_hashes") - by_bytes
        close = {ij: d for ij, d in _phash_pairs(left, right, threshold).items()
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
    "PHASH_SIZE",
    "PHASH_THRESHOLD",
    "Fingerprint",
    "Partition",
    "cross_matches",
    "file_hashes",
    "hamming",
    "perceptual_hash",
    "pixel_hash",
    "read_partitions",
    "shared_patients",
]
