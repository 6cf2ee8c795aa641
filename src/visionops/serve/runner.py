"""Start the server: find (or export, or download) the bundles, claim the port, run uvicorn.

Serving a bundle never imports torch. When the run to serve has no bundle yet, it is
exported first by :func:`visionops.export.stage.export_run` with the same settings (config file
and overrides included), which does import torch into this process. A bundle named by a URL
or a ``wandb:`` reference is downloaded once into the bundle cache and checked
(:func:`visionops.inference.remote.fetch_bundle`).

Shutdown (Ctrl-C or SIGTERM): uvicorn stops accepting connections and lets in-flight
requests finish (up to the request deadline); then the app finishes queued work and flushes
and fsyncs the prediction log.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger
from pydantic import BaseModel, SecretStr, field_validator

from visionops.config import DriftSettings, ServeSettings, Settings
from visionops.errors import ConfigError, ServeError
from visionops.inference.bundle import BUNDLE_MANIFEST, Bundle, load_bundle
from visionops.inference.remote import fetch_bundle, is_remote_bundle
from visionops.inference.runtime import execution_providers
from visionops.serve.http_errors import SecretScrubber
from visionops.serve.sources import check_name, model_name, public_source, split_source
from visionops.storage import is_url, join

__all__ = [
    "ENV_SPEC",
    "ModelPlan",
    "WorkerModel",
    "WorkerSpec",
    "app_from_environment",
    "bind_socket",
    "ensure_bundle",
    "plan_models",
    "run_server",
]

ENV_SPEC = "VISIONOPS_SERVE_SPEC"
"""Environment variable through which ``--workers N`` hands the app's spec to each worker."""


class WorkerModel(BaseModel):
    """One model of a worker's app.

    Attributes:
        name: Its name.
        bundle: Its bundle folder, verified by the parent process.
        log_dir: Its prediction log folder or URL.
        source: Where it came from, as given.
    """

    name: str
    bundle: Path
    log_dir: str
    source: str


