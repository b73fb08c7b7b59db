"""Training machinery shared by every paper: input pipelines, stages, runs.

Paper 001's three levels: :mod:`slice_level`, :mod:`patient_level`,
:mod:`ensemble_level`; the command lines in ``train/`` are thin wrappers.
"""
