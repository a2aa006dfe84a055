"""pareidolia: protect face photos from face recognition by editing expressions (MAP)."""

__version__ = "0.1.0"
