import torch

from tiedlib.activations.collect import PairActivations
from tiedlib.activations.harvest import HarvestBatch


def test_pair_activations_batches_serve_normalised_rows_with_their_factors():
    acts = torch.randn(10, 2, 4)
    idx = torch.arange(10)
    pa = PairActivations(HarvestBatch(acts, idx, idx, idx), torch.tensor([2.0, 0.5]))
    data = pa.batches(64, seed=1)  # capped at the 10 rows available
    batch = next(data)
    assert batch.shape == (10, 2, 4)
    expected = torch.sort((acts * torch.tensor([2.0, 0.5])[None, :, None])[:, 0, 0]).values
    torch.testing.assert_close(torch.sort(batch[:, 0, 0]).values, expected)
    assert torch.equal(data.norm_factors, torch.tensor([2.0, 0.5]))
    next(data)  # epochs repeat instead of running out
