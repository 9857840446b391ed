"""Browser fixtures: one headless Chromium for the session and the rendered preview.

Chromium comes from Debian's ``chromium`` package (``apt-get install -y chromium``);
``CHROMIUM`` names another binary. Screenshots go to ``SCREENSHOT_DIR`` when set
(``docs/screenshots`` keeps one run for readers), else to a temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.email.preview import run_preview
from tests.browser.cdp import Chromium

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"the browser tests need headless Chromium at {CHROMIUM}: install Debian's "
            "package (apt-get install -y chromium) or set CHROMIUM to the binary",
            pytrace=False,
        )
    browser = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def preview_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("preview")
    run_preview(directory)
    return directory


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("SCREENSHOT_DIR")
    if not configured:
        return tmp_path_factory.mktemp("screenshots")
    directory = Path(configured)
    directory.mkdir(parents=True, exist_ok=True)
    return directory
