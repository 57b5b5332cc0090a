"""The Python API on small generated data: every model, forgetting, files, errors."""

from __future__ import annotations

import _thread
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import N_ITEMS, N_USERS, SMALL

import unlearnrec as ur


def test_from_csr_round_trips_the_splits(pairs: tuple[np.ndarray, np.ndarray]) -> None:
    train, test = pairs
    m = sp.csr_matrix((np.ones(len(train)), (train[:, 0], train[:, 1])), shape=(N_USERS, N_ITEMS))
    t = sp.csr_matrix((np.ones(len(test)), (test[:, 0], test[:, 1])), shape=(N_USERS, N_ITEMS))
    ids = [f"u{u}" for u in range(N_USERS)]
    ds = ur.Dataset.from_csr(m, test=t, user_ids=ids)
    assert (ds.n_users, ds.n_items) == (N_USERS, N_ITEMS)
    assert (ds.user_items != m).nnz == 0
    assert ds.test_user_items.nnz == len(test)
    assert ds.user_ids[3] == "u3" and ds.user_index("u3") == 3 and ds.item_ids[5] == "5"
    with pytest.raises(KeyError):
        ds.user_index("nobody")
    with pytest.raises(TypeError):
        ur.Dataset.from_csr(m.toarray())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ur.Dataset.from_csr(m, test=sp.csr_matrix((3, 3)))


@pytest.mark.parametrize("kind", ur.model_names())
def test_every_model_trains_and_recommends(ds: ur.Dataset, kind: str) -> None:
    model = ur.train(ds, model=kind, seed=2, **SMALL)
    assert model.kind == kind
    ids, scores = model.recommend(0, k=5)
    assert ids.shape == (5,) and scores.shape == (5,) and ids.dtype == np.int64 and scores.dtype == np.float32
    assert np.all(np.diff(scores) <= 0)
    seen = set(ds.pairs("train")[ds.pairs("train")[:, 0] == 0, 1])
    assert not seen & set(ids.tolist())
    many, many_scores = model.recommend(np.array([0, 1, 2]), k=5)
    assert many.shape == (3, 5) and many_scores.shape == (3, 5)
    np.testing.assert_array_equal(many[0], ids)
    assert model.recommend([4, 5], k=3)[0].shape == (2, 3)
    # k beyond the catalogue: every unseen item, padded with -1.
    wide, wide_scores = model.recommend(0, k=N_ITEMS + 10)
    assert wide.shape == (N_ITEMS,) and (wide == -1).sum() >= len(seen)
    assert np.all(np.isneginf(wide_scores[wide == -1]))
    u, i = model.user_embeddings, model.item_embeddings
    assert u.dtype == np.float32 and u.shape[0] == N_USERS and i.shape[0] == N_ITEMS
    assert not u.flags.writeable
    with pytest.raises(ValueError):
        u[0, 0] = 1.0
    # The scores are those of the embeddings.
    np.testing.assert_allclose(scores, (u[0] @ i.T)[ids], rtol=1e-4, atol=1e-5)


def test_evaluate_has_the_cli_keys(model: ur.Model, ds: ur.Dataset) -> None:
    m = model.evaluate(ds, ks=(10, 20))
    for key in ("recall@10", "ndcg@20", "precision@20", "hit@10", "mrr@20", "users_evaluated"):
        assert key in m
    assert m["recall_denominator"] == "all"
    assert 0.0 <= m["recall@20"] <= 1.0
    assert model.evaluate(ds, split="valid")["users_evaluated"] > 0
    with pytest.raises(ValueError):
        model.evaluate(ds, split="bogus")


