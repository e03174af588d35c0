"""data_sim.blur.gaussian_blur2d is kornia's separable gaussian_blur2d bit for bit, without
its host read of sigma (a GPU step must not wait on the host): the simulation's pinned
digests were made with kornia's."""

from __future__ import annotations

import kornia
import pytest
import torch
from fake_cuda import CUDA, checked, fake_cuda

from data_sim.blur import gaussian_blur2d

# Pinned on the kornia the simulation's digests were made with; other releases may differ.
pytestmark = pytest.mark.skipif(
    kornia.__version__ != "0.9.0", reason=f"compared with kornia 0.9.0, not {kornia.__version__}"
)


def _sigma(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 2, generator=g) * 3 + 0.05


@pytest.mark.parametrize("border", ["reflect", "replicate", "circular", "constant"])
@pytest.mark.parametrize(
    "shape, size, sigma_batch",
    [
        ((4, 1, 48, 56), (13, 13), 4),  # convolution, one kernel per sample
        ((3, 3, 40, 40), (7, 9), 1),  # convolution, one kernel for the batch
        ((2, 1, 300, 260), (11, 11), 2),  # large on the CPU: kornia's weighted slices
        ((1, 3, 256, 256), 5, 1),
    ],
)
def test_same_bits_as_kornia(shape, size, sigma_batch, border):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    sigma = _sigma(sigma_batch, 1)
    want = kornia.filters.gaussian_blur2d(x, size, sigma, border_type=border)
    assert torch.equal(gaussian_blur2d(x, size, sigma, border), want)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_same_bits_as_kornia_in_other_dtypes(dtype):
    x = torch.rand(3, 2, 32, 36, generator=torch.Generator().manual_seed(2)).to(dtype)
    sigma = _sigma(3, 3).to(dtype)
    want = kornia.filters.gaussian_blur2d(x, (9, 9), sigma, border_type="reflect")
    got = gaussian_blur2d(x, (9, 9), sigma, "reflect")
    assert got.dtype == want.dtype == dtype and torch.equal(got, want)


def test_same_bits_as_kornia_under_autocast():
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    sigma = _sigma(2, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = kornia.filters.gaussian_blur2d(x, (7, 7), sigma, border_type="replicate")
        got = gaussian_blur2d(x, (7, 7), sigma, "replicate")
    assert got.dtype == want.dtype and torch.equal(got, want)


def test_the_kernel_is_kornias_and_sigma_zero_is_the_identity():
    from data_sim.blur import gaussian_kernel1d

    sigma = torch.tensor([[0.0], [1e-30], [0.7], [2.5]])
    want = kornia.filters.get_gaussian_kernel1d(9, sigma)
    assert torch.equal(gaussian_kernel1d(9, sigma), want)
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    assert torch.equal(gaussian_blur2d(x, 5, torch.zeros(1, 2), "reflect"), x)


def test_no_host_read_on_the_device():
    """kornia's blur reads sigma on the host (its positivity check); this one does not."""
    with fake_cuda():
        x = torch.rand(4, 1, 64, 64, device=CUDA)
        sigma = torch.rand(4, 2, device=CUDA) + 0.1
        with pytest.raises(Exception, match="DataDependentOutputException"):
            with checked():
                kornia.filters.gaussian_blur2d(x, 9, sigma, border_type="reflect")
        with checked(max_copies=0):
            out = gaussian_blur2d(x, 9, sigma, "reflect")
    assert out.shape == x.shape and out.device.type == "cuda"


def test_bad_arguments_are_refused_on_the_host():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur2d(x, 4, torch.ones(2, 2), "reflect")
    with pytest.raises(ValueError, match="border_type"):
        gaussian_blur2d(x, 3, torch.ones(2, 2), "wrap")
    with pytest.raises(ValueError, match="batch"):
        gaussian_blur2d(x, 3, torch.ones(3, 2), "reflect")
