"""LoG-VAE: shapes, chunking invariance, checkpoints, gradients, presets."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors import safe_open

from model.checkpoint import FORMAT_VERSION, CheckpointError, ConfigMismatchError
from model.vae import (
    PRESETS,
    LogVAE,
    VAEConfig,
    count_parameters,
    describe,
    load_model,
    load_weights,
    preset,
    save_model,
)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def shell_coords(n: int, s: int = 24) -> torch.Tensor:
    """The first n blocks of a sphere shell on an s³ block grid (sorted by linear key)."""
    g = torch.stack(torch.meshgrid(*[torch.arange(s)] * 3, indexing="ij"), -1).reshape(-1, 3)
    r = (g.float() + 0.5 - s / 2).norm(dim=1)
    c = g[(r - 0.4 * s).abs() < 0.9]
    assert c.shape[0] >= n
    return c[:n]


def random_blocks(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 12, 12, 12, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny() -> LogVAE:
    torch.manual_seed(0)
    return LogVAE(preset("tiny")).eval()


def test_shapes(tiny):
    L = 50
    blocks, coords = random_blocks(L), shell_coords(L)
    with torch.no_grad():
        mean, logvar = tiny.encode(blocks, coords)
        assert mean.shape == logvar.shape == (L, 16)
        mean5, _ = tiny.encode(blocks[:, None], coords)  # [L, 1, 12, 12, 12] accepted too
        torch.testing.assert_close(mean5, mean)
        recon = tiny.decode(mean, coords)
        assert recon.shape == (L, 12, 12, 12)
        out, m2, lv2 = tiny(blocks, coords)
        assert out.shape == (L, 12, 12, 12) and m2.shape == lv2.shape == (L, 16)
        assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="blocks must be"):
        tiny.encode(torch.rand(L, 8, 8, 8), coords)
    with pytest.raises(ValueError, match="coordinates"):
        tiny.encode(blocks, coords[:-1])


def test_empty_shape(tiny):
    with torch.no_grad():
        mean, logvar = tiny.encode(torch.zeros(0, 12, 12, 12), torch.zeros(0, 3, dtype=torch.long))
        assert mean.shape == (0, 16)
        assert tiny.decode(mean, torch.zeros(0, 3, dtype=torch.long)).shape == (0, 12, 12, 12)


def test_sampling_in_training_mean_in_eval(tiny):
    blocks, coords = random_blocks(20), shell_coords(20)
    with torch.no_grad():
        a, _, _ = tiny(blocks, coords)
        b, _, _ = tiny(blocks, coords)
        torch.testing.assert_close(a, b)  # eval: the mean, deterministic
        c, _, _ = tiny(blocks, coords, sample=True)
        assert not torch.allclose(a, c)
        mean, _ = tiny.encode(blocks, coords)
        torch.testing.assert_close(a, tiny.decode(mean, coords))


def test_chunked_equals_unchunked():
    torch.manual_seed(1)
    L = 60
    blocks, coords = random_blocks(L, 1), shell_coords(L)
    big = LogVAE(preset("tiny").replace(chunk_size=1000)).eval()
    small = LogVAE(preset("tiny").replace(chunk_size=7)).eval()
    small.load_state_dict(big.state_dict())
    with torch.no_grad():
        m1, l1 = big.encode(blocks, coords)
        m2, l2 = small.encode(blocks, coords)
        torch.testing.assert_close(m1, m2, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(l1, l2, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(big.decode(m1, coords), small.decode(m1, coords), atol=1e-4, rtol=1e-4)


def test_channels_last_does_not_change_results():
    torch.manual_seed(2)
    L = 30
    blocks, coords = random_blocks(L, 2), shell_coords(L)
    a = LogVAE(preset("tiny")).eval()
    b = LogVAE(preset("tiny").replace(channels_last=False)).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(a(blocks, coords)[0], b(blocks, coords)[0], atol=1e-4, rtol=1e-4)


def test_gradients_reach_every_parameter():
    torch.manual_seed(3)
    model = LogVAE(preset("tiny")).train()
    L = 50
    blocks, coords = random_blocks(L, 3), shell_coords(L)
    t = time.perf_counter()
    recon, mean, logvar = model(blocks, coords)
    loss = torch.nn.functional.huber_loss(recon, blocks, delta=0.2)
    loss = loss + 1e-6 * 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum()
    loss.backward()
    elapsed = time.perf_counter() - t
    print(f"tiny forward+backward on {L} blocks: {elapsed:.3f} s")
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero, f"all-zero gradient for {zero}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_grad_checkpoint_gives_same_gradients():
    L = 40
    blocks, coords = random_blocks(L, 4), shell_coords(L)
    grads = []
    torch.manual_seed(4)
    ref = LogVAE(preset("tiny"))
    for flag in (False, True):
        m = LogVAE(preset("tiny").replace(grad_checkpoint=flag, chunk_size=16))
        m.load_state_dict(ref.state_dict())
        recon, mean, _ = m(blocks, coords, sample=False)
        (recon.square().mean() + mean.square().mean()).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_save_load_roundtrip(tmp_path, tiny):
    L = 40
    blocks, coords = random_blocks(L, 5), shell_coords(L)
    path = tmp_path / "tiny.safetensors"
    save_model(tiny, path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["preset"] == "tiny" and meta["format_version"] == str(FORMAT_VERSION)
    assert json.loads(meta["config"])["dim"] == 32

    loaded = load_model(path, "cpu")
    assert loaded.config == tiny.config and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(blocks, coords)[0], tiny(blocks, coords)[0], atol=0, rtol=0)

    other = LogVAE(preset("tiny").replace(chunk_size=3))  # runtime fields never conflict
    load_weights(other, path)
    with torch.no_grad():
        # same weights; only oneDNN's per-batch-size algorithm choice differs
        torch.testing.assert_close(other.eval()(blocks, coords)[0], tiny(blocks, coords)[0], atol=1e-3, rtol=0)


def test_fp16_storage_upcasts(tmp_path, tiny):
    path32, path16 = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_model(tiny, path32)
    save_model(tiny, path16, dtype=torch.float16)
    assert path16.stat().st_size < 0.6 * path32.stat().st_size
    loaded = load_model(path16)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for (n, a), b in zip(tiny.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(b, a.half().float(), atol=0, rtol=0, msg=n)
    L = 30
    blocks, coords = random_blocks(L, 6), shell_coords(L)
    with torch.no_grad():
        a, b = loaded(blocks, coords)[0], tiny(blocks, coords)[0]
    err = (a - b).abs()
    assert err.mean() < 1e-2 * b.abs().mean() and err.max() < 0.2


def test_mismatched_config_is_a_clear_error(tmp_path, tiny):
    path = tmp_path / "tiny.safetensors"
    save_model(tiny, path)
    other = LogVAE(preset("tiny").replace(dim=64, enc_channels=(4, 8, 16, 64), dec_channels=(64, 16, 8, 8, 4)))
    with pytest.raises(ConfigMismatchError) as info:
        load_weights(other, path)
    msg = str(info.value)
    assert set(info.value.fields) == {"dim", "enc_channels", "dec_channels"}
    assert "dim" in msg and "model=64" in msg and "checkpoint=32" in msg
    not_a_ckpt = tmp_path / "x.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(not_a_ckpt))
    with pytest.raises(CheckpointError):
        load_model(not_a_ckpt)


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="heads"):
        VAEConfig(heads=7)
    with pytest.raises(ValueError, match="reduce 12"):
        VAEConfig(enc_pools=(1, 2, 2, 1))
    with pytest.raises(ValueError, match="unknown VAEConfig fields"):
        VAEConfig.from_dict({"dim": 256, "bogus": 1})
    assert VAEConfig.from_dict(VAEConfig().to_dict()) == VAEConfig()
    assert set(PRESETS) >= {"paper", "small", "tiny"}
    p = preset("small")
    p.dim = 1
    assert PRESETS["small"].dim == 128
    with pytest.raises(KeyError):
        preset("huge")


def test_the_small_preset_is_the_shipped_weights_design():
    """Issue 28: the grid decoder won the A/B and trained the shipped weights, so a fresh `small`
    run builds that design (the `paper` preset stays the supplementary's 1³ start)."""
    from model.autoencode import DEFAULT_CHECKPOINT
    from model.checkpoint import config_differences, read_metadata
    from model.vae import RUNTIME_FIELDS

    shipped = VAEConfig.from_dict(read_metadata(DEFAULT_CHECKPOINT)["config"]).to_dict()
    assert config_differences(preset("small").to_dict(), shipped, ignore=RUNTIME_FIELDS) == {}
    assert preset("small").dec_stem == 4 and preset("small").dec_channels == (64, 24, 8)
    assert preset("paper").dec_stem == 1 and preset("paper").dec_channels[0] == preset("paper").dim


def test_parameter_counts():
    counts = {name: count_parameters(LogVAE(preset(name))) for name in ("paper", "small", "tiny")}
    print("parameters:", counts)
    assert abs(counts["paper"] - 77e6) < 3e6  # the paper's Table 1: 77M (two sparse convs per block)
    assert counts["tiny"] < counts["small"] < counts["paper"]
    # the text read literally (one sparse conv per transformer block) is 26M short: docs/network.md
    one = count_parameters(LogVAE(preset("paper").replace(block_convs=1)))
    assert 50e6 < one < 52e6


def test_describe(tiny):
    d = describe(tiny, "cpu")
    assert d["preset"] == "tiny" and d["parameters"] == count_parameters(tiny)
    assert d["device"] == "cpu" and "SDPA" in d["attention_backend"]


def test_weights_saved_before_the_decoder_fields_existed_still_load(tmp_path):
    """Checkpoints written before ``dec_stem`` / ``dec_upsample`` existed (the shipped ones among
    them) hold the paper's decoder: they load into a model of that design, by name or by --init."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from model.vae import load_weights

    torch.manual_seed(0)
    net = LogVAE(preset("tiny"))
    save_model(net, tmp_path / "new.safetensors")
    with safe_open(str(tmp_path / "new.safetensors"), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    del config["dec_stem"], config["dec_upsample"]
    meta["config"] = json.dumps(config)
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=meta)
    fresh = LogVAE(preset("tiny"))
    load_weights(fresh, tmp_path / "old.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fresh.state_dict().values()))
    assert load_model(tmp_path / "old.safetensors").config.dec_stem == 1


def test_signed_head_returns_the_absolute_value_of_the_same_decoder():
    """``dec_output="abs"`` changes only the last step: the same weights decode |linear head|, so
    a decoded block can reach 0 with slope ±1 at the surface, and never goes negative."""
    from model.vae import LocalDecoder

    linear_cfg = preset("tiny").replace(dec_output="linear")
    signed_cfg = linear_cfg.replace(dec_output="abs")
    torch.manual_seed(0)
    linear = LocalDecoder(linear_cfg)
    signed = LocalDecoder(signed_cfg)
    signed.load_state_dict(linear.state_dict())
    with torch.no_grad():
        linear.head.bias.fill_(0.0)  # straddle zero so that the two heads differ
        signed.head.bias.fill_(0.0)
        tokens = torch.randn(5, linear_cfg.dim)
        a, b = linear(tokens), signed(tokens)
    assert (a < 0).any() and (b >= 0).all()
    assert torch.allclose(b, a.abs())
    assert VAEConfig.from_dict(signed_cfg.to_dict()).dec_output == "abs"
    with pytest.raises(ValueError, match="dec_output"):
        VAEConfig(dec_output="sigmoid")
