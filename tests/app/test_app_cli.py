"""``python -m covid_keras.app``: its flags, bad exports, a real start and stop, and the package without gradio."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from covid_keras import cli
from covid_keras.app import __main__ as app_cli


def test_help_shows_every_flag_and_its_default(capsys):
    with pytest.raises(SystemExit):
        app_cli.parse_args(["--help"])
    out = capsys.readouterr().out
    for flag in ("--model", "--port", "--host", "--keep-outputs", "--allow-folders", "--workspace"):
        assert flag in out
    flat = " ".join(out.split())
    for default in ("(default: 7860)", "(default: 127.0.0.1)", "(default: 300)", "(default: auto)"):
        assert default in flat
    assert "Nothing of a patient is kept" in out


@pytest.mark.parametrize("argv, message", [(["--model", "m", "--port", "0"], "--port"),
                                           (["--model", "m", "--keep-outputs", "0"], "--keep-outputs"),
                                           ([], "--model")])
def test_bad_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        app_cli.parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_a_missing_export_is_one_sentence(tmp_path, capsys):
    status = cli.run(app_cli.main, ["--model", str(tmp_path / "nothing_here")])
    err = capsys.readouterr().err.strip()
    assert status == cli.EXIT_BAD_INPUT and err.startswith("error: ") and "\n" not in err


def test_folders_off_loopback_are_refused(capsys):
    with pytest.raises(SystemExit):
        app_cli.parse_args(["--model", "m", "--host", "0.0.0.0", "--allow-folders", "yes"])
    assert "loopback" in capsys.readouterr().err


def test_a_port_in_use_and_a_used_workspace_are_one_sentence(tiny_two_step_export, tmp_path, capsys):
    import socket

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert cli.run(app_cli.main, ["--model", tiny_two_step_export, "--workspace", str(mine)]) == 2
    assert "not an empty folder" in capsys.readouterr().err and (mine / "notes.txt").exists()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status = cli.run(app_cli.main, ["--model", tiny_two_step_export, "--port", str(port),
                                        "--workspace", str(tmp_path / "ws")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2 and err.startswith("error: ") and "--port" in err
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize("host, allowed", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                           ("0.0.0.0", False), ("10.1.2.3", False)])
def test_folders_are_offered_on_loopback_only_by_default(host, allowed):
    assert app_cli._is_loopback(host) is allowed


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_page(url, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with status {proc.returncode} before serving: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"no page at {url} after {seconds} s")


def test_the_command_serves_the_page_and_removes_its_workspace_when_stopped(tiny_two_step_export, tmp_path):
    """SIGTERM (a service manager's stop) ends the app as Ctrl-C does: the workspace is removed."""
    port, workspace = _free_port(), tmp_path / "workspace"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "covid_keras.app", "--model", tiny_two_step_export,
                             "--port", str(port), "--workspace", str(workspace)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        status, page = _wait_for_page(f"http://127.0.0.1:{port}/", proc)
        assert status == 200 and "covid_keras" in page
        assert os.path.isdir(workspace / "gradio") and os.path.isdir(workspace / "work")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail("the app did not stop within 60 s of SIGTERM")
    assert proc.returncode in (0, cli.EXIT_INTERRUPTED), err[-2000:]
    assert f"http://127.0.0.1:{port}" in out and "Traceback" not in err
    assert not workspace.exists()  # emptied and removed when the app stops


def test_the_package_imports_without_gradio():
    """Every module imports with gradio unavailable (the page imports gradio only when it builds the app)."""
    code = """
import importlib, pkgutil, sys
sys.modules["gradio"] = None  # import gradio now raises ImportError
import covid_keras
names = [m.name for m in pkgutil.walk_packages(covid_keras.__path__, "covid_keras.")
         if not m.name.endswith("__main__")]
assert "covid_keras.app.page" in names and "covid_keras.app.answers" in names
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) > 50
