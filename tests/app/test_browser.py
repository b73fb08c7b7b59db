"""The app in a real browser: Debian's chromium driven by Playwright, against the page a user sees.

The browser is the system's ``chromium`` (``apt-get install chromium``; CI's
``.ci/run`` installs it), given to Playwright as ``executable_path``:
Playwright never downloads a browser here, and the test proves it by
pointing ``PLAYWRIGHT_BROWSERS_PATH`` at an empty folder that must stay
empty. Without chromium the test fails (it is never skipped).

What the page shows is checked against the package's own path,
``covid_keras.serving.predict_study`` on the same file: the answer's class
and every class's percentage as gradio's Label rounds it
(``Math.round(p * 100)``), and each step's answer of the two-step export.
The heat maps (the answer's and step 1's) must be loaded PNGs; a truncated PNG must give the
package's one sentence ("Could not answer: ..."), no traceback, and the
app must answer the next good image. The full-page screenshot is kept in
the test's folder and copied to ``$COVID_KERAS_SCREENSHOT_DIR`` when set.
"""

import math
import os
import re
import shutil

import pytest

from covid_keras import errors, serving
from covid_keras.app import uploads

pytestmark = [
    pytest.mark.slow,  # TensorFlow, gradio and a browser: about 35 s for the module
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),  # gradio's pandas calls
]

#: Milliseconds the page may take to answer (the first answer loads the Keras models for Grad-CAM).
ANSWER_MS = 90_000
#: An upload name a patient could have given: it must never reach the page.
PATIENT_NAME = "Doe_Jane_1945"
#: The X-ray tab's heat maps: the answer's, and (a two-step answer from step 2) step 1's own.
HEAT_MAPS = ("xray-heatmap", "xray-step1-heatmap")


@pytest.fixture
def page(tmp_path, monkeypatch):
    """A Playwright page in headless system chromium; fails (never skips) when chromium is missing."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("the browser test needs Debian's chromium on PATH: "
                    "apt-get install -y --no-install-recommends chromium fonts-dejavu-core")
    from playwright.sync_api import sync_playwright

    browsers = tmp_path / "ms-playwright"
    browsers.mkdir()
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(browsers))  # none there: only executable_path can work
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()
    assert list(browsers.iterdir()) == [], "Playwright wrote a browser of its own"


def _shown_label(page, elem_id):
    """A gr.Label as the page shows it: (the answer's class, {class: "35%"})."""
    block = page.locator(f"#{elem_id}")
    top = block.locator("[data-testid='label-output-value']").inner_text().strip()
    rows = block.locator("[data-testid$='-confidence-set']")
    shown = {}
    for k in range(rows.count()):
        row = rows.nth(k)
        shown[row.locator("dt").inner_text().strip()] = row.locator("dd").inner_text().strip()
    return top, shown


def _as_page_rounds(probabilities):
    """{class: "35%"}: gradio's Label shows ``Math.round(p * 100)`` (halves round up, as here)."""
    return {name: f"{math.floor(p * 100 + 0.5)}%" for name, p in probabilities.items()}


def _classify(page, path, expect_status):
    """Uploads ``path`` on the X-ray tab, clicks the button and waits until the status matches ``expect_status``."""
    from playwright.sync_api import expect

    page.set_input_files("#xray-upload input[type=file]", path)
    page.get_by_role("button", name="Classify X-ray").click()
    status = page.locator("#xray-status")
    expect(status).to_have_text(expect_status, timeout=ANSWER_MS)
    return status.inner_text()


def _check_answer(page, png, model_dir):
    """The probabilities and both steps shown equal predict_study's for ``png``; the heat maps are loaded PNGs."""
    truth = serving.predict_study(png, model_dir)
    top, shown = _shown_label(page, "xray-probabilities")
    assert top == truth["predicted_class"]
    assert shown == _as_page_rounds(truth["probabilities"])
    assert truth["steps"]["routed"], "the fixture's step 1 routes every image to step 2"
    for step in ("step1", "step2"):
        probabilities = truth["steps"][step]
        top, shown = _shown_label(page, f"xray-{step}")
        assert top == max(probabilities, key=probabilities.get)
        assert shown == _as_page_rounds(probabilities)
    assert "Step 2 (COVID-19 / other viral)" in page.locator("#xray-step2").inner_text()

    for picture in HEAT_MAPS:
        image = page.locator(f"#{picture} img")
        image.wait_for(timeout=ANSWER_MS)
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                               timeout=ANSWER_MS)
        source = image.get_attribute("src")
        assert source.endswith(".png"), source
        response = page.request.get(source)
        assert response.ok and response.body()[:8] == b"\x89PNG\r\n\x1a\n", picture


