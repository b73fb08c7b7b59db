"""answer_study(overlap=True): a CT series preprocessed beside the model, chunk by chunk.

The overlapped path must give what the sequential one gives, bit for bit
(inputs, per-slice probabilities, answer), raise the same errors, report
the same progress and leave no thread behind. Its chunks come from
``body_slices.ct_slice_chunks``, pinned here against ``ct_slices``. A
small exported xray_cnn (64 x 64) and a 20-slice phantom series keep it
fast.
"""

import os
import shutil
import threading

import numpy as np
import pytest

from covid_keras import errors, serving
from covid_keras.preprocess import body_slices

CT3 = ["Normal", "CAP", "COVID-19"]
N_SLICES = 20
RESIZE_SLICE = body_slices.resize_slice


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A loaded slice classifier export (ct_slices, non-default brightness), warmed up."""
    from covid_keras import models

    model = models.xray_cnn(num_classes=3)
    path = serving.export(model, str(tmp_path_factory.mktemp("saved_models")), name="ct_slice_cnn",
                          class_names=CT3,
                          preprocessing={"pipeline": "ct_slices", "brightness": 1.5, "normalization": "minmax"})
    served = serving.load_model(path)
    served(np.zeros((1, 64, 64, 3), np.float32))
    return served


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from covid_keras.data import synthetic

    hu, _, spacing = synthetic.phantom_volume("covid", n_slices=N_SLICES, size=96, slice_spacing=5.0, seed=3)
    folder = str(tmp_path_factory.mktemp("study") / "series")
    synthetic.write_ct_series(hu, spacing, folder, seed=3)
    return folder


@pytest.fixture
def head(tmp_path, testdata):
    """A one-slice head CT: no lungs."""
    folder = str(tmp_path / "head")
    os.makedirs(folder)
    shutil.copy(testdata("693_UNCR.dcm"), os.path.join(folder, "693_UNCR.dcm"))
    return folder


def _both(study, served, **kwargs):
    return [serving.answer_study(study, served, overlap=overlap, **kwargs) for overlap in (True, False)]


def _raise_from(message, after=0):
    """A stand-in for a preprocessing step: passes ``after`` calls through, then raises, noting the thread."""
    calls, threads = [], []

    def fake(img, size=body_slices.SIZE):
        calls.append(1)
        if len(calls) > after:
            threads.append(threading.current_thread())
            raise errors.PreprocessingError(message)
        return RESIZE_SLICE(img, size)

    return fake, threads


# --------------------------------------------------------------------------
# Same answer, same inputs
# --------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_overlap_gives_the_sequential_inputs_and_probabilities_bit_for_bit(study, served, batch_size):
    overlapped, sequential = _both(study, served, batch_size=batch_size)
    assert overlapped.inputs.dtype == sequential.inputs.dtype == np.float32
    np.testing.assert_array_equal(overlapped.inputs, sequential.inputs)
    np.testing.assert_array_equal(overlapped.per_slice, sequential.per_slice)
    assert overlapped.result == sequential.result
    assert overlapped.result["slices"] == N_SLICES and overlapped.per_slice.shape == (N_SLICES, 3)


def test_overlapped_inputs_are_the_training_preprocessing(study, served):
    """Against the training path's function (ct_slices over the whole volume) and Keras' own predict."""
    from covid_keras import data, preprocess

    got = serving.answer_study(study, served, batch_size=8)
    slices = preprocess.ct_slices(data.read_ct_series(study), size=64, brightness=1.5, normalization="minmax")
    np.testing.assert_array_equal(got.inputs, np.repeat(slices[..., None], 3, axis=-1).astype(np.float32))
    np.testing.assert_allclose(got.per_slice, served(got.inputs), atol=1e-6)


def test_timings_say_overlapped_only_when_they_were(study, served):
    overlapped, sequential = (answer.result["seconds"] for answer in _both(study, served, timings=True))
    assert set(sequential) == {"load", "read", "preprocess", "model", "total"}
    assert set(overlapped) == {"load", "read", "preprocess", "model", "total", "overlapped"}
    assert overlapped["overlapped"] is True
    assert all(isinstance(v, float) and v >= 0 for k, v in overlapped.items() if k != "overlapped")
    assert overlapped["read"] + overlapped["model"] <= overlapped["total"]
    assert "seconds" not in serving.answer_study(study, served).result


def test_an_image_file_runs_in_order_whatever_overlap_says(tmp_path, served):
    import cv2

    png = str(tmp_path / "slice.png")
    assert cv2.imwrite(png, np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)))
    overlapped = serving.answer_study(png, served, timings=True, overlap=True)
    sequential = serving.answer_study(png, served, timings=True, overlap=False)
    assert "overlapped" not in overlapped.result["seconds"]
    np.testing.assert_array_equal(overlapped.inputs, sequential.inputs)
    assert overlapped.per_slice is None and overlapped.result["aggregation"] == "image"


def test_progress_is_the_same_monotone_sequence_ending_at_the_total(study, served):
    seen = {}
    for overlap in (True, False):
        calls = seen[overlap] = []
        serving.answer_study(study, served, batch_size=6, overlap=overlap,
                             progress=lambda *args, calls=calls: calls.append(args))
    assert seen[True] == seen[False]
    calls = seen[True]
    assert calls[:2] == [("read", 0, 1), ("read", 1, 1)]
    model = [(done, total) for stage, done, total in calls[2:]]
    assert {stage for stage, _, _ in calls[2:]} == {"model"}
    assert all(total == N_SLICES for _, total in model)
    done = [d for d, _ in model]
    assert done == sorted(done) and done[0] == 0 and done[-1] == N_SLICES
    assert done[1:-1] == [6, 12, 18, 20]  # one call per chunk


# --------------------------------------------------------------------------
# Errors surface as they do without overlap, and no thread is left behind
# --------------------------------------------------------------------------


def test_a_preprocessing_error_in_the_worker_surfaces_with_its_type_and_message(study, served, monkeypatch):
    before = threading.active_count()
    messages = {}
    for overlap in (True, False):
        fake, threads = _raise_from("The slice cannot be resized; check the series.", after=8)
        monkeypatch.setattr(body_slices, "resize_slice", fake)
        with pytest.raises(errors.PreprocessingError) as info:
            serving.answer_study(study, served, batch_size=4, overlap=overlap)
        messages[overlap] = str(info.value)
        raised_in = threads[0]
        if overlap:  # made by the worker, not by the caller's thread
            assert raised_in is not threading.main_thread() and raised_in.name.startswith("covid_keras-")
        assert threading.active_count() == before
    assert messages[True] == messages[False]
    assert messages[True] == f"{study}: the slice cannot be resized; check the series."


def test_an_error_in_the_first_chunk_or_the_model_leaves_no_thread(study, served, monkeypatch):
    import time

    before = threading.active_count()
    fake, _ = _raise_from("No slice today.")
    monkeypatch.setattr(body_slices, "resize_slice", fake)
    with pytest.raises(errors.PreprocessingError, match=f"^{study}: no slice today"):
        serving.answer_study(study, served, batch_size=4)
    assert threading.active_count() == before

    resized, answered = [], []

    def slow_resize(img, size=body_slices.SIZE):
        resized.append(1)
        time.sleep(0.05)
        return RESIZE_SLICE(img, size)

    def failing_model(self, inputs):
        answered.append(len(inputs))
        if len(answered) == 2:
            raise errors.ServingError("The model broke.")
        return np.full((len(inputs), 3), 1 / 3, np.float32)

    monkeypatch.setattr(body_slices, "resize_slice", slow_resize)
    monkeypatch.setattr(serving.ServedModel, "__call__", failing_model)
    with pytest.raises(errors.ServingError, match="^The model broke"):
        serving.answer_study(study, served, batch_size=4)
    assert answered == [4, 4]  # it stopped there
    assert threading.active_count() == before
    assert len(resized) <= 3 * 4  # the chunks not begun when it broke were dropped, not made


def test_no_lungs_is_the_same_error_and_wins_over_a_later_one(head, served, monkeypatch):
    before = threading.active_count()
    messages = {}
    for overlap in (True, False):
        with pytest.raises(errors.NoLungError, match=f"^{head}: ") as info:
            serving.answer_study(head, served, overlap=overlap)
        messages[overlap] = str(info.value)
    assert messages[True] == messages[False] and "no lungs found" in messages[True]
    fake, _ = _raise_from("Broken.")
    monkeypatch.setattr(body_slices, "resize_slice", fake)
    with pytest.raises(errors.NoLungError) as info:  # the lung check comes first without overlap
        serving.answer_study(head, served, overlap=True)
    assert str(info.value) == messages[False]
    assert threading.active_count() == before


def test_without_the_lung_check_a_head_ct_is_answered_alike(head, served):
    overlapped, sequential = _both(head, served, check_lungs=False)
    np.testing.assert_array_equal(overlapped.per_slice, sequential.per_slice)
    assert overlapped.result == sequential.result and overlapped.result["slices"] == 1


def test_a_missing_folder_is_the_same_error(tmp_path, served):
    missing = str(tmp_path / "nowhere")
    raised = []
    for overlap in (True, False):
        with pytest.raises(errors.CovidKerasError) as info:
            serving.answer_study(missing, served, overlap=overlap)
        raised.append((type(info.value), str(info.value)))
    assert raised[0] == raised[1] and missing in raised[0][1]


# --------------------------------------------------------------------------
# body_slices.ct_slice_chunks: ct_slices, chunk by chunk
# --------------------------------------------------------------------------


def _volume(kind, rng):
    if kind == "phantom":
        from covid_keras.data import synthetic

        hu, _, spacing = synthetic.phantom_volume("cap", n_slices=9, size=48, seed=5)
        return synthetic.as_ct_series(hu, spacing)
    if kind == "wide":  # padding and artefacts outside the clip window, float64
        return rng.uniform(-3500.0, 4500.0, size=(7, 40, 40))
    if kind == "uniform":
        return np.full((5, 32, 32), 40.0, np.float32)
    return rng.normal(0, 300, size=(6, 30, 50)).astype(np.float32)  # not square


@pytest.mark.parametrize("kind", ["phantom", "wide", "uniform", "oblong"])
@pytest.mark.parametrize("options", [{}, {"normalization": "window"},
                                     {"window": (-1000.3, 1500.7), "brightness": 1.0, "size": 20},
                                     {"threshold": 30, "sigma": 0, "size": 64}])
def test_chunks_concatenate_to_ct_slices_bit_for_bit(kind, options):
    ct = _volume(kind, np.random.default_rng(0))
    want = body_slices.ct_slices(ct, **options)
    for chunk_size in (1, 4, 100):
        chunks = list(body_slices.ct_slice_chunks(ct, chunk_size, **options))
        assert [len(c) for c in chunks[:-1]] == [chunk_size] * (len(chunks) - 1)
        assert all(c.dtype == np.uint8 for c in chunks)
        np.testing.assert_array_equal(np.concatenate(chunks), want)


@pytest.mark.parametrize("bad", [
    {"hu": np.zeros((4, 4))},
    {"hu": np.zeros((0, 4, 4))},
    {"hu": np.array([[[0.0, np.nan], [1.0, 2.0]]])},
    {"size": 0}, {"brightness": -1}, {"normalization": "zscore"}, {"window": (10, 0)}, {"sigma": -1},
    {"threshold": 300},
])
def test_chunks_refuse_what_ct_slices_refuses_with_its_message(bad):
    from covid_keras.data import synthetic

    options = dict(bad)
    hu = options.pop("hu", np.zeros((3, 8, 8), np.float32))
    ct = synthetic.as_ct_series(hu, (1.0, 1.0, 1.0)) if hu.ndim == 3 else hu
    with pytest.raises(errors.CovidKerasError) as want:
        body_slices.ct_slices(ct, **options)
    with pytest.raises(type(want.value)) as got:  # on the call, before any chunk is asked for
        body_slices.ct_slice_chunks(ct, 2, **options)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("chunk_size", [0, -3, 2.0, True, None])
def test_chunk_size_must_be_a_positive_integer(chunk_size):
    with pytest.raises(errors.ConfigurationError, match="`chunk_size` must be a positive integer"):
        body_slices.ct_slice_chunks(np.zeros((2, 8, 8), np.float32), chunk_size)
