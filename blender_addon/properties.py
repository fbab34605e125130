"""Per-scene settings (``scene.log3d``): saved in the .blend, so a batch script can set them.

    scene.log3d.resolution = "512"      # "64" (preview), "256", "512", "1024", "2048"
    scene.log3d.size_mode = "VOXEL"     # or "RESOLUTION"; with VOXEL, voxel_size (world units) sets N
    scene.log3d.voxel_size = 0.005
    scene.log3d.polygons = "quads"      # or "triangles"
    scene.log3d.keep_attributes = True  # materials and colour attributes carried over
    scene.log3d.mode = "direct"         # or "vae" (needs a backend with LoG-VAE weights)
    scene.log3d.target_faces = 200000   # clean-up settings, as `log3d remesh` has them
"""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

RESOLUTIONS = ("64", "256", "512", "1024", "2048")


class LOG3D_TrainingSettings(bpy.types.PropertyGroup):
    dataset: StringProperty(name="Dataset",
                            description="Name of a UBlock cache (`log3d prepare MESH_DIR CACHE_DIR`) inside the "
                                        "backend's data folder (`log3d serve --data-root`, or the add-on "
                                        "preference 'Training data folder')")
    preset: EnumProperty(name="Preset", default="small",
                         items=[("tiny", "Tiny", "Smallest network, for trying things out"),
                                ("small", "Small", "A network that trains on one consumer GPU"),
                                ("paper", "Paper", "The paper's LoG-VAE (77M parameters)")])
    steps: IntProperty(name="Steps", default=10000, min=1, max=10_000_000, description="Training steps")

    def train_options(self) -> dict[str, Any]:
        """The typed options of ``train.start`` (the server builds the trainer's command line and
        names the run folder itself)."""
        return {"data": self.dataset.strip().strip("/"), "preset": self.preset, "max_steps": int(self.steps)}


class LOG3D_Settings(bpy.types.PropertyGroup):
    resolution: EnumProperty(
        name="Resolution", default="256",
        items=[("64", "64", "Preview: a coarse result in a second"), ("256", "256", "256³ grid"),
               ("512", "512", "512³ grid"), ("1024", "1024", "1024³ grid (the paper's usual setting)"),
               ("2048", "2048", "2048³ grid: millions of triangles")],
        description="Grid resolution N along the longest side of each object")
    size_mode: EnumProperty(
        name="Size", default="RESOLUTION",
        items=[("RESOLUTION", "Resolution", "N cells along each object's longest side"),
               ("VOXEL", "Voxel Size", "Cells of one size in scene units: every object at the same density")],
        description="How fine the grid is: cells across each object, or one voxel size for all")
    voxel_size: FloatProperty(
        name="Voxel Size", default=0.01, min=1e-6, soft_min=1e-4, precision=4, subtype="DISTANCE", unit="LENGTH",
        description="Edge of a grid cell in world units (the object's scale included); each object's N follows "
                    "from its size, up to 2048 cells across")
    polygons: EnumProperty(
        name="Polygons", default="quads",
        items=[("quads", "Quads", "Keep the flat quads of the contour (direct mode); triangles where it bends"),
               ("triangles", "Triangles", "Split every quad into two triangles")],
        description="What the result is made of (VAE mode and a decimated result are triangles)")
    keep_attributes: BoolProperty(
        name="Materials & Colours", default=True,
        description="Each result face takes the material of the face under it, each vertex the colour of the "
                    "surface under it (every colour attribute, by name)")
    mode: EnumProperty(
        name="Mode", default="direct",
        items=[("direct", "Direct", "Exact distance field through the LoG3D representation (no network)"),
               ("vae", "VAE", "Round trip through the LoG-VAE (a backend with weights)")])
    refine_steps: IntProperty(
        name="Refine Steps", default=0, min=0, max=1000, soft_max=100,
        description="VAE mode: fit the latents to each object's own field through the frozen decoder for this "
                    "many steps after encoding. Closer to the input (a quarter to a third less error at 50 "
                    "steps), but each step costs a decode and its backward pass: fast on a GPU backend, "
                    "seconds per step on a CPU")
    raw: BoolProperty(name="Raw ε-surface", default=False,
                      description="The paper's output: two shells around closed surfaces, slabs around sheets")
    deflate: BoolProperty(name="Deflate", default=True,
                          description="Move the surface from ε back onto the input's surface")
    outer_shell: BoolProperty(name="Outer shell only", default=True,
                              description="Drop the inner shells of closed surfaces")
    single_layer: BoolProperty(name="Single layer", default=True,
                               description="Open sheets come back as one open layer, not a thin slab (needs Deflate)")
    target_faces: IntProperty(name="Target faces", default=0, min=0, max=50_000_000,
                              description="Decimate to about this many faces (0: keep all)")
    hide_original: BoolProperty(name="Hide originals", default=True,
                                description="Hide each original in the viewport once its result is created")
    scope: EnumProperty(
        name="Remesh All", default="SCENE",
        items=[("SCENE", "Scene", "Every visible mesh object in the view layer"),
               ("COLLECTION", "Active collection", "Every visible mesh object in the active collection")])
    training: PointerProperty(type=LOG3D_TrainingSettings)

    def cleanup_options(self) -> dict[str, Any]:
        """The ``cleanup`` option of a remesh request (docs/protocol.md)."""
        if self.raw:
            return {"deflate": False, "outer_shell": False, "single_layer": False, "target_faces": 0}
        return {"deflate": self.deflate, "outer_shell": self.outer_shell,
                "single_layer": self.single_layer and self.deflate, "target_faces": int(self.target_faces)}


CLASSES = (LOG3D_TrainingSettings, LOG3D_Settings)


def register() -> None:
    bpy.types.Scene.log3d = PointerProperty(type=LOG3D_Settings)


def unregister() -> None:
    del bpy.types.Scene.log3d
