import torch

from pixperfect.training.module import RefinerModule


def _module(tiny_config, *overrides):
    from omegaconf import OmegaConf

    return RefinerModule(OmegaConf.to_container(tiny_config(*overrides), resolve=True))


def test_a_loss_term_with_weight_zero_is_not_computed(tiny_config):
    terms = _module(tiny_config, "loss.l1=1.0", "loss.mse=0.0").loss_terms(
        torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    )
    assert set(terms) == {"l1", "loss"}


def test_the_total_is_the_weighted_sum_of_the_terms(tiny_config):
    pred, target = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)
    terms = _module(tiny_config, "loss.l1=2.0", "loss.mse=4.0").loss_terms(pred, target)
    assert torch.isclose(terms["l1"], torch.tensor(0.5))
    assert torch.isclose(terms["mse"], torch.tensor(0.25))
    assert torch.isclose(terms["loss"], torch.tensor(2.0 * 0.5 + 4.0 * 0.25))