def _screenshot(page, tmp_path, name):
    """Saves a full-page screenshot in the test's folder and copies it to $COVID_KERAS_SCREENSHOT_DIR when set."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("COVID_KERAS_SCREENSHOT_DIR")
    if target:
        os.makedirs(target, exist_ok=True)
        shutil.copy(path, os.path.join(target, name))
    return path


def test_xray_tab_answers_like_predict_study_and_survives_a_broken_upload(
        page, launch_app, tiny_two_step_export, phantom_xray_pngs, tmp_path):
    app = launch_app([tiny_two_step_export], keep_outputs=120)
    page.goto(app.url)
    answered = re.compile(r"^\s*Answer:")

    good = str(tmp_path / f"{PATIENT_NAME}.png")
    shutil.copyfile(phantom_xray_pngs["viral"], good)
    status = _classify(page, good, answered)
    assert "two-step X-ray diagnosis" in status
    _check_answer(page, good, tiny_two_step_export)
    assert _screenshot(page, tmp_path, "xray_tab.png").stat().st_size > 0
    assert PATIENT_NAME not in page.content()

    broken = str(tmp_path / f"{PATIENT_NAME}_broken.png")
    with open(good, "rb") as f:
        data = f.read()
    with open(broken, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(errors.ImageReadError) as refused:
        serving.predict_study(broken, tiny_two_step_export)
    sentence = uploads.scrub(str(refused.value), [broken])
    assert sentence.startswith(uploads.UPLOAD)
    status = _classify(page, broken, re.compile(r"^\s*Could not answer:"))
    assert status.strip() == f"Could not answer: {sentence}"
    content = page.content()
    assert "Traceback" not in content and PATIENT_NAME not in content
    assert page.locator(", ".join(f"#{p} img" for p in HEAT_MAPS)).count() == 0  # the last answer's are gone
    _screenshot(page, tmp_path, "xray_tab_refused.png")

    again = phantom_xray_pngs["covid"]
    _classify(page, again, answered)
    _check_answer(page, again, tiny_two_step_export)


def test_ct_tab_answers_a_zipped_study_like_predict_study(
        page, launch_app, tiny_two_step_export, tiny_ct_export, phantom_ct_zip, tmp_path):
    from playwright.sync_api import expect

    zipped, folder = phantom_ct_zip
    app = launch_app([tiny_two_step_export, tiny_ct_export], keep_outputs=120)
    page.goto(app.url)
    page.get_by_role("tab", name="CT study").click()
    page.set_input_files("#ct-upload input[type=file]", zipped)
    page.get_by_role("button", name="Classify study").click()
    status = page.locator("#ct-status")
    expect(status).to_have_text(re.compile(r"^\s*Patient answer:"), timeout=ANSWER_MS)

    truth = serving.predict_study(folder, tiny_ct_export)
    top, shown = _shown_label(page, "ct-probabilities")
    assert top == truth["predicted_class"]
    assert shown == _as_page_rounds(truth["probabilities"])
    assert f"{truth['slices']} slices" in status.inner_text()
    pictures = page.locator("#ct-curve img, #ct-slices img")
    expect(page.locator("#ct-slices img")).to_have_count(3, timeout=ANSWER_MS)
    for k in range(pictures.count()):
        page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                               arg=pictures.nth(k).element_handle(), timeout=ANSWER_MS)
    _screenshot(page, tmp_path, "ct_tab.png")
    assert "Traceback" not in page.content()
