"""After its first pass the controller moves what it read out of the collector's way and has it look less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagewise.controller import Controller
from stagewise.controller.collector import GC_THRESHOLDS


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector")
async def test_keeping_still_freezes_what_lives_and_raises_the_thresholds(tmp_path: Path) -> None:
    controller = Controller(tmp_path)
    try:
        controller.keep_still()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        await controller.close()
