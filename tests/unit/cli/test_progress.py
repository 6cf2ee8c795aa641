"""The CLI's progress bars: a bar cut short leaves no line that looks live."""

from __future__ import annotations

from visionops.cli._common import RichProgress


def test_a_bar_cut_short_is_removed_and_a_finished_one_stays() -> None:
    reporter = RichProgress(enabled=False)
    finished = reporter.start("epoch 1/3", total=4)
    finished.advance(4)
    finished.close()
    cut = reporter.start("epoch 2/3", total=4)
    cut.advance(1)
    cut.close()  # Ctrl-C or an error in the middle of the epoch
    unknown = reporter.start("fetching", total=None)
    unknown.close()
    shown = [task.description for task in reporter._progress.tasks]
    assert shown == ["epoch 1/3", "fetching"]
