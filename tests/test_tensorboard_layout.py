"""Each run's TensorBoard file carries its composed config as text and a layout that overlays train and valid."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from helpers.configs import TINY_LM, compose_cfg
from pbexp.rundir import RunDir
from pbexp.train import train


def test_config_text_and_train_valid_overlay(tiny_ptb, tmp_path):
    cfg = compose_cfg(
        [
            *TINY_LM,
            f"dataset.root={tiny_ptb}",
            "trainer.max_steps=3",
            "trainer.epochs=0",
            "model.hidden_size=24",
            "model.emb_size=24",
        ]
    )
    train(cfg, tmp_path / "run")
    acc = EventAccumulator(str(RunDir(tmp_path / "run").tb), size_guidance={"tensors": 0})
    acc.Reload()
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "_target_: pbexp.models.lm.RNNLanguageModel" in text and "hidden_size: 24" in text
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts == {"loss": ["train/loss", "valid/loss", "test/loss"], "ppl": ["train/ppl", "valid/ppl", "test/ppl"]}
    scalars = set(acc.Tags()["scalars"])
    assert all(tag in scalars for tags in charts.values() for tag in tags)  # every overlaid tag is really logged
