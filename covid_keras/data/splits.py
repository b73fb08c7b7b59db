"""Patient-grouped train/test splits and k folds, with a leakage guard.

Every split keeps all records of a patient on one side (scikit-learn's
``StratifiedGroupKFold``, ``GroupShuffleSplit`` and a patient-level
stratified hold-out), and :func:`check_leakage` runs before any split is
returned: it refuses a patient on both sides and an identical image file on
both sides. Files are hashed only when their sizes coincide, so the check
costs one ``stat`` per file plus a hash of the rare same-size candidates.

Identical images that carry different patient ids (datasets that publish
no ids, such as the SARS-CoV-2 CT-scan dataset, or copies of one image under
two names) are grouped together before splitting, so they land on one side.

Example:
    >>> from covid_keras.data import datasets, splits
    >>> records = datasets.load_dataset("covid-ct-md", "data/COVID-CT-MD")  # doctest: +SKIP
    >>> train, test = splits.holdout_split(records, test_size=0.3, seed=0)   # doctest: +SKIP
    >>> folds = splits.kfold_splits(train, k=4, seed=0)                       # doctest: +SKIP
"""

import hashlib
import math
import os
import warnings
from collections import Counter, defaultdict

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split

from covid_keras import errors

_CHUNK = 1 << 20
_HEAD = 1 << 16  # bytes compared before hashing a whole same-size file
_hash_cache = {}  # (kind, absolute path) -> ((size, count, mtime_ns), hex digest)


# --------------------------------------------------------------------------
# Content identity
# --------------------------------------------------------------------------


def files_under(path):
    """The files a record path stands for: itself, or a folder's files sorted (the content guard, the audit)."""
    if not os.path.isdir(path):
        return [path]
    found = []
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        found.extend(os.path.join(folder, name) for name in sorted(files))
    return found


def _signature(path):
    """A cheap fingerprint for a file or folder: (total bytes, file count, mtime).

    Two paths can only hold the same content when their byte totals and file
    counts agree, so only those are hashed.
    """
    files = files_under(path)
    stats = [os.stat(f) for f in files]
    return sum(s.st_size for s in stats), len(files), max((s.st_mtime_ns for s in stats), default=0)


def content_hash(path):
    """SHA-256 of a file's bytes, or of a folder's files' bytes in sorted order.

    Cached per absolute path within the process; a changed size or
    modification time invalidates the cached value.

    Args:
        path: a file or a folder (e.g. a DICOM series).

    Returns:
        The hex digest string.

    Raises:
        OSError: the path cannot be read.

    Example:
        >>> content_hash("data/chest_xray/test/NORMAL/IM-0001-0001.jpeg")  # doctest: +SKIP
        'e3b0c44298fc1c149afbf4c8996fb924...'
    """
    return _cached_digest(os.path.abspath(os.fspath(path)), limit=None)


def _cached_digest(path, limit):
    """SHA-256 of ``path``'s files, or of a file's first ``limit`` bytes, cached."""
    signature = _signature(path)
    key = ("full" if limit is None else "head", path)
    cached = _hash_cache.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    digest = hashlib.sha256()
    for name in files_under(path):
        with open(name, "rb") as f:
            if limit is not None:
                digest.update(f.read(limit))
                continue
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
    _hash_cache[key] = (signature, digest.hexdigest())
    return digest.hexdigest()


def _readable_signatures(paths):
    """Maps each readable path to its (size, file count); counts unreadable ones."""
    signatures, unreadable = {}, 0
    for path in paths:
        try:
            size, count, _ = _signature(path)
        except OSError:
            unreadable += 1
            continue
        signatures[path] = (size, count)
    return signatures, unreadable


def _hashes_of_colliding(paths):
    """Content hashes of the paths whose size coincides with another path's.

    Returns:
        ``(hashes, unreadable)``: {path: digest} for same-size paths only, and
        the number of paths that could not be read.
    """
    signatures, unreadable = _readable_signatures(sorted(set(paths)))
    by_size = defaultdict(list)
    for path, signature in signatures.items():
        by_size[signature].append(path)
    hashes = {}
    for (size, count), group in by_size.items():
        for candidates in _same_head(group) if count == 1 and size > _HEAD else [group]:
            if len(candidates) > 1:
                hashes.update((path, content_hash(path)) for path in candidates)
    return hashes, unreadable


def _same_head(paths):
    """Splits same-size files by a hash of their first 64 KiB (cheap pre-filter)."""
    by_head = defaultdict(list)
    for path in paths:
        by_head[_cached_digest(path, limit=_HEAD)].append(path)
    return list(by_head.values())


def _record_paths(records):
    return [os.path.abspath(os.fspath(p)) for r in records for p in r.paths]


# --------------------------------------------------------------------------
# Leakage guard
# --------------------------------------------------------------------------


