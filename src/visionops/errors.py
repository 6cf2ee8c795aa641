"""The one exception tree of visionops.

Every error a user can cause is one of these. Each message says what is wrong *and* what to
do about it; the CLI prints it on one line and exits with the error's ``exit_code``: 2 for
what the user must fix before running again (usage, settings, input data, artifacts, an output
that exists without ``--force``), 1 when the command ran and failed (training, export parity,
serving, tracking, another process holding the artifact). See docs/reference/conventions.md.

```
VisionOpsError
├── ConfigError                 unknown key, wrong type, bad override, bad recipe
├── DeviceError                 asked for a device this machine does not have
├── DataError
│   ├── SourceError             a fetch source that cannot be reached or is unsafe
│   ├── DatasetNotFoundError    no raw or prepared dataset where one was expected
│   ├── LayoutError             a folder whose layout visionops cannot read
│   └── ImageError              one image that cannot be decoded (serve: HTTP 422)
├── ArtifactError               missing, foreign, corrupt or edited run/bundle artifacts
│   └── ConcurrencyError        another live process is writing the same artifact
├── TrainingError               a run that cannot start or diverged
├── TrackingError               Weights & Biases cannot start, or a sweep cannot be created
├── ExportError                 ONNX export, parity or quantisation failed
├── ServeError                  the server cannot start (port in use, no bundle)
│   └── SkewError               served answers differ from the exported model's (quickstart)
├── DriftError                  a drift check that cannot run (too few images, foreign log)
└── InterruptError              Ctrl-C stopped a command before it kept anything (exit 130)
```
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ConcurrencyError",
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "DeviceError",
    "DriftError",
    "ExportError",
    "ImageError",
    "InterruptError",
    "LayoutError",
    "ServeError",
    "SkewError",
    "SourceError",
    "StorageError",
    "TrackingError",
    "TrainingError",
    "VisionOpsError",
]


class VisionOpsError(Exception):
    """Base class: a problem the user can fix, with a message that says how.

    Args:
        message: What is wrong, then what to do about it.
    """

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(VisionOpsError):
    """A setting, override, config file or recipe that is not valid."""

    exit_code = 2


class DeviceError(VisionOpsError):
    """A device was requested that this machine cannot provide."""

    exit_code = 2


class DataError(VisionOpsError):
    """A dataset problem: unreachable source, missing data, unreadable layout."""

    exit_code = 2


class SourceError(DataError):
    """A fetch source that cannot be reached, is unsafe, or is malformed."""


class DatasetNotFoundError(DataError):
    """No raw or prepared dataset where one was expected."""


class LayoutError(DataError):
    """A folder or CSV whose layout visionops cannot read."""


class ImageError(DataError):
    """A single image that cannot be decoded or is too large."""


class ArtifactError(VisionOpsError):
    """A missing, foreign, corrupt or modified artifact (run, checkpoint, bundle)."""

    exit_code = 2


class ConcurrencyError(ArtifactError):
    """Another live process is writing the same artifact folder right now."""

    exit_code = 1


class TrainingError(VisionOpsError):
    """A training run that cannot start, or that diverged."""


class ExportError(VisionOpsError):
    """ONNX export, parity verification or quantisation failed."""


class TrackingError(VisionOpsError):
    """Experiment tracking (Weights & Biases) cannot start, or a sweep cannot be created."""


class ServeError(VisionOpsError):
    """The server cannot start or cannot load its bundle."""


class SkewError(ServeError):
    """Serving disagreed with the exported model on the same images."""


class StorageError(VisionOpsError):
    """A bucket or remote URL cannot be used: no driver, no credentials, unreachable."""

    exit_code = 2


class DriftError(VisionOpsError):
    """A drift check that cannot run: no usable log, too few images, a foreign log."""

    exit_code = 2


class InterruptError(VisionOpsError):
    """Ctrl-C stopped a command; the message says what was kept and how to go on.

    Not a mistake to fix: the CLI prints it as ``interrupted: ...`` (not ``error:``) and
    exits 130, the shell's code for SIGINT.
    """

    exit_code = 130
