"""LoG3D: the shape representation (UDF UBlocks), the LoG-VAE network and the metrics.

Importable without the server or Blender.
"""

__version__ = "0.1.0"
