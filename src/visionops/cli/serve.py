"""``visionops serve``: an HTTP server for a bundle (never imports torch)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from visionops.cli._common import (
    ConfigFile,
    Device,
    PrintConfig,
    Quiet,
    Recipe,
    Verbose,
    from_setting,
    resolve_settings,
    setup,
)
from visionops.config import Settings
from visionops.serve.sources import split_model_args

Args = Annotated[
    list[str] | None,
    typer.Argument(
        help="The models: each a bundle folder, a run (folder or name), a bundle's URL"
        " (s3://, gs://, https://) or wandb:entity/project/name:alias, optionally as"
        " NAME=SOURCE; the first is the default (none: serve.models, else runs/latest). Then"
        " setting overrides as key=value (e.g. serve.queue_size=64).",
        show_default=False,
        metavar="[NAME=]RUN KEY=VALUE",
    ),
]


def serve(
    args: Args = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help=from_setting("serve.host", "Address to listen on (0.0.0.0 = all).")
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help=from_setting("serve.port", "Port."))
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-j",
            help=from_setting("serve.workers", "Server processes, each with its own model."),
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help=from_setting(
                "serve.threads",
                "ONNX Runtime threads per batch, one batch at a time (lowest latency alone);"
                " 0 = one batch per core (cores / workers) at once, one thread each.",
            ),
        ),
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(
            "--max-batch", help=from_setting("serve.max_batch", "Most images per model call.")
        ),
    ] = None,
    max_wait_ms: Annotated[
        float | None,
        typer.Option(
            "--max-wait-ms",
            help=from_setting(
                "serve.max_wait_ms", "Longest wait for a batch to fill, milliseconds."
            ),
        ),
    ] = None,
    queue_size: Annotated[
        int | None,
        typer.Option(
            "--queue-size",
            help=from_setting(
                "serve.queue_size", "Images allowed to wait; beyond it requests get 503."
            ),
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help=from_setting("serve.timeout_s", "Per-request deadline in seconds (then 504)."),
        ),
    ] = None,
    max_upload_mb: Annotated[
        float | None,
        typer.Option(
            "--max-upload-mb",
            help=from_setting("serve.max_upload_mb", "Largest request body in MB (then 413)."),
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="VISIONOPS_API_KEY",
            help="Require this key in X-API-Key (or Authorization: Bearer) for /predict and"
            " /metadata (default: none, no key asked).",
            show_envvar=True,
        ),
    ] = None,
    allow_unverified: Annotated[
        bool | None,
        typer.Option("--allow-unverified", help="Serve a bundle without a passing parity record."),
    ] = None,
    log_images: Annotated[
        bool | None,
        typer.Option("--log-images", help="Also keep every uploaded image in the prediction log."),
    ] = None,
    precision: Annotated[
        Literal["auto", "fp32", "int8"] | None,
        typer.Option(
            "--precision",
            help=from_setting("serve.precision", "auto: int8 when export kept one, else fp32."),
        ),
    ] = None,
    device: Device = None,
    log_dir: Annotated[
        str | None,
        typer.Option(
            "--log-dir",
            help="Prediction log folder, or a URL (s3://bucket/logs, gs://..., any fsspec URL)"
            " each replica uploads its segments to, under its instance id (default:"
            " <run>/predictions, the serve.log_dir setting).",
            metavar="DIR|URL",
        ),
    ] = None,
    config: ConfigFile = None,
    recipe: Recipe = None,
    print_config: PrintConfig = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Serve a bundle over HTTP: /predict, /health, /ready, /metadata, /metrics, an upload page.

    Serves runs/latest's bundle by default, exporting the run first if it has none. Requests
    are micro-batched into ONNX Runtime; overload is refused politely (503 + Retry-After).
    Every prediction is appended to a JSONL log for `visionops drift`; with a URL as
    --log-dir, each replica uploads its closed segments there (credentials from the driver's
    usual environment, e.g. AWS_* or GOOGLE_APPLICATION_CREDENTIALS).

    Example: visionops serve runs/run-001 --port 8000 --workers 2

    Several models share one server (each with its own queue, log and drift; GET /models,
    POST /models/NAME/predict or /predict?model=NAME). A URL or wandb: bundle is downloaded
    once into a cache (VISIONOPS_BUNDLE_CACHE), checked, and reused when offline.

    Example: visionops serve runs/run-001 --log-dir s3://my-bucket/predictions

    Example: visionops serve fruit=runs/run-001 posters=s3://models/posters/bundle
    """
    setup(verbose, quiet)
    sources, overrides = split_model_args(args, list(Settings.model_fields))
    settings = resolve_settings(
        config_file=config,
        overrides=overrides,
        recipe=recipe,
        print_config=print_config,
        device=device,
        serve__host=host,
        serve__port=port,
        serve__workers=workers,
        serve__threads=threads,
        serve__max_batch=max_batch,
        serve__max_wait_ms=max_wait_ms,
        serve__queue_size=queue_size,
        serve__timeout_s=timeout,
        serve__max_upload_mb=max_upload_mb,
        serve__api_key=api_key,
        serve__allow_unverified=allow_unverified,
        serve__log_images=log_images,
        serve__precision=precision,
        serve__log_dir=log_dir,
    )
    from visionops.serve.runner import run_server

    run_server(sources, settings)


def register(app: typer.Typer) -> None:
    """Add ``serve``."""
    app.command(rich_help_panel="Lifecycle")(serve)
