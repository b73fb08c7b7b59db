"""covid_keras.app.uploads: neutral staging names, safe unzipping, and deleting every trace (no TensorFlow)."""

import doctest
import os
import zipfile

import pytest

from covid_keras import errors
from covid_keras.app import uploads

SECRET = "DOE^JANE_SECRET-ID-123"


def test_doctests():
    failures, tried = doctest.testmod(uploads)
    assert tried >= 2 and failures == 0


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def test_unzip_flattens_to_neutral_names_and_keeps_every_byte(tmp_path):
    members = {f"{SECRET}/series 1/IM0001.DCM": b"a" * 10, f"{SECRET}/series 1/IM0002": b"b" * 20,
               "../../escape.dcm": b"c" * 30, "/abs/olute.dcm": b"d" * 40}
    upload = _zip(tmp_path / f"{SECRET}.zip", members)
    out = tmp_path / "out"
    out.mkdir()
    assert uploads.unzip_study(upload, str(out)) == str(out)
    names = sorted(os.listdir(out))
    assert names == ["f00001.dcm", "f00002", "f00003.dcm", "f00004.dcm"]
    assert sorted(open(out / n, "rb").read() for n in names) == sorted(members.values())
    # nothing was written outside the folder (no zip slip)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", f"{SECRET}.zip"])


@pytest.mark.parametrize("case", ["not_zip", "empty", "missing", "swept", "too_many", "encrypted", "too_big"])
def test_bad_zips_are_one_sentence_naming_no_path(tmp_path, monkeypatch, case):
    upload = str(tmp_path / f"{SECRET}.zip")
    if case == "not_zip":
        open(upload, "wb").write(b"hello, not a zip")
    elif case == "empty":
        _zip(upload, {})
    elif case == "too_many":
        monkeypatch.setattr(uploads, "MAX_MEMBERS", 2)
        _zip(upload, {f"{k}.dcm": b"x" for k in range(3)})
    elif case == "too_big":
        monkeypatch.setattr(uploads, "MAX_UNPACKED_BYTES", 10)
        _zip(upload, {"a.dcm": b"x" * 11})
    elif case == "encrypted":  # zipfile cannot write encryption: set the flag bit in the central directory
        _zip(upload, {"a.dcm": b"x"})
        raw = bytearray(open(upload, "rb").read())
        at = raw.index(b"PK\x01\x02")
        raw[at + 8] |= 0x1
        open(upload, "wb").write(bytes(raw))
    with pytest.raises(errors.NoDicomError) as info:
        uploads.unzip_study(None if case == "missing" else upload, str(tmp_path))
    message = str(info.value)
    assert SECRET not in message and str(tmp_path) not in message and "\n" not in message
    assert message.endswith(".")


def test_stage_image_copies_under_a_neutral_name(tmp_path):
    upload = tmp_path / f"{SECRET}.PNG"
    upload.write_bytes(b"png bytes")
    folder = tmp_path / "stage"
    folder.mkdir()
    staged = uploads.stage_image(str(upload), str(folder))
    assert os.path.basename(staged) == "image.png" and open(staged, "rb").read() == b"png bytes"
    with pytest.raises(errors.ImageReadError, match="No file was uploaded"):
        uploads.stage_image(None, str(folder))
    swept = str(tmp_path / f"{SECRET}-swept.png")  # an upload gradio's sweep deleted before its button
    with pytest.raises(errors.ImageReadError, match="upload it again") as info:
        uploads.stage_image(swept, str(folder))
    assert SECRET not in str(info.value)


def test_scrub_replaces_paths_and_names_but_not_short_words():
    path = f"/tmp/gradio/abc/{SECRET}.png"
    message = f"{path}: is corrupt; {SECRET}.png cannot be read at a.png"
    assert uploads.scrub(message, [path, None, "/x/a.png"]) == (
        "the uploaded file: is corrupt; the uploaded file cannot be read at the uploaded file")
    assert uploads.scrub("an error in the image", ["/x/an"]) == "an error in the image"


def test_workspace_forgets_uploads_and_spools_only_inside_itself(tmp_path):
    ws = uploads.Workspace(str(tmp_path / "ws"))
    upload_dir = os.path.join(ws.gradio_dir, "0123abcd")
    os.makedirs(upload_dir)
    upload = os.path.join(upload_dir, f"{SECRET}.png")
    open(upload, "wb").write(b"x")
    spool = os.path.join(ws.gradio_dir, "tmpab12cd")
    open(spool, "wb").close()
    old = uploads.SPOOL_SECONDS + 5
    os.utime(spool, (os.path.getatime(spool) - old, os.path.getmtime(spool) - old))
    arriving = os.path.join(ws.gradio_dir, "tmpnew123")  # an upload's spool still arriving: kept
    open(arriving, "wb").close()
    swept = os.path.join(ws.gradio_dir, "f00d" * 16)  # the content-hash folder gradio's sweep left empty
    os.makedirs(swept)
    output = os.path.join(ws.gradio_dir, "feed", "image.png")  # an answer's picture: gradio's sweep owns it
    os.makedirs(os.path.dirname(output))
    open(output, "wb").write(b"y")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"z")
    ws.forget(upload, str(outside), None)
    assert ws.files() == sorted([output, arriving]) and not os.path.exists(swept)
    os.remove(arriving)
    assert not os.path.exists(upload_dir) and outside.exists()
    with pytest.raises(RuntimeError), ws.staging() as folder:
        open(os.path.join(folder, "image.png"), "wb").write(b"x")
        raise RuntimeError("boom")
    assert not os.path.exists(folder) and ws.files() == [output]
    ws.close()
    assert not os.path.exists(ws.root)


def test_a_given_workspace_must_be_new_or_empty_and_is_made_private(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("keep me")
    with pytest.raises(errors.ConfigurationError, match="not an empty folder"):
        uploads.Workspace(str(mine))
    assert (mine / "thesis.txt").read_text() == "keep me"
    ws = uploads.Workspace(str(tmp_path / "new"))
    assert oct(os.stat(ws.root).st_mode & 0o777) == "0o700"
    ws.close()
    assert not os.path.exists(ws.root)


def test_a_corrupt_member_and_a_zip_bomb_are_one_sentence(tmp_path):
    good = _zip(tmp_path / "ok.zip", {})
    with zipfile.ZipFile(good, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.dcm", os.urandom(4096) + b"x" * 4096)
    raw = bytearray(open(good, "rb").read())
    start = raw.index(b"a.dcm") + len("a.dcm")  # the local header's name, then the deflate stream
    raw[start + 40:start + 80] = bytes(40)  # damage the stream, not the headers
    open(good, "wb").write(bytes(raw))
    with pytest.raises(errors.NoDicomError, match="cannot be unpacked"):
        uploads.unzip_study(good, str(tmp_path))
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.dcm", bytes(100 * 1024**2))  # 100 MB of zeros: about 100 KB zipped
    with pytest.raises(errors.NoDicomError, match="times its size"):
        uploads.unzip_study(str(bomb), str(tmp_path))