def test_forgotten_user_stays_forgotten(model: ur.Model, unlearner: ur.Unlearner, ds: ur.Dataset) -> None:
    new, receipt = model.forget(ds, unlearner=unlearner, users=[7])
    assert receipt["users"] == 1 and receipt["edges"] == int((ds.pairs("train")[:, 0] == 7).sum())
    assert not np.any(new.edges[:, 0] == 7)
    # An erased user is served nothing (the CLI refuses it), alone or in a batch.
    ids, scores = new.recommend(7, k=5)
    assert np.all(ids == -1) and np.all(np.isneginf(scores))
    batch, _ = new.recommend([6, 7], k=5)
    assert np.all(batch[1] == -1) and np.all(batch[0] >= 0)
    assert set(map(tuple, new.removed.tolist())) == {(7, int(i)) for i in ds.pairs("train")[ds.pairs("train")[:, 0] == 7, 1]}
    # A later request forgets more; user 7's interactions do not come back.
    newer, _ = new.forget(ds, unlearner=unlearner, users=["8"], finetune_epochs=0)
    assert not np.any(newer.edges[:, 0] == 7) and not np.any(newer.edges[:, 0] == 8)
    assert {7, 8} <= set(newer.removed[:, 0].tolist())
    # The original model is unchanged; the audit sees the request.
    assert np.any(model.edges[:, 0] == 7)
    report = ur.audit(new, ds, original=model)
    assert report["removed"] == len(new.removed) and "mia" in report and "rank" in report
    # Pairs and items too, by index or external id.
    p = ds.pairs("train")[:3]
    by_pairs, r = model.forget(ds, unlearner=unlearner, pairs=p, finetune_epochs=0)
    assert r["edges"] == 3 and len(by_pairs.removed) == 3
    _, r = model.forget(ds, method="retrain", items=[ds.item_ids[0]])
    assert r["method"] == "retrain" and r["items"] == 1


def test_forget_errors(model: ur.Model, unlearner: ur.Unlearner, ds: ur.Dataset) -> None:
    with pytest.raises(KeyError):
        model.forget(ds, unlearner=unlearner, users=["nobody"])
    with pytest.raises(IndexError):
        model.forget(ds, unlearner=unlearner, users=[N_USERS])
    with pytest.raises(ValueError, match="unlearner"):
        model.forget(ds, users=[1])
    with pytest.raises(ValueError, match="bogus"):
        model.forget(ds, unlearner=unlearner, users=[1], method="bogus")
    with pytest.raises(ValueError):
        model.forget(ds, unlearner=unlearner)
    with pytest.raises(ValueError, match="nonsense"):
        model.forget(ds, unlearner=unlearner, users=[1], nonsense=3)
    other = ur.Dataset.from_pairs(N_USERS, N_ITEMS, ds.pairs("train")[:-5], ds.pairs("test"))
    with pytest.raises(ur.CheckpointMismatchError):
        model.forget(other, unlearner=unlearner, users=[1])
    with pytest.raises(ur.UnlearnrecError):
        ur.pretrain(model, other)


