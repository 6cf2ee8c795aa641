"""The server process never imports torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from serve_helpers import colour_image


def test_serving_a_bundle_never_imports_torch(classification_bundle: Path, tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(colour_image())
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import visionops.cli.app
        import visionops.cli.serve
        import visionops.serve.runner
        from fastapi.testclient import TestClient
        from visionops.inference.bundle import load_bundle
        from visionops.config import ServeSettings
        from visionops.serve.app import create_app
        from visionops.inference.predlog import read_prediction_log

        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from serve_helpers import wait_ready

        app = create_app(load_bundle(Path({str(classification_bundle)!r})), ServeSettings(),
                         Path({str(tmp_path / "log")!r}))
        with TestClient(app) as client:
            wait_ready(client.get)
            data = Path({str(image)!r}).read_bytes()
            response = client.post("/predict", files={{"file": ("a.png", data, "image/png")}})
            assert response.status_code == 200, response.text
        read_prediction_log(Path({str(tmp_path / "log")!r}))
        print("torch" in sys.modules, "torchvision" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"
