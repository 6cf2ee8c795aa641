"""Kubernetes and Cloud Run manifests for a bundle's serving image.

The image is the Dockerfile's default (``serve``) stage built with the bundle in it; it runs
``visionops serve /bundle`` on ``$PORT`` (8000 when unset), so every setting the manifests
need is an argument after that: the log URL, and nothing else by default. With a bundle URL
(``deploy k8s s3://models/runs/run-007/bundle``) the container's command is
``visionops serve URL`` instead: each replica downloads the bundle when it starts (into the
bundle cache under ``$XDG_CACHE_HOME``, which on Kubernetes is the ``emptyDir`` that outlives
container restarts) and checks it, so any build of the serving image will do.

Kubernetes: a Deployment (readiness ``/ready``, liveness ``/health``, a termination grace
longer than the drain, requests from :mod:`visionops.deploy.needs`, Prometheus scrape
annotations, an ``emptyDir`` spool that outlives container restarts), a Service, a
HorizontalPodAutoscaler on CPU and a PodDisruptionBudget. Cloud Run: one Knative Service
(concurrency, min/max instances, a startup probe on ``/ready``, CPU always allocated so
uploads run between requests).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from visionops.deploy.needs import ServingNeeds

__all__ = [
    "CLOUD_RUN_TERMINATION_S",
    "DeploySpec",
    "cloudrun_service",
    "drain_seconds",
    "kubernetes_manifests",
    "resource_name",
]

CLOUD_RUN_TERMINATION_S = 10
"""Seconds Cloud Run leaves an instance between SIGTERM and SIGKILL (not configurable)."""
PRE_STOP_S = 5
"""Kubernetes: seconds a pod keeps serving after it is marked terminating, so every load
balancer has dropped it before the drain starts."""
SPOOL = "/spool"
"""Where the local spool lives in the container (``XDG_CACHE_HOME``)."""
_DNS = re.compile(r"[^a-z0-9-]+")


def resource_name(text: str) -> str:
    """A Kubernetes / Cloud Run name from any text: lower-case DNS label, at most 49 chars.

    Examples:
        >>> resource_name("colours-run@0000abcd")
        'colours-run-0000abcd'
    """
    name = _DNS.sub("-", text.lower()).strip("-")[:49].strip("-")
    return name if name and name[0].isalpha() else f"vo-{name}".strip("-")


def drain_seconds(timeout_s: float, upload_drain_s: float) -> int:
    """Longest time ``visionops serve`` takes to stop after SIGTERM.

    In-flight requests get their deadline plus 5 s (uvicorn's graceful shutdown), then the
    prediction log uploads what is pending for up to ``upload_drain_s``.
    """
    return math.ceil(timeout_s + 5 + upload_drain_s)


@dataclass(frozen=True)
class DeploySpec:
    """What the manifests are made of.

    Attributes:
        name: The resource name (a DNS label).
        image: The serving image (built from the Dockerfile with the bundle in it).
        model_version: The bundle's version (a label and an annotation).
        task: The bundle's task.
        log_dir: The prediction log URL replicas upload to, or None (logs stay in the pod).
        needs: One replica's measured needs.
        min_replicas: Fewest replicas (Cloud Run: min instances).
        max_replicas: Most replicas (Cloud Run: max instances).
        concurrency: Requests one replica takes at once (Cloud Run's containerConcurrency;
            the serving queue absorbs bursts beyond what the model computes at once).
        cpu_target: HPA target CPU utilisation, percent of the request.
        drain_s: Longest stop after SIGTERM (:func:`drain_seconds`).
        timeout_s: The per-request deadline (Cloud Run's request timeout is longer).
        service_account: The service account whose identity writes the bucket, or None.
        args: Extra ``visionops serve`` arguments (after ``--log-dir``).
        bundle_url: Where replicas download the bundle from (an fsspec URL or ``wandb:``
            reference), or None: the bundle baked into the image.
    """

    name: str
    image: str
    model_version: str
    task: str
    log_dir: str | None
    needs: ServingNeeds
    min_replicas: int
    max_replicas: int
    concurrency: int
    cpu_target: int
    drain_s: int
    timeout_s: float
    service_account: str | None = None
    args: tuple[str, ...] = ()
    bundle_url: str | None = None

    def serve_args(self) -> list[str]:
        """Arguments appended to the image's ``visionops serve /bundle ...``."""
        return (["--log-dir", self.log_dir] if self.log_dir else []) + list(self.args)

    def serve_command(self, port: int) -> list[str] | None:
        """With a bundle URL: the command in place of the image's ``visionops serve /bundle``.

        Args:
            port: The port the container listens on.
        """
        if self.bundle_url is None:
            return None
        command = ["visionops", "serve", self.bundle_url, "--host", "0.0.0.0", "--port", str(port)]
        return command if self.log_dir else [*command, "--log-dir", "/predictions"]

    def labels(self) -> dict[str, str]:
        """Labels every resource carries (the selector uses the first)."""
        return {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/component": "model-server",
            "app.kubernetes.io/managed-by": "visionops",
        }

    def annotations(self) -> dict[str, str]:
        """What the bundle is and what was measured, for people reading the cluster."""
        return {
            "visionops/model-version": self.model_version,
            "visionops/task": self.task,
            "visionops/measured-peak-rss-mib": str(self.needs.peak_rss_mib),
            "visionops/measured-cpu-cores": str(self.needs.cpu_cores),
            "visionops/measured-ms-per-image": str(self.needs.ms_per_image),
        }


def _probe(path: str, port: str | int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def kubernetes_manifests(spec: DeploySpec, port: int = 8000) -> list[dict[str, Any]]:
    """The Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget.

    Args:
        spec: What to deploy.
        port: The container port (the image listens on ``$PORT``, set here).
    """
    selector = {"app.kubernetes.io/name": spec.name}
    metadata = {"name": spec.name, "labels": spec.labels()}
    env = [
        {"name": "PORT", "value": str(port)},
        # The spool of pending log segments: an emptyDir outlives container restarts.
        {"name": "XDG_CACHE_HOME", "value": SPOOL},
    ]
    container: dict[str, Any] = {
        "name": "serve",
        "image": spec.image,
        "args": spec.serve_args(),
        "ports": [{"name": "http", "containerPort": port}],
        "env": env,
        "resources": {
            "requests": {"cpu": spec.needs.cpu_request, "memory": spec.needs.memory_request},
            # The CPU limit is what the server sees (visionops.inference.runtime
            # .available_cores reads the quota): one batch per core, no more, as measured.
            "limits": {"cpu": spec.needs.cpu_request, "memory": spec.needs.memory_limit},
        },
        "startupProbe": _probe("/ready", "http", 2, 60),
        "readinessProbe": _probe("/ready", "http", 5, 2),
        "livenessProbe": _probe("/health", "http", 10, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}},
        "volumeMounts": [{"name": "spool", "mountPath": SPOOL}],
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }
    command = spec.serve_command(port)
    if command is not None:
        container = {"name": "serve", "image": spec.image, "command": command, **container}
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": PRE_STOP_S + spec.drain_s + 10,
        "containers": [container],
        "volumes": [{"name": "spool", "emptyDir": {}}],
    }
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**metadata, "annotations": spec.annotations()},
        "spec": {
            "replicas": spec.min_replicas,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": spec.labels(),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(port),
                        "prometheus.io/path": "/metrics",
                        **spec.annotations(),
                    },
                },
                "spec": pod_spec,
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": spec.cpu_target},
                    },
                }
            ],
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata,
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }
    return [deployment, service, autoscaler, budget]


