"""Fisher forgetting: the diagonal Fisher by hand, the variance formula, the perturbation."""

import torch
from torch import nn

from app.unlearning.fisher import diagonal_fisher, noise_variance, perturb


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def test_diagonal_fisher_matches_a_per_sample_loop():
    model = Tiny()
    images = torch.randn(5, 4)
    fisher = diagonal_fisher(model, images, batch_size=2)
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for image in images:
        probabilities = torch.softmax(model(image[None]), 1)[0].detach()
        for label in range(10):
            model.zero_grad()
            torch.log_softmax(model(image[None]), 1)[0, label].backward()
            for name, p in model.named_parameters():
                expected[name] += probabilities[label] * p.grad.pow(2) / 5
    for name in expected:
        assert torch.allclose(fisher[name], expected[name], atol=1e-6, rtol=1e-4)


def test_noise_variance_formula():
    fisher = torch.tensor([[1.0, 1e-6], [0.5, 0.25]])  # 1/F = [[1, 1e6->cap], [2, 4]]
    variance = noise_variance("fc1.weight", fisher, noise_scale=0.1, forgotten_classes=(),
                              output_layer="fc2")
    # Capped at 1e3, scaled by 0.1, averaged over the input dimension per output row.
    row0 = 0.1 * (1.0 / (1.0 + 1e-8) + 1e3) / 2
    row1 = 0.1 * (1.0 / (0.5 + 1e-8) + 1.0 / (0.25 + 1e-8)) / 2
    assert torch.allclose(variance, torch.tensor([[row0, row0], [row1, row1]]))
    bias = noise_variance("fc1.bias", torch.tensor([2.0]), 0.1, (), "fc2")
    assert torch.allclose(bias, torch.tensor([0.1 * 0.5 * 10]))  # biases x 10
    output = noise_variance("fc2.weight", torch.full((10, 3), 1e-9), 1.0, (2,), "fc2")
    assert torch.allclose(output[0], torch.full((3,), 1e2 * 10))  # output cap 1e2, x 10
    assert torch.allclose(output[2], torch.full((3,), 1e-4 * 10))  # forgotten row


def test_perturb_is_mean_plus_scaled_seeded_noise():
    model = Tiny()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    fisher = {name: torch.full_like(p, 4.0) for name, p in model.named_parameters()}
    perturb(model, fisher, 1e-2, (3,), torch.Generator().manual_seed(5), "fc2")
    replay = torch.Generator().manual_seed(5)
    for name, p in model.named_parameters():
        variance = noise_variance(name, fisher[name], 1e-2, (3,), "fc2")
        mean = before[name].clone()
        if name.startswith("fc2."):
            mean[3] = 0.0
        noise = torch.randn(p.shape, generator=replay)
        assert torch.allclose(p, mean + variance.sqrt() * noise, atol=1e-7)


def test_sampled_fisher_estimates_the_exact_one():
    model = Tiny()
    images = torch.randn(400, 4) * 3
    exact = diagonal_fisher(model, images, batch_size=100)
    sampled = diagonal_fisher(model, images, batch_size=100,
                              sample_labels=torch.Generator().manual_seed(0))
    for name in exact:  # Monte-Carlo over 400 images: close in aggregate, not element-wise
        ratio = sampled[name].sum() / exact[name].sum()
        assert 0.8 < float(ratio) < 1.25, (name, float(ratio))
