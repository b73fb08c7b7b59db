"""t-SNE of paper 001's patient-level features: embed, the patient vectors, the figures, evaluate.tsne.

``embed`` is checked against a direct scikit-learn PCA + TSNE call, the
patient vectors against what the Maxpool head's own pooling layer gives,
the nearest-neighbour agreement against a brute-force distance matrix.
The command runs on patient-level run folders written by hand in the
layout ``train.patient_level`` leaves (features.npz + its index, summary,
the slice run's split), and once, slowly, on a real tiny phantom chain.
"""

import json
import os

import numpy as np
import pytest

from covid_keras import cli, errors
from covid_keras.explain import tsne
from covid_keras.training.runs import write_json

CLASSES = ["COVID-19", "CAP", "Normal"]
WIDTH = 1024


def _clusters(n_per_class=20, dims=3072, spread=0.3, seed=0):
    """Three well-separated Gaussian clusters: (x [3n, dims], labels [3n])."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dims)) * 3.0
    labels = np.repeat(np.arange(3), n_per_class)
    return (centres[labels] + spread * rng.normal(size=(len(labels), dims))).astype(np.float32), labels


# --------------------------------------------------------------------------
# embed
# --------------------------------------------------------------------------


def _one_thread():
    """OpenMP limited to one thread: scikit-learn's t-SNE crawls on cores other processes load."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def test_embed_is_sklearns_pca_then_tsne():
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.random.default_rng(1).normal(size=(60, 200)).astype(np.float32)
    with _one_thread():
        reduced = PCA(n_components=50, random_state=3).fit_transform(x)
        expected = TSNE(n_components=2, perplexity=10.0, init="pca", random_state=3).fit_transform(reduced)
    np.testing.assert_array_equal(tsne.embed(x, perplexity=10.0, seed=3), expected)


def test_embed_skips_pca_when_the_features_are_narrow():
    from sklearn.manifold import TSNE

    x = np.random.default_rng(2).normal(size=(30, 8))
    with _one_thread():
        expected = TSNE(n_components=2, perplexity=5.0, init="pca", random_state=0).fit_transform(x)
    np.testing.assert_array_equal(tsne.embed(x, perplexity=5.0), expected)


def test_embed_repeats_with_a_seed():
    # 80 x 600: PCA to 50 uses its randomized solver, where the seed matters.
    x = np.random.default_rng(7).normal(size=(80, 600)).astype(np.float32)
    first = tsne.embed(x, perplexity=10.0, seed=5)
    assert first.shape == (80, 2) and np.all(np.isfinite(first))
    np.testing.assert_array_equal(tsne.embed(x, perplexity=10.0, seed=5), first)
    assert not np.array_equal(tsne.embed(x, perplexity=10.0, seed=6), first)


def test_threads_do_not_change_the_embedding():
    x = np.random.default_rng(8).normal(size=(24, 6))
    np.testing.assert_array_equal(tsne.embed(x, perplexity=5.0, threads=2), tsne.embed(x, perplexity=5.0))


@pytest.mark.parametrize("perplexity", [10.0, 12.5, 0.0, -1.0])
def test_perplexity_must_be_below_the_number_of_samples(perplexity):
    x = np.random.default_rng(3).normal(size=(10, 4))
    with pytest.raises(errors.ConfigurationError, match=r"below the number of samples \(10\)"):
        tsne.embed(x, perplexity=perplexity)
    assert tsne.embed(x, perplexity=tsne.default_perplexity(10)).shape == (10, 2)


def test_default_perplexity():
    assert tsne.default_perplexity(300) == 30.0
    assert tsne.default_perplexity(91) == 30.0
    assert tsne.default_perplexity(7) == 2.0
    assert 0 < tsne.default_perplexity(2) < 2


@pytest.mark.parametrize("features, match", [
    (np.ones((6, 10)), "identical"),              # scikit-learn's PCA init crashes the process on these
    (np.ones((1, 10)), "at least 2 samples"),
    (np.ones(10), "at least 2 samples"),
    (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), "NaN"),
    (np.array([["a", "b"], ["c", "d"]]), "numeric"),
])
def test_embed_refuses_what_tsne_cannot_embed(features, match):
    with pytest.raises(errors.ConfigurationError, match=match):
        tsne.embed(features, perplexity=0.5)


