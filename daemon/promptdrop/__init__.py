"""promptdrop: drop-folder image generation with the ToAPIs image API."""

__version__ = "0.1.0"
