import os
import signal

import pytest
import torch

from tests.helpers import make_model, make_train_cfg, random_rows
from tiedlib import DataExhaustedError, InMemoryBatches, read_metrics, resume, train, train_step
from tiedlib.training import (
    TrainingInterrupted,
    l1_coeff_at,
    list_checkpoints,
    lr_factor_at,
    make_optimizer,
    resume_many,
    train_many,
)

ARCHS = ["standard", "tied"]


def test_schedules_follow_the_paper_recipe():
    cfg = make_train_cfg(n_steps=100, l1_coeff=2.0, l1_warmup_frac=0.05, lr_decay_frac=0.2)
    assert l1_coeff_at(0, cfg) == 0
    assert l1_coeff_at(2, cfg) == pytest.approx(0.8)
    assert l1_coeff_at(5, cfg) == 2.0 and l1_coeff_at(99, cfg) == 2.0
    assert lr_factor_at(0, cfg) == 1 and lr_factor_at(79, cfg) == 1
    assert lr_factor_at(90, cfg) == pytest.approx(0.5)
    assert lr_factor_at(100, cfg) == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_falls_over_steps_on_one_batch(arch):
    model = make_model(architecture=arch)
    opt, _ = make_optimizer(model, make_train_cfg(lr=1e-2))
    batch = random_rows(256)
    losses = [train_step(model, opt, batch, l1_coeff=0.1).total.item() for _ in range(10)]
    assert losses[-1] < 0.8 * losses[0]


