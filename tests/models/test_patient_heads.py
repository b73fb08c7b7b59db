"""The patient-head registry: the paper's four, heads of one's own, options by signature, checks on build."""

import warnings

import keras
import numpy as np
import pytest

from covid_keras import errors, models
from covid_keras.models import heads as registry


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """Heads a test registers go with it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_the_paper_heads_are_registered_with_their_features():
    specs = models.registered_heads()
    assert {name: (spec.builder, spec.features) for name, spec in specs.items()} == {
        "maxpool": (models.maxpool_head, "features"), "maxpool_weighted": (models.maxpool_head, "weighted"),
        "bilstm": (models.bilstm_head, "features"), "bilstm_weighted": (models.bilstm_head, "weighted")}
    head = models.get_head("bilstm_weighted").build(24, 3, lstm_units=4, l1=0.0, l2=0.0)
    assert head.name == "bilstm_weighted_head" and head.get_layer("bilstm").forward_layer.units == 4


def _pooling_head(feature_dim, num_classes, name=None):
    """A head whose signature names neither l1, l2 nor lstm_units."""
    features = keras.Input((None, feature_dim), name="slice_features")
    mask = keras.Input((None,), dtype="bool", name="slice_mask")
    pooled = models.MaskedGlobalMaxPooling1D()(features, mask=mask)
    return keras.Model([features, mask], keras.layers.Dense(num_classes, activation="softmax")(pooled), name=name)


def test_options_reach_a_builder_only_when_its_signature_names_them():
    mine = models.register_head("pooling", _pooling_head)
    assert mine.options(l1=1e-5, l2=1e-4, lstm_units=8) == {"name": "pooling_head"}
    assert mine.build(8, 2, l1=1e-5, l2=1e-4, lstm_units=8).name == "pooling_head"
    bilstm = models.get_head("bilstm")
    assert bilstm.options(l1=0.1, l2=0.2, lstm_units=8, other=1) == {"name": "bilstm_head", "l1": 0.1, "l2": 0.2,
                                                                   "lstm_units": 8}
    assert models.get_head("maxpool").options(lstm_units=8) == {"name": "maxpool_head"}
    x, mask = models.pad_sequences([np.ones((3, 8), "float32")])
    assert mine.build(8, 2)([x, mask]).shape == (1, 2)


def test_a_model_without_the_heads_inputs_or_output_is_refused_naming_the_head():
    def one_input(feature_dim, num_classes, name=None):
        inputs = keras.Input((None, feature_dim), name="slice_features")
        return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.GlobalAveragePooling1D()(inputs)))

    def wrong_output(feature_dim, num_classes, name=None):
        return _pooling_head(feature_dim, num_classes + 1, name)

    models.register_head("one_input", one_input)
    models.register_head("wrong_output", wrong_output)
    with pytest.raises(errors.ConfigurationError, match=r"head 'one_input' .* two inputs, slice_features"):
        models.get_head("one_input").build(8, 3)
    with pytest.raises(errors.ConfigurationError, match=r"head 'wrong_output' .* one \[batch, 3\]"):
        models.get_head("wrong_output").build(8, 3)
    with pytest.raises(errors.ConfigurationError, match=r"head 'maxpool' .*slice_features \[batch, slices, 9\]"):
        registry.check_head_model("maxpool", models.maxpool_head(feature_dim=8), 9, 3)


def test_registering_again_replaces_with_a_warning_but_never_a_paper_head():
    models.register_head("mine", _pooling_head)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        models.register_head("mine", _pooling_head)  # the same builder again (a module imported twice): silent
    with pytest.warns(UserWarning, match="head 'mine' was registered already"):
        models.register_head("mine", models.maxpool_head, features="weighted")
    assert models.get_head("mine").features == "weighted"
    with pytest.raises(errors.ConfigurationError, match="package's heads"):
        models.register_head("maxpool", _pooling_head)
    assert models.get_head("maxpool").builder is models.maxpool_head


def test_bad_registrations_and_unknown_names_are_configuration_errors():
    with pytest.raises(errors.ConfigurationError, match="`name`"):
        models.register_head("../escape", _pooling_head)
    with pytest.raises(errors.ConfigurationError, match="`builder`"):
        models.register_head("nothing", None)
    with pytest.raises(errors.ConfigurationError, match="`features`"):
        models.register_head("odd", _pooling_head, features="B")
    with pytest.raises(errors.ConfigurationError, match="unknown head 'nope'; registered heads: maxpool"):
        models.get_head("nope")


@pytest.mark.parametrize("name", ["slice_model", "ensemble"])
def test_the_pipelines_own_part_names_are_not_head_names(name):
    """Their .keras files sit beside the heads' in an export: refused at registration, not after training."""
    from covid_keras import errors, models

    with pytest.raises(errors.ConfigurationError, match="taken by the patient pipeline"):
        models.register_head(name, models.maxpool_head)