def test_bad_inputs_raise_instead_of_crashing(model: ur.Model, ds: ur.Dataset, tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        model.recommend(np.array([0.5, 1.0]))
    with pytest.raises(TypeError):
        model.recommend("7")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        model.recommend(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(IndexError):
        model.recommend(N_USERS)
    with pytest.raises(IndexError):
        model.recommend([-1])
    with pytest.raises(ValueError):
        model.recommend(0, k=0)
    with pytest.raises(ValueError, match="bogus_key"):
        ur.train(ds, bogus_key=1)
    with pytest.raises(ValueError, match="lr"):
        ur.train(ds, lr="fast")
    with pytest.raises(ValueError):
        ur.train(ds, model="no-such-model")
    with pytest.raises(ValueError):
        ur.train(ds, epochs=0)
    with pytest.raises(FileNotFoundError):
        ur.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        ur.load(tmp_path / "junk.safetensors")
    with pytest.raises(OSError):
        ur.Dataset.load(tmp_path / "nowhere")
    with pytest.raises(TypeError):
        ur.from_embeddings(ds, np.zeros((N_USERS, 4), dtype=np.int32), np.zeros((N_ITEMS, 4), dtype=np.int32))
    with pytest.raises(ValueError):
        ur.from_embeddings(ds, np.zeros((N_USERS - 1, 4)), np.zeros((N_ITEMS, 4)))
    with pytest.raises(ValueError):
        ur.from_embeddings(ds, np.zeros(N_USERS * 4), np.zeros((N_ITEMS, 4)))
    bad = np.zeros((N_USERS, 4), dtype=np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        ur.from_embeddings(ds, bad, np.zeros((N_ITEMS, 4)))
    with pytest.raises(ValueError):
        ur.Dataset.from_pairs(3, 3, np.array([[0, 1, 2]]))
    with pytest.raises(IndexError):
        ur.Dataset.from_pairs(3, 3, np.array([[0, 5]]))
    with pytest.raises(TypeError):
        ur.Dataset.from_pairs(3, 3, np.array([[0.0, 1.0]]))
    # The native module refuses wrong dtypes itself, too.
    with pytest.raises(TypeError):
        model._inner.recommend(np.array([0], dtype=np.float64), 3)


def test_from_embeddings_reproduces_the_model(model: ur.Model, ds: ur.Dataset) -> None:
    users, items = model.base_embeddings()
    back = ur.from_embeddings(ds, users, items, model="lightgcn", layers=2, seed=1)
    np.testing.assert_array_equal(back.user_embeddings, model.user_embeddings)
    np.testing.assert_array_equal(back.item_embeddings, model.item_embeddings)
    everyone = np.arange(N_USERS)
    np.testing.assert_array_equal(back.recommend(everyone, 10)[0], model.recommend(everyone, 10)[0])
    # float64 tables are accepted (converted), and the imported model can be unlearned.
    imported = ur.from_embeddings(ds, users.astype(np.float64), items, layers=2, valid_ratio=0.0)
    assert len(imported.edges) == len(ds.pairs("train"))
    un = ur.pretrain(imported, ds, epochs=1, max_steps_per_epoch=2)
    new, receipt = imported.forget(ds, unlearner=un, users=[0], finetune_epochs=0)
    assert receipt["users"] == 1 and not np.any(new.edges[:, 0] == 0)


def test_pickle_and_files_round_trip(model: ur.Model, unlearner: ur.Unlearner, tmp_path: Path) -> None:
    back = pickle.loads(pickle.dumps(model))
    assert back.to_bytes() == model.to_bytes()
    np.testing.assert_array_equal(back.user_embeddings, model.user_embeddings)
    model.save(tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == model.to_bytes()
    assert ur.load(tmp_path / "m.safetensors").to_bytes() == model.to_bytes()
    un = pickle.loads(pickle.dumps(unlearner))
    assert un.sha256 == unlearner.sha256
    unlearner.save(tmp_path / "u.safetensors")
    assert ur.load_unlearner(tmp_path / "u.safetensors").sha256 == unlearner.sha256
    assert model.meta["model"]["kind"] == "lightgcn"


def test_callback_reports_epochs_and_can_stop_training(ds: ur.Dataset) -> None:
    seen: list[dict] = []
    ur.train(ds, callback=seen.append, **{**SMALL, "epochs": 2})
    assert [r["epoch"] for r in seen] == [0, 1] and seen[0]["stage"] == "train" and "loss" in seen[0]

    class Stop(Exception):
        pass

    def stop(record: dict) -> None:
        raise Stop(record["epoch"])

    with pytest.raises(Stop):
        ur.train(ds, callback=stop, **SMALL)


def test_ctrl_c_interrupts_training(ds: ur.Dataset) -> None:
    # A process started in the background by a non-interactive shell inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: install it for the test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            ur.train(ds, epochs=100_000, dim=16, batch_size=64, patience=0)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - start < 30


def test_training_releases_the_gil(ds: ur.Dataset) -> None:
    ticks = 0
    done = threading.Event()

    def work() -> None:
        ur.train(ds, **{**SMALL, "epochs": 60, "batch_size": 32, "patience": 0})
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    assert ticks > 5


def test_progress_bar_and_stage_callbacks(model: ur.Model, unlearner: ur.Unlearner, ds: ur.Dataset) -> None:
    stages: list[str] = []
    ur.pretrain(model, ds, epochs=1, max_steps_per_epoch=2, callback=lambda r: stages.append(r["stage"]))
    model.forget(ds, unlearner=unlearner, users=[3], callback=lambda r: stages.append(r["stage"]))
    assert stages[0] == "pretrain" and stages[-1] == "forget"
    pytest.importorskip("tqdm")
    assert ur.train(ds, progress=True, **{**SMALL, "epochs": 2}).kind == "lightgcn"


def test_candle_runs_single_threaded_unless_the_user_chose() -> None:
    # candle's spin-waiting pool beside rayon's would fight for the cores; the package sets the default
    # before the engine's first tensor operation and leaves a user's choice alone.
    code = "import os, unlearnrec; print(os.environ['CANDLE_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "CANDLE_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "CANDLE_NUM_THREADS": "3"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