class WorkerSpec(BaseModel):
    """What each of ``--workers N`` builds its app from (JSON in :data:`ENV_SPEC`).

    Attributes:
        bundle: The bundle folder, verified by the parent process (one model).
        settings: Server settings less the API key (a secret is never dumped).
        api_key: The API key, handed over in the environment only.
        device: ``--device``.
        log_dir: The prediction log folder or URL (one model).
        drift: Online drift settings.
        models: Several models: each one's name, bundle and log (``bundle`` and ``log_dir``
            are then unused).
    """

    bundle: Path | None = None
    settings: ServeSettings
    api_key: str | None = None
    device: str = "auto"
    log_dir: str | None = None
    drift: DriftSettings | None = None
    models: list[WorkerModel] = []

    @field_validator("log_dir", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value


_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


class _ToLoguru(logging.Handler):
    """Route uvicorn's standard-library log records into loguru (one console format).

    A traceback is added as text without variable values, and secrets are scrubbed.
    """

    def __init__(self, scrub: SecretScrubber) -> None:
        super().__init__()
        self.scrub = scrub

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname if record.levelname in _LEVELS else record.levelno
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message = f"{message}\n{self.scrub.format_exception(record.exc_info[1])}"
        logger.log(level, "{}", self.scrub(message))


def _route_uvicorn_logs(scrub: SecretScrubber) -> None:
    for name in ("uvicorn", "uvicorn.error"):
        std = logging.getLogger(name)
        std.handlers = [_ToLoguru(scrub)]
        std.setLevel(logging.INFO)
        std.propagate = False
    logging.getLogger("uvicorn.access").disabled = True


def ensure_bundle(target: Path | None, settings: Settings) -> Path:
    """Find the bundle to serve; export the run first if it has none.

    Args:
        target: A bundle folder, a run folder or name, or None for ``runs/latest``.
        settings: The resolved settings: ``runs_root`` and, for an export, ``export.*``.

    Returns:
        The bundle folder.

    Raises:
        ArtifactError: No such run.
        VisionOpsError: The export failed (its own error says why).
    """
    from visionops.runs import resolve_run

    if target is not None and (target / BUNDLE_MANIFEST).is_file():
        return target
    run_dir = resolve_run(None if target is None else str(target), settings.runs_root)
    bundle_dir = run_dir / "bundle"
    if (bundle_dir / BUNDLE_MANIFEST).is_file():
        return bundle_dir
    logger.info("run {} has no bundle yet — exporting it first (visionops export)", run_dir)
    from visionops.export.stage import export_run

    return export_run(settings, run_dir).bundle_dir


def bind_socket(host: str, port: int) -> socket.socket:
    """Claim ``host:port`` (as uvicorn would), or say in one line why it cannot be had.

    Raises:
        ServeError: The port is in use, not allowed, or the host is not an address here.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ServeError(
            f"cannot resolve host '{host}' — pass an address such as 127.0.0.1 or 0.0.0.0"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is already in use — stop the other server or pick"
                f" another port with --port {port + 1}"
            ) from None
        if exc.errno == errno.EACCES:
            raise ServeError(
                f"not allowed to listen on port {port} — use a port above 1023, e.g. --port 8000"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ServeError(
                f"{host} is not an address of this machine — use 127.0.0.1 or 0.0.0.0"
            ) from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    return {
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "ws": "none",
        "proxy_headers": False,
        "server_header": False,
        # In-flight requests get their full deadline to finish before workers stop.
        "timeout_graceful_shutdown": int(settings.timeout_s) + 5,
        "timeout_keep_alive": 15,
    }


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in {"0.0.0.0", ""} else host
    return f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"


@dataclass(frozen=True)
class ModelPlan:
    """One model ``serve`` will serve: its name, verified bundle, log and origin."""

    name: str
    bundle: Bundle
    log_dir: str
    source: str


def _resolve_log(chosen: str | Path) -> str:
    return str(chosen).rstrip("/") if is_url(chosen) else str(Path(chosen).expanduser().resolve())


def _bundle_dir(source: str, settings: Settings) -> tuple[Path, bool]:
    """The bundle folder a source names (downloaded or exported first), and if it is remote."""
    if is_remote_bundle(source):
        fetched = fetch_bundle(source)
        how = (
            "downloaded"
            if fetched.downloaded
            else "offline: cached"
            if fetched.offline
            else "cached"
        )
        logger.info("{} → {} ({})", public_source(source), fetched.path, how)
        return fetched.path, True
    return ensure_bundle(Path(source), settings), False


def plan_models(
    sources: Sequence[str], all_settings: Settings, log_dir: str | Path | None = None
) -> list[ModelPlan]:
    """Every model to serve: named, found (exported or downloaded first) and verified.

    Args:
        sources: ``[NAME=]SOURCE`` each (:mod:`visionops.serve.sources`); empty means
            ``serve.models``, else ``runs/latest``.
        all_settings: The resolved settings.
        log_dir: Prediction log folder or URL (None: ``serve.log_dir``). With one model its
            log goes there; with several, each model's goes to ``<log_dir>/<name>``.

    Returns:
        The models, the default first.

    Raises:
        ArtifactError: No bundle and no run to export, or one that fails verification.
        StorageError: A URL that cannot be reached and is not cached.
        TrackingError: A W&B artifact that cannot be downloaded and is not cached.
        ConfigError: A bad or repeated name.
    """
    from visionops.serve.state import default_log_dir

    settings = all_settings.serve
    given = list(sources) or list(settings.models)
    chosen = log_dir or settings.log_dir
    if not given:  # runs/latest, exactly as a one-bundle server always did
        bundle_dir = ensure_bundle(None, all_settings)
        bundle = load_bundle(bundle_dir, allow_unverified=settings.allow_unverified)
        name = model_name(str(bundle_dir), bundle_dir)
        log = _resolve_log(chosen or default_log_dir(bundle))
        return [ModelPlan(name, bundle, log, str(bundle_dir))]
    plans: list[ModelPlan] = []
    several = len(given) > 1
    for text in given:
        named, source = split_source(text)
        bundle_dir, remote = _bundle_dir(source, all_settings)
        name = check_name(named, source) if named else model_name(source, bundle_dir)
        bundle = load_bundle(bundle_dir, allow_unverified=settings.allow_unverified)
        if chosen is not None:
            log = join(str(chosen), name) if several else str(chosen)
        elif remote:  # never inside the cache: <working folder>/predictions/<name>
            log = str(Path("predictions") / name)
        else:
            log = str(default_log_dir(bundle))
        plans.append(ModelPlan(name, bundle, _resolve_log(log), source))
    names = [plan.name for plan in plans]
    for plan in plans:
        if names.count(plan.name) > 1:
            raise ConfigError(
                f"two models are named '{plan.name}' — name them, e.g."
                f" visionops serve {plan.name}-a={plans[names.index(plan.name)].source}"
                f" {plan.name}-b={plan.source}"
            )
    logs = [plan.log_dir for plan in plans]
    # Two models of one run folder would share <run>/predictions: each gets its own below it.
    return [
        ModelPlan(p.name, p.bundle, join(p.log_dir, p.name), p.source)
        if logs.count(p.log_dir) > 1
        else p
        for p in plans
    ]


def run_server(
    target: Path | Sequence[str] | None,
    all_settings: Settings,
    *,
    log_dir: str | Path | None = None,
) -> None:
    """Serve one or several bundles until interrupted (the ``visionops serve`` command).

    Args:
        target: The models, ``[NAME=]SOURCE`` each (a bundle folder, a run folder or name, a
            bundle's URL or a ``wandb:`` reference; see :func:`plan_models`), or one path,
            or None for ``serve.models``, else ``runs/latest``.
        all_settings: The resolved settings (``serve.*``, ``device``, ``runs_root``, and
            ``export.*`` for a run that must be exported first).
        log_dir: Prediction log folder or URL; None means the ``serve.log_dir`` setting,
            else ``<bundle>/../predictions``. A URL's segments are uploaded under
            ``<url>/<instance-id>/`` (:mod:`visionops.inference.predlog_upload`).

    Raises:
        DeviceError: A ``--device`` that cannot serve with checked answers.
        ArtifactError: No bundle and no run to export, or a bundle that fails verification.
        StorageError, TrackingError: A remote bundle that cannot be downloaded or found cached.
        ServeError: The port cannot be had, or a model cannot be loaded.
    """
    import uvicorn

    settings = all_settings.serve
    device = all_settings.device
    _, device_reason = execution_providers(device)  # refuse a bad --device before exporting
    sources = [str(target)] if isinstance(target, Path) else list(target or [])
    plans = plan_models(sources, all_settings, log_dir)
    from visionops.serve.app import ServedModel, create_models_app

    sock = bind_socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    url = _url(settings.host, port)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    _route_uvicorn_logs(SecretScrubber([api_key]))
    for index, plan in enumerate(plans):
        logger.info(
            "serving {}{} ({}) on {} — upload page {}/ , API docs {}/docs; predictions logged"
            " to {}",
            plan.bundle.model_version,
            "" if len(plans) == 1 else f" as {plan.name}{' (default)' if index == 0 else ''}",
            plan.bundle.task,
            url if len(plans) == 1 else f"{url}/models/{plan.name}/predict",
            url,
            url,
            plan.log_dir,
        )
    logger.info("device: {}", device_reason)
    if settings.workers == 1:
        served = [ServedModel(p.name, p.bundle, p.log_dir, p.source) for p in plans]
        app = create_models_app(served, settings, device=device, drift=all_settings.drift)
        config = uvicorn.Config(app, **_uvicorn_options(settings))
        server = uvicorn.Server(config)
        states = list(app.state.models)

        def stop(reason: str) -> None:
            server.should_exit = True

        for state in states:
            state.on_fatal = stop
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
        for state in states:
            if state.failure:
                named = "" if len(states) == 1 else f" {state.name}"
                raise ServeError(f"the model{named} could not be loaded: {state.failure}")
        return
    # Several workers: uvicorn starts processes that each build the app from the spec.
    sock.close()
    spec = WorkerSpec(
        settings=settings.model_copy(update={"api_key": None}),
        api_key=api_key,
        device=device,
        drift=all_settings.drift,
        models=[
            WorkerModel(
                name=p.name, bundle=p.bundle.path.resolve(), log_dir=p.log_dir, source=p.source
            )
            for p in plans
        ],
    )
    os.environ[ENV_SPEC] = spec.model_dump_json()
    uvicorn.run(
        "visionops.serve.runner:app_from_environment",
        factory=True,
        host=settings.host,
        port=port,
        workers=settings.workers,
        **_uvicorn_options(settings),
    )


def app_from_environment() -> Any:
    """App factory for uvicorn workers: builds the app from :data:`ENV_SPEC`.

    The parent process already verified the bundle, so workers skip the checksums.
    """
    from visionops.serve.app import ServedModel, create_app, create_models_app

    raw = os.environ.get(ENV_SPEC)
    if not raw:
        raise ServeError(f"{ENV_SPEC} is not set — start the server with `visionops serve`")
    spec = WorkerSpec.model_validate_json(raw)
    api_key = SecretStr(spec.api_key) if spec.api_key else None
    settings = spec.settings.model_copy(update={"api_key": api_key})
    if not spec.models:
        if spec.bundle is None:
            raise ServeError(f"{ENV_SPEC} names no bundle — start it with `visionops serve`")
        bundle = load_bundle(spec.bundle, verify=False, allow_unverified=True)
        return create_app(bundle, settings, spec.log_dir, device=spec.device, drift=spec.drift)
    served = [
        ServedModel(
            model.name,
            load_bundle(model.bundle, verify=False, allow_unverified=True),
            model.log_dir,
            model.source,
        )
        for model in spec.models
    ]
    return create_models_app(served, settings, device=spec.device, drift=spec.drift)
