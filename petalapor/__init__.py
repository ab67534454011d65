"""petalapor: Jakarta citizen-report maps and spatial resolution analysis."""

__version__ = "0.1.0"
