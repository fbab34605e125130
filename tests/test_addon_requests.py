"""What the add-on's remesh task asks the backend for (blender_addon/worker.py, no Blender needed):
the panel's VAE refinement steps reach the request's options, and are not sent when not asked (a
backend older than the option would refuse it as unknown)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from blender_addon.worker import Connection, MeshDone, MeshJob, RemeshRequest, RemeshTask

TETRA_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int32)


class RecordingClient:
    """Takes one remesh job and answers it at once with the tetrahedron, remembering what was asked."""

    def __init__(self) -> None:
        self.asked: dict = {}

    def submit_remesh(self, vertices, faces, resolution, mode, material=None, colors=None, **options):
        self.asked = {"resolution": resolution, "mode": mode, **options}
        return "job-1"

    def poll(self, job_id):
        return [SimpleNamespace(type="result", data={"quads": 0}, arrays={"vertices": TETRA_V, "faces": TETRA_F})]


@pytest.mark.parametrize("mode, steps, sent", [("vae", 25, 25), ("vae", 0, None), ("direct", 0, None)])
def test_refinement_steps_reach_the_request_only_when_asked(mode, steps, sent):
    client = RecordingClient()
    task = RemeshTask(Connection(), [MeshJob("Cube", TETRA_V, TETRA_F)],
                      RemeshRequest(resolution=128, mode=mode, refine_steps=steps))
    task._remesh_one(client, 0, task.jobs[0], {})
    assert client.asked.get("refine_steps") == sent
    assert client.asked["mode"] == mode and client.asked["resolution"] == 128
    assert any(isinstance(m, MeshDone) for m in task.drain())
