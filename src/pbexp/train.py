"""Entry point: ``pbexp-train`` / ``python -m pbexp.train`` with Hydra overrides.

``train(cfg) -> results`` does one run in its run directory; ``main()`` wraps it for the
command line (one-line errors, exit codes, resume by rerunning the same command).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shlex
import signal
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hydra.core.plugins import Plugins
from hydra_plugins.pbexp_optuna.optuna_sweeper import OptunaSweeper
from pbexp import search
from pbexp.config import instantiate, validate
from pbexp.errors import ConfigError, Diverged, PbexpError
from pbexp.files import write_atomic
from pbexp.models import build_model, check_overrides_apply, model_config
from pbexp.models.self_trained import SelfTrainedModel
from pbexp.training import checkpoint as ckpt
from pbexp.training import distributed
from pbexp.training.logger import RunLogger, truncate_metrics
from pbexp.training.tasks import build_task
from pbexp.training.trainer import Trainer

log = logging.getLogger("pbexp")
# hydra/sweeper=pbexp_optuna: Hydra's own plugin scan does not see an editable install's hydra_plugins/.
Plugins.instance().register(OptunaSweeper)


def _config_dir() -> str:
    """configs/: beside the source tree in a checkout (so a git worktree runs its own configs), else the copy
    a wheel ships as the package pbexp.configs."""
    checkout = Path(__file__).resolve().parents[2] / "configs"
    if (checkout / "train.yaml").is_file():
        return str(checkout)
    from importlib.resources import files
    return str(files("pbexp.configs"))


CONFIG_DIR = _config_dir()
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PbexpError(f"trainer.device={name} but no CUDA device is available; use trainer.device=cpu or auto")
    if name.startswith("cuda:") and not int(name.split(":")[1]) < torch.cuda.device_count():
        raise ConfigError("trainer.device", name, f"cuda:0 ... cuda:{torch.cuda.device_count() - 1} (this machine's GPUs)")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def read_results(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_results(run_dir: Path, results: dict) -> None:
    write_atomic(run_dir / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")


def overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not under Hydra (train() called directly, e.g. from a test)
        return []


def hparams_of(cfg: DictConfig, kind: str, ovr: list[str]) -> dict:
    """One key set for every run of a sweep: the common knobs plus whatever the sweep overrides."""
    try:  # the names the user picked (model=gru), else the class / loader names
        choices = HydraConfig.get().runtime.choices
        model, dataset = choices["model"], choices["dataset"]
    except ValueError:
        model = model_config(cfg.model, kind)["_target_"].rsplit(".", 1)[-1]
        dataset = cfg.dataset._target_.rsplit(".", 1)[-1]
    params = {"model": model, "dataset": dataset, "seed": cfg.seed}
    for key in ("optimizer", "lr", "batch_size", "epochs", "clip", "schedule"):
        params[f"trainer.{key}"] = cfg.trainer[key]
    for o in ovr:
        key, _, value = o.lstrip("+~").partition("=")
        if not key.startswith("hydra"):
            params[key] = value
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """One run: build data, task, model and trainer from ``cfg``, train, test; returns results.json's dict."""
    run_dir = Path(run_dir)
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    t = cfg.trainer
    world = distributed.from_env()
    if t.batch_size % world.world_size:
        raise ConfigError("trainer.batch_size", t.batch_size,
                          f"a multiple of the number of processes ({world.world_size}); it is the global batch")
    device = distributed.init(world, pick_device(t.device))
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    seed_everything(cfg.seed, t.deterministic)
    data = instantiate(cfg.dataset)
    task = build_task(data, t, device, world.rank, world.world_size)
    check_overrides_apply(cfg.model, task.kind, overrides())
    model = build_model(cfg.model, data.vocab, task.kind, data.training_sentences, cfg.seed,
                        **task.model_kwargs()).to(device)
    if isinstance(model, SelfTrainedModel):
        for key in ("max_steps", "limit_batches", "max_minutes"):  # budgets its own loop cannot honour
            if t[key]:
                raise ConfigError(f"trainer.{key}", t[key], "0: this model trains itself in its own loop "
                                                            "(set its length with its own keys, e.g. model.epoch)")
        if t.num_threads:
            model.set_threads(t.num_threads)
    trainer = Trainer(t, task, model, run_dir, device, cfg.seed, is_main=world.is_main,
                      ddp_model=distributed.wrap(model, world, device), on_epoch=_search_reporter())
    resumed = trainer.resume()
    # A resumed run has its own weights and statistics in last.pt; a warm start brings the source's.
    if not resumed and hasattr(model, "fit_statistics"):  # fixed statistics of the training split (NBSVM's)
        model.fit_statistics(*task.splits["train"])
    if t.init_from and not resumed:
        _warm_start(model, t.init_from)
    if world.is_main and not resumed:  # a run that died before its first checkpoint starts over
        for stale in [run_dir / "metrics.jsonl", *(run_dir / "tb").glob("events.out.tfevents.*")]:
            stale.unlink(missing_ok=True)
    if world.is_main and resumed:
        truncate_metrics(run_dir, trainer.epoch - 1)
    if world.is_main:
        data.vocab.save(run_dir / "vocab.txt")
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    log.info("model %s: %.2fM parameters, device %s, run dir %s", type(model).__name__, n_params / 1e6, device,
             run_dir)

    logger = RunLogger(run_dir, purge_step=trainer.step + 1 if resumed else None, enabled=world.is_main)
    if not resumed:
        logger.describe(OmegaConf.to_yaml(cfg), ("loss", "ppl") if task.kind == "lm" else ("loss", "acc", "f1"))
    start = time.time()
    if isinstance(model, SelfTrainedModel):  # e.g. the fastText library: its own loop, our metrics
        last, best = _fit_external(model, task, run_dir, logger)
        test = task.evaluate(model, "test")
    else:
        stop = _install_signal_handlers(trainer)
        try:
            last = trainer.fit(logger)
            if trainer.stop_requested:
                raise KeyboardInterrupt(stop["signal"])
            distributed.barrier()
            test, best = trainer.test()
        finally:
            _restore_signal_handlers(stop)
    logger.scalars("test", test, trainer.step)
    if "confusion" in test:
        logger.confusion("test/confusion", test["confusion"], data.classes, trainer.step)
    results = {
        "status": "completed", "task": task.kind, "model": type(model).__name__, "params": n_params,
        "monitor": f"valid/{task.monitor}",
        "stopped_early": trainer.stopped_early,
        "overrides": overrides(), "epochs": last.get("epoch", trainer.epoch - 1), "steps": trainer.step,
        "wall_s": time.time() - start,
        **{k: v for k, v in last.items() if k.startswith(("train/", "perf/"))},
        **{f"valid/{k}": v for k, v in best.items()},
        **{f"test/{k}": v for k, v in test.items()},
    }
    if world.is_main:
        write_results(run_dir, results)
    logger.hparams(hparams_of(cfg, task.kind, results["overrides"]),
                   {k: v for k, v in results.items() if k.startswith(("valid/", "test/")) and isinstance(v, float)})
    logger.close()
    summary = " ".join(f"{k} {results[k]:.4g}" for k in results
                       if k.startswith(("valid/", "test/")) and k.split("/")[1] in ("ppl", "acc", "f1"))
    log.info("done: %s -> %s", summary, run_dir / "results.json")
    return results


