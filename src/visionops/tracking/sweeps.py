"""Weights & Biases sweeps over visionops settings.

A sweep file is the W&B sweep configuration with visionops setting keys as parameter names;
:func:`sweep_config` checks the keys and adds the command the agent runs
(``visionops train key=value ...``).

Examples:
    >>> sweep_config({"method": "random", "parameters": {"train.lr": {"values": [1e-3]}}})[
    ...     "command"]
    ['visionops', 'train', 'tracking.mode=online', '${args_no_hyphens}']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger
from pydantic import BaseModel, ConfigDict

from visionops.config import Settings, load_settings, load_yaml
from visionops.errors import ConfigError, TrackingError
from visionops.tracking.training import SWEEP_METRIC
from visionops.tracking.wandb_run import wandb_errors

__all__ = ["SweepResult", "create_sweep", "load_sweep_file", "sweep_config"]


@dataclass(frozen=True)
class SweepResult:
    """A created W&B sweep.

    Attributes:
        sweep_id: The sweep's id.
        config: The configuration sent to W&B.
        agent_command: The command that runs an agent for it on any machine.
        ran_agent: Whether an agent ran here (False with ``create_only``).
    """

    sweep_id: str
    config: dict[str, Any]
    agent_command: str
    ran_agent: bool


def load_sweep_file(path: Path) -> dict[str, Any]:
    """Read a sweep YAML file.

    Raises:
        ConfigError: Missing file, invalid YAML, or not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist — check the path") from None
    content = load_yaml(text, f"sweep file {path}")
    if not isinstance(content, dict):
        raise ConfigError(f"sweep file {path} must hold a mapping (method, parameters, ...)")
    return content


class _Parameter(BaseModel):
    """One W&B sweep parameter; only the keys that give sample values are named."""

    model_config = ConfigDict(extra="allow")

    values: Any = None
    value: Any = None
    min: Any = None
    max: Any = None

    def samples(self) -> list[Any]:
        """The values a run may get: the ``values`` list, the one ``value``, or the bounds."""
        if isinstance(self.values, list) and self.values:
            return list(self.values)
        given = self.model_fields_set
        if "value" in given:
            return [self.value]
        return [bound for name, bound in (("min", self.min), ("max", self.max)) if name in given]


def _check_parameter(key: str, spec: Any) -> None:
    """Check a sweep parameter's key and sample values exactly like ``key=value`` overrides."""
    if not isinstance(spec, dict):
        raise ConfigError(
            f"sweep parameter '{key}' must be a mapping such as {{values: [...]}} or"
            " {min: ..., max: ...}"
        )
    samples = _Parameter.model_validate(spec).samples()
    no_project = Path(os.devnull)
    try:
        for sample in samples:
            load_settings(flags={key: sample}, cwd=no_project)
        if not samples:
            # A distribution without sample values (mu/sigma): check the key alone.
            load_settings(overrides=[f"{key}=null"], cwd=no_project)
    except ConfigError as exc:
        if samples or "unknown setting" in str(exc):
            message = str(exc).replace("in the command line", "in the sweep file")
            raise ConfigError(f"sweep parameter: {message}") from None


def sweep_config(raw: Mapping[str, Any], *, dataset: str | None = None) -> dict[str, Any]:
    """Turn a visionops sweep file into a W&B sweep configuration.

    Parameter names are visionops setting keys (``train.lr``, ``model.name``); they are
    checked like ``key=value`` overrides. The agent's command becomes
    ``visionops train [DATASET] tracking.mode=online key=value ...`` and the metric defaults
    to :data:`SWEEP_METRIC` (maximised).

    Args:
        raw: The sweep file's content (W&B sweep keys: ``method``, ``parameters``,
            ``metric``, ``early_terminate``, ...).
        dataset: A dataset argument for every run (default: the ``dataset`` key of the file,
            else the project's default dataset).

    Returns:
        The configuration for ``wandb.sweep``.

    Raises:
        ConfigError: No parameters, an unknown setting key, or a bad method.

    Examples:
        >>> sweep_config({"method": "random", "parameters": {"train.lr": {"values": [1e-3]}}})[
        ...     "command"]
        ['visionops', 'train', 'tracking.mode=online', '${args_no_hyphens}']
    """
    config = {key: value for key, value in raw.items() if key != "dataset"}
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError(
            "the sweep file has no `parameters` — add e.g. `parameters: {train.lr:"
            " {min: 0.0001, max: 0.01}}`"
        )
    for key, spec in parameters.items():
        _check_parameter(str(key), spec)
    method = config.setdefault("method", "random")
    if method not in ("grid", "random", "bayes"):
        raise ConfigError(f"sweep method '{method}' is not one of grid, random, bayes")
    config.setdefault("metric", {"name": SWEEP_METRIC, "goal": "maximize"})
    dataset = dataset or raw.get("dataset")
    command: list[str] = ["visionops", "train"]
    if dataset:
        command.append(str(dataset))
    command += ["tracking.mode=online", "${args_no_hyphens}"]
    config["command"] = command
    return config


def create_sweep(
    sweep_file: Path,
    settings: Settings,
    *,
    count: int | None = None,
    create_only: bool = False,
    dataset: str | None = None,
) -> SweepResult:
    """Create a W&B sweep from a sweep file and (unless ``create_only``) run an agent here.

    Args:
        sweep_file: YAML with ``method``, ``parameters`` (visionops setting keys), optional
            ``metric`` and ``dataset``.
        settings: Resolved settings (``tracking.project`` and ``tracking.entity``).
        count: Runs the local agent does (None: until the sweep is done).
        create_only: Only create the sweep; print how to start agents.
        dataset: Dataset argument for every run.

    Returns:
        The sweep id, configuration and agent command.

    Raises:
        ConfigError: Invalid sweep file.
        TrackingError: W&B cannot be reached or is not logged in.
    """
    config = sweep_config(load_sweep_file(sweep_file), dataset=dataset)
    import wandb

    with wandb_errors(
        "cannot create the W&B sweep", "creating a sweep needs the network and `wandb login`"
    ):
        sweep_id = wandb.sweep(
            config, project=settings.tracking.project, entity=settings.tracking.entity
        )
    if not sweep_id:
        raise TrackingError(
            "W&B did not create the sweep (no network?) — check `wandb login` and the network"
        )
    path = "/".join(
        part for part in (settings.tracking.entity, settings.tracking.project, sweep_id) if part
    )
    if not create_only:
        logger.info("starting a W&B agent here for sweep {} (stop it with Ctrl-C)", path)
        wandb.agent(
            sweep_id,
            project=settings.tracking.project,
            entity=settings.tracking.entity,
            count=count,
        )
    return SweepResult(
        sweep_id=str(sweep_id),
        config=config,
        agent_command=f"wandb agent {path}",
        ran_agent=not create_only,
    )
