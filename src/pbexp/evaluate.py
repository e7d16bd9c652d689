"""``pbexp-eval <run dir | checkpoint> [--split valid|test] [key=value ...]``: a finished run's metrics on a
split, from its best weights (or the checkpoint named), computed by the same task code as training's own
test pass. The config the run was started with (Hydra's record of it) builds the data and the model; ``key=value``
overrides change the data or the evaluation (e.g. ``dataset.root=...``, ``trainer.eval_batch_size=...``).
Prints the metrics as one JSON object. ``--write-examples`` also writes the run's per-example test results
(``test_examples.npz``, what ``pbexp-report --compare`` reads) from its best weights, for runs that predate them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pbexp.config import instantiate
from pbexp.errors import ConfigError, PbexpError
from pbexp.models import build_model, model_config
from pbexp.models.self_trained import SelfTrainedModel
from pbexp.rundir import RunDir
from pbexp.training import checkpoint as ckpt
from pbexp.training import runtime
from pbexp.training.tasks import build_task

log = logging.getLogger("pbexp")
SPLITS = ("valid", "test")


def run_dir_of(source: Path) -> RunDir:
    """A run dir, or the run dir holding a checkpoint (<run>/checkpoints/<name>.pt)."""
    return RunDir(source if source.is_dir() else source.resolve().parent.parent)


def evaluate_run(
    source: str | Path, split: str = "test", overrides: list[str] = (), write_examples: bool = False
) -> dict:
    source = Path(source)
    if split not in SPLITS:
        raise ConfigError("--split", split, f"one of {list(SPLITS)}")
    if write_examples and (split != "test" or not source.is_dir()):
        raise ConfigError(
            "--write-examples",
            f"with {'--split ' + split if split != 'test' else source}",
            "a run dir and the test split: the file holds the test results of the run's best weights",
        )
    config = run_dir_of(source).config
    if not config.is_file():
        raise PbexpError(f"{source}: no run config at {config} (pbexp-eval reads the run's own config)")
    cfg = OmegaConf.load(config)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as e:
        raise PbexpError(f"bad override: {str(e).splitlines()[0]}") from None
    device = runtime.pick_device(cfg.trainer.device)  # the run's own choice (trainer.device=cpu to override)
    data = instantiate(cfg.dataset)
    task = build_task(data, cfg.trainer, device)
    model_cfg = OmegaConf.create(model_config(cfg.model, task.kind))
    model_cfg.pretrained = None  # the checkpoint holds the trained embedding; nothing to load or train
    model = build_model(model_cfg, data.vocab, task.kind, **task.model_kwargs())
    if isinstance(model, SelfTrainedModel):
        raise PbexpError(
            f"{type(model).__name__} trains itself and keeps its own files; pbexp-eval reads "
            "checkpoints of the models pbexp trains"
        )
    weights, path = ckpt.weights_of(source)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise PbexpError(f"{path}: made by a model of another shape ({str(e).splitlines()[0][:160]})") from None
    model.to(device)
    log.info("evaluating %s on %s", path, split)
    if not write_examples:
        return {"checkpoint": str(path), "split": split, **task.evaluate(model, split)}
    metrics, examples = task.evaluate_examples(model, split)
    RunDir(source).write_test_examples(examples)
    return {"checkpoint": str(path), "split": split, **metrics, "examples": str(RunDir(source).test_examples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pbexp-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a run dir (its best weights) or a checkpoint file")
    parser.add_argument("--split", default="test", help="valid | test (default test)")
    parser.add_argument("overrides", nargs="*", help="key=value changes to the run's config (data, evaluation)")
    parser.add_argument(
        "--write-examples", action="store_true", help="also write the run's test_examples.npz (for --compare)"
    )
    args = parser.parse_intermixed_args(argv)  # options before or after the key=value overrides
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    try:
        out = evaluate_run(args.source, args.split, args.overrides, args.write_examples)
    except PbexpError as e:
        print(f"pbexp-eval: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
