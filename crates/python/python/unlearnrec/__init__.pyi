# Hand-written stubs of the public API, checked against the built package by `python -m mypy.stubtest unlearnrec`.
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

# scipy ships no type information: sparse matrices are `Any` here (anything with `tocoo`, as at run time).

__version__: str
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

class UnlearnrecError(Exception): ...
class DivergedError(UnlearnrecError): ...
class CheckpointMismatchError(UnlearnrecError): ...
class InvalidCheckpointError(UnlearnrecError): ...

class Dataset:
    def __init__(self, inner: Any) -> None: ...
    @staticmethod
    def load(path: str | os.PathLike[str]) -> Dataset: ...
    @staticmethod
    def from_csr(
        user_items: Any,
        test: Any | None = None,
        valid: Any | None = None,
        user_ids: Sequence[str] | None = None,
        item_ids: Sequence[str] | None = None,
        name: str = "csr",
    ) -> Dataset: ...
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
    ) -> Dataset: ...
    @property
    def name(self) -> str: ...
    @property
    def n_users(self) -> int: ...
    @property
    def n_items(self) -> int: ...
    @property
    def user_ids(self) -> list[str]: ...
    @property
    def item_ids(self) -> list[str]: ...
    @property
    def fingerprint(self) -> str: ...
    def pairs(self, split: str = "train") -> np.ndarray: ...
    @property
    def user_items(self) -> Any: ...
    @property
    def test_user_items(self) -> Any: ...
    def user_index(self, user_id: str) -> int: ...
    def item_index(self, item_id: str) -> int: ...
    def stats(self) -> dict[str, Any]: ...

class Unlearner:
    def __init__(self, inner: Any) -> None: ...
    def save(self, path: str | os.PathLike[str]) -> None: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> Unlearner: ...
    @property
    def sha256(self) -> str: ...
    @property
    def meta(self) -> dict[str, Any]: ...
    def __reduce__(self) -> tuple[Any, ...]: ...

class Model:
    def __init__(self, inner: Any) -> None: ...
    def save(self, path: str | os.PathLike[str]) -> None: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> Model: ...
    def __reduce__(self) -> tuple[Any, ...]: ...
    @property
    def kind(self) -> str: ...
    @property
    def n_users(self) -> int: ...
    @property
    def n_items(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def user_ids(self) -> list[str]: ...
    @property
    def item_ids(self) -> list[str]: ...
    @property
    def meta(self) -> dict[str, Any]: ...
    @property
    def removed(self) -> np.ndarray: ...
    @property
    def edges(self) -> np.ndarray: ...
    def recommend(self, users: int | Iterable[int] | np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]: ...
    @property
    def user_embeddings(self) -> np.ndarray: ...
    @property
    def item_embeddings(self) -> np.ndarray: ...
    def base_embeddings(self) -> tuple[np.ndarray, np.ndarray]: ...
    def evaluate(
        self,
        ds: Dataset,
        split: str = "test",
        ks: Sequence[int] = (20,),
        recall_denominator: str = "all",
    ) -> dict[str, float]: ...
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
    ) -> tuple[Model, dict[str, Any]]: ...

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
) -> Model: ...
def pretrain(
    model: Model,
    ds: Dataset,
    epochs: int | None = None,
    seed: int | None = None,
    *,
    callback: Callback | None = None,
    progress: bool = False,
    **config: Any,
) -> Unlearner: ...
def audit(
    model: Model,
    ds: Dataset,
    removed: object | None = None,
    original: Model | None = None,
    reference: Model | None = None,
    **config: Any,
) -> dict[str, Any]: ...
def from_embeddings(
    ds: Dataset,
    user_emb: np.ndarray,
    item_emb: np.ndarray,
    model: str = "lightgcn",
    layers: int = 3,
    **config: Any,
) -> Model: ...
def load(path: str | os.PathLike[str]) -> Model: ...
def load_unlearner(path: str | os.PathLike[str]) -> Unlearner: ...
def method_names() -> list[str]: ...
def model_names() -> list[str]: ...
