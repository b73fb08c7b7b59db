"""Paper 004's user interface for every exported model: a local web page (gradio).

    python -m covid_keras.app --model saved_models/xray_cnn --model saved_models/multiscale_resnet50/1

A radiologist uploads a chest X-ray (PNG, JPEG, DICOM) or a CT study (a
``.zip`` of its DICOM files, or its folder when the app runs on their own
machine) and sees the class probabilities, the Grad-CAM heat map and, for
a study, the per-slice curve and the three most suspicious slices.

* :mod:`covid_keras.app.answers` computes what the page shows, without
  gradio (the same reading, preprocessing and SavedModel signature as
  ``covid_keras.predict``);
* :mod:`covid_keras.app.uploads` stages uploads under neutral names and
  deletes every trace after each answer;
* :mod:`covid_keras.app.page` builds the gradio page;
* ``python -m covid_keras.app`` starts it on 127.0.0.1.

gradio is imported only by :mod:`~covid_keras.app.page` and the command
line: the rest of the package imports without it.
"""
