"""Paper 001 MultiScale: the slice classifier, the patient heads, the ensemble.

Three recipes, one per trained level (``train.slice_level``,
``train.patient_level``, ``train.ensemble``). The slice classifier's four
stages and their rates are the paper's (stage 4's are ours); the phantom
preset is what ``python -m train.slice_level`` runs without ``--data``:
ResNet50 from scratch on about 230 phantom slices needs many small steps
(batch 16), no augmentation (it slows the first epochs), and
BatchNormalization momentum 0.9 so that the moving statistics settle within
the run (Keras' 0.99 needs hundreds of steps). benchmarks/phantom_chain.py
measures it: slice accuracy 0.93 on the 6 held-out test patients, about 3
minutes on 2 cores.
"""

from covid_keras.recipes.base import Holdout, Param, Recipe, SameSplit, Stage, constant
from covid_keras.recipes.config import data_params, run_params

PAPER = "001 MultiScale (Garg et al.)"

SLICE_STAGES = (
    Stage("pretrain", "all", 10, constant(1e-3), data="pretrain",
          help="the whole model on the pre-training set (COVIDx-CT; without --pretrain-data the training slices)"),
    Stage("last_layers", "last2", 10, constant(1e-4), phantom_epochs=2,
          help="only the last two layers (features, probabilities) on the target training slices"),
    Stage("finetune", "all_but_bn", 10, constant(1e-5), phantom_epochs=2,
          help="every layer but BatchNormalization (frozen, inference mode)"),
    Stage("pseudo_label", "all_but_bn", 25, constant(1e-5), data="train+pseudo", flag="pseudo",
          phantom_epochs=2,
          help="retrain on stage 3's slices plus pseudo-labelled slices of label-only infected patients",
          ours="the paper gives no rate or freezing: stage 3's",
          ours_rate="the paper gives no rate: stage 3's"),
)


def _slice_builder_args(c):
    return {"input_shape": (c.image_size, c.image_size, 3), "weights": c.weights, "dropout": c.dropout}


def _slice_pipeline(c):
    return {"pipeline": "ct_slices", "size": c.image_size, "brightness": c.brightness}


def _slice_augmentation(c):
    if not c.augment:
        return {}
    # Paper 001's six transforms, fused into one warp (augment.RandomAffine's arguments).
    # Translation is 20 px at 224 x 224 in the paper; scaled with the image.
    return {"rotation": 25.0, "translation": 20.0 * c.image_size / 224.0, "zoom": (0.8, 1.2), "shear": 0.2,
            "horizontal_flip": True, "brightness": (0.8, 1.2)}


MULTISCALE_RESNET50 = Recipe(
    name="multiscale_resnet50",
    paper=PAPER,
    command="train.slice_level",
    builder="multiscale_resnet50",
    builder_args=_slice_builder_args,
    classes="ct3",
    pipeline=_slice_pipeline,
    input_shape=lambda c: (c.image_size, c.image_size, 3),
    stages=SLICE_STAGES,
    params=(
        *data_params(("covid-ct-md", "covidx-ct"),
                     dataset_help="layout of --data: covid-ct-md (DICOM series) or covidx-ct (PNG slices)"),
        Param("backbone", "multiscale_resnet50", "the slice model's recipe: multiscale_resnet50 (paper 001) or "
                                                 "one that an --import-ed module registers (docs/extending.md)",
              hash_default=False),
        Param("import_modules", (), "Python modules (or .py files) to import first: they register their own "
                                    "slice-model recipes", kind=str, flag="--import", hash_default=False),
        Param("pretrain_data", None, "stage 1's pre-training dataset folder (COVIDx-CT in the paper); without it "
                                     "stage 1 runs on the training slices"),
        Param("pretrain_dataset", "covidx-ct", "layout of --pretrain-data", choices=("covidx-ct", "covid-ct-md")),
        Param("weights", "imagenet", "imagenet, none, or a weights file", phantom=None),
        Param("image_size", 224, "slice side in pixels", phantom=64),
        Param("brightness", 2.0, "COVID-CT-MD brightness factor"),
        Param("interpolate", 2, "spline interpolation of the training patients' series: n-1 slices added between "
                                "neighbouring slices of the same label (1 = off)", phantom=1,
              ours="the paper gives no factor"),
        Param("batch_size", 64, "batch size", phantom=16),
        Param("stages", tuple(s.name for s in SLICE_STAGES), "stages to run (each once; they run in the paper's "
                                                              "order whatever order they are given in)",
              choices=tuple(s.name for s in SLICE_STAGES)),
        Param("pseudo_threshold", 0.5, "probability of the patient's class a slice needs to be pseudo-labelled "
                                       "infected", ours="the paper gives no threshold"),
        Param("dropout", 0.5, "dropout before the features layer", ours="the paper gives no rate"),
        Param("bn_momentum", 0.99, "BatchNormalization momentum (Keras' default)", phantom=0.9),
        Param("augment", True, "paper 001's fused augmentation (rotation, shift, zoom, shear, flip, brightness)",
              phantom=False),
        Param("val_fraction", 0.2, "fraction of patients for validation (best-weights selection)",
              ours="the paper uses COVID-CT-MD's own split"),
        Param("test_fraction", 0.2, "fraction of patients held out for the final test report",
              ours="the paper uses COVID-CT-MD's own split"),
        Param("slice_stride", 1, "use every n-th slice", phantom=2),
        Param("phantom_patients_per_class", 10, "phantom patients per class when no --data is given"),
        Param("phantom_size", 128, "rows = columns of the phantom CT slices when no --data is given"),
        *run_params("slice_level", workers=True, folder="<dataset>-<config hash>"),
    ),
    augmentation=_slice_augmentation,
    validation=lambda c: Holdout(c.val_fraction, c.test_fraction),
    datasets=("covid-ct-md", "covidx-ct"),
    ours={"stage 4 rate and freezing": "the paper gives none: stage 3's",
          "interpolation factor": "the paper gives none: 2",
          "dropout": "the paper gives no rate: 0.5",
          "split": "patient-grouped 60/20/20 hold-out (the paper uses COVID-CT-MD's own split)"},
    # Table I (COVID-CT-MD validation) and Table II (SPGC test).
    reported={"slice accuracy (validation)": 0.9576, "patient accuracy (validation)": 0.9490,
              "patient accuracy (SPGC test)": 0.8889},
    validate=lambda c: _check_slice(c),
)


