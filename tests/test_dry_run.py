"""``python -m tiedlib.cli ... --dry-run``: every command the README, the book and the CLI's docstring show is checked
and planned without loading models or data; flags carry their config field's docstring."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import tiedlib.cli as cli
from tiedlib.cli import PAPER_PAIR_SHAPES, build_parser, config_from_args, field_docs, main, plan
from tiedlib.config import CrosscoderConfig, RunConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md"))]
COMMAND = re.compile(r"(?:[\w./-]*python)?\s*-m tiedlib\.cli\s")


def shown_commands(text: str) -> list[list[str]]:
    """The argument lists of every ``python -m tiedlib.cli train|resume|cache ...`` in ``text`` (also after
    ``torchrun ... -m tiedlib.cli``): inline code (which may wrap over lines) up to its closing backtick, code-block
    lines with their backslash continuations, comments dropped. Mentions like ``train|resume`` are not commands."""
    found = []
    for m in COMMAND.finditer(text):
        start = m.start()
        line = text[text.rfind("\n", 0, start) + 1 : start]  # e.g. "`" or "`torchrun --nproc-per-node 8 "
        inline = line.count("`") % 2 == 1
        rest = text[m.end():]
        if inline:
            rest = rest[: rest.index("`")]
        else:
            rest = re.split(r"(?<!\\)\n", rest, maxsplit=1)[0]
        rest = rest.replace("\\\n", " ").replace("\n", " ")
        args = shlex.split(rest, comments=True)
        if args and args[0] in ("train", "resume", "cache"):
            found.append(args)
    return found


def _sources() -> list[tuple[str, str]]:
    return [(p.name, p.read_text()) for p in DOCUMENTS] + [("tiedlib/cli.py docstring", cli.__doc__)]


def test_the_documents_show_commands_and_the_parser_finds_them():
    commands = {name: shown_commands(text) for name, text in _sources()}
    assert len(commands["README.md"]) >= 2 and len(commands["running.md"]) >= 2
    assert ["resume", "runs/tied_eta2", "--pair", "gemma-2-2b"] in commands["running.md"]
    assert shown_commands("see `python -m tiedlib.cli train|resume` for long runs") == []
    doc = commands["tiedlib/cli.py docstring"]
    assert sum(a[0] == "cache" for a in doc) >= 2 and any("--cache" in a for a in doc)
    assert shown_commands("`torchrun --nproc-per-node 8 -m tiedlib.cli train --cache c --pair smoke`") == [
        ["train", "--cache", "c", "--pair", "smoke"]]


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load a model pair or read a dataset fails the test."""
    import tiedlib.lab
    import tiedlib.pairs
    import tiedlib.pairs.corpora

    def forbidden(*_a, **_k):
        raise AssertionError("a dry run must not load models or data")

    for module, name in ((tiedlib.pairs, "load_pair"), (tiedlib.pairs.corpora, "pretokenized_stream"),
                         (tiedlib.pairs.corpora, "mixed_stream"), (tiedlib.lab, "crosscoder_mix"),
                         (tiedlib.lab, "load_models")):  # fmt: skip
        monkeypatch.setattr(module, name, forbidden)