def _search_reporter():
    """Under an Optuna sweep (hydra/sweeper=pbexp_optuna): report each epoch's valid metric to the trial."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # train() called directly
        return None
    return search.epoch_reporter(hydra_cfg) if hydra_cfg.mode == RunMode.MULTIRUN else None


def _warm_start(model, source: str) -> None:
    """trainer.init_from: copy another run's weights into this model (same shapes), not its optimiser."""
    if isinstance(model, SelfTrainedModel):
        raise ConfigError("trainer.init_from", source, f"null: {type(model).__name__} trains itself from scratch")
    weights, path = ckpt.weights_of(source)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ConfigError("trainer.init_from", source, "a checkpoint of a model with this run's shapes "
                                                       f"({str(e).splitlines()[0][:160]})") from None
    log.info("warm start: weights from %s", path)


def _fit_external(model, task, run_dir: Path, logger: RunLogger) -> tuple[dict, dict]:
    """A model that trains itself: time its fit, then evaluate on valid like an epoch of ours. Returns the
    epoch's record and the valid metrics."""
    t0 = time.perf_counter()
    model.fit(task, run_dir)
    seconds = time.perf_counter() - t0
    valid = task.evaluate(model, "valid")
    ckpt.save_atomic({"model": {}, "epoch": 1, "valid": valid}, run_dir / "checkpoints" / "best.pt")
    n = len(task.splits["train"][1])
    record = {"epoch": model.epochs, "step": 0, **{f"valid/{k}": v for k, v in valid.items() if not isinstance(v, list)},
              "perf/epoch_s": seconds, f"perf/{task.unit}_per_s": n * model.epochs / seconds}
    logger.scalars("valid", valid, 0)
    logger.scalars("perf", {"epoch_s": seconds, f"{task.unit}_per_s": record[f"perf/{task.unit}_per_s"]}, 0)
    logger.epoch_line(record)
    return record, valid


