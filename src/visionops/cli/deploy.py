"""``visionops deploy k8s|cloudrun``: manifests that serve a bundle's image on a fleet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from visionops.cli._common import (
    ConfigFile,
    JsonOutput,
    PrintConfig,
    Quiet,
    Recipe,
    Verbose,
    one_positional,
    out,
    print_json,
    resolve_settings,
    setup,
)
from visionops.cli._text import safe

if TYPE_CHECKING:
    from visionops.deploy.stage import DeployResult, Platform

deploy_app = typer.Typer(
    help="Write manifests that serve a bundle's image on Kubernetes or Cloud Run.",
    no_args_is_help=True,
)

Args = Annotated[
    list[str] | None,
    typer.Argument(
        help="A bundle folder or a run (folder or name; default runs/latest), or a bundle's"
        " URL (s3://, gs://, https://) or wandb:entity/project/name:alias that replicas"
        " download when they start, then setting"
        " overrides as key=value (e.g. serve.max_batch=16).",
        show_default=False,
        metavar="RUN KEY=VALUE",
    ),
]
OutDir = Annotated[
    Path,
    typer.Option("--out-dir", help="Folder for the YAML files (default: deploy/<platform>).",
                 file_okay=False, show_default=False),
]  # fmt: skip
Image = Annotated[
    str | None,
    typer.Option(
        "--image",
        help="The serving image built from the Dockerfile with this bundle (default:"
        " visionops-serve:<model version>).",
    ),
]
LogDir = Annotated[
    str | None,
    typer.Option(
        "--log-dir",
        help="Bucket URL every replica uploads its prediction log to, for `drift report"
        " --current URL`; a local folder is refused, it dies with the pod (default: the"
        " serve.log_dir setting; none: logs die with replicas).",
        metavar="DIR|URL",
    ),
]
Name = Annotated[
    str | None,
    typer.Option("--name", "-n", help="Resource name (default: the run's name)."),
]
MinReplicas = Annotated[
    int, typer.Option("--min-replicas", min=1, help="Fewest replicas (Cloud Run: instances).")
]
MaxReplicas = Annotated[
    int, typer.Option("--max-replicas", min=1, help="Most replicas (Cloud Run: instances).")
]
ServiceAccount = Annotated[
    str | None,
    typer.Option(
        "--service-account",
        help="Identity the replicas run as, allowed to write the bucket (default: the"
        " namespace's or project's default).",
    ),
]
Force = Annotated[bool, typer.Option("--force", "-f", help="Replace manifests that exist.")]
Cpu = Annotated[
    int | None,
    typer.Option(
        "--cpu",
        min=1,
        help="Cores per replica: its CPU request and limit. With serve.threads=0 each core"
        " computes its own batch, and memory is measured with that many batches at once"
        " (default: serve.threads x serve.workers when threads are set, else 2).",
    ),
]


def _run(
    platform: Platform,
    args: list[str] | None,
    config: Path | None,
    recipe: str | None,
    print_config: bool,
    **options: Any,
) -> DeployResult:
    target_arg, overrides = one_positional(args, "RUN")
    settings = resolve_settings(
        config_file=config, overrides=overrides, recipe=recipe, print_config=print_config
    )
    from visionops.deploy.stage import write_manifests
    from visionops.inference.remote import is_remote_bundle

    target: Path | str | None = None
    if target_arg:
        target = target_arg if is_remote_bundle(target_arg) else Path(target_arg)
    with out.status("measuring what one replica needs (model load and full batches)"):
        return write_manifests(
            settings,
            target,
            platform=platform,
            **options,
        )


def _render(result: DeployResult, json_output: bool) -> None:
    spec, needs = result.spec, result.spec.needs
    if json_output:
        print_json(
            {
                "platform": result.platform,
                "files": [str(path) for path in result.files],
                "name": spec.name,
                "image": spec.image,
                "log_dir": spec.log_dir,
                "cpu_request": needs.cpu_request,
                "memory_request": needs.memory_request,
                "memory_limit": needs.memory_limit,
                "cores": needs.cores,
                "measured": {
                    "peak_rss_mib": needs.peak_rss_mib,
                    "cpu_cores": needs.cpu_cores,
                    "ms_per_image": needs.ms_per_image,
                },
                "drain_seconds": spec.drain_s,
                "notes": result.notes,
            }
        )
        return
    out.print(
        f"measured one replica at full load on {needs.cores} cores: peak"
        f" {needs.peak_rss_mib:g} MiB, {needs.cpu_cores:g} cores busy, {needs.ms_per_image:g} ms"
        f" per image → cpu {needs.cpu_request}, memory"
        f" {needs.memory_request} (limit {needs.memory_limit})"
    )
    for note in result.notes:
        out.print(f"[yellow]note:[/] {safe(note)}")
    for path in result.files:
        out.print(f"wrote {safe(path)}")


def k8s(
    args: Args = None,
    out_dir: OutDir = Path("deploy/k8s"),
    image: Image = None,
    log_dir: LogDir = None,
    name: Name = None,
    min_replicas: MinReplicas = 2,
    max_replicas: MaxReplicas = 10,
    cpu_target: Annotated[
        int,
        typer.Option(
            "--cpu-target", min=10, max=100, help="HPA target CPU use, percent of the request."
        ),
    ] = 70,
    cpu: Cpu = None,
    service_account: ServiceAccount = None,
    force: Force = False,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Kubernetes: Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget.

    Each replica gets --cpu cores; its memory request comes from measuring the bundle with
    the batches the server computes at once on them; the termination grace covers the
    drain; pods are annotated for Prometheus scraping.
    Apply with `kubectl apply -f DIR`.

    Example: visionops deploy k8s runs/run-001 --image REGISTRY/visionops-serve:v1 --log-dir s3://my-bucket/predictions
    """
    setup(verbose, quiet)
    options: dict[str, Any] = {
        "out_dir": out_dir, "image": image, "log_dir": log_dir, "name": name,
        "min_replicas": min_replicas, "max_replicas": max_replicas, "cpu_target": cpu_target,
        "cpu": cpu, "service_account": service_account, "force": force,
    }  # fmt: skip
    _render(_run("k8s", args, config, recipe, print_config, **options), json_output)


