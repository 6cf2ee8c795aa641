"""timm backbones: names, offline pretrained weights, ``model.weights`` files, image sizes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from visionops.cli.app import app
from visionops.config import load_settings
from visionops.errors import ConfigError
from visionops.models import build_model, check_model_name, describe_backbones, list_backbones
from visionops.models.timm_family import hf_cache_dir

runner = CliRunner()


def _reference(name: str, seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def _pre_logits(network: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return network.forward_head(network.forward_features(images), pre_logits=True)


def _fill_hf_cache(cache: Path, repo_id: str, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` where huggingface_hub's cache layout puts ``repo_id``'s weights."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    path = snapshot / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_both_families_are_listed_and_checked() -> None:
    names = list_backbones()
    assert "resnet18" in names and "timm:vit_tiny_patch16_224" in names
    check_model_name("timm:vit_small_patch14_dinov2.lvd142m")
    with pytest.raises(ConfigError, match=r"did you mean 'timm:vit_tiny_patch16_224'"):
        check_model_name("timm:vit_tiny_patch16_22")
    with pytest.raises(ConfigError, match=r"no pretrained tag 'nope'.*augreg_in21k"):
        check_model_name("timm:vit_tiny_patch16_224.nope")
    with pytest.raises(ConfigError, match=r"did you mean.*'timm:convnext_atto'"):
        check_model_name("convnext_atto")


def test_describe_gives_timm_params_and_tags() -> None:
    (row,) = describe_backbones("timm:vit_small_patch14_dinov2", family="timm")
    assert row.params_m == pytest.approx(22.06, abs=0.05)
    assert "lvd142m" in row.pretrained_tags
    assert {r.family for r in describe_backbones("*resnet18")} == {"torchvision", "timm"}


@pytest.mark.parametrize(
    ("name", "dim"),
    [("timm:resnet18", 512), ("timm:convnext_atto", 320), ("timm:vit_tiny_patch16_224", 192)],
)
def test_embedding_is_the_pre_logits_features(name: str, dim: int) -> None:
    model = build_model(name, num_outputs=5, image_size=64).eval()
    outputs, embedding = model(torch.rand(2, 3, 64, 64))
    assert outputs.shape == (2, 5) and embedding.shape == (2, dim)


def test_weights_file_drops_the_head_and_gives_the_saved_features(tmp_path: Path) -> None:
    reference = _reference("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("timm:resnet18", num_outputs=3, weights=path).eval()
    images = torch.rand(2, 3, 64, 64)
    _, embedding = model(images)
    assert torch.equal(embedding, _pre_logits(reference, images))
    # A grey model sums the RGB filters, as for pretrained weights.
    grey = build_model("timm:resnet18", num_outputs=3, weights=path, channels=1)
    assert torch.allclose(grey.backbone.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))


def test_torchvision_weights_file_is_read_too(tmp_path: Path) -> None:
    import torchvision

    reference = torchvision.models.resnet18().eval()
    path = tmp_path / "tv.safetensors"
    save_file(reference.state_dict(), str(path))
    model = build_model("resnet18", num_outputs=2, weights=path).eval()
    images = torch.rand(1, 3, 64, 64)
    reference.fc = torch.nn.Identity()
    with torch.no_grad():
        assert torch.equal(model(images)[1], reference(images))


def test_vit_weights_at_another_size_have_their_position_embeddings_resampled(
    tmp_path: Path,
) -> None:
    reference = _reference("vit_tiny_patch16_224")
    path = tmp_path / "vit.safetensors"
    save_file(reference.state_dict(), str(path))
    model = build_model("timm:vit_tiny_patch16_224", num_outputs=2, weights=path, image_size=64)
    backbone = model.backbone
    assert backbone.pos_embed.shape == (1, 1 + 4 * 4, 192)
    assert torch.equal(backbone.blocks[3].attn.qkv.weight, reference.blocks[3].attn.qkv.weight)
    assert torch.equal(backbone.pos_embed[:, 0], reference.pos_embed[:, 0])  # the class token's
    assert model(torch.rand(1, 3, 64, 64))[0].shape == (1, 2)


def test_weights_of_another_model_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "r34.pt"
    torch.save({"state_dict": _reference("resnet34").state_dict()}, path)
    with pytest.raises(ConfigError) as info:
        build_model("timm:resnet18", num_outputs=2, weights=path)
    message = str(info.value)
    assert "do not fit timm:resnet18" in message and "unexpected keys" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("filename", "content", "expected"),
    [
        ("missing.pth", None, "no such file"),
        ("weights.txt", b"x", "not a weights file"),
        ("broken.safetensors", b"not safetensors", "cannot read it"),
        ("model.pt", "object", "no state dict of tensors"),
    ],
)
def test_bad_weights_files_are_one_line_errors(
    tmp_path: Path, filename: str, content: bytes | str | None, expected: str
) -> None:
    path = tmp_path / filename
    if content == "object":
        torch.save([1, 2, 3], path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected) as info:
        build_model("timm:resnet18", num_outputs=2, weights=path)
    assert "\n" not in str(info.value)


def test_pretrained_from_a_filled_hugging_face_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference = _reference("convnext_atto")
    _fill_hf_cache(hf_cache_dir(), "timm/convnext_atto.d2_in1k", reference.state_dict())
    assert hf_cache_dir() == tmp_path / "hf" / "hub"
    model = build_model("timm:convnext_atto", num_outputs=4, pretrained=True).eval()
    images = torch.rand(2, 3, 64, 64)
    assert torch.equal(model(images)[1], _pre_logits(reference, images))


def test_pretrained_missing_offline_is_one_line_naming_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as info:
        build_model("timm:vit_small_patch14_dinov2.lvd142m", num_outputs=2, pretrained=True)
    message = str(info.value)
    assert "\n" not in message
    assert f"{tmp_path / 'empty'}/models--timm--vit_small_patch14_dinov2.lvd142m" in message
    assert "on a connected machine" in message and "model.weights=PATH" in message


def test_train_with_a_pretrained_timm_model_offline(
    prepared_shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole ``visionops train`` with HF_HUB_OFFLINE=1 and a pre-filled cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference = _reference("vit_tiny_patch16_224")
    _fill_hf_cache(
        tmp_path / "hub",
        "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
        reference.state_dict(),
    )
    args = ["train", str(prepared_shapes), "--model", "timm:vit_tiny_patch16_224"]
    fast = ["--epochs", "1", "--batch-size", "64", "--device", "cpu", "--name", "vit"]
    result = runner.invoke(app, [*args, *fast, "--pretrained", "--freeze-backbone", "--json"])
    assert result.exit_code == 0, result.output
    from visionops.artifacts import RunRecord

    record = RunRecord.read(tmp_path / "runs" / "vit" / "run.json")
    assert record.model.pretrained and record.status == "completed"
    # The run names the exact file it started from.
    source = record.model.weights_source
    assert source is not None and source.name == "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert source.sha256 == hashlib.sha256(Path(source.file).read_bytes()).hexdigest()
    # The normalisation is the pretrained config's (0.5 for this ViT), not the data's.
    assert record.normalization.mean == [0.5, 0.5, 0.5]
    assert record.normalization.std == [0.5, 0.5, 0.5]


def test_engine_starts_from_the_weights_file(prepared_shapes: Path, tmp_path: Path) -> None:
    """What ``visionops train model.weights=PATH`` builds: the saved network's outputs first."""
    from visionops.data.prepared import PreparedDataset
    from visionops.device import resolve_device
    from visionops.distributed import DistContext
    from visionops.tasks import task_for
    from visionops.train.engine import Engine

    reference = _reference("resnet18")
    path = tmp_path / "saved.safetensors"
    save_file(reference.state_dict(), str(path))
    settings = load_settings(
        overrides=[
            "model.name=timm:resnet18",
            f"model.weights={path}",
            "device=cpu",
            "train.batch_size=16",
            "train.channels_last=false",
        ]
    )
    dataset = PreparedDataset.open(prepared_shapes)
    task = task_for(dataset.manifest)
    engine = Engine(settings, dataset, task, resolve_device("cpu"), DistContext())  # type: ignore[arg-type]
    images = torch.rand(2, 3, 64, 64)
    engine.model.eval()
    assert torch.equal(engine.model(images)[1], _pre_logits(reference, images))
    assert engine.normalization["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_cli_missing_weights_is_one_line_and_no_run(
    prepared_shapes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cli_helpers import run_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for setting in ("model.weights=nowhere/saved.pth", "model.pretrained=true"):
        code, _, err = run_main(
            monkeypatch,
            capsys,
            "train",
            str(prepared_shapes),
            "--model",
            "timm:convnext_atto",
            "--device",
            "cpu",
            setting,
        )
        lines = [line for line in err.splitlines() if line.strip()]
        assert code != 0 and "Traceback" not in err
        assert len(lines) == 1, err
        assert "saved.pth: no such file" in lines[0] or "Hugging Face cache" in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
