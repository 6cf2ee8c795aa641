"""``visionops deploy k8s|cloudrun``: manifests for a bundle's serving image.

The Kubernetes output is checked against the API's own schemas (kubernetes-validate, strict:
an unknown or misspelt field fails); the Cloud Run YAML is loaded and read for the fields
docs/serving-at-scale.md relies on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cli_helpers import run_main
from visionops.deploy.manifests import drain_seconds, resource_name
from visionops.deploy.needs import needs_from_measurement

K8S_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests are checked against (preStop exec, autoscaling/v2)."""


@pytest.fixture(scope="module")
def project(classification_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = classification_bundle.parents[2]
    return Path(shutil.copytree(source, tmp_path_factory.mktemp("deploy") / "p", symlinks=True))


def _load(path: Path) -> dict:  # type: ignore[type-arg]
    documents = list(yaml.safe_load_all(path.read_text()))
    assert len(documents) == 1
    return documents[0]  # type: ignore[no-any-return]


def test_k8s_manifests_pass_the_kubernetes_schemas(
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(project)
    out = tmp_path / "k8s"
    code, stdout, err = run_main(
        monkeypatch, capsys, "deploy", "k8s", "colours-run", "--out-dir", str(out),
        "--image", "my-team/visionops-serve:v1", "--log-dir", "s3://fleet/predictions",
        "--json", "serve.timeout_s=20",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    assert sorted(p.name for p in out.iterdir()) == [
        "deployment.yaml", "hpa.yaml", "pdb.yaml", "service.yaml",
    ]  # fmt: skip
    documents = {path.stem: _load(path) for path in out.iterdir()}
    for document in documents.values():
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)

    pod = documents["deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == "my-team/visionops-serve:v1"
    assert container["args"] == ["--log-dir", "s3://fleet/predictions"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    # The grace covers the drain: in-flight requests (20 s + 5) and the log upload.
    assert result["drain_seconds"] == drain_seconds(20, 20.0)
    assert pod["spec"]["terminationGracePeriodSeconds"] >= result["drain_seconds"]
    # Requests are the measured needs, not constants.
    measured = result["measured"]
    assert measured["peak_rss_mib"] > 10 and measured["ms_per_image"] > 0
    requests = container["resources"]["requests"]
    assert requests == {"cpu": result["cpu_request"], "memory": result["memory_request"]}
    # The server sees the CPU limit (one batch per core) and was measured with as many.
    assert result["cores"] == 2
    assert container["resources"]["limits"]["cpu"] == "2" == requests["cpu"]
    assert int(requests["memory"].removesuffix("Mi")) >= measured["peak_rss_mib"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    port = container["ports"][0]["containerPort"]
    assert annotations["prometheus.io/port"] == str(port)
    assert {"name": "PORT", "value": str(port)} in container["env"]
    selector = documents["deployment"]["spec"]["selector"]["matchLabels"]
    assert documents["service"]["spec"]["selector"] == selector
    assert documents["pdb"]["spec"]["selector"]["matchLabels"] == selector
    assert documents["hpa"]["spec"]["scaleTargetRef"]["name"] == "colours-run"

    # The files exist now: refused without --force, exit 2, nothing changed.
    before = (out / "deployment.yaml").read_text()
    code, _, err = run_main(monkeypatch, capsys, "deploy", "k8s", "--out-dir", str(out))
    assert code == 2 and "--force" in err
    assert (out / "deployment.yaml").read_text() == before


def test_cloudrun_service_has_what_the_docs_rely_on(
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(project)
    out = tmp_path / "cloudrun"
    code, stdout, err = run_main(
        monkeypatch, capsys, "deploy", "cloudrun", "--out-dir", str(out), "--log-dir",
        "gs://fleet/predictions", "--min-replicas", "1", "--max-replicas", "5",
        "--concurrency", "16",
    )  # fmt: skip
    assert code == 0, err
    assert "Cloud Run stops an instance 10 s after SIGTERM" in stdout
    service = _load(out / "service.yaml")
    assert service["apiVersion"] == "serving.knative.dev/v1" and service["kind"] == "Service"
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == "1"
    assert annotations["autoscaling.knative.dev/maxScale"] == "5"
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"
    assert template["spec"]["containerConcurrency"] == 16
    container = template["spec"]["containers"][0]
    assert container["args"] == ["--log-dir", "gs://fleet/predictions"]
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"
    assert container["ports"][0]["containerPort"] == 8080  # Cloud Run's $PORT
    assert container["resources"]["limits"]["memory"].endswith("Mi")
    assert container["resources"]["limits"]["cpu"] == "2"  # --cpu's default


def test_a_local_log_folder_is_refused(
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(project)
    code, _, err = run_main(
        monkeypatch, capsys, "deploy", "k8s", "--out-dir", str(tmp_path / "o"),
        "--log-dir", "/var/predictions",
    )  # fmt: skip
    assert code == 2 and "vanishes with the pod" in err
    assert not (tmp_path / "o").exists()


def test_requests_grow_with_the_measured_needs() -> None:
    small = needs_from_measurement(1, 100.0, 0.3, 2.0)
    large = needs_from_measurement(4, 1500.0, 3.1, 40.0)
    assert (small.cpu_request, small.memory_request) == ("1", "192Mi")
    assert (large.cpu_request, large.memory_request, large.memory_limit) == (
        "4", "2304Mi", "4608Mi",
    )  # fmt: skip
    assert resource_name("Run_001@ab") == "run-001-ab"
    assert resource_name("2026-run").startswith("vo-")


def test_replicas_can_download_the_bundle_from_a_url(
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from s3_helpers import s3_server

    monkeypatch.chdir(project)
    monkeypatch.setenv("VISIONOPS_BUNDLE_CACHE", str(tmp_path / "cache"))
    bundle = project / "runs" / "colours-run" / "bundle"
    with s3_server() as s3:
        s3.make_bucket("models")
        for path in sorted(bundle.iterdir()):
            s3.client().upload_file(str(path), "models", f"colours/bundle/{path.name}")
        url = "s3://models/colours/bundle"
        code, _, err = run_main(
            monkeypatch, capsys, "deploy", "k8s", url, "--out-dir", str(tmp_path / "k8s"),
            "--log-dir", "s3://fleet/predictions",
        )  # fmt: skip
        assert code == 0, err
        code, _, err = run_main(
            monkeypatch, capsys, "deploy", "cloudrun", url, "--out-dir", str(tmp_path / "run"),
        )  # fmt: skip
        assert code == 0, err
    deployment = _load(tmp_path / "k8s" / "deployment.yaml")
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "visionops", "serve", url, "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip
    assert container["args"] == ["--log-dir", "s3://fleet/predictions"]
    assert deployment["metadata"]["name"] == "colours-run"  # named after the bundle's run
    service = _load(tmp_path / "run" / "service.yaml")
    run_container = service["spec"]["template"]["spec"]["containers"][0]
    assert run_container["command"] == [
        "visionops", "serve", url, "--host", "0.0.0.0", "--port", "8080",
        "--log-dir", "/predictions",
    ]  # fmt: skip