def cloudrun(
    args: Args = None,
    out_dir: OutDir = Path("deploy/cloudrun"),
    image: Image = None,
    log_dir: LogDir = None,
    name: Name = None,
    min_replicas: MinReplicas = 1,
    max_replicas: MaxReplicas = 10,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            min=1,
            help="Requests one instance takes at once (default: serve.queue_size / 4, at"
            " least serve.max_batch).",
        ),
    ] = None,
    cpu: Cpu = None,
    service_account: ServiceAccount = None,
    force: Force = False,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Cloud Run: one Knative Service YAML (concurrency, min/max instances, startup probe).

    Deploy with `gcloud run services replace DIR/service.yaml`.

    Example: visionops deploy cloudrun runs/run-001 --image REGISTRY/visionops-serve:v1 --log-dir gs://my-bucket/predictions
    """
    setup(verbose, quiet)
    options: dict[str, Any] = {
        "out_dir": out_dir, "image": image, "log_dir": log_dir, "name": name,
        "min_replicas": min_replicas, "max_replicas": max_replicas,
        "concurrency": concurrency, "cpu": cpu, "service_account": service_account,
        "force": force,
    }  # fmt: skip
    _render(_run("cloudrun", args, config, recipe, print_config, **options), json_output)


def register(app: typer.Typer) -> None:
    """Add the ``deploy`` command group."""
    deploy_app.command("k8s")(k8s)
    deploy_app.command("cloudrun")(cloudrun)
    app.add_typer(deploy_app, name="deploy", rich_help_panel="Lifecycle")
