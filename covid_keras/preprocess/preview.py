"""PNG montages that show what a pipeline did to a study, step by step.

volume3d: the original slice at the lungs' widest point, the lung mask
there, the lung-area curve with the kept slice range shaded, and the final
input (axial and coronal middle slices). ct_slices: the original slice, the
body mask, and the network input. xray: the image as read and as resized.
File names and titles carry the label and a salted pseudonym of the patient
id, never the id itself.
"""

import os

import numpy as np

from covid_keras.data.privacy import pseudonymize
from covid_keras.preprocess.pipelines import process_record, slice_labels_in_volume_order

_LUNG_WINDOW = (-1350.0, 150.0)  # HU, a lung window for showing originals


def _hu_to_grey(hu, window=_LUNG_WINDOW):
    return np.clip((hu - window[0]) / (window[1] - window[0]), 0, 1)


def _spread(records, n):
    """``n`` records taken round-robin over the labels, so every class shows."""
    by_label = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    out, i = [], 0
    while len(out) < n and any(i < len(v) for v in by_label.values()):
        for label in sorted(by_label):
            if i < len(by_label[label]) and len(out) < n:
                out.append(by_label[label][i])
        i += 1
    return out


def _figure(ncols, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(3.2 * ncols, 3.6))
    fig.suptitle(title, fontsize=10)
    return plt, fig, axes


def _image(ax, img, title):
    ax.imshow(img, cmap="gray", vmin=0, vmax=1 if img.dtype != np.uint8 else 255)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _volume3d_panels(record, options, path, shown_id):
    from covid_keras.data import read_ct_series
    from covid_keras.preprocess.lung_volume import volume3d

    ct = read_ct_series(record.paths[0])
    out, steps = volume3d(ct, normalization=options.normalization, output_shape=(options.size,) * 3,
                          return_steps=True)
    k_res = int(np.argmax(steps.area_ratio))
    k_orig = min(ct.hu.shape[0] - 1, int(round(k_res * ct.hu.shape[0] / steps.mask.shape[0])))
    plt, fig, axes = _figure(5, f"volume3d  {record.label}  {shown_id}")
    _image(axes[0], _hu_to_grey(ct.hu[k_orig]), f"original slice {k_orig} (lung window)")
    _image(axes[1], steps.mask[k_res].astype(np.float32), f"lung mask, resampled slice {k_res}")
    ax = axes[2]
    ax.plot(steps.area_ratio, color="k", lw=1)
    ax.axvspan(steps.kept[0], steps.kept[1] - 1, color="tab:green", alpha=0.3)
    ax.axhline(0.7, color="tab:red", lw=0.8, ls="--")
    ax.set_title(f"lung area / max; kept {steps.kept[0]}-{steps.kept[1] - 1}", fontsize=8)
    ax.set_xlabel("resampled slice", fontsize=7)
    mid = out.shape[0] // 2
    _image(axes[3], out[mid], f"input, axial {mid}")
    _image(axes[4], out[:, out.shape[1] // 2, :][::-1], "input, coronal")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _ct_slices_panels(record, options, path, shown_id):
    from covid_keras.data import read_ct_series
    from covid_keras.preprocess import body_slices as cs

    if not os.path.isdir(record.paths[0]):
        return _generic_panels(record, options, path, shown_id)
    ct = read_ct_series(record.paths[0])
    u8 = cs.to_uint8(ct.hu, normalization=options.normalization)
    k = u8.shape[0] // 2
    labels = slice_labels_in_volume_order(record, ct)
    infected = [] if labels is None else list(np.flatnonzero(labels == 1))
    k = int(infected[len(infected) // 2]) if infected else k
    mask = cs.body_mask(u8[k])
    final = cs.ct_slices(ct, size=options.size, brightness=options.brightness,
                         normalization=options.normalization)[k]
    plt, fig, axes = _figure(3, f"ct_slices  {record.label}  {shown_id}  slice {k}")
    _image(axes[0], _hu_to_grey(ct.hu[k]), "original (lung window)")
    _image(axes[1], mask.astype(np.float32), "body mask (table removed)")
    _image(axes[2], final, f"input {final.shape[0]}x{final.shape[1]}, brightness x{options.brightness:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _generic_panels(record, options, path, shown_id):
    from covid_keras.data import read_xray

    original = read_xray(record.paths[0])
    final = process_record(record, options)[0].array
    shown = final[..., 0] / 255.0 if final.ndim == 3 else final
    plt, fig, axes = _figure(2, f"{options.pipeline}  {record.label}  {shown_id}")
    _image(axes[0], original, f"as read {original.shape[0]}x{original.shape[1]}")
    _image(axes[1], shown.astype(np.float32) if shown.dtype != np.uint8 else shown,
           f"input {final.shape}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_previews(records, options, out_dir, n=None):
    """Writes one PNG montage per record (``n`` spread over the classes).

    Returns:
        The written paths. A study that fails is skipped with a warning.
    """
    import warnings

    from covid_keras import errors

    os.makedirs(out_dir, exist_ok=True)
    chosen = _spread(records, n or len(records))
    panels = {"volume3d": _volume3d_panels, "ct_slices": _ct_slices_panels, "xray": _generic_panels}
    written = []
    for i, record in enumerate(chosen):
        label = "".join(c if c.isalnum() else "_" for c in record.label)
        # A pseudonym in the file name and the title: folder-derived ids can be hospital numbers.
        shown_id = pseudonymize(record.patient_id)
        path = os.path.join(out_dir, f"{options.pipeline}-{i:02d}-{label}-{shown_id}.png")
        try:
            panels[options.pipeline](record, options, path, shown_id)
        except errors.CovidKerasError as e:
            warnings.warn(f"preview skipped: {e}", stacklevel=2)
            continue
        written.append(path)
    return written
