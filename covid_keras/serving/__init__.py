"""Serving: versioned SavedModels for TF Serving, and predictions on one study.

Class names and preprocessing are never guessed: pass them, or the recipe's
record (``Recipe.export_metadata``) in ``metadata``; the training commands
do the latter.

    path = serving.export(model, "saved_models", class_names=[...], preprocessing={"pipeline": "xray"})
    path = serving.export(model, "saved_models", metadata={"recipe": recipe.export_metadata(config)})
    path = serving.export(volume_model, "saved_models", class_names=[...],      # paper 000's 3-D model
                          preprocessing={"pipeline": "volume3d"})
    path = serving.export_patient_pipeline(slice_model, {"maxpool": head, ...}, ensemble, "saved_models",
                                           metadata={"recipe": ...})
    path = serving.export_two_step(step1, step2, "saved_models")  # paper 004's XrayCNN steps: one model
    meta = serving.load_metadata(path)                         # classes, preprocessing, versions
    serving.predict_study("study_dir", path)                   # {"probabilities": {...}, ...}

``python -m covid_keras.predict STUDY_DIR_OR_IMAGE --model saved_models/<name>/<version>``
prints the same answer as JSON. Nothing here imports TensorFlow until a
model is exported or run.
"""

from covid_keras.serving.savedmodel import (
    export,
    export_patient_pipeline,
    export_two_step,
    load_metadata,
    next_version,
    resolve_version_dir,
)
from covid_keras.serving.predict import ServedModel, StudyAnswer, answer_study, load_model, predict_study

__all__ = [
    "ServedModel",
    "StudyAnswer",
    "answer_study",
    "export",
    "export_patient_pipeline",
    "export_two_step",
    "load_metadata",
    "load_model",
    "next_version",
    "predict_study",
    "resolve_version_dir",
]