def test_grad_clip_bounds_the_update():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    train_step(model, opt, 100 * random_rows(64), l1_coeff=1.0, grad_clip=0.5)
    step = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True)))
    assert step.item() == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_train_improves_explained_variance_and_logs(tmp_path, arch):
    model = make_model(architecture=arch)
    history = []
    cfg = make_train_cfg(n_steps=60, lr=3e-3, l1_coeff=0.01, log_every=10)
    data = InMemoryBatches(random_rows(1024), batch_size=64, epochs=None, norm_factors=torch.tensor([0.5, 2.0]))
    with pytest.warns(UserWarning, match="epoch 2"):
        train(cfg, model, data, out_dir=tmp_path / "run", log=history.append)
    assert [h["step"] for h in history] == [10, 20, 30, 40, 50, 60]
    assert history[-1]["explained_variance"] > history[0]["explained_variance"]
    assert history[-1]["explained_variance"] > 0.5
    assert model.cfg.norm_factors == [0.5, 2.0]
    if arch == "tied":
        assert {"l0_shared", "l0_base", "l0_chat", "sparsity_shared", "sparsity_exclusive"} <= set(history[-1])
    assert read_metrics(tmp_path / "run") == history
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_existing_run_directory_is_never_overwritten(tmp_path):
    cfg = make_train_cfg(n_steps=4)
    train(cfg, make_model(), InMemoryBatches(random_rows(), 32), out_dir=tmp_path / "run")
    weights = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="resume"):
        train(cfg, make_model(), InMemoryBatches(random_rows(), 32), out_dir=tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == weights
    train(cfg, make_model(), InMemoryBatches(random_rows(), 32, seed=1), out_dir=tmp_path / "run", overwrite=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_resume_from_any_checkpoint_is_bitwise_identical(tmp_path, arch):
    cfg = make_train_cfg(n_steps=24, checkpoint_every=6, lr=3e-3, keep_checkpoints=0)
    rows = random_rows(640)
    torch.manual_seed(0)
    data = InMemoryBatches(rows, 32, seed=3, epochs=None)
    full = train(cfg, make_model(architecture=arch), data, out_dir=tmp_path / "a")
    ckpts = list_checkpoints(tmp_path / "a")
    assert [p.name for p in ckpts] == ["step_0000006", "step_0000012", "step_0000018", "step_0000024"]
    for ckpt in ckpts[:3]:
        resumed = resume(ckpt, InMemoryBatches(rows, 32, seed=3, epochs=None), out_dir=tmp_path / f"r{ckpt.name}")
        for name, p in full.state_dict().items():
            assert torch.equal(p, resumed.state_dict()[name]), (ckpt.name, name)


def test_resume_refuses_to_overwrite_later_checkpoints(tmp_path):
    cfg = make_train_cfg(n_steps=12, checkpoint_every=4, keep_checkpoints=0)
    rows = random_rows(640)
    train(cfg, make_model(), InMemoryBatches(rows, 32), out_dir=tmp_path / "a")
    with pytest.raises(FileExistsError, match="after step 4"):
        resume(tmp_path / "a" / "checkpoints" / "step_0000004", InMemoryBatches(rows, 32))
    with pytest.raises(FileNotFoundError, match="no run directory"):
        resume(tmp_path / "missing", InMemoryBatches(rows, 32))


def test_interrupted_run_resumes_from_its_latest_checkpoint(tmp_path):
    rows = random_rows(640)
    cfg = make_train_cfg(n_steps=16, checkpoint_every=4, lr=3e-3)
    full = train(cfg, make_model(), InMemoryBatches(rows, 32), out_dir=tmp_path / "a")

    class Interrupting(InMemoryBatches):
        served = 0

        def __next__(self):
            self.served += 1
            if self.served == 11:
                raise KeyboardInterrupt
            return super().__next__()

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, make_model(), Interrupting(rows, 32), out_dir=tmp_path / "b")
    assert list_checkpoints(tmp_path / "b")[-1].name == "step_0000010"  # the interrupted step is kept
    resumed = resume(tmp_path / "b", InMemoryBatches(rows, 32))
    assert torch.equal(resumed.W_dec, full.W_dec)


def test_exhausted_data_and_nan_are_clear_errors():
    with pytest.raises(DataExhaustedError, match="exhausted after 1 epoch"):
        train(make_train_cfg(n_steps=50), make_model(), InMemoryBatches(random_rows(256), 32))
    with pytest.raises(RuntimeError, match="ran out after 3 of 10 steps"):
        train(make_train_cfg(n_steps=10), make_model(), iter([random_rows(32)] * 3))
    bad = random_rows(64)
    bad[3, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        InMemoryBatches(bad, 32)
    with pytest.raises(FloatingPointError, match="non-finite loss at step 0"):
        train(make_train_cfg(n_steps=2), make_model(), iter([bad[:32]] * 2))


def test_in_memory_batches_serve_every_row_once_per_epoch():
    rows = torch.arange(96, dtype=torch.float32).reshape(96, 1, 1).expand(96, 2, 1).contiguous()
    data = InMemoryBatches(rows, 32, epochs=1)
    seen = torch.cat([next(data) for _ in range(3)])[:, 0, 0]
    assert sorted(seen.tolist()) == list(range(96))
    with pytest.raises(DataExhaustedError):
        next(data)


class _Injecting(InMemoryBatches):
    """InMemoryBatches that runs ``action()`` when batch number ``at`` (1-based; 0: every batch) is requested."""

    def __init__(self, *args, at: int, action, **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.action, self.requested = at, action, 0

    def __next__(self):
        self.requested += 1
        if self.at in (0, self.requested):
            self.action()
        return super().__next__()


def _same_weights(a, b) -> bool:
    return all(torch.equal(p, b.state_dict()[k]) for k, p in a.state_dict().items())


def _full_run(tmp_path, cfg, rows, arch="standard"):
    torch.manual_seed(0)
    return train(cfg, make_model(architecture=arch), InMemoryBatches(rows, 32, epochs=None), out_dir=tmp_path / "full")


def test_long_runs_checkpoint_by_elapsed_time_by_default_and_keep_the_last_two(tmp_path, monkeypatch):
    cfg = make_train_cfg(n_steps=12, log_every=1)
    assert (cfg.checkpoint_every, cfg.checkpoint_minutes, cfg.keep_checkpoints) == (0, 30.0, 2)
    clock = [0.0]
    monkeypatch.setattr("tiedlib.training.loop.time.monotonic", lambda: clock[0])

    def eleven_minutes():  # every batch takes 11 minutes: a checkpoint is due every third step
        clock[0] += 11 * 60

    seen = {}
    data = _Injecting(random_rows(640), 32, epochs=None, at=0, action=eleven_minutes)
    log = lambda m: seen.setdefault(m["step"], [p.name for p in list_checkpoints(tmp_path / "run")])  # noqa: E731
    train(cfg, make_model(), data, out_dir=tmp_path / "run", log=log)
    assert seen[4] == ["step_0000003"] and seen[7] == ["step_0000003", "step_0000006"]
    assert seen[10] == ["step_0000006", "step_0000009"]  # only the last two are kept
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000009", "step_0000012"]


@pytest.mark.parametrize("arch", ARCHS)
def test_sigterm_writes_a_checkpoint_stops_cleanly_and_resumes_exactly(tmp_path, capsys, arch):
    rows = random_rows(640)
    cfg = make_train_cfg(n_steps=16, checkpoint_every=4, lr=3e-3)
    full = _full_run(tmp_path, cfg, rows, arch)
    before = signal.getsignal(signal.SIGTERM)
    torch.manual_seed(0)
    data = _Injecting(rows, 32, epochs=None, at=7, action=lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 7 of 16") as info:
        train(cfg, make_model(architecture=arch), data, out_dir=tmp_path / "b")
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is removed again
    ckpt = tmp_path / "b" / "checkpoints" / "step_0000007"
    assert str(ckpt) in str(info.value) and "tiedlib.resume(" in str(info.value)
    assert str(ckpt) in capsys.readouterr().err
    assert list_checkpoints(tmp_path / "b")[-1] == ckpt  # step 7 finished, then the checkpoint
    resumed = resume(tmp_path / "b", InMemoryBatches(rows, 32, epochs=None))
    assert _same_weights(full, resumed)


def test_a_second_signal_stops_at_once(tmp_path):
    def twice():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    data = _Injecting(random_rows(640), 32, epochs=None, at=6, action=twice)
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
        train(make_train_cfg(n_steps=16, checkpoint_every=4), make_model(), data, out_dir=tmp_path / "r")
    # stopped inside the data iterator, between steps: the models are consistent, so step 5 is kept too
    assert list_checkpoints(tmp_path / "r")[-1].name == "step_0000005"


def test_an_error_from_the_data_keeps_a_checkpoint_and_names_it_with_the_resume_command(tmp_path, capsys):
    rows = random_rows(640)
    cfg = make_train_cfg(n_steps=16, checkpoint_every=4, lr=3e-3)
    full = _full_run(tmp_path, cfg, rows)

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")

    torch.manual_seed(0)
    with pytest.raises(torch.OutOfMemoryError) as info:
        train(cfg, make_model(), _Injecting(rows, 32, epochs=None, at=10, action=oom), out_dir=tmp_path / "b",
              resume_command="python -m tiedlib.cli resume runs/b")
    ckpt = tmp_path / "b" / "checkpoints" / "step_0000009"
    note = "\n".join(info.value.__notes__)
    assert f"last checkpoint: {ckpt}" in note and "python -m tiedlib.cli resume runs/b" in note
    assert "OutOfMemoryError" in capsys.readouterr().err
    assert _same_weights(full, resume(tmp_path / "b", InMemoryBatches(rows, 32, epochs=None)))


def test_an_error_in_the_step_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    rows = random_rows(640)
    cfg = make_train_cfg(n_steps=16, checkpoint_every=4, lr=3e-3)
    full = _full_run(tmp_path, cfg, rows)
    import tiedlib.training.loop as loop

    calls = {"loss": 0, "update": 0}
    real_grads, real_update = loop.compute_gradients, loop.apply_update

    def failing_grads(*args, **kwargs):  # out of memory in the 7th forward pass: weights untouched
        calls["loss"] += 1
        if calls["loss"] == 7:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_grads(*args, **kwargs)

    monkeypatch.setattr(loop, "compute_gradients", failing_grads)
    torch.manual_seed(0)
    with pytest.raises(torch.OutOfMemoryError):
        train(cfg, make_model(), InMemoryBatches(rows, 32, epochs=None), out_dir=tmp_path / "b")
    assert list_checkpoints(tmp_path / "b")[-1].name == "step_0000006"
    assert _same_weights(full, resume(tmp_path / "b", InMemoryBatches(rows, 32, epochs=None)))

    def failing_update(*args, **kwargs):  # dies inside the 7th optimiser step: no new checkpoint can be trusted
        calls["update"] += 1
        if calls["update"] == 7:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(loop, "compute_gradients", real_grads)
    monkeypatch.setattr(loop, "apply_update", failing_update)
    with pytest.raises(RuntimeError) as info:
        train(cfg, make_model(), InMemoryBatches(rows, 32, epochs=None), out_dir=tmp_path / "c")
    assert list_checkpoints(tmp_path / "c")[-1].name == "step_0000004"
    assert "during an optimiser step" in info.value.__notes__[0]
    assert str(tmp_path / "c" / "checkpoints" / "step_0000004") in info.value.__notes__[0]


def test_a_nan_loss_stops_before_the_update(tmp_path):
    rows = random_rows(640)
    bad = rows.clone()
    bad[32 * 5 : 32 * 6] = float("nan")  # the 6th batch
    model = make_model()
    with pytest.raises(FloatingPointError, match="non-finite loss at step 5"):
        train(make_train_cfg(n_steps=10), model, iter(bad.split(32)), out_dir=tmp_path / "r")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert list_checkpoints(tmp_path / "r")[-1].name == "step_0000005"


def test_train_many_equals_separate_runs_and_resumes_together(tmp_path):
    rows = random_rows(640)
    cfgs = [make_train_cfg(n_steps=12, lr=3e-3, checkpoint_every=4),
            make_train_cfg(n_steps=12, lr=1e-3, l1_coeff=0.5, checkpoint_every=4)]

    def fresh():
        torch.manual_seed(1)
        return [make_model(architecture="tied"), make_model(architecture="standard")]

    alone = [train(c, m, InMemoryBatches(rows, 32, seed=2, epochs=None), out_dir=tmp_path / f"alone{i}")
             for i, (c, m) in enumerate(zip(cfgs, fresh(), strict=True))]
    logged = []
    together = train_many(cfgs, fresh(), InMemoryBatches(rows, 32, seed=2, epochs=None),
                          out_dirs=[tmp_path / "t0", tmp_path / "t1"], log=logged.append)
    for a, b in zip(alone, together, strict=True):
        assert _same_weights(a, b)
    assert {m["run"] for m in logged} == {0, 1}
    assert read_metrics(tmp_path / "t1")[-1]["l1_coeff"] == 0.5
    # interrupted after step 9 (checkpoints at 4 and 8 plus the one written on the way out), resumed together
    torch.manual_seed(0)
    data = _Injecting(rows, 32, seed=2, epochs=None, at=10, action=lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(TrainingInterrupted):
        train_many(cfgs, fresh(), data, out_dirs=[tmp_path / "i0", tmp_path / "i1"])
    assert [p.name for p in list_checkpoints(tmp_path / "i0")] == ["step_0000008", "step_0000010"]
    resumed = resume_many([tmp_path / "i0", tmp_path / "i1"], InMemoryBatches(rows, 32, seed=2, epochs=None))
    for a, b in zip(alone, resumed, strict=True):
        assert _same_weights(a, b)
    with pytest.raises(ValueError, match="same n_steps"):
        train_many([cfgs[0], make_train_cfg(n_steps=5)], fresh(), InMemoryBatches(rows, 32))


def test_bf16_autocast_keeps_fp32_weights_and_optimizer_state():
    model = make_model(architecture="tied")
    opt, _ = make_optimizer(model, make_train_cfg(lr=1e-2))
    batch = random_rows(256)
    ref = model.loss(batch, l1_coeff=0.1).total.item()
    losses = [train_step(model, opt, batch, l1_coeff=0.1, bf16=True).total.item() for _ in range(10)]
    assert losses[0] == pytest.approx(ref, rel=2e-2)  # bf16 products, fp32 loss terms
    assert losses[-1] < 0.8 * losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(v.dtype == torch.float32 for s in opt.state.values() for k, v in s.items() if k != "step")


def test_tf32_is_set_for_cuda_runs_only_and_restored():
    from tiedlib.training.runtime import tf32

    before = torch.backends.cuda.matmul.allow_tf32
    with tf32(True, ["cpu"]):
        assert torch.backends.cuda.matmul.allow_tf32 == before
    with tf32(not before, ["cuda"]):
        assert torch.backends.cuda.matmul.allow_tf32 == (not before)
    assert torch.backends.cuda.matmul.allow_tf32 == before


def test_an_interrupt_anywhere_in_a_buffer_refill_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Ctrl-C inside a harvest batch (before or after the base model ran) or at a shuffle, in any fill: the trainer
    keeps a checkpoint at the last finished step and the resumed run ends with the weights of an uninterrupted one."""
    import warnings

    from tests.helpers import Interrupt, count_calls, interrupt_on_call
    from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer, wrap
    from tiedlib.activations import harvest as harvest_module
    from tiedlib.activations.buffer import ActivationBuffer

    tok = tiny_tokenizer()
    base, chat = wrap(tiny_gemma2(n_layers=2, d_model=16, seed=0), tok), wrap(tiny_gemma2(n_layers=2, d_model=16,
                                                                                          seed=1), tok)  # fmt: skip
    seqs = random_sequences(20, 2, 12, len(tok), seed=5)

    def buffer():
        return ActivationBuffer(base, chat, seqs, 1, batch_size=8, buffer_tokens=24, model_batch_size=3, seed=0,
                                norm_factors=torch.ones(2))  # fmt: skip

    cfg = make_train_cfg(n_steps=7, lr=3e-3, checkpoint_every=100)
    calls: dict[str, int] = {}
    with monkeypatch.context() as m, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for owner, name in ((harvest_module, "_trace_layer_input"), (torch, "randperm")):
            count_calls(m, owner, name, calls)
        torch.manual_seed(0)
        full = train(cfg, make_model(), buffer(), out_dir=tmp_path / "full")
    points = [(harvest_module, "_trace_layer_input", k) for k in range(1, calls["_trace_layer_input"] + 1)]
    points += [(torch, "randperm", k) for k in range(1, calls["randperm"] + 1)]
    assert len(points) >= 9
    for i, (owner, name, k) in enumerate(points):
        run = tmp_path / f"r{i}"
        with monkeypatch.context() as m:
            interrupt_on_call(m, owner, name, k)
            torch.manual_seed(0)
            with pytest.raises(Interrupt):
                train(cfg, make_model(), buffer(), out_dir=run)
        if not list_checkpoints(run):  # interrupted before the first step: nothing to resume, start again
            continue
        resumed = resume(run, buffer())
        assert _same_weights(full, resumed), (name, k)


def test_evaluation_during_training_is_logged_apart_and_leaves_training_unchanged(tmp_path):
    cfg = make_train_cfg(n_steps=12, checkpoint_every=6, lr=3e-3, keep_checkpoints=0)
    rows = random_rows(640)
    seen = []

    def evaluate(model):  # draws random numbers on purpose: training must not see them
        seen.append(torch.is_grad_enabled())
        torch.randn(1000)
        return {"mse": float(model.cfg.d_model), "draw": 1}

    logged = []
    plain = train(cfg, make_model(architecture="tied"), InMemoryBatches(rows, 32, seed=3, epochs=None),
                  out_dir=tmp_path / "a")
    evaluated = train(cfg, make_model(architecture="tied"), InMemoryBatches(rows, 32, seed=3, epochs=None),
                      out_dir=tmp_path / "b", evaluate=evaluate, evaluate_every=5, log=logged.append)
    for name, p in plain.state_dict().items():
        assert torch.equal(p, evaluated.state_dict()[name]), name
    evals = read_metrics(tmp_path / "b", kind="eval")
    assert [m["step"] for m in evals] == [5, 10, 12] and seen == [False] * 3
    assert evals[0]["eval/draw"] == 1.0 and "explained_variance" not in evals[0]
    assert read_metrics(tmp_path / "b") == read_metrics(tmp_path / "a")  # the training lines are as without it
    assert [m["step"] for m in logged if "eval/mse" in m] == [5, 10, 12]
    resumed = []
    resume(list_checkpoints(tmp_path / "b")[0], InMemoryBatches(rows, 32, seed=3, epochs=None), out_dir=tmp_path / "c",
           evaluate=lambda m: resumed.append(1) or {"n": 1.0}, evaluate_every=5)
    assert len(resumed) == 2  # steps 10 and 12 after resuming at 6
    with pytest.raises(ValueError, match="evaluate_every"):
        train(cfg, make_model(), InMemoryBatches(rows, 32, seed=3), evaluate=evaluate)
    with pytest.raises(TypeError, match="numbers"):
        train(make_train_cfg(n_steps=2), make_model(), InMemoryBatches(rows, 32, seed=3),
              evaluate=lambda m: {"x": "text"}, evaluate_every=1)
