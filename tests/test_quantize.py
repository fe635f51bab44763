"""int8 export (``hfr export --int8``): the decoder's convolutions quantised, the bundled models'
detection measured before the file is kept, and a quantisation that loses detection refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from hfr import HFR
from hfr.data import AnomalyDataset, load_mvtec
from hfr.errors import HFRError
from hfr.onnx_runtime import OnnxModel
from hfr.quantize import AccuracyGateError, export_int8


def every_fourth(dataset: AnomalyDataset) -> AnomalyDataset:
    """The category with a quarter of its test images (every defect type kept): a quicker gate."""
    return replace(dataset, test=dataset.test[::4])


def quantized_convolutions(path: Path) -> tuple[int, int]:
    """How many Conv nodes of the file take int8 weights (through DequantizeLinear), and how
    many Conv nodes it has."""
    graph = onnx.load(str(path)).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    return sum(node.input[1] in dequantized for node in convs), len(convs)


def test_int8_export_refuses_bad_options_before_exporting(tmp_path: Path) -> None:
    from conftest import tiny_model

    from hfr.cli import main

    dataset = AnomalyDataset("mvtec_ad", "widget", [])
    with pytest.raises(HFRError, match="scope must be one of"):
        export_int8(tiny_model(), tmp_path / "a.onnx", dataset, scope="encoder")
    with pytest.raises(HFRError, match="largest aupro drop must be within"):
        export_int8(tiny_model(), tmp_path / "a.onnx", dataset, max_aupro_drop=-0.1)
    tiny_model().save_pretrained(tmp_path / "model")
    with pytest.raises(SystemExit):  # --int8 without the labelled set that measures it
        main(["export", "--model", str(tmp_path / "model"), "--output", "x.onnx", "--int8", "all"])
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.slow
def test_an_int8_decoder_keeps_bottle_detection(
    bottle: Path, mobilenet_weights: str, tmp_path: Path
) -> None:
    """The bundled bottle model with an int8 decoder: only the decoder's 17 convolutions are
    quantised, the gate's record travels in the file, and its verdicts on real images are the
    float model's."""
    model = HFR.from_pretrained("hfr-mvtec-bottle-mobilenetv2")
    dataset = every_fourth(load_mvtec(bottle.parent, "bottle"))
    path = tmp_path / "bottle.int8.onnx"
    record = export_int8(model, path, dataset, scope="decoder")
    assert record["scope"] == "decoder" and record["calibration_images"] == 32
    assert record["drops"]["image_auroc"] <= 0.005 and record["drops"]["aupro"] <= 0.002
    assert record["max_drops"] == {"image_auroc": 0.005, "aupro": 0.002}
    decoder_convs = sum(m.__class__.__name__ == "Conv2d" for m in model.network.decoder.modules())
    quantized, total = quantized_convolutions(path)
    assert quantized == decoder_convs == 17 and total > 17
    int8 = OnnxModel(path, threads=2)
    assert int8.quantization == record and int8.config == model.config
    images = [sample.image for sample in dataset.test[:8]]
    expected = model.predict(images)
    got = int8.predict(images)
    assert [p.is_anomalous for p in got] == [p.is_anomalous for p in expected]
    # int8 rounding in the decoder moves a score by a few per cent at most
    np.testing.assert_allclose([p.score for p in got], [p.score for p in expected], rtol=0.05)


@pytest.mark.slow
def test_int8_of_the_whole_network_is_refused_on_screw(
    mobilenet_weights: str, bottle: Path, tmp_path: Path
) -> None:
    """Quantising the encoder too costs the bundled screw model far more image AUROC than the
    gate allows (0.09 over the whole test set): the export stops and writes nothing."""
    model = HFR.from_pretrained("hfr-mvtec-screw-mobilenetv2")
    dataset = every_fourth(load_mvtec(bottle.parent, "screw"))
    path = tmp_path / "screw.int8.onnx"
    with pytest.raises(AccuracyGateError, match=r"int8 \(all\) lost 0\.\d+ image AUROC") as error:
        export_int8(model, path, dataset, scope="all")
    assert "and 0." in str(error.value) and "AUPRO" in str(error.value)  # both limits broken
    assert "nothing was written" in str(error.value)
    assert not path.exists() and not list(tmp_path.iterdir())
