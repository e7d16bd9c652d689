"""Time the IMDB data module on the real 50k reviews: cold (read + tokenise + vocab + tensors, cache
written into a fresh temp dir) and warm (the same call again, served from that cache).

    .venv/bin/python benches/imdb_load.py [DATA_ROOT]

DATA_ROOT holds imdb/aclImdb_v1.tar.gz (default: $PBEXP_DATA_MIRROR, else /work/shared/data). The other
settings are configs/dataset/imdb.yaml's, as pbexp-train uses them.
Goal on the 2-core dev box: cold <= 10 s, warm <= 1 s. Wall time depends on what else runs on the
box, so the load average and the CPU seconds used (this process + its tokeniser workers) are printed too.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir

from pbexp.config import CONFIG_DIR, instantiate


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    root = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PBEXP_DATA_MIRROR", "/work/shared/data")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        dataset = compose(config_name="train", overrides=["dataset=imdb"]).dataset  # the defaults pbexp-train uses
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cache_dir:
        t, c = time.perf_counter(), cpu_seconds()
        cold = instantiate(dataset, root=root, cache_dir=cache_dir)
        cold_s, cold_cpu = time.perf_counter() - t, cpu_seconds() - c

        t, c = time.perf_counter(), cpu_seconds()
        warm = instantiate(dataset, root=root, cache_dir=cache_dir)
        warm_s, warm_cpu = time.perf_counter() - t, cpu_seconds() - c

    for split in ("train", "valid", "test"):
        assert all(torch.equal(a, b) for a, b in zip(cold.split(split), warm.split(split))), split
    assert cold.vocab.itos == warm.vocab.itos

    lengths = torch.cat([(x != cold.pad_idx).sum(1) for x in (cold.train_x, cold.valid_x, cold.test_x)]).float()
    unk = sum(int((x == 1).sum()) for x in (cold.valid_x, cold.test_x))
    kept = sum(int((x != cold.pad_idx).sum()) for x in (cold.valid_x, cold.test_x))
    print(f"{os.cpu_count()} cores, load average {load:.1f} at start")
    print(f"cold (read + tokenise + vocab + tensors + write cache): {cold_s:.2f} s wall, {cold_cpu:.2f} s CPU")
    print(f"warm (from cache):                                    {warm_s:.2f} s wall, {warm_cpu:.2f} s CPU")
    print(
        f"vocab {len(cold.vocab)} (incl. <pad>, <unk>); train/valid/test "
        f"{len(cold.train_y)}/{len(cold.valid_y)}/{len(cold.test_y)}; max_len {cold.max_len}"
    )
    print(
        f"kept tokens per review: mean {lengths.mean():.0f}, median {lengths.median():.0f}, "
        f"min {lengths.min():.0f}, {100 * (lengths == cold.max_len).float().mean():.0f}% fill max_len; "
        f"<unk> share in valid+test {100 * unk / kept:.1f}%"
    )


if __name__ == "__main__":
    main()