def _check_slice(c):
    from covid_keras import errors

    if len(set(c.stages)) != len(c.stages):
        raise errors.ConfigurationError(f"--stages names a stage twice. Received: {' '.join(c.stages)}")
    if c.image_size < 32 or c.interpolate < 1:
        raise errors.ConfigurationError(
            f"--image-size must be at least 32 and --interpolate at least 1. Received: image_size={c.image_size}, "
            f"interpolate={c.interpolate}"
        )


#: The paper's four heads, in the ensemble's input order.
PAPER_HEADS = ("maxpool", "maxpool_weighted", "bilstm", "bilstm_weighted")

PATIENT_HEADS = Recipe(
    name="patient_heads",
    paper=PAPER,
    command="train.patient_level",
    # Each head's builder comes from the head registry (models.get_head(name)); every
    # builder gets these options where its signature names them.
    builder="get_head",
    builder_args=lambda c: {"heads": list(c.heads), "l1": c.l1, "l2": c.l2, "lstm_units": c.lstm_units},
    classes="ct3",
    pipeline=lambda c: {"pipeline": "ct_slices", "features": "from the slice-level run"},
    input_shape=lambda c: ("slices", "feature_dim"),
    stages=(Stage("heads", "all", 25, constant(1e-3), flag="", help="each head, from scratch"),),
    params=(
        Param("slice_run", None, "slice-level run folder (default: the newest finished one under --runs-root)"),
        Param("import_modules", (), "Python modules (or .py files) to import first: they register their own heads "
                                    "with covid_keras.models.register_head (docs/extending.md)", kind=str,
              flag="--import", hash_default=False),
        Param("heads", PAPER_HEADS, "heads to train, in the ensemble's input order (registered heads: the "
                                    "paper's four plus any an --import-ed module adds)"),
        Param("batch_size", 64, "studies per batch"),
        Param("l1", 1e-5, "L1 kernel regularisation"),
        Param("l2", 1e-4, "L2 kernel regularisation"),
        Param("lstm_units", 512, "LSTM units per direction of the BiLSTM heads"),
        *run_params("patient_level", export=False, verbose=2),
    ),
    validation=lambda c: SameSplit(),
    validate=lambda c: _check_heads(c),
    notes="uses the slice-level run's patient split: best weights on its validation patients, reports on its "
          "held-out test patients",
)


def _check_heads(c):
    # Whether each name is registered is checked once --import has run (train_patient_level).
    from covid_keras import errors

    repeated = sorted({h for h in c.heads if list(c.heads).count(h) > 1})
    if not c.heads or repeated:
        raise errors.ConfigurationError(
            f"--heads must name at least one head, each once. Received: heads={list(c.heads)}"
        )


ENSEMBLE = Recipe(
    name="ensemble_mlp",
    paper=PAPER,
    command="train.ensemble",
    builder="ensemble_mlp",
    builder_args=lambda c: {"l1": c.l1, "l2": c.l2},
    classes="ct3",
    pipeline=lambda c: {"pipeline": "ct_slices"},
    # 3 probabilities per trained head (the paper's four: 12); ensemble_mlp(num_heads=len(heads)).
    input_shape=lambda c: ("3 x trained heads",),
    stages=(Stage("ensemble", "all", 200, constant(1e-3), flag=""),),
    params=(
        Param("patient_run", None, "patient-level run folder (default: the newest finished one under --runs-root)"),
        Param("batch_size", 64, "studies per batch"),
        Param("l1", 1e-5, "L1 kernel regularisation"),
        Param("l2", 1e-4, "L2 kernel regularisation"),
        *run_params("ensemble", verbose=0),
    ),
    validation=lambda c: SameSplit(),
    notes="one input per trained head (num_heads x 3 probabilities); exports the whole patient pipeline",
)
