"""Build-on-first-use cache of lab pairs.

Layout of ``<root>/lab/<config-hash>/`` (``root`` is ``$TIEDLIB_CACHE`` or ``~/.cache/tiedlib``)::

    config.json      the LabConfig
    tokenizer/       PreTrainedTokenizerFast.save_pretrained
    base/ chat/      Gemma2ForCausalLM.save_pretrained
    train_log.json   per-step losses and timings
    manifest.json    sha256 of every other file - written last, so its presence marks a complete build - and the
                     pair's fingerprint (:func:`fingerprint`: checksums of both models' weights and of the training
                     corpus, torch version, thread count)

A build happens in a temporary sibling folder and is renamed into place, under a file lock, so a crash never leaves a
half-written folder under the final name and two processes never build the same pair at once. A folder whose manifest
is missing or whose files do not match it is treated as corrupt and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from filelock import FileLock

from tiedlib.lab.config import LabConfig

MANIFEST = "manifest.json"
_verified: dict[str, float] = {}  # folder -> manifest mtime already checked in this process


def cache_root() -> Path:
    """``$TIEDLIB_CACHE`` if set, else ``~/.cache/tiedlib``."""
    env = os.environ.get("TIEDLIB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tiedlib"


def cache_dir(cfg: LabConfig) -> Path:
    """The folder a lab pair with this config is (or will be) built in."""
    return cache_root() / "lab" / cfg.hash()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _write_manifest(folder: Path, fingerprint: dict | None = None) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {"files": {str(p.relative_to(folder)): _sha256(p) for p in files}, "created": time.time()}
    if fingerprint is not None:
        manifest["fingerprint"] = fingerprint
    _write_json_atomic(folder / MANIFEST, manifest)


def weights_sha256(model_folder: Path) -> str:
    """sha256 over a saved model's tensors in name order (name, dtype, shape, then the raw bytes of each), so it names
    the weights themselves, whatever metadata the safetensors file carries."""
    import torch
    from safetensors.torch import load_file

    h = hashlib.sha256()
    tensors = load_file(str(model_folder / "model.safetensors"))
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def corpus_sha256(web: list, chat: list) -> str:
    """sha256 over the token ids of the training documents (web first, then chat), one line per document."""
    h = hashlib.sha256()
    for source, docs in (("web", web), ("chat", chat)):
        for doc in docs:
            h.update(f"{source}:{','.join(map(str, doc.input_ids))}\n".encode())
    return h.hexdigest()


def _runtime() -> dict:
    import torch

    return {"torch_version": torch.__version__, "num_threads": torch.get_num_threads()}


def is_valid(folder: Path) -> bool:
    """Whether ``folder`` holds a complete build: a manifest whose checksums match every listed file."""
    manifest = folder / MANIFEST
    try:
        mtime = manifest.stat().st_mtime
        if _verified.get(str(folder)) == mtime:
            return True
        files = json.loads(manifest.read_text())["files"]
        ok = bool(files) and all(_sha256(folder / rel) == digest for rel, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if ok:
        _verified[str(folder)] = mtime
    return ok


def _build_into(cfg: LabConfig, folder: Path, *, device: str, progress: bool) -> dict:
    from tiedlib.lab.docs import chat_conversations, web_documents
    from tiedlib.lab.tokenizer import build_tokenizer
    from tiedlib.lab.train import train_pair

    t0 = time.perf_counter()
    tok = build_tokenizer()
    web = web_documents(cfg, "train")
    chat = chat_conversations(cfg, "train")
    t_corpus = time.perf_counter() - t0
    runtime = _runtime()  # before training: the thread count the weights were trained with
    base, chat_model, losses = train_pair(cfg, tok, web, chat, device=device, progress=progress)
    tok.save_pretrained(folder / "tokenizer")
    base.save_pretrained(folder / "base")
    chat_model.save_pretrained(folder / "chat")
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True))
    log = {"corpus_seconds": round(t_corpus, 2), "total_seconds": round(time.perf_counter() - t0, 2),
           "n_web_tokens": sum(map(len, web)), "n_chat_tokens": sum(map(len, chat)), "losses": losses}
    (folder / "train_log.json").write_text(json.dumps(log))
    return {"base_weights_sha256": weights_sha256(folder / "base"),
            "chat_weights_sha256": weights_sha256(folder / "chat"), "corpus_sha256": corpus_sha256(web, chat),
            **runtime, "recorded": "at build"}


def build(cfg: LabConfig | None = None, *, device: str = "cpu", progress: bool = True, force: bool = False) -> Path:
    """Build the lab pair for ``cfg`` (default: tiny) unless a valid build is cached; return its folder.

    Args:
        cfg: the lab configuration.
        device: where to train ("cpu" by default; the weights are saved the same way on any device).
        progress: show tqdm progress bars.
        force: rebuild even if a valid build exists.
    """
    cfg = cfg or LabConfig.tiny()
    final = cache_dir(cfg)
    if not force and is_valid(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if not force and is_valid(final):  # another process finished it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            fp = _build_into(cfg, tmp, device=device, progress=progress)
            _write_manifest(tmp, fp)
            if final.exists():  # corrupt or forced: move aside first so the rename below is atomic
                trash = Path(tempfile.mkdtemp(prefix=f".{final.name}-old-", dir=final.parent))
                os.replace(final, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    _verified.pop(str(final), None)
    return final


def load_tokenizer(cfg: LabConfig | None = None):
    """The lab tokenizer saved with the pair (building the pair first if needed)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(build(cfg) / "tokenizer")


def load_models(cfg: LabConfig | None = None, *, device: str = "cpu"):
    """``(base_hf, chat_hf)``: the two `Gemma2ForCausalLM` of the pair, in eval mode on ``device``."""
    from transformers import Gemma2ForCausalLM

    folder = build(cfg)
    return tuple(Gemma2ForCausalLM.from_pretrained(folder / name).to(device).eval() for name in ("base", "chat"))


def train_log(cfg: LabConfig | None = None) -> dict:
    """The training log of a built pair (losses per step, timings)."""
    return json.loads((build(cfg) / "train_log.json").read_text())


def fingerprint(cfg: LabConfig | str | None = None) -> dict:
    """What identifies a built pair: its config name and hash, sha256 of the base and chat weights
    (:func:`weights_sha256`) and of the training corpus (:func:`corpus_sha256`), the torch version and thread count.

    Read from the cache manifest, where :func:`build` records them. A cache built before fingerprints existed gets
    them computed now (nothing is retrained) and added to its manifest; there ``recorded`` says ``"after build"``
    and the torch version and thread count are this process's, not the build's.

    Args:
        cfg: a LabConfig or a preset name (default: tiny); the pair is built first if it is not cached.
    """
    from tiedlib.lab.docs import chat_conversations, web_documents

    cfg = LabConfig.from_name(cfg) if isinstance(cfg, str) else (cfg or LabConfig.tiny())
    folder = build(cfg, progress=False)
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    if "fingerprint" not in manifest:
        with FileLock(str(folder) + ".lock"):
            manifest = json.loads(path.read_text())
            if "fingerprint" not in manifest:
                manifest["fingerprint"] = {
                    "base_weights_sha256": weights_sha256(folder / "base"),
                    "chat_weights_sha256": weights_sha256(folder / "chat"),
                    "corpus_sha256": corpus_sha256(web_documents(cfg, "train"), chat_conversations(cfg, "train")),
                    **_runtime(), "recorded": "after build"}
                _write_json_atomic(path, manifest)
                _verified.pop(str(folder), None)
    return {"config": cfg.name, "hash": cfg.hash(), **manifest["fingerprint"]}