def test_separable_clusters_stay_separated():
    x, labels = _clusters()
    coords = tsne.embed(x, perplexity=15.0)
    assert tsne.neighbour_agreement(coords, labels) == 1.0
    # Shuffled labels on the same points: about chance (1/3).
    shuffled = np.random.default_rng(0).permutation(labels)
    assert tsne.neighbour_agreement(coords, shuffled) < 0.6


def test_neighbour_agreement_is_brute_force_nearest_neighbour():
    rng = np.random.default_rng(4)
    coords, labels = rng.normal(size=(40, 2)), rng.integers(0, 3, 40)
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    expected = np.mean(labels[distances.argmin(axis=1)] == labels)
    assert tsne.neighbour_agreement(coords, labels) == pytest.approx(expected)
    # Duplicated points: each one's nearest other sample is its copy, never itself.
    assert tsne.neighbour_agreement(np.zeros((2, 2)), [0, 1]) == 0.0
    assert tsne.neighbour_agreement(np.array([[0.0, 0], [0, 0], [9, 9], [9, 9]]), [0, 0, 1, 1]) == 1.0


# --------------------------------------------------------------------------
# patient vectors and the figure
# --------------------------------------------------------------------------


def test_patient_features_are_what_the_maxpool_heads_pool():
    import keras

    from covid_keras.models import maxpool_head, pad_sequences, weighted_features

    rng = np.random.default_rng(5)
    studies = [(f"s{i}", f"p{i}", i % 3, rng.normal(size=(n, 6)).astype(np.float32),
                rng.dirichlet(np.ones(3), size=n).astype(np.float32)) for i, n in enumerate((3, 7, 1, 4))]
    for kind, width, make in (("features", 6, lambda f, p: f), ("weighted", 18, weighted_features)):
        head = maxpool_head(feature_dim=width)
        pooled = keras.Model(head.inputs, head.get_layer("slice_max").output)
        x, mask = pad_sequences([make(f, p) for _, _, _, f, p in studies])
        expected = pooled.predict([x, mask], verbose=0)
        np.testing.assert_allclose(tsne.patient_features(studies, kind), expected, rtol=1e-6)
    with pytest.raises(errors.ConfigurationError, match="kind"):
        tsne.patient_features(studies, "mean")


def test_figure_follows_sklearns_tsne_plot_convention():
    from matplotlib.ticker import NullFormatter

    coords = np.random.default_rng(6).normal(size=(9, 2))
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2])
    parts = np.array(["val"] * 6 + ["test"] * 3)
    fig = tsne.embedding_figure(coords, labels, CLASSES, parts, title="t-SNE, perplexity 2.5")
    ax = fig.axes[0]
    assert isinstance(ax.xaxis.get_major_formatter(), NullFormatter)
    assert isinstance(ax.yaxis.get_major_formatter(), NullFormatter)
    assert "perplexity 2.5" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "COVID-19 (val)", "COVID-19 (test)", "CAP (val)", "CAP (test)", "Normal (val)", "Normal (test)"]
    # One part only: the legend names the classes alone.
    fig = tsne.embedding_figure(coords, labels, CLASSES, ["val"] * 9, title="x")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == CLASSES
    assert len(fig.axes[0].collections) == 3


# --------------------------------------------------------------------------
# evaluate.tsne on hand-made runs
# --------------------------------------------------------------------------


