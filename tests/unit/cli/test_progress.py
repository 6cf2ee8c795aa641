"""The CLI's progress and outcome lines: no half bar left on screen, a rate that says its unit."""

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


def test_the_train_line_says_what_its_rate_counts() -> None:
    from pathlib import Path

    from visionops.cli.train import outcome_line
    from visionops.results import TrainResult

    def line(**fields: object) -> str:
        base: dict[str, object] = dict(
            run_dir=Path("runs/run-001"), name="run-001", status="completed", task="anomaly",
            monitor="image_auroc", mode="max", best_metric=1.0, best_epoch=1,
            epochs_completed=1, epochs=1, seconds=172.0,
        )  # fmt: skip
        return outcome_line(TrainResult(**{**base, **fields}))  # type: ignore[arg-type]

    assert line(images_per_s=0.46, rate_unit="img/s embedded") == (
        "run runs/run-001 · cpu fp32 · 172 s · 0.46 img/s embedded"
    )
    assert line(images_per_s=731.4) == "run runs/run-001 · cpu fp32 · 172 s · 731 img/s"
    assert line(images_per_s=0.0) == "run runs/run-001 · cpu fp32 · 172 s"  # never "0 img/s"