def _install_signal_handlers(trainer: Trainer) -> dict:
    """SIGINT/SIGTERM ask the trainer to stop after the current step and save a checkpoint."""
    state = {"signal": None, "old": {}}

    def handler(signum, frame):
        state["signal"] = signal.Signals(signum).name
        trainer.stop_requested = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            state["old"][sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. a launcher's worker thread)
            pass
    return state


def _restore_signal_handlers(state: dict) -> None:
    for sig, old in state["old"].items():
        signal.signal(sig, old)


def is_out_of_memory(e: BaseException) -> bool:
    # torch's CPU allocator raises a plain RuntimeError, CUDA's an OutOfMemoryError
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(e)


def out_of_memory_message(cfg: DictConfig, e: BaseException) -> str:
    where = "the GPU" if "CUDA" in str(e) else "this machine"
    asked = re.search(r"allocate (\d+) bytes", str(e))
    first = (f"one allocation of {int(asked.group(1)) / 1e9:.1f} GB" if asked
             else (str(e).splitlines() or [type(e).__name__])[0][:160])
    sizes = ", ".join(f"{k}={cfg.trainer[k]}" for k in ("batch_size", "bptt", "eval_batch_size") if k in cfg.trainer)
    return (f"out of memory on {where} ({first}); lower trainer.batch_size, trainer.bptt, "
            f"trainer.eval_batch_size or the model's sizes (now {sizes})")


def _resume_command(run_dir: Path) -> str:
    args = [a for a in sys.argv[1:] if not a.startswith(("hydra.run.dir=", "-m", "--multirun"))]
    return shlex.join(["pbexp-train", *args, f"hydra.run.dir={run_dir}"])


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    previous = read_results(run_dir)
    if previous and previous.get("status") == "completed":
        log.info("run in %s is already complete (results.json); nothing to do", run_dir)
        return previous.get(previous.get("monitor", ""))
    try:
        results = train(cfg, run_dir)
        return results[results["monitor"]]  # what a sweeper (Optuna) optimises
    except search.Pruned as e:  # an Optuna sweep stopped this trial: not a failure
        log.info("%s", e)
        if distributed.from_env().is_main:
            write_results(run_dir, {"status": search.PRUNED, "error": str(e), "overrides": overrides()})
        return None
    except KeyboardInterrupt as e:
        why = f"interrupted ({e.args[0] if e.args else 'SIGINT'})"
        if (run_dir / "checkpoints" / "last.pt").exists():
            msg = f"{why}; checkpoint saved in {run_dir / 'checkpoints'}. Resume with: {_resume_command(run_dir)}"
        else:  # e.g. Ctrl-C while the data was loading: there is nothing to resume from
            msg = f"{why} before the first checkpoint; nothing to resume. Start again with: {_resume_command(run_dir)}"
        status, code = "interrupted", EXIT_INTERRUPTED
    except Diverged as e:
        msg, status, code = f"diverged: {e}", "diverged", 3
    except PbexpError as e:
        msg, status, code = str(e), "failed", EXIT_USER_ERROR
    except Exception as e:  # a bug: keep the traceback, but a sweep goes on with the other jobs
        if is_out_of_memory(e):  # sizes too large for this machine: the user's to lower
            msg, status, code = out_of_memory_message(cfg, e), "failed", EXIT_USER_ERROR
        elif not multirun:
            raise
        else:
            log.exception("job failed")
            msg, status, code = f"{type(e).__name__}: {e}", "failed", 1
    # Record the failure in this run's own results.json, unless that would overwrite an earlier result.
    if previous is None and status != "interrupted" and distributed.from_env().is_main:
        try:
            write_results(run_dir, {"status": status, "error": msg, "overrides": overrides()})
        except OSError:
            pass
    print(f"pbexp-train: error: {msg}", file=sys.stderr, flush=True)
    log.error(msg)
    if multirun:
        return None  # the sweep goes on; pbexp.callbacks makes the sweep exit non-zero at the end
    sys.exit(code)


def _arg_value(args: list[str], key: str) -> str | None:
    for a in args:
        if a.startswith(key + "="):
            return a.split("=", 1)[1]
    return None


def _check_writable(folder: str) -> None:
    """Fail before Hydra tries to create the output folder (it would show a traceback).
    Tried for real: permission bits say little when running as root."""
    import tempfile
    existing = Path(folder).absolute()
    while not existing.exists():  # nothing is created here: --help or a bad override leaves no folder
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "a file is in the way")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise PbexpError(f"output folder {folder} cannot be written ({e.strerror}); choose another with "
                         "hydra.run.dir=<folder> (or hydra.sweep.dir=<folder> with -m)") from None


