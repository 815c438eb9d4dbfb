import subprocess
import sys

import pytest
import torch

from tiedlib.analysis import cosines
from tiedlib.config import BASE, CHAT


def dense_max(q, k, exclude=None):
    c = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(k, dim=1).T
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).flatten()
        c[rows, exclude[rows]] = float("-inf")
    return c.max(dim=1)


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_chunked_equals_dense(chunk):
    q, k = torch.randn(23, 5), torch.randn(31, 5)
    ex = torch.randint(-1, 31, (23,))
    got = cosines.max_cosine(q, k, exclude=ex, chunk_size=chunk)
    want = dense_max(q, k, ex)
    torch.testing.assert_close(got.values, want.values)
    assert torch.equal(got.indices, want.indices)


def test_blocks_bounded_by_chunk_size(monkeypatch):
    shapes = []
    real = cosines.cosine_blocks

    def spy(q, k, chunk_size):
        for qs, ks, block in real(q, k, chunk_size):
            shapes.append(tuple(block.shape))
            yield qs, ks, block

    monkeypatch.setattr(cosines, "cosine_blocks", spy)
    cosines.max_cosine(torch.randn(100, 4), torch.randn(70, 4), chunk_size=16)
    assert shapes and max(a * b for a, b in shapes) <= 16 * 16
    assert len(shapes) == 7 * 5


def test_peak_memory_bounded_by_chunk_not_n():
    # 8192 x 8192 fp32 would be 256 MiB dense; chunked with 512 the extra peak must stay far below that.
    code = (
        "import resource, torch\n"
        "from tiedlib.analysis.cosines import max_cosine\n"
        "q = torch.randn(8192, 16); k = torch.randn(8192, 16)\n"
        "max_cosine(q[:8], k[:8], chunk_size=512)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "max_cosine(q, k, exclude=torch.arange(8192), chunk_size=512)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    grew_kib = int(out.stdout.strip().splitlines()[-1])
    assert grew_kib < 64 * 1024, f"peak memory grew by {grew_kib} KiB"


def test_hand_made_decoders_exclusive_vs_shared():
    d = 4
    e = torch.eye(d)
    W = torch.zeros(4, 2, d)
    # 0: shared, base=e0 chat=e1
    W[0, BASE], W[0, CHAT] = e[0], e[1]
    # 1: shared, base=e2 chat=e3
    W[1, BASE], W[1, CHAT] = e[2], e[3]
    # 2: chat-exclusive, chat vector close to e2 (latent 1's base vector)
    W[2, BASE], W[2, CHAT] = 0.01 * e[0], torch.tensor([0.0, 0.0, 1.0, 0.1])
    # 3: base-exclusive, base vector = e1 (latent 0's chat vector)
    W[3, BASE], W[3, CHAT] = e[1], 0.01 * e[3]
    r = W.norm(dim=-1)[:, CHAT] / W.norm(dim=-1).sum(-1)
    cats = cosines.exclusivity_categories(r)
    assert cats.shared.tolist() == [0, 1] and cats.chat_exclusive.tolist() == [2]
    assert cats.base_exclusive.tolist() == [3]

    chat = cosines.exclusive_vs_shared(W, query="chat")
    assert chat.exclusive.indices.tolist() == [1]  # keys: base vectors of shared + base-exclusive (0, 1, 3)
    assert chat.exclusive.values[0] == pytest.approx(1 / (1.01 ** 0.5), abs=1e-6)
    # shared 0: chat vec e1 vs base vecs of 1, 2, 3 -> latent 3 (e1), cosine 1
    assert chat.shared.indices[0] == 3
    assert chat.shared.values[0] == pytest.approx(1.0)

    base = cosines.exclusive_vs_shared(W, query="base")
    # base-exclusive 3: base vec e1 vs chat vecs of shared + chat-excl (0, 1, 2) -> latent 0 (e1)
    assert base.exclusive.indices.tolist() == [0] and base.exclusive.values[0] == pytest.approx(1.0)
    # shared 1: base vec e2 vs chat vecs of 0, 2, 3 -> latent 2
    assert base.shared.indices[1] == 2


def test_thresholds_validated():
    with pytest.raises(ValueError):
        cosines.exclusivity_categories(torch.rand(5), low=0.8, high=0.2)
    with pytest.raises(ValueError):
        cosines.max_cosine(torch.randn(3, 2), torch.randn(3, 3))


def test_no_allowed_key_gives_minus_one():
    out = cosines.max_cosine(torch.randn(2, 3), torch.randn(1, 3), exclude=torch.tensor([0, 0]))
    assert out.indices.tolist() == [-1, -1] and torch.isinf(out.values).all()