def _write_patient_run(root, patients_per_class=8, slices=4, seed=0):
    """A train.patient_level run folder with clustered features; returns (run dir, split)."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(3, WIDTH))) * 2.0
    split, arrays, index = {"train": [], "val": [], "test": []}, {}, []
    for label, name in enumerate(("cov", "cap", "nor")):
        for i in range(patients_per_class):
            pid = f"p-{name}{i:02d}"
            split["train" if i < patients_per_class // 2 else "val" if i % 2 else "test"].append(pid)
            key = f"{pid}-{i:010x}"
            arrays[f"{key}/features"] = np.maximum(centres[label] + 0.3 * rng.normal(size=(slices, WIDTH)),
                                                   0).astype(np.float32)
            probs = np.full((slices, 3), 0.1, np.float32)
            probs[:, label] = 0.8
            arrays[f"{key}/probabilities"] = probs
            index.append({"key": key, "patient_id": pid, "label": label, "slices": slices})
    slice_run, run = root / "slice_level" / "a", root / "patient_level" / "b"
    os.makedirs(slice_run)
    os.makedirs(run)
    write_json(str(slice_run / "split.json"), split)
    np.savez(str(run / "features.npz"), **arrays)
    write_json(str(run / "features.npz.json"), index)
    write_json(str(run / "config.json"), {"slice_run": str(slice_run)})
    write_json(str(run / "summary.json"), {"command": "train.patient_level", "classes": CLASSES,
                                           "slice_run": str(slice_run), "features": str(run / "features.npz")})
    return str(run), split


@pytest.fixture(scope="module")
def patient_run(tmp_path_factory):
    return _write_patient_run(tmp_path_factory.mktemp("tsne"))


@pytest.fixture(scope="module")
def command_output(patient_run):
    """evaluate.tsne's stdout on the hand-made run, with defaults."""
    import contextlib
    import io

    from evaluate import tsne as command

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert command.main([patient_run[0]]) == 0
    return out.getvalue()


def test_command_writes_the_figures_and_prints_one_json_line(patient_run, command_output):
    from matplotlib.image import imread

    run, split = patient_run
    assert command_output.count("\n") == 1 and command_output.endswith("\n")  # one JSON line, nothing else
    summary = json.loads(command_output)
    shown = len(split["val"]) + len(split["test"])
    assert summary["studies"] == shown and summary["parts"] == ["val", "test"]
    assert summary["perplexity"] == pytest.approx((shown - 1) / 3)
    assert set(summary["figures"]) == {"1024", "3072"}
    for dims in ("1024", "3072"):
        path = os.path.join(run, "report", f"tsne_{dims}.png")
        assert summary["figures"][dims] == path
        image = imread(path)
        assert image.shape == (520, 640, 4) and image[..., :3].std() > 0.05
        assert summary["neighbour_agreement"][dims] == 1.0  # the hand-made classes are separable
    assert summary["json"] == os.path.join(run, "report", "tsne.json")


def test_tsne_json_has_coordinates_ids_and_labels_only(patient_run, command_output):
    run, split = patient_run
    with open(os.path.join(run, "report", "tsne.json")) as f:
        saved = json.load(f)
    assert saved["classes"] == CLASSES and saved["seed"] == 0
    assert {s["kind"] for s in saved["features"].values()} == {"features", "weighted"}
    rows = saved["rows"]
    assert [r["patient_id"] for r in rows] == split["val"] + split["test"]
    assert [r["part"] for r in rows] == ["val"] * len(split["val"]) + ["test"] * len(split["test"])
    names = {"cov": "COVID-19", "cap": "CAP", "nor": "Normal"}
    for row in rows:
        assert set(row) == {"key", "patient_id", "label", "part", "xy"}
        assert row["label"] == names[row["patient_id"][2:5]]
        assert set(row["xy"]) == {"1024", "3072"} and all(len(v) == 2 for v in row["xy"].values())


def test_command_coordinates_are_embed_of_the_max_pooled_features(patient_run, command_output):
    from covid_keras.training.patient_level import load_features

    run, split = patient_run
    with open(os.path.join(run, "report", "tsne.json")) as f:
        saved = json.load(f)
    wanted = split["val"] + split["test"]
    studies = sorted((s for s in load_features(os.path.join(run, "features.npz")) if s[1] in wanted),
                     key=lambda s: wanted.index(s[1]))
    vectors = np.stack([s[3].max(axis=0) for s in studies])
    expected = tsne.embed(vectors, perplexity=saved["perplexity"], seed=0)
    np.testing.assert_allclose([r["xy"]["1024"] for r in saved["rows"]], expected, atol=1e-4)


