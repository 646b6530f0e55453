"""The search spaces EvNAS searches, as objects: what the GA, the search loop, the records and the reports need
of a space, so that none of them branches on which space it is.

A space knows its alpha matrices (`cells`, `alpha_shapes`), how an individual's alphas decode into the
one-hot alphas the supernet runs with and into the architecture they stand for (`decode`, `genotype`), how
that architecture is written down (`record`, `save_result`, `describe`), its supernet and optimiser, its
search data and augmentation, and how its fitness is measured.

- `DARTS`: the DARTS cell space (Liu et al., 2019), the paper's main search (model_search.py).
- `NB201`: NAS-Bench-201 (Dong & Yang, 2020), the original's second space (model_search_nb201.py).
"""
import json
import math
from typing import Any, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple

import torch
import torch.nn as nn

from architect_evolution import darts_shapes, decode, derive_genotype
from cost import count_macs, network_cost
from genotypes import Genotype, genotype_to_dict, save_genotype
from genotypes_nb201 import NB201_OPS, arch_string, max_nodes_of, num_edges, parse_arch
from inputs import nb201
from inputs.augmentation import training_augment
from inputs.data import SearchData, load_dataset
from operations import Layers
from runtime.checkpoint import atomic_write_text
from runtime.settings import Augment, DataSettings, Recipe, SupernetSettings
from utils import UserError, count_parameters

# An architecture as a space writes it: a DARTS Genotype, or a NAS-Bench-201 arch string.
Architecture = Any


