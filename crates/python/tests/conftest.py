"""Shared fixtures: a small seeded dataset with community structure, generated here (no data files)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import unlearnrec as ur

REPO = Path(__file__).resolve().parents[3]

N_USERS, N_ITEMS = 120, 80


def synthetic_pairs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) pairs: four communities of users, each preferring a quarter of the items."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for u in range(N_USERS):
        group = u % 4
        liked = np.arange(group * 20, group * 20 + 20)
        others = np.setdiff1d(np.arange(N_ITEMS), liked)
        items = np.concatenate([rng.choice(liked, 9, replace=False), rng.choice(others, 2, replace=False)])
        rng.shuffle(items)
        test.append((u, items[0]))
        train.extend((u, i) for i in items[1:])
    return np.array(train, dtype=np.int64), np.array(test, dtype=np.int64)


def write_lightgcn(directory: Path, train: np.ndarray, test: np.ndarray) -> None:
    """The LightGCN text format the CLI reads: one line per user, `user item item ...`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train.txt", train), ("test.txt", test)):
        lines = []
        for u in range(N_USERS):
            items = sorted(int(i) for i in pairs[pairs[:, 0] == u, 1])
            if items:
                lines.append(" ".join(map(str, [u, *items])))
        (directory / name).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_pairs()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory, pairs: tuple[np.ndarray, np.ndarray]) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_lightgcn(d, *pairs)
    return d


@pytest.fixture(scope="session")
def ds(data_dir: Path) -> ur.Dataset:
    return ur.Dataset.load(data_dir)


SMALL = dict(dim=16, epochs=3, batch_size=256, layers=2)


@pytest.fixture(scope="session")
def model(ds: ur.Dataset) -> ur.Model:
    return ur.train(ds, model="lightgcn", seed=1, **SMALL)


@pytest.fixture(scope="session")
def unlearner(model: ur.Model, ds: ur.Dataset) -> ur.Unlearner:
    return ur.pretrain(model, ds, epochs=1, seed=1, max_steps_per_epoch=3, batch_size=256)


def cli() -> Path | None:
    """The built `unlearnrec` binary: $UNLEARNREC_CLI, target/release/unlearnrec or the one on PATH."""
    env = os.environ.get("UNLEARNREC_CLI")
    if env:
        return Path(env)
    for p in (REPO / "target" / "release" / "unlearnrec",):
        if p.is_file():
            return p
    found = shutil.which("unlearnrec")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def cli_bin() -> Path:
    path = cli()
    if path is None:
        pytest.skip("no unlearnrec binary: build it with `cargo build --release` or set UNLEARNREC_CLI")
    return path