def _prepare_argv(argv: list[str]) -> list[str]:
    """``trainer.resume=<run dir>`` is the same as rerunning with ``hydra.run.dir=<run dir>``.
    Under torchrun every process must use the same run dir, and only rank 0 writes Hydra's files."""
    world = distributed.from_env()
    if world.distributed:
        if _arg_value(argv, "hydra.run.dir") is None and _arg_value(argv, "trainer.resume") is None:
            # torchrun's rendezvous id, shared by all ranks; under static rendezvous (--master_port) it is
            # "none", and the port is what the ranks share
            run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
            if run_id == "none":
                run_id = "port" + os.environ.get("MASTER_PORT", "0")
            argv = [*argv, f"hydra.run.dir=outputs/runs/{time.strftime('%Y-%m-%d')}/ddp_{run_id}"]
        if not world.is_main:
            argv = [*argv, "hydra.output_subdir=null", "hydra/job_logging=disabled"]
    resume = _arg_value(argv, "trainer.resume")
    if resume and resume != "null":
        if not Path(resume, "checkpoints").is_dir() and not Path(resume, "results.json").exists():
            raise PbexpError(f"trainer.resume={resume}: no checkpoints/ or results.json there; "
                             "give the run directory of an earlier run")
        run_dir = _arg_value(argv, "hydra.run.dir")
        if run_dir is None:
            argv = [*argv, f"hydra.run.dir={resume}"]
        elif Path(run_dir).resolve() != Path(resume).resolve():
            raise PbexpError(f"trainer.resume={resume} and hydra.run.dir={run_dir} name two different run "
                             "directories; give only one of them (a resumed run stays in its own directory)")
    multirun = any(a in ("-m", "--multirun") for a in argv)
    out = _arg_value(argv, "hydra.sweep.dir" if multirun else "hydra.run.dir") or "outputs"
    _check_writable(out)
    return argv