def _check_patients(train, test):
    shared = sorted({r.patient_id for r in train} & {r.patient_id for r in test})
    if shared:
        raise errors.LeakageError(
            f"Patient {shared[0]} is in both the training and the test set "
            f"({len(shared)} shared patients in all); split with holdout_split or "
            "kfold_splits, which keep each patient on one side."
        )


def _content_index(records):
    """{path: digest} for every record file whose size coincides with another's.

    Warns once when some paths cannot be read (they are not compared).
    """
    hashes, unreadable = _hashes_of_colliding(_record_paths(records))
    if unreadable:
        warnings.warn(
            f"{unreadable} record paths could not be read and were not compared by content.",
            UserWarning,
            stacklevel=3,
        )
    return hashes


def _check_content(train, test, hashes):
    """Raises when a test file has the same content as a training file."""
    train_by_hash = {}
    for path in sorted(set(_record_paths(train))):
        if path in hashes:
            train_by_hash.setdefault(hashes[path], path)
    pairs = [
        (train_by_hash[hashes[path]], path)
        for path in sorted(set(_record_paths(test)))
        if path in hashes and hashes[path] in train_by_hash
    ]
    if pairs:
        first_train, first_test = pairs[0]
        raise errors.LeakageError(
            f"{first_train} (training) and {first_test} (test) hold identical content "
            f"({len(pairs)} test files duplicate a training file in all); remove the "
            "duplicates or give copies of one image the same patient_id."
        )


def check_leakage(train, test, check_content=True):
    """Raises when a patient, or an identical file, is on both sides of a split.

    Args:
        train: records of the training (or training-fold) side.
        test: records of the test (or validation-fold) side.
        check_content: also compare file contents (SHA-256, computed only for
            files whose sizes coincide).

    Raises:
        LeakageError: naming one shared patient id, or the two identical
            files, and how many there are in all.

    Example:
        >>> check_leakage(train, test)   # doctest: +SKIP
    """
    train, test = list(train), list(test)
    _check_patients(train, test)
    if check_content:
        _check_content(train, test, _content_index(train + test))


# --------------------------------------------------------------------------
# Groups and stratification
# --------------------------------------------------------------------------


def _union_find_groups(records, hashes):
    """Group id per record: patient ids joined when they share identical files.

    Args:
        records: the records to group.
        hashes: {path: digest} from :func:`_content_index`, or None.
    """
    parent = {r.patient_id: r.patient_id for r in records}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    if hashes:
        owners = defaultdict(set)
        for record in records:
            for path in _record_paths([record]):
                if path in hashes:
                    owners[hashes[path]].add(record.patient_id)
        for pids in owners.values():
            first, *rest = sorted(pids)
            for other in rest:
                a, b = sorted((find(first), find(other)))
                parent[b] = a
    return [find(r.patient_id) for r in records]


def _group_labels(records, groups):
    """One label per group: its most frequent record label (ties: first by name)."""
    counts = defaultdict(Counter)
    for record, group in zip(records, groups):
        counts[group][record.label] += 1
    return {g: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for g, c in counts.items()}


def _check_class_sizes(group_labels, minimum, what):
    """Raises SplitError when a class has fewer than ``minimum`` patients."""
    per_class = Counter(group_labels.values())
    for label, count in sorted(per_class.items()):
        if count < minimum:
            raise errors.SplitError(
                f"Class {label!r} has only {count} patient(s), too few to stratify {what}; "
                "add patients of that class, drop the class, or pass stratify=False."
            )
    return per_class


def _guard(train, test, hashes):
    """check_leakage with the content index computed once per split call."""
    _check_patients(train, test)
    if hashes is not None:
        _check_content(train, test, hashes)


def _as_list(records):
    records = list(records)
    if not records:
        raise errors.SplitError("No records to split; check that the dataset folder holds images.")
    return records


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------


def _stratified_holdout_groups(group_labels, test_size, seed):
    """Test groups of a patient-level stratified hold-out (sklearn train_test_split)."""
    per_class = _check_class_sizes(group_labels, 2, "a hold-out split")
    n_groups = len(group_labels)
    n_test = math.ceil(test_size * n_groups)
    if n_test < len(per_class) or n_groups - n_test < len(per_class):
        raise errors.SplitError(
            f"test_size={test_size} of {n_groups} patients leaves {n_test} test and "
            f"{n_groups - n_test} training patients, fewer than the {len(per_class)} classes "
            "to stratify; change test_size, add patients, or pass stratify=False."
        )
    names = sorted(group_labels)
    labels = [group_labels[g] for g in names]
    _, test_groups = train_test_split(names, test_size=test_size, random_state=seed, stratify=labels)
    return set(test_groups)


