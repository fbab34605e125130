"""The "LoG3D" tab of the 3D Viewport sidebar (N-panel): backend, settings, remesh, training.

Drawing only reads the manager and the scene settings; every action is an operator.
"""

from __future__ import annotations


import bpy

from . import state


class VIEW3D_PT_log3d(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "LoG3D"
    bl_label = "LoG3D Remesh"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        manager = state.manager()
        settings = context.scene.log3d
        self._draw_backend(layout.box(), manager)

        col = layout.column(align=True)
        col.enabled = manager.session is None
        col.row(align=True).prop(settings, "size_mode", expand=True)
        if settings.size_mode == "VOXEL":
            col.prop(settings, "voxel_size")
        else:
            col.row(align=True).prop(settings, "resolution", expand=True)
        col.row(align=True).prop(settings, "mode", expand=True)
        if settings.mode == "vae":
            col.prop(settings, "refine_steps")
        col.row(align=True).prop(settings, "polygons", expand=True)
        col.prop(settings, "keep_attributes")
        if settings.mode == "vae" and manager.status.connected and "vae" not in manager.status.modes:
            col.label(text="The backend has no LoG-VAE weights", icon="ERROR")

        box = layout.box()
        box.enabled = manager.session is None
        box.label(text="Clean-up")
        box.prop(settings, "raw")
        sub = box.column()
        sub.enabled = not settings.raw
        sub.prop(settings, "deflate")
        sub.prop(settings, "outer_shell")
        row = sub.row()
        row.enabled = settings.deflate
        row.prop(settings, "single_layer")
        sub.prop(settings, "target_faces")
        layout.prop(settings, "hide_original")

        if manager.session is not None and manager.progress is not None:
            progress = manager.progress
            row = layout.row(align=True)
            if hasattr(row, "progress"):  # Blender 4.0+
                row.progress(factor=progress.overall, type="BAR", text=progress.label)
            else:  # no progress bar widget before 4.0
                row.label(text=f"{progress.overall:4.0%}  {progress.label}", icon="SORTTIME")
            row.operator("log3d.cancel", text="", icon="CANCEL")
        else:
            col = layout.column(align=True)
            col.scale_y = 1.3
            col.operator("log3d.remesh_selected", icon="MOD_REMESH")
            row = col.row(align=True)
            row.operator("log3d.remesh_all", icon="SCENE_DATA")
            row.prop(settings, "scope", text="")
            col.operator("log3d.import_latents", icon="IMPORT")

        if manager.last_error:
            box = layout.box()
            head = box.row()
            head.label(text="Last error", icon="ERROR")
            head.operator("log3d.clear_error", text="", icon="X", emboss=False)
            _wrapped(box, manager.last_error, context)

    @staticmethod
    def _draw_backend(box: bpy.types.UILayout, manager: state.Manager) -> None:
        status = manager.status
        head = box.row()
        if status.connected:
            head.label(text="Backend connected", icon="CHECKMARK")
        elif manager.backend is not None and manager.backend.running:
            head.label(text="Backend starting…", icon="SORTTIME")
        elif status.connected is None:
            head.label(text="Backend not checked yet", icon="QUESTION")
        else:
            head.label(text="Backend not running", icon="CANCEL")
        head.operator("log3d.backend_check", text="", icon="FILE_REFRESH")
        if status.connected:
            col = box.column(align=True)
            col.label(text=f"Device: {status.device}")
            col.label(text=f"Model: {status.model}")
            col.label(text=f"Version: {status.version}   {status.endpoint}")
            box.operator("log3d.backend_stop", icon="QUIT")
        else:
            if status.endpoint:
                box.label(text=status.endpoint)
            box.operator("log3d.backend_start", icon="PLAY")


class VIEW3D_PT_log3d_training(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "LoG3D"
    bl_label = "Training"
    bl_parent_id = "VIEW3D_PT_log3d"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        manager = state.manager()
        training = context.scene.log3d.training
        col = layout.column()
        col.enabled = manager.train_task is None
        col.prop(training, "dataset")
        known = manager.datasets()
        if known is not None and training.dataset and training.dataset.strip().strip("/") not in known:
            col.label(text=f"The backend has no cache '{training.dataset}'"
                           f"{' (it has: ' + ', '.join(known[:4]) + ')' if known else ''}", icon="INFO")
        col.prop(training, "preset")
        col.prop(training, "steps")
        row = layout.row(align=True)
        row.operator("log3d.train_start", icon="PLAY")
        row.operator("log3d.train_stop", icon="PAUSE")
        run = manager.training
        if run.state:
            col = layout.column(align=True)
            col.label(text=f"{run.job or 'run'}: {run.state}")
            if run.step is not None:
                loss = "–" if run.loss is None else f"{run.loss:.5g}"
                col.label(text=f"Step {run.step:,} / {training.steps:,}   loss {loss}")
                if run.running:
                    col.progress(factor=min(1.0, run.step / max(training.steps, 1)), type="BAR",
                                 text=f"{100.0 * run.step / max(training.steps, 1):.1f} %")
            if run.run_dir:
                col.label(text=run.run_dir)


def _wrapped(layout: bpy.types.UILayout, text: str, context: bpy.types.Context) -> None:
    """Long messages as several labels, wrapped to the sidebar's width."""
    import textwrap

    width = max(20, int((context.region.width if context.region else 300) / 7))
    col = layout.column(align=True)
    for paragraph in text.splitlines() or [""]:
        for line in textwrap.wrap(paragraph, width) or [""]:
            col.label(text=line)


CLASSES = (VIEW3D_PT_log3d, VIEW3D_PT_log3d_training)
