"""The package and the `unlearnrec` binary read and write the same files and agree on receipts and metrics.

Skipped with a reason when no binary is built (`cargo build --release`, or UNLEARNREC_CLI).
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL

import unlearnrec as ur


def run(cli_bin: Path, *args: object) -> str:
    out = subprocess.run(
        [str(cli_bin), "--quiet", *map(str, args)], check=True, capture_output=True, text=True, timeout=300
    )
    return out.stdout


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A minimal reader (f32/u32 tensors) so that the tests need no extra package."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": np.float32, "U32": np.uint32}[t["dtype"]]
        lo, hi = t["data_offsets"]
        out[name] = np.frombuffer(data[lo:hi], dtype=dtype).reshape(t["shape"])
    return out


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_checkpoints_are_interchangeable(cli_bin: Path, ds: ur.Dataset, data_dir: Path, model: ur.Model, tmp_path: Path) -> None:
    # Python -> CLI: the CLI's export of a Python checkpoint has the package's embeddings.
    model.save(tmp_path / "py.safetensors")
    run(cli_bin, "export", "--model", tmp_path / "py.safetensors", "--out", tmp_path / "py-emb.safetensors")
    exported = read_safetensors(tmp_path / "py-emb.safetensors")
    np.testing.assert_array_equal(exported["user_embeddings"], model.user_embeddings)
    np.testing.assert_array_equal(exported["item_embeddings"], model.item_embeddings)
    # CLI -> Python.
    run(cli_bin, "train", "--data", data_dir, "--model", "mf", "--dim", 8, "--epochs", 2, "--batch-size", 256,
        "--out", tmp_path / "cli.safetensors")
    run(cli_bin, "export", "--model", tmp_path / "cli.safetensors", "--out", tmp_path / "cli-emb.safetensors")
    loaded = ur.load(tmp_path / "cli.safetensors")
    exported = read_safetensors(tmp_path / "cli-emb.safetensors")
    np.testing.assert_array_equal(exported["user_embeddings"], loaded.user_embeddings)
    np.testing.assert_array_equal(exported["item_embeddings"], loaded.item_embeddings)
    assert loaded.to_bytes() == (tmp_path / "cli.safetensors").read_bytes()
    # Metrics: the same keys and values as `eval --json`.
    cli_metrics = json.loads(run(cli_bin, "eval", "--model", tmp_path / "cli.safetensors", "--data", data_dir,
                                 "--ks", "10,20", "--json"))
    assert loaded.evaluate(ds, ks=(10, 20)) == cli_metrics
    # Recommendations agree with `recommend --json` (external ids).
    rec = json.loads(run(cli_bin, "recommend", "--model", tmp_path / "cli.safetensors", "--user", "5", "-k", 5, "--json"))
    ids, _ = loaded.recommend(ds.user_index("5"), k=5)
    assert [loaded.item_ids[i] for i in ids] == [r["item"] for r in rec["items"]]


def test_receipts_match_the_cli(cli_bin: Path, ds: ur.Dataset, data_dir: Path, model: ur.Model,
                                unlearner: ur.Unlearner, tmp_path: Path) -> None:
    model.save(tmp_path / "m.safetensors")
    unlearner.save(tmp_path / "u.safetensors")
    run(cli_bin, "unlearn", "--model", tmp_path / "m.safetensors", "--unlearner", tmp_path / "u.safetensors",
        "--data", data_dir, "--user", "7", "--out", tmp_path / "cli-out.safetensors",
        "--receipt", tmp_path / "receipt.json")
    cli_receipt = json.loads((tmp_path / "receipt.json").read_text())
    new, receipt = model.forget(ds, unlearner=ur.load_unlearner(tmp_path / "u.safetensors"), users=["7"])
    for key in ("request_id", "request_sha256", "checkpoint_before_sha256", "edges", "users", "items", "method"):
        assert receipt[key] == cli_receipt[key], key
    # The engine is deterministic for a seed and thread count: the same new checkpoint, byte for byte.
    assert receipt["checkpoint_after_sha256"] == cli_receipt["checkpoint_after_sha256"]
    assert new.to_bytes() == (tmp_path / "cli-out.safetensors").read_bytes()
    # The audit of the CLI equals the package's.
    pairs = new.removed
    (tmp_path / "req.csv").write_text("user,item\n" + "".join(
        f"{new.user_ids[u]},{new.item_ids[i]}\n" for u, i in pairs))
    cli_audit = json.loads(run(cli_bin, "audit", "--model", tmp_path / "cli-out.safetensors", "--data", data_dir,
                               "--request", tmp_path / "req.csv", "--original", tmp_path / "m.safetensors", "--json"))
    assert ur.audit(new, ds, removed=pairs, original=model) == cli_audit


def test_cli_import_matches_from_embeddings(cli_bin: Path, ds: ur.Dataset, data_dir: Path, model: ur.Model,
                                            tmp_path: Path) -> None:
    users, items = model.base_embeddings()
    # Rows by the LightGCN convention: row r is external id r.
    order_u = np.argsort([int(x) for x in ds.user_ids])
    order_i = np.argsort([int(x) for x in ds.item_ids])
    write_safetensors(tmp_path / "e0.safetensors", {"user_embedding": users[order_u], "item_embedding": items[order_i]})
    run(cli_bin, "import", "--data", data_dir, "--embeddings", tmp_path / "e0.safetensors", "--layers", SMALL["layers"],
        "--carve-valid", 0.05, "--seed", 1, "--out", tmp_path / "imported.safetensors")
    imported = ur.load(tmp_path / "imported.safetensors")
    np.testing.assert_array_equal(imported.user_embeddings, model.user_embeddings)
    same = ur.from_embeddings(ds, users, items, layers=SMALL["layers"], valid_ratio=0.05, seed=1)
    assert same.to_bytes() == imported.to_bytes()