def _shuffled_holdout_groups(group_labels, test_size, seed):
    """Test groups of a plain group shuffle split (sklearn GroupShuffleSplit)."""
    names = sorted(group_labels)
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    _, test_index = next(splitter.split(np.zeros(len(names)), groups=names))
    return {names[i] for i in test_index}


def holdout_split(records, test_size=0.2, seed=0, stratify=True, check_content=True):
    """Splits records into train and test with no patient on both sides.

    With ``stratify=True`` each patient gets one label (the most frequent
    label of its records) and patients are split per class with
    scikit-learn's ``train_test_split(stratify=...)``, so class proportions
    hold at the patient level; otherwise ``GroupShuffleSplit`` is used.
    Patients sharing an identical file are treated as one group.

    Args:
        records: :class:`covid_keras.data.datasets.Record` items.
        test_size: fraction of patients in the test set, in (0, 1); the
            count is rounded up.
        seed: random seed; the same seed and records give the same split.
        stratify: keep class proportions.
        check_content: group identical files and check content leakage.

    Returns:
        ``(train, test)`` lists of records, each in input order.

    Raises:
        ConfigurationError: ``test_size`` is not in (0, 1).
        SplitError: too few patients, or a class with one patient when
            stratifying.
        LeakageError: the split would leak (should not happen).

    Example:
        >>> train, test = holdout_split(records, test_size=0.3, seed=1)  # doctest: +SKIP
    """
    if not 0 < test_size < 1:
        raise errors.ConfigurationError(f"`test_size` must be in (0, 1). Received: test_size={test_size}")
    records = _as_list(records)
    hashes = _content_index(records) if check_content else None
    groups = _union_find_groups(records, hashes)
    group_labels = _group_labels(records, groups)
    if len(group_labels) < 2:
        raise errors.SplitError(
            f"Only {len(group_labels)} patient(s) in {len(records)} records; a hold-out split "
            "needs at least 2 patients."
        )
    choose = _stratified_holdout_groups if stratify else _shuffled_holdout_groups
    test_groups = choose(group_labels, test_size, seed)
    train = [r for r, g in zip(records, groups) if g not in test_groups]
    test = [r for r, g in zip(records, groups) if g in test_groups]
    _guard(train, test, hashes)
    return train, test


def _fold_labels(records, group_labels, k, stratify):
    """Per-record stratification targets for StratifiedGroupKFold."""
    if not stratify:
        return np.zeros(len(records), dtype=int)  # one class: folds balance group sizes
    per_class = _check_class_sizes(group_labels, 2, f"{k} folds")
    for label, count in sorted(per_class.items()):
        if count < k:
            warnings.warn(
                f"Class {label!r} has {count} patients, fewer than the {k} folds; some "
                "validation folds will lack it.",
                UserWarning,
                stacklevel=3,
            )
    names = sorted(set(r.label for r in records))
    return np.array([names.index(r.label) for r in records])


def kfold_splits(records, k=5, seed=0, stratify=True, check_content=True):
    """K patient-grouped folds with scikit-learn's StratifiedGroupKFold.

    Args:
        records: :class:`covid_keras.data.datasets.Record` items.
        k: number of folds, at least 2 (DETL uses 5, Volume3D 4).
        seed: shuffling seed; the same seed and records give the same folds.
        stratify: keep class proportions in every fold (without it, folds
            only balance the number of records).
        check_content: group identical files and check content leakage.

    Returns:
        A list of ``k`` ``(train, val)`` pairs of record lists; every patient
        is in exactly one validation fold.

    Raises:
        ConfigurationError: ``k`` is smaller than 2.
        SplitError: fewer patients than folds, or a class with one patient
            when stratifying.
        LeakageError: a fold would leak (should not happen).

    Example:
        >>> for train, val in kfold_splits(records, k=4, seed=0):  # doctest: +SKIP
        ...     pass
    """
    if int(k) != k or k < 2:
        raise errors.ConfigurationError(f"`k` must be an integer of at least 2. Received: k={k}")
    records = _as_list(records)
    hashes = _content_index(records) if check_content else None
    groups = _union_find_groups(records, hashes)
    group_labels = _group_labels(records, groups)
    if len(group_labels) < k:
        raise errors.SplitError(
            f"Only {len(group_labels)} patients for {k} folds; use k <= {len(group_labels)} "
            "or add patients."
        )
    y = _fold_labels(records, group_labels, k, stratify)
    splitter = StratifiedGroupKFold(n_splits=int(k), shuffle=True, random_state=seed)
    folds = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for train_index, val_index in splitter.split(np.zeros(len(records)), y, groups=groups):
            train = [records[i] for i in sorted(train_index)]
            val = [records[i] for i in sorted(val_index)]
            _guard(train, val, hashes)
            folds.append((train, val))
    return folds


__all__ = ["content_hash", "check_leakage", "holdout_split", "kfold_splits"]