HYDRA_CONFIG_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
FLAGS_WITH_VALUE = ("-c", "--cfg", "-p", "--package", "--experimental-rerun", *HYDRA_CONFIG_FLAGS)
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def _check_overrides(argv: list[str]) -> DictConfig | None:
    """Compose the config once before Hydra runs, so a typo (trainer.lrr=1), an unknown choice (model=foo)
    or a bad override is one line naming it, exit 2, instead of Hydra's 5-6 lines and exit 1. A sweep is
    checked with the first value of each swept key; other config dirs are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    if any(a.split("=", 1)[0] in HYDRA_CONFIG_FLAGS for a in argv):
        return None
    def one_line(e: Exception) -> str:
        text = str(e).split("Config search path:")[0]
        return " ".join(line.strip() for line in text.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line
                        and not line.strip().startswith(("See https://", "full_key:", "object_type=")))

    overrides, skip = [], False
    for i, a in enumerate(argv):  # drop Hydra's flags and their values (--cfg job, -p trainer, --info all)
        if skip:
            skip = False
        elif a in FLAGS_WITH_VALUE or (a in ("-i", "--info") and i + 1 < len(argv) and argv[i + 1] in INFO_TOPICS):
            skip = True
        elif not a.startswith("-"):
            overrides.append(a)
    parser = OverridesParser.create()
    parsed = []
    for arg in overrides:
        try:
            parsed.extend(parser.parse_overrides([arg]))
        except Exception as e:  # noqa: BLE001 - the override grammar's error
            raise PbexpError(f"override {arg!r}: {one_line(e)}") from None
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in parsed]
    firsts = [c[0] for c in choices]
    # the first value of every key, then each further value of a swept key on its own
    trials = [firsts] + [firsts[:i] + [v] + firsts[i + 1:] for i, c in enumerate(choices) for v in c[1:]]
    composed = []
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for overrides in trials:
            try:
                composed.append(compose(config_name="train", overrides=overrides))
            except Exception as e:  # noqa: BLE001 - every composition error is the user's override
                raise PbexpError(one_line(e) or type(e).__name__) from None
    return composed[0]


# Keys that may differ when a run is continued: where and how fast it runs, not what it computes.
RESUMABLE_KEYS = ("trainer.resume", "trainer.device", "trainer.num_threads", "trainer.log_every", "trainer.compile")


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def _keep_provenance(argv: list[str], cfg: DictConfig | None) -> list[str]:
    """A run dir keeps the config it was started with: continuing it with another config is refused,
    naming the keys that differ, and Hydra does not rewrite its .hydra/ files."""
    import yaml
    run_dir = _arg_value(argv, "hydra.run.dir")
    saved_file = Path(run_dir or "", ".hydra", "config.yaml")
    if cfg is None or run_dir is None or any(a in ("-m", "--multirun") for a in argv) or not saved_file.is_file():
        return argv
    try:
        saved = _flat(yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError):
        return argv  # unreadable provenance: the checkpoint checks still guard the run
    now = _flat(OmegaConf.to_container(cfg, resolve=False))
    differ = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k) and k not in RESUMABLE_KEYS]
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k, '(unset)')} -> {now.get(k, '(unset)')}" for k in differ[:6])
        more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
        raise PbexpError(f"{run_dir} was started with another config ({shown}{more}); continue it with the same "
                         "settings, or choose another hydra.run.dir")
    return [*argv, "hydra.output_subdir=null"]  # its .hydra/ already says how it was started


LOCK_FILE = ".pbexp.lock"


def _lock_output_dir(argv: list[str]):
    """Hold an exclusive lock on the run dir (or a sweep's dir) named on the command line for as long as
    this process lives, so a second process started on it stops before writing anything. Only rank 0
    locks under torchrun (every rank shares the run dir). Returns the open lock file (keep it open)."""
    import fcntl
    multirun = any(a in ("-m", "--multirun") for a in argv)
    folder = _arg_value(argv, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    if folder is None or not distributed.from_env().is_main:  # a fresh timestamped folder: nobody else's
        return None
    if any(a in ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info") for a in argv):
        return None  # nothing runs, nothing is written
    Path(folder).mkdir(parents=True, exist_ok=True)
    lock = open(Path(folder) / LOCK_FILE, "a+")  # noqa: SIM115 - held open until the process ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise PbexpError(f"{folder} is in use by another pbexp-train process (pid {holder}); wait for it to "
                         "finish or choose another hydra.run.dir / hydra.sweep.dir") from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def main() -> None:
    try:
        cfg = _check_overrides(sys.argv[1:])
        sys.argv[1:] = _prepare_argv(sys.argv[1:])
        lock = _lock_output_dir(sys.argv[1:])  # noqa: F841 - released when the process exits
        sys.argv[1:] = _keep_provenance(sys.argv[1:], cfg)
    except PbexpError as e:
        print(f"pbexp-train: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    try:
        hydra_main()
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    # Run the copy imported as ``pbexp.train``, not this ``__main__`` one: launchers that pickle the
    # task function (joblib, submitit) can then pickle it by reference.
    from pbexp.train import main as _main

    _main()