class SearchSpace(Protocol):
    """What every space provides (DartsSpace and NB201Space below); what code outside this module may use.
    Its attributes are read-only (properties here, class attributes in the spaces)."""
    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def cells(self) -> Tuple[str, ...]: ...
    @property
    def fitness_train_mode(self) -> bool: ...
    @property
    def datasets(self) -> Tuple[str, ...]: ...
    @property
    def flags(self) -> Tuple[str, ...]: ...

    def alpha_shapes(self, supernet: SupernetSettings) -> List[Tuple[int, int]]: ...
    def decode(self, alphas: Sequence[torch.Tensor]) -> List[torch.Tensor]: ...
    def genotype(self, alphas: Sequence[torch.Tensor]) -> Architecture: ...
    def record(self, alphas: Sequence[torch.Tensor]) -> Dict: ...
    def describe(self, alphas: Sequence[torch.Tensor]) -> str: ...
    def key(self, alphas: Sequence[torch.Tensor]) -> str: ...
    def genotype_key(self, genotype: Architecture) -> str: ...
    def save_result(self, alphas: Sequence[torch.Tensor], path: str) -> None: ...
    def augment_defaults(self, dataset: str, crop_padding: Optional[int], cutout_length: Optional[int]
                         ) -> Tuple[int, int]: ...
    def train_augment(self, cutout: bool, cutout_length: int, crop_padding: int, flip: bool) -> Augment: ...
    def build_supernet(self, supernet: SupernetSettings, num_classes: int, impl: Layers) -> nn.Module: ...
    def cost_size(self, size: str) -> str: ...
    def cost(self, alphas: Sequence[torch.Tensor], size: str, num_classes: int) -> Dict[str, float]: ...
    def optimizer(self, parameters: Iterable[nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer: ...
    def search_data(self, data: DataSettings, augment: Augment) -> SearchData: ...


class DartsSpace:
    name = 'darts'
    title = 'DARTS cell space'
    cells = ('normal', 'reduce')
    # Fitness with the supernet in train mode, on held-out images with the training augmentation: the
    # original's, kept (engine.evaluate_population says why).
    fitness_train_mode = True
    datasets = ('cifar10', 'cifar100', 'synthetic', 'folder')
    # Flags of this space only (an explicit one with another space is an error).
    flags = ('layers',)

    def alpha_shapes(self, supernet: SupernetSettings) -> List[Tuple[int, int]]:
        return darts_shapes(4)

    def decode(self, alphas: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return decode(alphas)

    def genotype(self, alphas: Sequence[torch.Tensor]) -> Genotype:
        return derive_genotype(alphas)

    def record(self, alphas: Sequence[torch.Tensor]) -> Dict:
        """An individual's fields of a generation record: its genotype and raw alphas."""
        return {'genotype': genotype_to_dict(self.genotype(alphas)),
                'alphas': {cell: a.tolist() for cell, a in zip(self.cells, alphas)}}

    def describe(self, alphas: Sequence[torch.Tensor]) -> str:
        return str(self.genotype(alphas))

    def key(self, alphas: Sequence[torch.Tensor]) -> str:
        return self.genotype_key(self.genotype(alphas))

    def genotype_key(self, genotype: Genotype) -> str:
        """The architecture, the same for every genotype that builds the same network: each node's two edges in
        input order (decoding lists them by strength, which does not change the cell)."""
        cells = [[sorted(map(tuple, edges[i:i + 2]), key=lambda e: (e[1], e[0])) for i in range(0, len(edges), 2)]
                 for edges in (genotype.normal, genotype.reduce)]
        return json.dumps([cells, list(genotype.normal_concat), list(genotype.reduce_concat)])

    def save_result(self, alphas: Sequence[torch.Tensor], path: str) -> None:
        save_genotype(self.genotype(alphas), path)

    def augment_defaults(self, dataset: str, crop_padding: Optional[int], cutout_length: Optional[int]
                         ) -> Tuple[int, int]:
        """--crop_padding and --cutout_length where the command line left them to the space."""
        return 4 if crop_padding is None else crop_padding, 16 if cutout_length is None else cutout_length

    def train_augment(self, cutout: bool, cutout_length: int, crop_padding: int, flip: bool) -> Augment:
        """The training batches' augmentation (the resolved flags): DARTS's cutout with --cutout."""
        return training_augment(cutout, cutout_length, crop_padding, flip)

    def build_supernet(self, supernet: SupernetSettings, num_classes: int, impl: Layers) -> nn.Module:
        from model_search import Network
        return Network(supernet.init_channels, num_classes, supernet.layers, impl=impl)

    def cost_size(self, size: str) -> str:
        return 'C=48, 14 layers, 224x224, 1000 classes' if size == 'imagenet' else 'C=36, 20 layers, 32x32'

    def cost(self, alphas: Sequence[torch.Tensor], size: str, num_classes: int) -> Dict[str, float]:
        """Parameters and MACs of the evaluation network of the genotype at `size` (budget.SIZES)."""
        measured = (network_cost(self.genotype(alphas), 'imagenet') if size == 'imagenet'
                    else network_cost(self.genotype(alphas), 'cifar10', num_classes=num_classes))
        return {'params': measured['params'], 'macs': measured['macs']}

    def optimizer(self, parameters: Iterable[nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
        return torch.optim.SGD(parameters, recipe.learning_rate, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)

    def search_data(self, data: DataSettings, augment: Augment) -> SearchData:
        """The first --train_portion of the training set trains the supernet, the rest measures fitness."""
        # NOTE (faithful to EvNAS): the held-out half carries the training augmentation.
        return held_out_split(data, valid_augment=augment)


class NB201Space:
    name = 'nb201'
    title = 'NAS-Bench-201'
    cells = ('cell',)
    # NOTE (faithful to EvNAS): fitness in eval mode on images with the test transform (the original's
    # validation() calls model.eval()), so only the BatchNorms that track statistics use running averages.
    fitness_train_mode = False
    datasets = nb201.DATASETS
    flags = ('num_cells', 'max_nodes', 'track_running_stats', 'api_path')

    def alpha_shapes(self, supernet: SupernetSettings) -> List[Tuple[int, int]]:
        return [(num_edges(supernet.max_nodes), len(NB201_OPS))]

    def decode(self, alphas: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The one-hot of each edge's argmax.

        NOTE (faithful to EvNAS): `none` is an operation like the others here and can win an edge (unlike
        the DARTS space), and the supernet still applies softmax to the one-hot rows: the chosen op gets
        e/(e+4) = 0.405 and the other four 1/(e+4) = 0.149 each.
        """
        (cell,) = alphas
        return [torch.zeros_like(cell).scatter_(-1, cell.argmax(dim=-1, keepdim=True), 1.)]

    def genotype(self, alphas: Sequence[torch.Tensor]) -> str:
        """The benchmark's architecture string.

        NOTE (faithful to EvNAS): from the argmax of the raw alphas, as the original's genotype() (the same
        edges as the decoded one-hot, ties aside).
        """
        (cell,) = alphas
        return arch_string([NB201_OPS[i] for i in cell.argmax(dim=-1).tolist()], max_nodes_of(cell.shape[0]))

    def record(self, alphas: Sequence[torch.Tensor]) -> Dict:
        return {'arch': self.genotype(alphas), 'alphas': {cell: a.tolist() for cell, a in zip(self.cells, alphas)}}

    def describe(self, alphas: Sequence[torch.Tensor]) -> str:
        return self.genotype(alphas)

    def key(self, alphas: Sequence[torch.Tensor]) -> str:
        return self.genotype_key(self.genotype(alphas))

    def genotype_key(self, genotype: str) -> str:
        """The architecture: its arch string, which names one operation per edge in a fixed edge order."""
        ops = parse_arch(genotype)
        return arch_string(ops, max_nodes_of(len(ops)))

    def save_result(self, alphas: Sequence[torch.Tensor], path: str) -> None:
        atomic_write_text(path, json.dumps({'space': self.name, 'arch': self.genotype(alphas)}, indent=1) + '\n')

    def augment_defaults(self, dataset: str, crop_padding: Optional[int], cutout_length: Optional[int]
                         ) -> Tuple[int, int]:
        # NOTE (faithful to EvNAS): AutoDL's crop padding, 4 for 32x32 images and 2 for ImageNet16's 16x16.
        if crop_padding is None:
            crop_padding = 2 if dataset == nb201.IMAGENET16 else 4
        # NOTE (faithful to EvNAS): its --cutout has no effect in this space (it passes True as the length, a
        # box of 2 * (True // 2) = 0 pixels). A real cutout is opt-in: --cutout_length N.
        return crop_padding, 0 if cutout_length is None else cutout_length

    def train_augment(self, cutout: bool, cutout_length: int, crop_padding: int, flip: bool) -> Augment:
        return Augment(padding=crop_padding, flip=flip, cutout_length=cutout_length)

    def build_supernet(self, supernet: SupernetSettings, num_classes: int, impl: Layers) -> nn.Module:
        from model_search_nb201 import Network
        return Network(supernet.init_channels, supernet.num_cells, num_classes, supernet.max_nodes,
                       supernet.track_running_stats, impl=impl)

    def cost_size(self, size: str) -> str:
        return ("the benchmark's network, C=16, N=5, " +
                ('16x16, 120 classes (ImageNet16-120)' if size == 'imagenet' else "32x32, the search's classes"))

    def cost(self, alphas: Sequence[torch.Tensor], size: str, num_classes: int) -> Dict[str, float]:
        """Parameters and MACs of the benchmark's network of the architecture (C=16, N=5, affine BatchNorms,
        `none` edges left out) at `size`: CIFAR's 32x32, or ImageNet16-120's 16x16 and 120 classes."""
        from model_search_nb201 import Network
        image, classes = (16, 120) if size == 'imagenet' else (32, num_classes)
        with torch.device('meta'):  # shapes only (cost.network_cost)
            model = Network(16, 5, classes, arch=parse_arch(self.genotype(alphas)))
        return {'params': count_parameters(model), 'macs': count_macs(model, (1, 3, image, image))}

    def optimizer(self, parameters: Iterable[nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
        # NOTE (faithful to EvNAS): its NAS-Bench-201 config trains the supernet with Nesterov momentum (the
        # DARTS space's SGD does not).
        return torch.optim.SGD(parameters, recipe.learning_rate, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay, nesterov=True)

    def search_data(self, data: DataSettings, augment: Augment) -> SearchData:
        """The benchmark's splits of CIFAR-10, CIFAR-100 and ImageNet16-120 (nb201.py); a generated or
        folder dataset is split by --train_portion, its fitness images with the test transform (`augment`
        trains the supernet only)."""
        if data.dataset in nb201.SPLITS:
            return nb201.load_search_data(data.dataset, data.data)
        return held_out_split(data, valid_augment=None)


DARTS, NB201 = DartsSpace(), NB201Space()
SPACES = {space.name: space for space in (DARTS, NB201)}


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise UserError(f"unknown search space '{name}' (known: {', '.join(SPACES)})") from None


def held_out_split(data: DataSettings, valid_augment: Optional[Augment]) -> SearchData:
    """The first --train_portion of the training set trains the supernet, the rest measures fitness."""
    train = load_dataset(data.dataset, data.data, train=True, synthetic_size=data.synthetic_size,
                         image_size=data.image_size)
    split = int(math.floor(data.train_portion * len(train)))
    if split < 1 or split >= len(train):
        raise UserError(f"--train_portion {data.train_portion} leaves no images on one side of the split "
                        f"of {len(train)} training images")
    indices = torch.arange(len(train))
    return SearchData(train, indices[:split], train, indices[split:], valid_augment)
