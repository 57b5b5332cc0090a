"""Graph recommenders that forget, from Python.

``unlearnrec`` trains BPR recommenders (most-popular, MF, LightGCN, SGL, SimGCL) on a user-item graph and
removes interactions, whole users or whole items with UnlearnRec (a pre-trained influence encoder plus a
little fine-tuning) or a baseline. The engine is the Rust library behind the ``unlearnrec`` command line;
checkpoints and unlearners are the CLI's own files.

Users and items are contiguous indices ``0..n_users`` / ``0..n_items``; the external ids of the source
files are in :attr:`Dataset.user_ids` and :attr:`Dataset.item_ids`.

Examples
--------
>>> import scipy.sparse as sp, unlearnrec as ur
>>> m = sp.random(200, 100, density=0.08, format="csr", random_state=0)
>>> ds = ur.Dataset.from_csr(m)                             # doctest: +SKIP
>>> model = ur.train(ds, model="lightgcn", dim=32, epochs=5)  # doctest: +SKIP
>>> ids, scores = model.recommend(0, k=10)                    # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

# candle (the engine's tensor library) runs its CPU ops on a spin-waiting thread pool of its own beside the
# rayon pool of our kernels (SpMM, Adam, ranking); on a small machine the two fight for the cores (training
# 1.5x slower on 2 cores), so candle runs single-threaded, as in the CLI, unless the user chose otherwise.
# The engine reads it once, at its first tensor operation.
os.environ.setdefault("CANDLE_NUM_THREADS", "1")

from . import _native  # noqa: E402
from ._native import (
    CheckpointMismatchError,
    DivergedError,
    InvalidCheckpointError,
    UnlearnrecError,
)

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse

__version__: str = _native.__version__

__all__ = [
    "CheckpointMismatchError",
    "Dataset",
    "DivergedError",
    "InvalidCheckpointError",
    "Model",
    "Unlearner",
    "UnlearnrecError",
    "__version__",
    "audit",
    "from_embeddings",
    "load",
    "load_unlearner",
    "method_names",
    "model_names",
    "pretrain",
    "train",
]

Callback = Callable[[dict[str, Any]], object]


def _json(config: Mapping[str, Any]) -> str:
    def default(x: object) -> object:
        if isinstance(x, np.generic):
            return x.item()
        raise ValueError(f"configuration value {x!r} is not a number, string, bool, list or dict")

    return json.dumps(dict(config), default=default)


def _index_array(values: object, what: str) -> np.ndarray:
    """A 1-D int64 array of indices; TypeError for non-integers, ValueError for another shape."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
        raise TypeError(f"{what} must be integer indices, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of indices, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _pairs_array(values: object, what: str = "pairs") -> np.ndarray:
    """An (n, 2) int64 array of (user, item) indices."""
    arr = np.asarray(values)
    if arr.size == 0:
        arr = arr.reshape(0, 2)
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
        raise TypeError(f"{what} must be integer indices, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{what} must have shape (n, 2), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _table(values: object, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind != "f":
        raise TypeError(f"{what} must be a float array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (rows, dim) array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _csr_pairs(matrix: object, what: str, shape: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int]]:
    """The nonzero (row, column) pairs of a scipy sparse matrix (or anything with ``tocoo``)."""
    if not hasattr(matrix, "tocoo"):
        raise TypeError(f"{what} must be a scipy.sparse matrix (CSR), got {type(matrix).__name__}")
    coo = matrix.tocoo()  # type: ignore[attr-defined]
    if shape is not None and tuple(coo.shape) != shape:
        raise ValueError(f"{what} has shape {coo.shape}, the training matrix {shape}")
    keep = coo.data != 0
    pairs = np.stack([coo.row[keep], coo.col[keep]], axis=1).astype(np.int64)
    return pairs, (int(coo.shape[0]), int(coo.shape[1]))


def _observer(
    callback: Callback | None, progress: bool, total: int | None, desc: str
) -> tuple[Callable[[str, str], None] | None, Callable[[], None]]:
    """The native callback (stage, record JSON) and a function closing the progress bar."""
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("progress=True needs tqdm (pip install tqdm)") from e
        bar = tqdm(total=total, desc=desc, unit="epoch")
    if callback is None and bar is None:
        return None, lambda: None

    def native(stage: str, record: str) -> None:
        info = json.loads(record)
        info["stage"] = stage
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{info.get('loss', float('nan')):.4f}")
        if callback is not None:
            callback(info)

    return native, (bar.close if bar is not None else lambda: None)


class Dataset:
    """Interactions over dense indices, split into train, optional validation and test, with external ids.

    Build one with :meth:`Dataset.load` (any format the CLI reads) or :meth:`Dataset.from_csr`.
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: _native.Dataset) -> None:
        self._inner = inner

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Dataset:
        """Read a dataset directory or file in any format the CLI reads.

        Parameters
        ----------
        path : str or path-like
            A LightGCN-format directory (``train.txt``, ``test.txt``), a delimited file (CSV, TSV, ``::``)
            or a RecBole ``.inter`` file; sources without a split get the CLI's default split.

        Raises
        ------
        FileNotFoundError, OSError
            The path cannot be read.
        ValueError
            A malformed file (path and line named).
        """
        return Dataset(_native.Dataset.load(os.fspath(path)))

    @staticmethod
    def from_csr(
        user_items: scipy.sparse.spmatrix | scipy.sparse.sparray,
        test: scipy.sparse.spmatrix | scipy.sparse.sparray | None = None,
        valid: scipy.sparse.spmatrix | scipy.sparse.sparray | None = None,
        user_ids: Sequence[str] | None = None,
        item_ids: Sequence[str] | None = None,
        name: str = "csr",
    ) -> Dataset:
        """A dataset from a sparse ``(n_users, n_items)`` matrix of training interactions.

        Parameters
        ----------
        user_items : scipy.sparse matrix
            The training split: every nonzero ``(u, i)`` is an interaction (values are ignored).
        test : scipy.sparse matrix, optional
            The test split, of the same shape (empty when omitted).
        valid : scipy.sparse matrix, optional
            A validation split for model selection; without one, training carves ``valid_ratio`` of each
            user's training interactions (seeded).
        user_ids, item_ids : sequence of str, optional
            External ids of the rows and columns (default: the indices as text).
        name : str
            The dataset's name (recorded in checkpoints).

        Raises
        ------
        TypeError
            ``user_items`` is not a sparse matrix.
        ValueError
            Shapes differ, a pair is in two splits, the training split is empty, or ids repeat.
        """
        train, shape = _csr_pairs(user_items, "user_items", None)
        empty = np.zeros((0, 2), dtype=np.int64)
        test_pairs = _csr_pairs(test, "test", shape)[0] if test is not None else empty
        valid_pairs = _csr_pairs(valid, "valid", shape)[0] if valid is not None else None
        return Dataset(
            _native.Dataset.from_pairs(
                name,
                shape[0],
                shape[1],
                train,
                test_pairs,
                valid_pairs,
                list(map(str, user_ids)) if user_ids is not None else None,
                list(map(str, item_ids)) if item_ids is not None else None,
            )
        )

    @staticmethod
    def from_pairs(
        n_users: int,
        n_items: int,
        train: object,
        test: object | None = None,
        valid: object | None = None,
        user_ids: Sequence[str] | None = None,
        item_ids: Sequence[str] | None = None,
        name: str = "pairs",
    ) -> Dataset:
        """A dataset from ``(n, 2)`` integer arrays of ``(user, item)`` indices per split.

        Raises
        ------
        TypeError
            Non-integer arrays.
        ValueError
            Arrays not of shape ``(n, 2)``, an empty training split, a pair in two splits.
        IndexError
            An index outside ``n_users`` / ``n_items``.
        """
        empty = np.zeros((0, 2), dtype=np.int64)
        return Dataset(
            _native.Dataset.from_pairs(
                name,
                int(n_users),
                int(n_items),
                _pairs_array(train, "train"),
                _pairs_array(test, "test") if test is not None else empty,
                _pairs_array(valid, "valid") if valid is not None else None,
                list(map(str, user_ids)) if user_ids is not None else None,
                list(map(str, item_ids)) if item_ids is not None else None,
            )
        )

    @property
    def name(self) -> str:
        """The dataset's name."""
        return self._inner.name

    @property
    def n_users(self) -> int:
        """The number of users."""
        return self._inner.n_users

    @property
    def n_items(self) -> int:
        """The number of items."""
        return self._inner.n_items

    @property
    def user_ids(self) -> list[str]:
        """External user ids, indexed by user index."""
        return self._inner.user_ids

    @property
    def item_ids(self) -> list[str]:
        """External item ids, indexed by item index."""
        return self._inner.item_ids

    @property
    def fingerprint(self) -> str:
        """The fingerprint that checkpoints trained on this dataset record."""
        return self._inner.fingerprint()

    def pairs(self, split: str = "train") -> np.ndarray:
        """The ``(n, 2)`` int64 ``(user, item)`` indices of a split (``train``, ``valid`` or ``test``)."""
        return self._inner.pairs(split)

    def _csr(self, split: str) -> scipy.sparse.csr_matrix:
        import scipy.sparse as sp

        p = self.pairs(split)
        data = np.ones(len(p), dtype=np.float32)
        return sp.csr_matrix((data, (p[:, 0], p[:, 1])), shape=(self.n_users, self.n_items))

    @property
    def user_items(self) -> scipy.sparse.csr_matrix:
        """The training split as a ``(n_users, n_items)`` float32 CSR matrix of ones (needs scipy)."""
        return self._csr("train")

    @property
    def test_user_items(self) -> scipy.sparse.csr_matrix:
        """The test split as a CSR matrix (needs scipy)."""
        return self._csr("test")

    def user_index(self, user_id: str) -> int:
        """The index of an external user id; KeyError when unknown."""
        return self._inner.user_index(str(user_id))

    def item_index(self, item_id: str) -> int:
        """The index of an external item id; KeyError when unknown."""
        return self._inner.item_index(str(item_id))

    def stats(self) -> dict[str, Any]:
        """Sizes, density and degree quantiles (``unlearnrec data stats --json``)."""
        out: dict[str, Any] = json.loads(self._inner.stats_json())
        return out

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, n_users={self.n_users}, n_items={self.n_items})"


class Unlearner:
    """UnlearnRec's influence encoder, pre-trained for one model (:func:`pretrain`)."""

    __slots__ = ("_inner",)

    def __init__(self, inner: _native.Unlearner) -> None:
        self._inner = inner

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the unlearner file (the CLI's ``pretrain --out`` format), atomically."""
        self._inner.save(os.fspath(path))

    def to_bytes(self) -> bytes:
        """The bytes :meth:`save` writes."""
        return self._inner.to_bytes()

    @staticmethod
    def from_bytes(data: bytes) -> Unlearner:
        """An unlearner from :meth:`to_bytes`' bytes."""
        return Unlearner(_native.Unlearner.from_bytes(bytes(data)))

    @property
    def sha256(self) -> str:
        """SHA-256 of the encoder's parameters (what checkpoints unlearned with it record)."""
        return self._inner.sha256()

    @property
    def meta(self) -> dict[str, Any]:
        """The unlearner's metadata: model, dataset, configuration and pre-training report."""
        out: dict[str, Any] = json.loads(self._inner.meta_json())
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (Unlearner.from_bytes, (self.to_bytes(),))

    def __repr__(self) -> str:
        return f"Unlearner(sha256={self.sha256[:12]}…)"


class Model:
    """A trained or unlearned model: the CLI's checkpoint (:func:`train`, :func:`load`)."""

    __slots__ = ("_emb", "_inner")

    def __init__(self, inner: _native.Model) -> None:
        self._inner = inner
        self._emb: tuple[np.ndarray, np.ndarray] | None = None

    # -- files ------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the checkpoint file (the CLI's format), atomically; the same model gives the same bytes."""
        self._inner.save(os.fspath(path))

    def to_bytes(self) -> bytes:
        """The bytes :meth:`save` writes (what a receipt's SHA-256 hashes)."""
        return self._inner.to_bytes()

    @staticmethod
    def from_bytes(data: bytes) -> Model:
        """A model from :meth:`to_bytes`' bytes."""
        return Model(_native.Model.from_bytes(bytes(data)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Model.from_bytes, (self.to_bytes(),))

    # -- description --------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """The model's name (``lightgcn``, ``mf``, ``sgl``, ``simgcl``, ``pop``)."""
        return self._inner.kind

    @property
    def n_users(self) -> int:
        """The number of users."""
        return self._inner.n_users

    @property
    def n_items(self) -> int:
        """The number of items."""
        return self._inner.n_items

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return self._inner.dim

    @property
    def user_ids(self) -> list[str]:
        """External user ids, indexed by user index."""
        return self._inner.user_ids

    @property
    def item_ids(self) -> list[str]:
        """External item ids, indexed by item index."""
        return self._inner.item_ids

    @property
    def meta(self) -> dict[str, Any]:
        """The checkpoint's metadata: model and training configuration, dataset, history, provenance."""
        out: dict[str, Any] = json.loads(self._inner.meta_json())
        return out

    @property
    def removed(self) -> np.ndarray:
        """The ``(n, 2)`` indices of every interaction forgotten so far."""
        return self._inner.removed()

    @property
    def edges(self) -> np.ndarray:
        """The ``(n, 2)`` training interactions the model propagates over."""
        return self._inner.edges()

    # -- use ---------------------------------------------------------------------------------------------
    def recommend(self, users: int | Iterable[int] | np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` unseen items.

        Parameters
        ----------
        users : int or 1-D array of int
            User indices.
        k : int
            Items per user.

        Returns
        -------
        ids : ndarray of int64
            Item indices, best first: shape ``(k,)`` for one user, ``(len(users), k)`` for an array (the rule
            of numpy indexing, as in implicit). With fewer than ``k`` unseen items the rows are padded with
            ``-1``; ``k`` larger than the number of items gives ``n_items`` columns. A user whose every
            interaction was forgotten is served nothing: a row of ``-1``. Items whose every interaction was
            forgotten are never recommended.
        scores : ndarray of float32
            Their scores (``-inf`` for padding).

        Raises
        ------
        TypeError
            Non-integer users.
        ValueError
            ``users`` not 0-D or 1-D, or ``k < 1``.
        IndexError
            A user index out of range.
        """
        if isinstance(users, (bool, np.bool_)):
            raise TypeError("users must be integer indices, got bool")
        k = int(k)
        if k < 1:
            raise ValueError("k must be at least 1")
        if isinstance(users, (int, np.integer)):
            ids, scores = self._inner.recommend(np.array([users], dtype=np.int64), k)
            return ids[0], scores[0]
        arr = np.asarray(users)
        if arr.ndim == 0:
            if arr.dtype.kind not in "iu":
                raise TypeError(f"users must be integer indices, got dtype {arr.dtype}")
            ids, scores = self._inner.recommend(arr.reshape(1).astype(np.int64), k)
            return ids[0], scores[0]
        return self._inner.recommend(_index_array(arr, "users"), k)

    def _embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        if self._emb is None:
            users, items = self._inner.final_embeddings()
            users.flags.writeable = False
            items.flags.writeable = False
            self._emb = (users, items)
        return self._emb

    @property
    def user_embeddings(self) -> np.ndarray:
        """Final (propagated) user embeddings, ``(n_users, dim)`` float32, read-only."""
        return self._embeddings()[0]

    @property
    def item_embeddings(self) -> np.ndarray:
        """Final (propagated) item embeddings, ``(n_items, dim)`` float32, read-only.

        ``user_embeddings @ item_embeddings.T`` are the scores :meth:`recommend` ranks.
        """
        return self._embeddings()[1]

    def base_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """The base tables ``E⁰`` (users, items) that training learns, before propagation (copies).

        Feeding them to :func:`from_embeddings` with the same dataset and configuration gives this model back.
        """
        return self._inner.base_embeddings()

    def evaluate(
        self,
        ds: Dataset,
        split: str = "test",
        ks: Sequence[int] = (20,),
        recall_denominator: str = "all",
    ) -> dict[str, float]:
        """Full-ranking metrics on a split, seen items filtered.

        Parameters
        ----------
        ds : Dataset
            The dataset the model was trained on.
        split : {"test", "valid"}
            Which split.
        ks : sequence of int
            Cut-offs.
        recall_denominator : {"all", "min_k"}
            ``|T_u|`` (the reference's) or ``min(|T_u|, K)``.

        Returns
        -------
        dict
            The keys of ``unlearnrec eval --json``: ``recall@K``, ``ndcg@K``, ``precision@K``, ``hit@K``,
            ``mrr@K`` for every K, ``users_evaluated`` and ``recall_denominator``.
        """
        out: dict[str, float] = json.loads(
            self._inner.evaluate(ds._inner, split, [int(x) for x in ks], recall_denominator)
        )
        return out

    def forget(
        self,
        ds: Dataset,
        unlearner: Unlearner | None = None,
        pairs: object | None = None,
        users: object | None = None,
        items: object | None = None,
        method: str = "unlearnrec",
        finetune_epochs: int | None = None,
        *,
        fast: bool = False,
        skip_missing: bool = False,
        callback: Callback | None = None,
        progress: bool = False,
        **finetune: Any,
    ) -> tuple[Model, dict[str, Any]]:
        """Forget interactions, users or items; the model itself is unchanged.

        Parameters
        ----------
        ds : Dataset
            The dataset the model was trained on.
        unlearner : Unlearner, optional
            The unlearner pre-trained for this model (required by ``method="unlearnrec"``).
        pairs : (n, 2) int array, optional
            ``(user, item)`` indices to forget.
        users, items : int, str or sequence of them, optional
            Users (items) all of whose interactions go: indices, or external ids as ``str``.
        method : str
            ``unlearnrec`` or a baseline (:func:`method_names`).
        finetune_epochs : int, optional
            UnlearnRec's fine-tuning epochs after the encoder pass (0: zero-shot); default 1, or 0 with
            ``fast``.
        fast : bool
            The CLI's ``--fast`` path (no fine-tuning, a quarter of the encoder's change, short calibration).
        skip_missing : bool
            Skip pairs the model does not hold instead of failing.
        callback : callable, optional
            Called with a dict per fine-tuning epoch.
        progress : bool
            Show a tqdm bar.
        **finetune
            Any other key of the CLI's ``[finetune]`` table.

        Returns
        -------
        model : Model
            The new model.
        receipt : dict
            The CLI's receipt: ``request_id``, hashes of the request and of both checkpoint files, counts,
            forgetting figures, validation metrics.

        Raises
        ------
        ValueError
            An empty request, pairs the model does not hold, an unknown method or configuration key, a
            missing unlearner.
        KeyError
            An unknown external id.
        IndexError
            An index out of range.
        CheckpointMismatchError
            ``ds`` or ``unlearner`` belong to another model or dataset.
        """
        user_list = self._ids(users, self.user_ids, "users")
        item_list = self._ids(items, self.item_ids, "items")
        pairs_arr = _pairs_array(pairs) if pairs is not None else None
        config = dict(finetune)
        if finetune_epochs is not None:
            config["epochs"] = int(finetune_epochs)
        native_cb, close = _observer(callback, progress, config.get("epochs"), "forget")
        try:
            inner, receipt = self._inner.forget(
                ds._inner,
                method,
                unlearner._inner if unlearner is not None else None,
                pairs_arr,
                user_list,
                item_list,
                _json(config),
                fast,
                skip_missing,
                native_cb,
            )
        finally:
            close()
        return Model(inner), json.loads(receipt)

    @staticmethod
    def _ids(values: object, ids: list[str], what: str) -> list[str]:
        if values is None:
            return []
        if isinstance(values, (str, int, np.integer)):
            values = [values]
        out = []
        for v in values:  # type: ignore[attr-defined]
            if isinstance(v, str):
                out.append(v)
            elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
                if not 0 <= int(v) < len(ids):
                    raise IndexError(f"{what[:-1]} index {v} is out of range (there are {len(ids)})")
                out.append(ids[int(v)])
            else:
                raise TypeError(f"{what} must be indices (int) or external ids (str), got {type(v).__name__}")
        return out

    def __repr__(self) -> str:
        return f"Model({self.kind!r}, n_users={self.n_users}, n_items={self.n_items}, dim={self.dim})"


def train(
    ds: Dataset,
    model: str = "lightgcn",
    dim: int = 64,
    epochs: int = 20,
    seed: int = 1234,
    *,
    callback: Callback | None = None,
    progress: bool = False,
    **config: Any,
) -> Model:
    """Train a model on ``ds``'s training split (model selection on validation only).

    Parameters
    ----------
    ds : Dataset
        The data.
    model : str
        ``lightgcn``, ``sgl``, ``simgcl``, ``mf`` or ``pop`` (:func:`model_names`).
    dim : int
        Embedding dimension.
    epochs : int
        Epochs at most (early stopping on validation, ``patience``).
    seed : int
        Seed of initialisation, sampling and augmentation.
    callback : callable, optional
        Called after every epoch with a dict: ``stage``, ``epoch`` (0-based), ``loss``, ``train_secs`` and
        ``valid`` (metrics, on validation epochs). An exception it raises stops training and propagates.
    progress : bool
        Show a tqdm progress bar (needs tqdm).
    **config
        Any key of the CLI's ``[model]`` (``layers``, ``reg``, ``ssl_reg``, ``ssl_temp``, ``eps``,
        ``keep_rate``, ``combine``, …) or ``[train]`` table (``batch_size``, ``lr``, ``eval_every``,
        ``patience``, ``valid_ratio``, ``max_steps_per_epoch``, …).

    Returns
    -------
    Model

    Raises
    ------
    ValueError
        An unknown key (named) or an invalid value, an empty training split.
    DivergedError
        A non-finite loss.
    KeyboardInterrupt
        Ctrl-C (checked at every step).
    """
    full = {"kind": model, "dim": dim, "epochs": epochs, "seed": seed, **config}
    native_cb, close = _observer(callback, progress, int(full["epochs"]), f"train {model}")
    try:
        return Model(_native.train(ds._inner, _json(full), native_cb))
    finally:
        close()


def pretrain(
    model: Model,
    ds: Dataset,
    epochs: int | None = None,
    seed: int | None = None,
    *,
    callback: Callback | None = None,
    progress: bool = False,
    **config: Any,
) -> Unlearner:
    """Pre-train UnlearnRec's influence encoder for ``model`` (once per model).

    Parameters
    ----------
    model : Model
        A trained model (not ``pop``).
    ds : Dataset
        The dataset it was trained on.
    epochs, seed : int, optional
        Override the CLI's ``[pretrain]`` defaults.
    callback, progress
        As in :func:`train`.
    **config
        Any other key of the ``[pretrain]`` table (``drop_rate``, ``batch_size``, ``lr``,
        ``max_steps_per_epoch``, …).

    Raises
    ------
    ValueError
        An unknown key or invalid value, a model without embeddings.
    CheckpointMismatchError
        ``ds`` is not the model's dataset.
    """
    full = dict(config)
    if epochs is not None:
        full["epochs"] = epochs
    if seed is not None:
        full["seed"] = seed
    native_cb, close = _observer(callback, progress, full.get("epochs"), "pretrain")
    try:
        return Unlearner(_native.pretrain(model._inner, ds._inner, _json(full), native_cb))
    finally:
        close()


def audit(
    model: Model,
    ds: Dataset,
    removed: object | None = None,
    original: Model | None = None,
    reference: Model | None = None,
    **config: Any,
) -> dict[str, Any]:
    """Audit how well ``model`` forgot ``removed`` (``unlearnrec audit --json``).

    Parameters
    ----------
    model : Model
        The model to audit, usually an unlearned one.
    ds : Dataset
        Its dataset (the test split gives the non-members).
    removed : (n, 2) int array, optional
        The forgotten ``(user, item)`` indices; default: everything ``model`` has forgotten.
    original : Model, optional
        The model before unlearning (adds the difference attackers and the forgetting figures).
    reference : Model, optional
        An exact retrain without the request (its figures and the top-K agreement).
    **config
        Audit settings: ``k``, ``seed``, ``agreement_users``, ``max_agreement_users``, ``attack``.

    Returns
    -------
    dict
        The report, with the keys of ``unlearnrec audit --json``.
    """
    pairs = _pairs_array(removed, "removed") if removed is not None else None
    out: dict[str, Any] = json.loads(
        _native.audit(
            model._inner,
            ds._inner,
            pairs,
            original._inner if original is not None else None,
            reference._inner if reference is not None else None,
            _json(config),
        )
    )
    return out


def from_embeddings(
    ds: Dataset,
    user_emb: np.ndarray,
    item_emb: np.ndarray,
    model: str = "lightgcn",
    layers: int = 3,
    **config: Any,
) -> Model:
    """A model of base embeddings ``E⁰`` trained elsewhere, on ``ds``'s training graph.

    Parameters
    ----------
    ds : Dataset
        The data the embeddings were trained on; rows follow its user and item indices.
    user_emb : (n_users, dim) float array
    item_emb : (n_items, dim) float array
        The base (layer-0) tables, e.g. a PyTorch LightGCN's ``embedding_user.weight`` and
        ``embedding_item.weight``; converted to float32.
    model : str
        The backbone that propagates them (``lightgcn``, ``sgl``, ``simgcl``, ``mf``).
    layers : int
        Propagation layers.
    **config
        Other ``[model]`` keys (``combine``: ``sum``, ``mean`` — the LightGCN paper's — or
        ``mean_skip_first``) and ``[train]`` keys: ``valid_ratio`` (0 keeps every training edge in the
        graph, as a model trained on the whole split saw it) and ``seed`` choose the validation edges
        exactly as :func:`train` would; retraining baselines use the rest.

    Raises
    ------
    TypeError
        Non-float tables.
    ValueError
        Tables of the wrong shape or with non-finite values, an unknown key.
    """
    users = _table(user_emb, "user_emb")
    items = _table(item_emb, "item_emb")
    if users.shape[1] != items.shape[1]:
        raise ValueError(f"user_emb has {users.shape[1]} columns, item_emb {items.shape[1]}")
    full = {"kind": model, "layers": layers, **config}
    return Model(_native.from_embeddings(ds._inner, users, items, _json(full)))


def load(path: str | os.PathLike[str]) -> Model:
    """Read a checkpoint written by :meth:`Model.save` or the CLI (``train``, ``unlearn``, ``import``)."""
    return Model(_native.Model.load(os.fspath(path)))


def load_unlearner(path: str | os.PathLike[str]) -> Unlearner:
    """Read an unlearner written by :meth:`Unlearner.save` or ``unlearnrec pretrain``."""
    return Unlearner(_native.Unlearner.load(os.fspath(path)))


def method_names() -> list[str]:
    """The forgetting methods :meth:`Model.forget` accepts."""
    return list(_native.method_names())


def model_names() -> list[str]:
    """The models :func:`train` accepts."""
    return list(_native.model_names())
