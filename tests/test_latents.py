"""Latents as files: `log3d encode` / `log3d decode`, the safetensors latent format, folders."""

from __future__ import annotations



import numpy as np
import pytest
import trimesh

from backend.cli import main
from model.cleanup import CleanupOptions
from model.latent_file import LatentFileError, load_latent_file
from model.mesh import load_mesh
from model.pipeline import RemeshOptions, remesh
from model.vae import LogVAE, load_model, preset, save_model
from tests.conftest import write_tiny_weights

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three small meshes and two tiny models (one architecture, two sets of weights) plus a
    `small`-architecture one."""
    root = tmp_path_factory.mktemp("latents")
    meshes = root / "meshes"
    meshes.mkdir()
    trimesh.creation.icosphere(subdivisions=3).export(meshes / "ball.obj")
    trimesh.creation.box(extents=(1.0, 0.6, 0.3)).export(meshes / "brick.stl")
    trimesh.creation.torus(1.0, 0.3, major_sections=24, minor_sections=12).export(meshes / "ring.ply")
    write_tiny_weights(root / "tiny.safetensors", seed=0, output_init=0.1)
    write_tiny_weights(root / "tiny_other.safetensors", seed=1, output_init=0.1)
    cfg = preset("tiny").replace(heads=4, output_init=0.1)
    save_model(LogVAE(cfg), root / "wider.safetensors")
    return root


def cli(*args: str) -> int:
    return main([*args, "--device", "cpu", "--quiet"])


def test_encode_file_decode_equals_an_in_process_vae_remesh(files, tmp_path):
    """float32 storage: the file round trip is the in-process pipeline, vertex for vertex."""
    src, ckpt = files / "meshes" / "ball.obj", files / "tiny.safetensors"
    assert cli("encode", str(src), str(tmp_path / "ball.safetensors"), "-n", "64", "--checkpoint", str(ckpt),
               "--dtype", "float32") == 0
    assert cli("decode", str(tmp_path / "ball.safetensors"), str(tmp_path / "ball.ply"), "--checkpoint", str(ckpt),
               "--raw") == 0
    got = load_mesh(tmp_path / "ball.ply")
    vae = load_model(ckpt, "cpu")
    ref = remesh(load_mesh(src), RemeshOptions(resolution=64, mode="vae", cleanup=CleanupOptions.none(), device="cpu"),
                 vae=vae).mesh
    assert got.num_faces == ref.num_faces and got.num_vertices == ref.num_vertices
    np.testing.assert_array_equal(got.faces, ref.faces)
    np.testing.assert_allclose(got.vertices, ref.vertices, rtol=0, atol=1e-6)  # the .ply stores float32

    item = load_latent_file(tmp_path / "ball.safetensors")
    assert item.latents.latents.shape[1] == 16 and item.latents.resolution == 64 and item.source == "ball.obj"
    assert item.model_config["dim"] == 32 and len(item.weights_hash) == 64


def test_float16_halves_the_file_and_stays_close(files, tmp_path):
    src, ckpt = files / "meshes" / "ball.obj", files / "tiny.safetensors"
    for dtype in ("float16", "float32"):
        assert cli("encode", str(src), str(tmp_path / f"{dtype}.safetensors"), "-n", "64", "--checkpoint", str(ckpt),
                   "--dtype", dtype) == 0
    small, big = (tmp_path / "float16.safetensors").stat().st_size, (tmp_path / "float32.safetensors").stat().st_size
    assert small < 0.75 * big
    a = load_latent_file(tmp_path / "float16.safetensors").latents.latents
    b = load_latent_file(tmp_path / "float32.safetensors").latents.latents
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_decoding_with_another_model_fails_with_exit_code_2(files, tmp_path, capsys):
    src = files / "meshes" / "ball.obj"
    lat = tmp_path / "ball.safetensors"
    assert cli("encode", str(src), str(lat), "-n", "64", "--checkpoint", str(files / "tiny.safetensors")) == 0
    capsys.readouterr()
    assert cli("decode", str(lat), str(tmp_path / "x.ply"), "--checkpoint", str(files / "wider.safetensors")) == 2
    err = capsys.readouterr().err
    assert "another architecture" in err and "heads: loaded model 4, latents' model 2" in err
    assert cli("decode", str(lat), str(tmp_path / "y.ply"), "--checkpoint", str(files / "tiny_other.safetensors")) == 2
    assert "other weights of the same architecture" in capsys.readouterr().err
    assert not (tmp_path / "x.ply").exists() and not (tmp_path / "y.ply").exists()


def test_broken_latent_files_are_refused_clearly(files, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(LatentFileError, match="not a readable safetensors"):
        load_latent_file(bad)
    good = tmp_path / "good.safetensors"
    assert cli("encode", str(files / "meshes" / "ball.obj"), str(good), "-n", "64", "--checkpoint",
               str(files / "tiny.safetensors")) == 0
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(LatentFileError):
        load_latent_file(truncated)
    with pytest.raises(LatentFileError, match="not a LoG3D latent file"):
        load_latent_file(files / "tiny.safetensors")  # a model checkpoint is not a latent file


def test_a_folder_in_two_processes_interrupted_and_resumed_equals_one_process(files, tmp_path, capsys):
    meshes, ckpt = files / "meshes", str(files / "tiny.safetensors")
    (meshes / "broken.obj").write_text("no mesh here\n")
    try:
        one = tmp_path / "one"
        assert cli("encode", str(meshes), str(one), "-n", "64", "--checkpoint", ckpt) == 1  # broken.obj fails
        out = capsys.readouterr().out
        assert "3 encoded, 0 skipped (output exists), 1 failed" in out and "broken.obj" in out
        # "interrupted": only shard 0 of 2 ran, and a partial file was left by a killed process
        two = tmp_path / "two"
        assert cli("encode", str(meshes), str(two), "-n", "64", "--checkpoint", ckpt, "--shard", "0/2") in (0, 1)
        done_first = sorted(p.name for p in two.glob("*.safetensors"))
        assert 0 < len(done_first) < 3
        (two / ".ring.safetensors.999.partial").write_bytes(b"half")
        capsys.readouterr()
        assert cli("encode", str(meshes), str(two), "-n", "64", "--checkpoint", ckpt, "--workers", "2") == 1
        out = capsys.readouterr().out
        assert f"{3 - len(done_first)} encoded, {len(done_first)} skipped" in out, out
        names = sorted(p.name for p in one.glob("*.safetensors"))
        assert names == sorted(p.name for p in two.glob("*.safetensors")) == [
            "ball.safetensors", "brick.safetensors", "ring.safetensors"]
        for name in names:
            assert (one / name).read_bytes() == (two / name).read_bytes(), name
        # and back to meshes, as a folder
        assert cli("decode", str(one), str(tmp_path / "meshes_out"), "--checkpoint", ckpt, "--raw") == 0
        assert sorted(p.name for p in (tmp_path / "meshes_out").iterdir()) == ["ball.ply", "brick.ply", "ring.ply"]
    finally:
        (meshes / "broken.obj").unlink()


def test_shards_split_a_folder_without_overlap(files):
    from backend.latents import plan, shard_from_env

    targets = sorted(plan(files / "meshes", files / "o", decode=False, fmt=""), key=lambda p: p.name)
    seen = []
    for rank in range(3):
        r, w = shard_from_env(f"{rank}/3")
        seen += [s for i, s in enumerate(targets) if i % w == r]
    assert sorted(seen) == sorted(targets)
    with pytest.raises(ValueError, match="RANK"):
        shard_from_env("3/3")



def test_the_numpy_reader_agrees_with_the_safetensors_library(files, tmp_path):
    """model.latent_format (what Blender uses: numpy only) reads exactly what safetensors wrote."""
    from safetensors.numpy import load_file

    from model.latent_format import read_latent_arrays

    path = tmp_path / "ball.safetensors"
    assert cli("encode", str(files / "meshes" / "ball.obj"), str(path), "-n", "64", "--checkpoint",
               str(files / "tiny.safetensors")) == 0
    head, latents, coords = read_latent_arrays(path)
    ref = load_file(str(path))
    np.testing.assert_array_equal(latents, ref["latents"].astype(np.float32))
    np.testing.assert_array_equal(coords, ref["coords"].astype(np.int32))
    assert head["resolution"] == 64 and head["format"] == "log3d-latents"
