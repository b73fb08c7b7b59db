"""The fenced blocks of a document that a test runs exactly as shown (docs/extending.md)."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXTENDING = os.path.join(REPO, "docs", "extending.md")


def block(test_file, what, doc=EXTENDING):
    """The fenced block right after ``<!-- tested by tests/training/<test_file>: <what> -->``: (info, text)."""
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    marker = f"<!-- tested by tests/training/{test_file}: {what} -->"
    assert text.count(marker) == 1, f"{os.path.basename(doc)} must mark one block with {marker!r}"
    found = re.match(r"\s*```([^\n]*)\n(.*?)\n```", text[text.index(marker) + len(marker):], re.DOTALL)
    assert found, f"no fenced block after {marker!r}"
    return found.group(1), found.group(2) + "\n"