def cloudrun_service(spec: DeploySpec) -> dict[str, Any]:
    """The Cloud Run (Knative) Service: ``gcloud run services replace service.yaml``.

    Cloud Run sets ``$PORT`` (8080), which the image listens on.
    """
    command = spec.serve_command(8080)
    container: dict[str, Any] = {
        "image": spec.image,
        **({"command": command} if command is not None else {}),
        "args": spec.serve_args(),
        "ports": [{"name": "http1", "containerPort": 8080}],
        "resources": {
            "limits": {
                "cpu": spec.needs.cpu_request,
                "memory": spec.needs.memory_limit,
            }
        },
        "startupProbe": {
            "httpGet": {"path": "/ready", "port": 8080},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 60,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": 8080},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
        },
    }
    template_spec: dict[str, Any] = {
        "containerConcurrency": spec.concurrency,
        "timeoutSeconds": max(60, math.ceil(spec.timeout_s) + 30),
        "containers": [container],
    }
    if spec.service_account:
        template_spec["serviceAccountName"] = spec.service_account
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": spec.name,
            "labels": {"managed-by": "visionops"},
            "annotations": spec.annotations(),
        },
        "spec": {
            "template": {
                "metadata": {
                    "labels": {"model-version": resource_name(spec.model_version)},
                    "annotations": {
                        "autoscaling.knative.dev/minScale": str(spec.min_replicas),
                        "autoscaling.knative.dev/maxScale": str(spec.max_replicas),
                        # Uploads of the prediction log run between requests: keep the CPU.
                        "run.googleapis.com/cpu-throttling": "false",
                        "run.googleapis.com/startup-cpu-boost": "true",
                    },
                },
                "spec": template_spec,
            }
        },
    }
