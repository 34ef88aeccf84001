"""langadapt: adapt small multilingual encoders to low-resource languages, export them and serve them."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("langadapt")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
