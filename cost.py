"""What a network costs: parameters and multiply-accumulates (MACs) of one forward pass.

MACs count convolutions and fully connected layers, the convention of DARTS-family papers ("multi-adds");
BatchNorm, ReLU, pooling and additions are not counted. The count is measured, not estimated: forward hooks
record every conv and linear layer the network actually runs on an input of the given size (in eval mode,
so without the auxiliary head, as at test time). network_cost builds the network on the meta device, where
the forward pass computes shapes only, so a count takes a fraction of a second.
"""
from typing import Dict, Tuple

import torch
import torch.nn as nn

from genotypes import Genotype
from model import NetworkCIFAR, NetworkImageNet
from utils import count_parameters


def count_macs(model: nn.Module, input_size: Tuple[int, int, int, int]) -> int:
    """Multiply-accumulates of one forward pass of `model` on a batch of `input_size` (N, C, H, W)."""
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_size, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total


def network_cost(genotype: Genotype, dataset: str = 'cifar10', num_classes: int = None, init_channels: int = None,
                 layers: int = None, image_size: int = None) -> Dict[str, float]:
    """Parameters and MACs of the evaluation network built from `genotype` at the size it will be trained:
    C=36, 20 layers, 32x32 for CIFAR; C=48, 14 layers, 224x224 for ImageNet (unless given)."""
    with torch.device('meta'):  # shapes only: no weights to initialise, no arithmetic (and no random draws)
        if dataset == 'imagenet':
            model = NetworkImageNet(init_channels or 48, num_classes or 1000, layers or 14, False, genotype)
            size = image_size or 224
        else:
            model = NetworkCIFAR(init_channels or 36, num_classes or (100 if dataset == 'cifar100' else 10),
                                 layers or 20, False, genotype)
            size = image_size or 32
    return {'params': count_parameters(model), 'macs': count_macs(model, (1, 3, size, size)),
            'image_size': size}


def describe_cost(cost: Dict[str, float], label: str) -> str:
    return f"{label}: {cost['params'] / 1e6:.2f} M parameters, {cost['macs'] / 1e6:.0f} M multiply-accumulates " \
           f"per {cost['image_size']}x{cost['image_size']} image"