def test_command_parts_all_perplexity_and_seed(tmp_path, capsys):
    from evaluate import tsne as command

    run, split = _write_patient_run(tmp_path, patients_per_class=6)
    assert command.main([run, "--parts", "all", "--perplexity", "4", "--seed", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    with open(summary["json"]) as f:
        saved = json.load(f)
    for got in (summary, saved):
        assert got["studies"] == sum(len(v) for v in split.values())
        assert got["perplexity"] == 4.0 and got["seed"] == 2
        assert got["parts"] == ["train", "val", "test"]
    assert command.parse_args([run, "--parts", "test,val"]).parts == ("test", "val")
    assert tsne.tsne_report(run, perplexity=3.0, parts="test,val")["parts"] == ["test", "val"]


def test_an_ensemble_run_uses_its_patient_level_features(tmp_path, patient_run):
    run = tmp_path / "ensemble" / "c"
    os.makedirs(run)
    write_json(str(run / "summary.json"), {"command": "train.ensemble", "patient_run": patient_run[0]})
    summary = tsne.tsne_report(str(run), perplexity=3.0)
    assert summary["studies"] == len(patient_run[1]["val"]) + len(patient_run[1]["test"])
    assert os.path.exists(run / "report" / "tsne_1024.png")


def test_a_moved_run_finds_its_own_features(tmp_path):
    import shutil

    run, _ = _write_patient_run(tmp_path / "old")
    shutil.copy(os.path.join(tmp_path, "old", "slice_level", "a", "split.json"), os.path.join(run, "split.json"))
    moved = shutil.move(run, tmp_path / "moved")
    shutil.rmtree(tmp_path / "old")
    assert tsne.tsne_report(str(moved), perplexity=3.0)["studies"] > 0


def _bad_runs(root, patient_run):
    """(argv, expected message) of command lines that must fail with one sentence."""
    run, _ = patient_run
    empty = root / "empty"
    os.makedirs(empty)
    cases = [([str(root / "missing")], "not a folder"), ([str(empty)], "no finished run"),
             ([run, "--parts", "val,holdout"], "`parts` must name some of train, val, test"),
             ([run, "--perplexity", "500"], r"below the number of samples"),
             ([run, "--parts", ","], "`parts` must name")]
    for name, summary, message in (
            ("slice", {"command": "train.slice_level"}, "train.patient_level --slice-run"),
            ("xray", {"command": "train.xray_cnn"}, "a train.xray_cnn run has no paper-001 patient features"),
            ("gone", {"command": "train.patient_level", "classes": CLASSES, "features": str(root / "x.npz"),
                      "slice_run": str(root)}, "features.npz .* is gone")):
        os.makedirs(root / name)
        write_json(str(root / name / "summary.json"), summary)
        cases.append(([str(root / name)], message))
    nosplit = root / "nosplit"
    os.makedirs(nosplit)
    write_json(str(nosplit / "summary.json"), {"command": "train.patient_level", "classes": CLASSES,
                                               "features": os.path.join(run, "features.npz"),
                                               "slice_run": str(root / "nowhere")})
    cases.append(([str(nosplit)], "split.json is gone"))
    return cases


def test_bad_run_dirs_get_one_sentence_and_exit_2(tmp_path, patient_run, capsys):
    import re

    from evaluate import tsne as command

    for argv, message in _bad_runs(tmp_path, patient_run):
        assert cli.run(command.main, argv) == cli.EXIT_BAD_INPUT, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), (argv, lines)


def test_too_few_studies_is_a_clear_error(tmp_path):
    run, _ = _write_patient_run(tmp_path, patients_per_class=2)  # 1 train + 1 val patient per class, no test
    with pytest.raises(errors.ConfigurationError, match="0 studies in test; t-SNE needs at least 2"):
        tsne.tsne_report(run, parts=("test",))


def test_help_explains_every_flag(capsys):
    from evaluate import tsne as command

    with pytest.raises(SystemExit):
        command.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("RUN_DIR", "--perplexity", "--seed", "--parts", "--debug", "tsne_1024.png", "tsne.json"):
        assert flag in text

# A real phantom chain's patient-level run: tests/training/test_paper001_chain.py
# (test_evaluate_tsne_on_the_patient_level_run runs this command on it).
