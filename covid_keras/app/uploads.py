"""The app's temporary files: where uploads land, how a study is unpacked, and how every trace is removed.

Nothing of a patient is kept (:class:`Workspace`):

* the whole app writes inside one private temporary folder: gradio's cache
  (``GRADIO_TEMP_DIR``, where uploads land and the answer's PNGs are served
  from) and a ``work`` folder where each answer stages its input;
* an upload is copied (an image) or unpacked (a study ``.zip``) into a fresh
  staging folder under neutral names (``image.png``, ``f00001.dcm``): the
  names a user gave, which may hold a patient's name, never reach the
  readers, their messages or the log;
* after each answer, the staging folder, the upload itself and the folder
  gradio made for it are deleted (:meth:`Workspace.forget`); the PNGs of the
  answer are deleted by gradio's own cache sweep once older than the app's
  ``keep_outputs`` seconds (``gr.Blocks(delete_cache=...)``), and
  everything when the app closes (:meth:`Workspace.close`).

Errors name the upload as "the uploaded file" (:func:`scrub`), never by
its path or name.
"""

import bz2  # noqa: F401 - its errors are OSError: a corrupt bzip2 member is caught with them
import contextlib
import lzma
import os
import re
import shutil
import tempfile
import time
import zipfile
import zlib

from covid_keras import errors

#: What error messages call an upload instead of its path.
UPLOAD = "the uploaded file"
#: A study zip holding more members than this is refused (a CT study has a few hundred to a few thousand files).
MAX_MEMBERS = 20000
#: A study zip unpacking to more bytes than this is refused (a 1,000-slice 512^2 CT is about 0.5 GB).
MAX_UNPACKED_BYTES = 4 * 1024**3
#: A zip whose members shrank more than this (uncompressed / compressed) is refused as a zip bomb;
#: DICOM CT compresses 2-5 times.
MAX_RATIO = 200
#: Seconds after which an empty spool file gradio left in its cache root is deleted (a younger one may be
#: an upload still arriving).
SPOOL_SECONDS = 10
#: Characters a staged file's suffix keeps (the readers use the suffix only as a hint).
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


def neutral_suffix(name):
    """The lower-cased extension of ``name`` when it is a plain one (``.png``, ``.dcm``), else ``""``.

    Example:
        >>> neutral_suffix("Doe^John.DCM"), neutral_suffix("scan"), neutral_suffix("x.p ng")
        ('.dcm', '', '')
    """
    suffix = os.path.splitext(os.fspath(name))[1].lower()
    return suffix if _SUFFIX.match(suffix) else ""


#: The package's pseudonymous study names (``series se-<12 hex> of patient pt-<12 hex>``): stable per machine,
#: so the page shows "the study" instead.
_PSEUDONYMS = re.compile(r"(series se-[0-9a-f]{12} of patient pt-[0-9a-f]{12}|(?:patient|series) (?:pt|se)-[0-9a-f]{12}"
                         r"|\b(?:pt|se)-[0-9a-f]{12}\b)")


def scrub(message, paths):
    """``message`` with ``paths`` (and their file names) as "the uploaded file" and pseudonyms as "the study".

    Example:
        >>> scrub("/tmp/x/Doe_John.png: is not an image.", ["/tmp/x/Doe_John.png"])
        'the uploaded file: is not an image.'
        >>> scrub("/s: series se-0123456789ab of patient pt-ba9876543210: no lungs found", ["/s"])
        'the uploaded file: the study: no lungs found'
    """
    message = _PSEUDONYMS.sub("the study", str(message))
    for path in sorted({os.fspath(p) for p in paths if p}, key=len, reverse=True):
        message = message.replace(path, UPLOAD)
        name = os.path.basename(path)
        if len(name) > 3:  # a very short name would match ordinary words
            message = message.replace(name, UPLOAD)
    return message


def _check_still_there(upload, error):
    if not os.path.isfile(upload):
        raise error(
            f"{UPLOAD} is no longer on the server: an upload left unanswered longer than the app's "
            "--keep-outputs seconds is deleted; upload it again."
        )


def stage_image(upload, folder):
    """Copies an uploaded image into ``folder`` as ``image<suffix>`` and returns the copy's path.

    Raises:
        ImageReadError: no upload (an empty request), or one gradio's sweep
            already deleted.
    """
    if not upload:
        raise errors.ImageReadError("No file was uploaded; choose a PNG, JPEG or DICOM X-ray first.")
    _check_still_there(upload, errors.ImageReadError)
    target = os.path.join(folder, "image" + neutral_suffix(upload))
    shutil.copyfile(upload, target)
    return target


def _members(archive):
    """The zip's file members, checked against the size limits."""
    members = [info for info in archive.infolist() if not info.is_dir()]
    if len(members) > MAX_MEMBERS:
        raise errors.NoDicomError(
            f"{UPLOAD} holds {len(members)} files, more than the {MAX_MEMBERS} a CT study zip may hold; "
            "zip one study."
        )
    total = sum(info.file_size for info in members)
    if total > MAX_UNPACKED_BYTES:
        raise errors.NoDicomError(
            f"{UPLOAD} unpacks to {total / 1024**3:.1f} GB, more than the {MAX_UNPACKED_BYTES // 1024**3} GB "
            "allowed for one study; zip one study."
        )
    packed = sum(info.compress_size for info in members)
    if total > MAX_RATIO * max(packed, 1) and total > 64 * 1024**2:
        raise errors.NoDicomError(
            f"{UPLOAD} unpacks to {total / max(packed, 1):.0f} times its size, which no DICOM study does; "
            "zip the study's files with a standard zip tool."
        )
    if any(info.flag_bits & 0x1 for info in members):
        raise errors.NoDicomError(f"{UPLOAD} is an encrypted zip; zip the study without a password.")
    return members


