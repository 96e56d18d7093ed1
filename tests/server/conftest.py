from __future__ import annotations

import pytest

from ._serve import Served


@pytest.fixture
def served(cli, tmp_path):
    s = Served(cli, tmp_path)
    yield s
    s.stop()
