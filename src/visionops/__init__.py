"""visionops: one CLI for the whole life of an image model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("visionops")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