def _as_if_trained(run_dir: Path, train_args: list[str]) -> None:
    """Write the run.json that `train` would have written, so that `resume` / `--config` commands have a folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_from_args(build_parser().parse_args(train_args)).save_json(run_dir / cli.RUN_FILE)


@pytest.mark.parametrize("source", [name for name, _ in _sources()])
def test_every_shown_command_passes_a_dry_run(source, tmp_path, monkeypatch, capsys, no_loading):
    text = dict(_sources())[source]
    monkeypatch.chdir(tmp_path)
    last_train: dict[str, list[str]] = {}
    for args in shown_commands(text):
        if args[0] == "cache":
            pass
        elif args[0] == "train":
            if "--config" in args:
                path = Path(args[args.index("--config") + 1])
                if not path.exists():
                    _as_if_trained(path.parent, last_train[str(path.parent)])
            out = config_from_args(build_parser().parse_args(args)).out_dir
            last_train[str(Path(out))] = args
        elif not (Path(args[1]) / cli.RUN_FILE).exists():
            _as_if_trained(Path(args[1]), last_train[str(Path(args[1]))])
        code = main([*args, "--dry-run"])
        captured = capsys.readouterr()
        assert code == 0, (args, captured.err)
        if args[0] == "cache":
            assert "bytes per token" in captured.out and "cache size" in captured.out, args
        else:
            assert "peak" in captured.out and "checkpoints" in captured.out, args
        if "gemma-2-2b" in args:
            assert "bytes per token in bf" in captured.out and "(9.2 KB" in captured.out  # REFERENCE.md: 9.2 KB


def test_the_paper_plan_has_the_paper_numbers():
    cfg = RunConfig(crosscoder=CrosscoderConfig(d_model=2304, n_latents=16384, architecture="tied"),
                    train=TrainConfig(n_steps=61035, device="cuda"), pair="gemma-2-2b",
                    dataset="pretokenized")  # fmt: skip
    lines = dict(plan(cfg))
    assert "302,043,648 parameters (1.21 GB fp32)" in lines["crosscoder"]  # the released tied checkpoint: 1.21 GB
    assert "249,999,360 tokens" in lines["steps"]
    assert lines["checkpoints"].startswith("3.62 GB each, every 30 min, keeping 2")
    assert "10.46 GB for both models in torch.bfloat16" in lines["models"]
    peak = float(re.search(r"about ([\d.]+) GB", lines["peak GPU memory"]).group(1))
    assert 15 < peak < 40  # fits a 40 GB Colab A100 with the defaults


def test_the_paper_cache_plan_has_the_paper_numbers(tmp_path, capsys, no_loading, monkeypatch):
    flags = ["cache", str(tmp_path / "c"), "--pair", "gemma-2-2b", "--n-steps", "61035", "--batch-size", "4096",
             "--device", "cuda", "--dry-run"]  # fmt: skip
    assert main(flags) == 0
    out = capsys.readouterr().out
    # 2 models x 2304 x 2 bytes of bf16 + 3 int32 indices; 249,999,360 tokens x 9,228 bytes
    assert "9,228 bytes per token in bfloat16 (9.2 KB: 9,216 of activations" in out
    assert "2,306.99 GB for 249,999,360 tokens" in out and "about 3,819 shards of 64" in out
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "7")
    assert main(flags) == 0
    assert "rank 7 of 8: shards 3341..3818" in capsys.readouterr().out  # the last share ends at the last shard
    assert main(["train", "--cache", str(tmp_path / "c"), "--pair", "gemma-2-2b", "--batch-size", "4096",
                 "--out-dir", str(tmp_path / "r"), "--dry-run"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "8 processes (DDP) x 512 rows of each 4,096-row batch" in out and "holds no cache yet" in out
    assert "none loaded" in out and "harvest pass" not in out


def test_paper_pair_shape_matches_the_gemma2_config_defaults():
    from transformers import Gemma2Config

    c = Gemma2Config()
    shape = PAPER_PAIR_SHAPES["gemma-2-2b"]
    assert (shape.d_model, shape.n_layers, shape.n_heads, shape.intermediate) == (
        c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size)
    d, q, kv = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * c.intermediate_size + 4 * d
    assert shape.n_params == c.vocab_size * d + c.num_hidden_layers * per_layer + d


@pytest.mark.parametrize("flags, message", [
    (["--pair", "gemma-3"], "unknown model pair 'gemma-3'"),
    (["--pair", "gemma-2-2b", "--dataset", "lab"], "dataset 'lab' is the lab pair's corpus"),
    (["--pair", "smoke", "--dataset", "pretokenized"], "Gemma-2 token ids"),
    (["--pair", "smoke", "--device", "gpu"], "is not a torch device"),
    (["--pair", "smoke", "--layer", "7"], "layer must be in [0, 2)"),
    (["--pair", "smoke", "--n-steps", "0"], "n_steps must be positive"),
])  # fmt: skip
def test_a_dry_run_refuses_settings_that_cannot_work(flags, message, tmp_path, capsys, no_loading):
    assert main(["train", *flags, "--out-dir", str(tmp_path / "r"), "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_dry_run_refuses_an_existing_run_folder_and_resume_checks_its_pair(tmp_path, capsys, no_loading):
    _as_if_trained(tmp_path / "r", ["train", "--pair", "smoke", "--out-dir", str(tmp_path / "r")])
    assert main(["train", "--pair", "smoke", "--out-dir", str(tmp_path / "r"), "--dry-run"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "r"), "--pair", "gemma-2-2b", "--dry-run"]) == 2
    assert "trained on pair 'smoke'" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "r"), "--pair", "smoke", "--dry-run"]) == 0
    assert "no checkpoint yet" in capsys.readouterr().out


def test_each_flag_shows_its_config_fields_docstring(capsys):
    parser = build_parser()
    for command in ("train", "cache"):
        sub = parser._subparsers._group_actions[0].choices[command]
        by_dest = {a.dest: a for a in sub._actions}
        for cls, field, _ in cli.config_flags(command):
            doc = field_docs(cls).get(field.name)
            assert doc, f"{cls.__name__}.{field.name} has no docstring"
            assert by_dest[field.name].help.replace("%%", "%") == doc
        assert by_dest["cache"].help.replace("%%", "%") == field_docs(RunConfig)["cache"]
    subs = parser._subparsers._group_actions[0].choices
    assert "seqs_per_shard" in {a.dest for a in subs["cache"]._actions}  # a setting of writing a cache only
    assert "seqs_per_shard" not in {a.dest for a in subs["train"]._actions}
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--checkpoint-minutes CHECKPOINT_MINUTES Also write a checkpoint once this many minutes" in out
