from pathlib import Path
from typing import Any

import pytest

from visionops.config import (
    available_recipes,
    load_recipe,
    load_settings,
    parse_overrides,
    settings_to_yaml,
)
from visionops.errors import ConfigError


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_defaults_are_zero_config() -> None:
    settings = load_settings()
    assert settings.data.source == "demo:shapes"
    assert settings.device == "auto"
    assert settings.train.epochs >= 1


def test_overrides_parse_yaml_scalars() -> None:
    parsed = parse_overrides(["train.epochs=3", "train.grad_clip=null", "model.pretrained=true"])
    assert parsed == {"train.epochs": 3, "train.grad_clip": None, "model.pretrained": True}


def test_layers_resolve_in_documented_order(tmp_path: Path) -> None:
    (tmp_path / "visionops.yaml").write_text(
        "train:\n  epochs: 4\n  lr: 0.5\nmodel:\n  name: resnet34\n"
    )
    config = tmp_path / "extra.yaml"
    config.write_text("train:\n  epochs: 6\n")
    settings = load_settings(
        recipe="fer2013",
        config_file=config,
        overrides=["train.batch_size=7"],
        flags={"device": "cpu", "train.seed": None},
    )
    assert settings.data.channels == 1  # from the recipe
    assert settings.model.name == "resnet34"  # visionops.yaml beats the recipe
    assert settings.train.lr == 0.5
    assert settings.train.epochs == 6  # --config beats visionops.yaml
    assert settings.train.batch_size == 7  # key=value beats everything
    assert settings.device == "cpu"
    assert settings.train.seed == 0  # None flags mean "not given"
    assert settings.recipe == "fer2013"


def test_recipe_key_in_project_file_selects_recipe(tmp_path: Path) -> None:
    (tmp_path / "visionops.yaml").write_text("recipe: nutrition5k\n")
    settings = load_settings()
    assert settings.model.freeze_backbone is True


def test_unknown_key_suggests_closest() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown setting 'train.epoch'.*did you mean 'train.epochs'"
    ):
        load_settings(overrides=["train.epoch=3"])


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "visionops.yaml").write_text("data:\n  imagesize: 32\n")
    with pytest.raises(ConfigError, match=r"data.imagesize.*visionops.yaml.*data.image_size"):
        load_settings()


def test_wrong_type_names_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"setting 'train.epochs' \(got 'many'\)"):
        load_settings(overrides=["train.epochs=many"])


@pytest.mark.parametrize("share", ["0", "1.5", "-0.1"])
def test_a_cpu_share_outside_0_to_1_names_its_range(share: str) -> None:
    expected = "greater than 0" if float(share) <= 0 else "less than or equal to 1"
    for key in ("drift.statistics_cpu_share", "drift.max_cpu_share"):
        with pytest.raises(ConfigError, match=rf"setting '{key}' \(got {share}\): .*{expected}"):
            load_settings(overrides=[f"{key}={share}"])


def test_bad_device_is_config_error() -> None:
    with pytest.raises(ConfigError, match="device"):
        load_settings(flags={"device": "gpu"})


def test_ratios_must_leave_training_data() -> None:
    with pytest.raises(ConfigError, match="too little to train"):
        load_settings(overrides=["data.val_ratio=0.5", "data.test_ratio=0.45"])


def test_override_without_equals() -> None:
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["epochs"])


def test_invalid_yaml_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config_file=bad)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.yaml")


def test_unknown_recipe_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'fer2013'"):
        load_recipe("fer2012")


def test_every_shipped_recipe_is_valid() -> None:
    recipes = available_recipes()
    assert {"demo-shapes", "fruits-vegetables", "movie-posters", "nutrition5k", "fer2013"} <= set(
        recipes
    )
    for name in recipes:
        assert load_settings(recipe=name).recipe == name


def test_yaml_round_trip(tmp_path: Path) -> None:
    settings = load_settings(overrides=["train.epochs=9", "model.name=mobilenet_v3_small"])
    saved = tmp_path / "config.yaml"
    saved.write_text(settings_to_yaml(settings))
    assert load_settings(config_file=saved) == settings


@pytest.mark.parametrize(
    "override", ["train.epochs=yes", "train.epochs=true", "train.lr=true", "train.epochs='5'"]
)
def test_a_bool_or_text_is_not_a_number(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"setting '{key}' \(got "):
        load_settings(overrides=[override])


def test_a_bool_in_a_file_is_not_an_int(tmp_path: Path) -> None:
    (tmp_path / "visionops.yaml").write_text("train: {epochs: true}\n")
    with pytest.raises(ConfigError, match=r"'train.epochs' \(got True\).*booleans"):
        load_settings(cwd=tmp_path)


def test_a_number_is_not_a_bool() -> None:
    with pytest.raises(ConfigError, match=r"'train.ema' \(got 1\).*train.ema=true"):
        load_settings(overrides=["train.ema=1"])


def test_numbers_in_exponent_form_and_paths_still_read() -> None:
    settings = load_settings(overrides=["train.lr=1e-3", "runs_root=elsewhere", "train.ema=yes"])
    assert settings.train.lr == pytest.approx(0.001)
    assert settings.runs_root == Path("elsewhere")
    assert settings.train.ema is True


def test_duplicate_key_in_a_file_is_refused_with_its_lines(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  epochs: 3\n  lr: 0.01\n  epochs: 5\n")
    with pytest.raises(ConfigError, match=r"run.yaml sets 'epochs' twice.*line 2 and line 4"):
        load_settings(config_file=config)


def test_the_same_key_in_two_sections_is_not_a_duplicate(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  seed: 1\ntrain:\n  seed: 2\n")
    settings = load_settings(config_file=config)
    assert (settings.data.seed, settings.train.seed) == (1, 2)


def test_explain_setting_names_the_layer_that_set_a_key(tmp_path: Path) -> None:
    from visionops.config import explain_setting

    def source(key: str, **layers: Any) -> tuple[Any, str]:
        explained = explain_setting(key, cwd=tmp_path, **layers)
        return explained.value, explained.layer

    assert source("train.epochs") == (10, "default")
    assert source("model.name", recipe="demo-anomaly") == ("resnet18", "recipe demo-anomaly")
    (tmp_path / "visionops.yaml").write_text("train: {epochs: 7}\n", encoding="utf-8")
    assert source("train.epochs") == (7, "visionops.yaml")
    config = tmp_path / "more.yaml"
    config.write_text("train: {epochs: 8}\n", encoding="utf-8")
    assert source("train.epochs", config_file=config) == (8, f"--config {config}")
    assert source("train.epochs", config_file=config, overrides=["train.epochs=9"]) == (
        9,
        "key=value",
    )
    assert source("train.epochs", flags={"train.epochs": 11}) == (11, "a flag")
    assert source("train.lr", flags={"train.epochs": 11})[1] == "default"
    value, layer = source("train", overrides=["train.lr=0.5"])  # a section: any key inside
    assert value["lr"] == 0.5 and value["epochs"] == 7 and layer == "key=value"
    with pytest.raises(ConfigError, match=r"did you mean 'train\.epochs'"):
        explain_setting("train.epoch", cwd=tmp_path)