def unzip_study(upload, folder):
    """Unpacks an uploaded study ``.zip`` into ``folder`` under neutral names; returns ``folder``.

    Every file member is written flat as ``f00001<suffix>`` (its own
    lower-cased suffix), so no member path can leave ``folder`` (no
    "zip slip") and no file name of the upload survives. The DICOM reader
    finds series by content, so names and sub-folders do not matter.

    Raises:
        NoDicomError: the upload is not a zip, is encrypted, is too large,
            or holds no file.
    """
    if not upload:
        raise errors.NoDicomError("No file was uploaded; choose a .zip of the study's DICOM files first.")
    _check_still_there(upload, errors.NoDicomError)
    if not zipfile.is_zipfile(upload):
        raise errors.NoDicomError(f"{UPLOAD} is not a .zip archive; upload the study as a .zip of its DICOM files.")
    try:
        with zipfile.ZipFile(upload) as archive:
            members = _members(archive)
            if not members:
                raise errors.NoDicomError(f"{UPLOAD} is an empty zip; it holds no DICOM file.")
            for k, info in enumerate(members, start=1):
                target = os.path.join(folder, f"f{k:05d}{neutral_suffix(info.filename)}")
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, zlib.error, lzma.LZMAError,
            OSError) as e:
        raise errors.NoDicomError(
            f"{UPLOAD} cannot be unpacked ({type(e).__name__}); zip the study again with a standard zip tool."
        ) from None
    return folder


def _private_folder(root):
    """``root`` made private (0700) and empty: the app removes it when it stops, so it must hold nothing else."""
    root = os.path.abspath(root)
    if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
        raise errors.ConfigurationError(
            f"--workspace {root}: exists and is not an empty folder; the app removes its workspace when it "
            "stops, so give a new or empty folder."
        )
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        os.chmod(root, 0o700)
    except OSError as e:
        raise errors.ConfigurationError(
            f"--workspace {root}: cannot be made ({type(e).__name__}); give a writable folder."
        ) from None
    return root


class Workspace:
    """The app's one private temporary folder, emptied after each answer and removed on close.

    Args:
        root: the folder to use: made (private, mode 0700) when missing;
            an existing one must be empty, since :meth:`close` removes it;
            by default a new ``covid_keras_app_*`` folder in the system's
            temporary folder.

    Raises:
        ConfigurationError: ``root`` exists and is not an empty folder, or
            cannot be made.

    Attributes:
        root: the folder.
        gradio_dir: gradio's cache (set as ``GRADIO_TEMP_DIR`` by the app).
        work_dir: where each answer stages its input.
    """

    def __init__(self, root=None):
        self.root = _private_folder(root) if root else tempfile.mkdtemp(prefix="covid_keras_app_")
        self.gradio_dir = os.path.join(self.root, "gradio")
        self.work_dir = os.path.join(self.root, "work")
        os.makedirs(self.gradio_dir, exist_ok=True)
        os.makedirs(self.work_dir, exist_ok=True)

    @contextlib.contextmanager
    def staging(self):
        """A fresh folder for one answer's input, deleted when the block ends (even on error)."""
        folder = tempfile.mkdtemp(dir=self.work_dir)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _inside(self, path):
        path = os.path.realpath(path)
        return os.path.commonpath([path, os.path.realpath(self.root)]) == os.path.realpath(self.root)

    def forget(self, *uploads):
        """Deletes the uploads (files gradio stored for this answer), their folders when empty, and stray spools.

        Only paths inside the workspace are touched. Empty folders of
        gradio's cache go too (gradio's sweep deletes files only, leaving
        each upload's content-hash folder), and the empty ``tmp*`` spool
        files gradio leaves in its cache root once older than
        :data:`SPOOL_SECONDS`.
        """
        for upload in uploads:
            if not upload or not self._inside(upload) or not os.path.isfile(upload):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.remove(upload)
            with contextlib.suppress(OSError):  # not empty: another upload shares it
                os.rmdir(os.path.dirname(upload))
        now = time.time()
        with os.scandir(self.gradio_dir) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        os.rmdir(entry.path)  # only when empty: a swept upload's content-hash folder
                    elif (entry.name.startswith("tmp") and entry.stat().st_size == 0
                          and now - entry.stat().st_mtime > SPOOL_SECONDS):
                        os.remove(entry.path)

    def files(self):
        """Every file now in the workspace (for checks: what is left on disk)."""
        found = []
        for folder, _, names in os.walk(self.root):
            found.extend(os.path.join(folder, name) for name in names)
        return sorted(found)

    def close(self):
        """Removes the whole workspace."""
        shutil.rmtree(self.root, ignore_errors=True)
