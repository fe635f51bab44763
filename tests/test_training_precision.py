"""The precision of the decoder's training steps: bf16 autocast where the device computes it
natively, fp32 elsewhere or on request; what a trained model records of it; old checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import synthetic_images, tiny_model, train_options

from hfr.config import TrainConfig
from hfr.device import native_bf16, training_precision
from hfr.errors import TrainingError
from hfr.train import CHECKPOINT_FILE, fit, training_step

IMAGES = synthetic_images(12, seed=2)
CONFIG = dict(epochs=1, batch_size=4, lr=0.1)


def test_auto_picks_bf16_only_where_the_hardware_has_it() -> None:
    cpu = torch.device("cpu")
    assert TrainConfig().precision == "auto"
    assert training_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert native_bf16(torch.device("cuda"))
    assert not native_bf16(torch.device("mps"))
    assert training_precision("auto", torch.device("mps")) == "fp32"
    for requested in ("bf16", "fp32"):
        assert training_precision(requested, cpu) == requested


def test_a_cpu_without_bf16_instructions_trains_in_fp32(monkeypatch) -> None:
    """This machine's CPU has AMX; a CPU without AMX or AVX512-BF16 cannot be had here, so
    torch's two CPU feature checks are made to answer no (or to be missing, as in an older
    torch)."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not native_bf16(cpu) and training_precision("auto", cpu) == "fp32"
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert training_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert training_precision("auto", cpu) == "bf16"


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(TrainingError, match=r"precision must be one of \('auto', 'bf16', 'fp32'\)"):
        TrainConfig(precision="fp16")


def test_a_bf16_step_computes_the_decoder_in_bf16_and_keeps_fp32_weights() -> None:
    """The same step from the same weights in both precisions: the losses agree to bf16's
    resolution but are not equal, so the autocast did act; the weights stay fp32."""
    losses = {}
    for precision in ("fp32", "bf16"):
        model = tiny_model()
        optimizer = torch.optim.SGD(model.decoder.parameters(), lr=0.1)
        with torch.inference_mode():
            features = model.encode(model.preprocess(IMAGES[:4]))
        model.decoder.train()
        config = TrainConfig(precision=precision)
        losses[precision] = training_step(model, optimizer, [f.clone() for f in features], config)
        assert all(p.dtype == torch.float32 for p in model.decoder.parameters())
    assert losses["bf16"].item() == pytest.approx(losses["fp32"].item(), rel=0.02)
    assert losses["bf16"].item() != losses["fp32"].item()


def test_a_trained_model_records_the_precision_it_ran_in() -> None:
    model = tiny_model()
    fit(model, IMAGES, TrainConfig(**CONFIG), progress=False)
    assert model.config.training["precision"] == training_precision("auto", model.device)
    fit(model, IMAGES, TrainConfig(**CONFIG, precision="fp32"), progress=False)
    assert model.config.training["precision"] == "fp32"
    assert "epochs, seed 0, steps in fp32" in str(model.generate_model_card())
    fit(model, IMAGES, TrainConfig(**CONFIG, precision="bf16"), progress=False)
    card = str(model.generate_model_card())
    assert "epochs, seed 0, steps in bf16 autocast (fp32 weights)" in card


def test_the_command_line_sets_the_precision() -> None:
    assert train_options().precision == "auto"
    assert train_options("--precision", "fp32").precision == "fp32"
    with pytest.raises(SystemExit):
        train_options("--precision", "fp16")


def test_a_checkpoint_from_before_the_setting_resumes_as_the_fp32_run_it_was(
    tmp_path: Path,
) -> None:
    """Checkpoints of 0.17 and earlier have no precision; on CPU they ran in fp32, so an fp32
    run resumes them and a bf16 run is told that the precision differs."""
    fit(tiny_model(), IMAGES, TrainConfig(**CONFIG, precision="fp32"), checkpoint_dir=tmp_path)
    path = tmp_path / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    del state["config"]["precision"]
    torch.save(state, path)
    more = TrainConfig(**{**CONFIG, "epochs": 2}, precision="fp32")
    result = fit(tiny_model(), IMAGES, more, checkpoint_dir=tmp_path, progress=False)
    assert result.resumed_epochs == 1 and len(result.losses) == 2
    with pytest.raises(TrainingError, match=r"precision 'fp32' \(now 'bf16'\)"):
        fit(tiny_model(), IMAGES, TrainConfig(**{**CONFIG, "epochs": 3}, precision="bf16"),
            checkpoint_dir=tmp_path, progress=False)  # fmt: skip
