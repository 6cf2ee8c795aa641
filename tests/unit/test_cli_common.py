"""`cli/_common.split_args` and `one_positional`: positionals versus key=value overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from visionops.cli._common import one_positional, split_args


def test_key_value_items_are_overrides_and_the_rest_positionals() -> None:
    assert split_args(["data/raw/shapes", "train.epochs=3", "model.name=resnet34"]) == (
        ["data/raw/shapes"],
        ["train.epochs=3", "model.name=resnet34"],
    )
    assert split_args(None) == ([], [])


def test_an_existing_path_with_an_equals_sign_is_a_positional(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("a=b").mkdir()
    assert split_args(["a=b", "x=1"]) == (["a=b"], ["x=1"])


def test_one_positional_at_most() -> None:
    assert one_positional(["train.epochs=3"], "DATASET") == (None, ["train.epochs=3"])
    assert one_positional(["shapes", "x=1"], "DATASET") == ("shapes", ["x=1"])
    with pytest.raises(typer.BadParameter, match="one DATASET at a time, got 2: a b"):
        one_positional(["a", "b"], "DATASET")
