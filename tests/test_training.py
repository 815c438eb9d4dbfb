import pytest
import torch

from tests.helpers import make_model, make_train_cfg, random_rows
from tiedlib import DataExhaustedError, InMemoryBatches, read_metrics, resume, train, train_step
from tiedlib.training import l1_coeff_at, list_checkpoints, lr_factor_at, make_optimizer

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
    cfg = make_train_cfg(n_steps=24, checkpoint_every=6, lr=3e-3)
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
    cfg = make_train_cfg(n_steps=12, checkpoint_every=4)
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
