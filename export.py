"""Export a trained network for deployment: a torch.export program (.pt2) and, with onnx installed, ONNX.

Examples:
    # a train.py or train_imagenet.py run: everything comes from its directory
    python export.py --dir eval-EXP
    # published weights: the architecture, the weights and the sizes
    python export.py --arch EvNASA --model_path EvNAS_A_cifar_weights.pt --out EvNAS-A-export
    python export.py --arch EvNASA --model_path EvNAS_A_imagenet_model_best.pt.tar --network imagenet
    # also time eager, exported and ONNX Runtime at batch 1 and 64, beside a latency table's prediction
    python export.py --dir eval-EXP --latency --latency_table latency-cpu.json

Writes OUT/ (default RUN_DIR/export/):
  model.pt2    torch.export.save of the network in eval mode, logits only, batch dimension dynamic; load it with
               torch.export.load(path).module() in any process, without this repository
  model.onnx   the same as ONNX (opset 18, dynamic batch), when onnx and onnxscript are installed, checked with
               onnxruntime when that is installed
  export.json  what the network expects: input layout, image size, normalisation (mean/std), class names, and
               its genotype, parameters and MACs, and the checks' results
Every export is checked against the eager network on real images of the run's dataset (generated ones when
the data is not there): the largest logit difference is printed and recorded, and over 1e-4 the export fails
(exit status 2).
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

import speed
import utils
from cli import arguments
from cost import count_macs
from genotypes import genotype_to_dict, resolve_genotype
from inputs.augmentation import normalize
from inputs.data import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from model import Logits, NetworkCIFAR, NetworkImageNet
from runtime import devices, logs, run_dirs, stopping
from runtime.checkpoint import atomic_write_text, load_weights_file, read_weights_file
from runtime.run_dirs import read_run_args
from search.latency import LatencyTable, Network, TableError, synchronizer, this_target, time_calls

TOLERANCE = 1e-4
ONNX_OPSET = 18
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = arguments.ArgumentParser('export', description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dir', type=str, default=None, metavar='RUN_DIR',
                        help='a train.py or train_imagenet.py run: its genotype, sizes, normalisation and weights')
    parser.add_argument('--arch', type=str, default=None, help='published architecture name (without --dir)')
    parser.add_argument('--genotype', type=str, default=None, help='genotype JSON file (without --dir)')
    parser.add_argument('--model_path', type=str, default=None,
                        help='weights (default with --dir: weights.pt of train.py, checkpoint.pth.tar of '
                             'train_imagenet.py)')
    parser.add_argument('--network', choices=('cifar', 'imagenet'), default=None,
                        help='the network the weights are for (default: cifar; the run\'s with --dir)')
    parser.add_argument('--dataset', choices=('cifar10', 'cifar100'), default='cifar10',
                        help='cifar networks without --dir: the normalisation and class names (default: cifar10)')
    parser.add_argument('--init_channels', type=int, default=None, help='default: 36 (cifar), 48 (imagenet)')
    parser.add_argument('--layers', type=int, default=None, help='default: 20 (cifar), 14 (imagenet)')
    parser.add_argument('--image_size', type=int, default=None, help='default: 32 (cifar), 224 (imagenet)')
    parser.add_argument('--data', type=str, default=None,
                        help='where the images of the parity check are (default: the run\'s --data)')
    parser.add_argument('--out', type=str, default=None, help='output directory (default: RUN_DIR/export or ./export)')
    parser.add_argument('--latency', action='store_true',
                        help='time eager, exported and ONNX Runtime at batch 1 and 64 (median of repeats)')
    parser.add_argument('--repeats', type=int, default=20, help='timed runs of --latency (default: 20)')
    parser.add_argument('--latency_table', type=str, default=None, metavar='FILE',
                        help="with --latency: the latency latency_table.py's table predicts, beside the measured one")
    parser.add_argument('--device', type=str, default='cpu',
                        help='where --latency runs eager and exported (default: cpu; ONNX Runtime runs on the CPU)')
    args = parser.parse_args(argv)
    if args.dir is None and args.model_path is None:
        parser.error("nothing to export: give --dir RUN_DIR of a training run, or --arch/--genotype with --model_path")
    if args.dir is not None:
        given = sorted(f"--{n}" for n in ('arch', 'genotype', 'network', 'init_channels', 'layers', 'image_size')
                       if getattr(args, n) is not None)
        if args.dataset != 'cifar10':
            given.append('--dataset')
        if given:
            parser.error(f"--dir names its architecture and sizes (its genotype.json and args.json); leave out "
                         f"{', '.join(given)}")
    if args.latency_table is not None and not args.latency:
        parser.error("--latency_table sets a prediction beside the measured latency: give --latency too")
    if args.latency_table is not None:
        try:  # a damaged or foreign table is refused before any work
            LatencyTable.read(args.latency_table)
        except TableError as e:
            parser.error(str(e))
    if args.device != 'cpu' and not args.latency:
        parser.error("--device chooses where --latency runs; give --latency too (the exports themselves run on "
                     "the CPU)")
    if tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]) < (2, 5):
        parser.error(f"export.py needs torch 2.5 or newer (torch.export with dynamic shapes, the dynamo ONNX "
                     f"exporter); this is torch {torch.__version__}")
    arguments.check_args(parser, args, at_least_one=('repeats',))
    return args


# ----------------------------------------------------------------------------------------------------------
# What is exported

def describe_network(args) -> Dict:
    """The network to export and what it expects: from a run directory, or from the flags."""
    if args.dir is not None:
        return _from_run(args)
    network = args.network or 'cifar'
    genotype, name = resolve_genotype(args.arch or arguments.DEFAULT_ARCH, args.genotype)
    imagenet = network == 'imagenet'
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet else \
        (CIFAR100_MEAN, CIFAR100_STD) if args.dataset == 'cifar100' else (CIFAR10_MEAN, CIFAR10_STD)
    return {'network': network, 'genotype': genotype, 'architecture': name, 'model_path': args.model_path,
            'init_channels': args.init_channels or (48 if imagenet else 36),
            'layers': args.layers or (14 if imagenet else 20),
            'image_size': args.image_size or (224 if imagenet else 32),
            'mean': mean, 'std': std, 'dataset': 'imagenet' if imagenet else args.dataset, 'data': args.data,
            'classes': None if imagenet else _known_classes(args.dataset)}


def _from_run(args) -> Dict:
    program = run_dirs.run_program(args.dir)
    if program not in ('train', 'train_imagenet'):
        read_run_args(args.dir, 'train')  # raises the one-line error that says what the directory is
    saved = read_run_args(args.dir, program)
    genotype, _ = resolve_genotype(genotype_file=os.path.join(args.dir, 'genotype.json'))
    imagenet = program == 'train_imagenet'
    info = {}
    info_path = os.path.join(args.dir, 'dataset.json')
    if os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
    dataset = 'imagenet' if imagenet else saved.get('dataset', 'cifar10')
    mean, std = ((IMAGENET_MEAN, IMAGENET_STD) if imagenet else
                 (tuple(info['mean']), tuple(info['std'])) if 'mean' in info else
                 (CIFAR100_MEAN, CIFAR100_STD) if dataset == 'cifar100' else (CIFAR10_MEAN, CIFAR10_STD))
    data = args.data or saved.get('data')
    return {'network': 'imagenet' if imagenet else 'cifar', 'genotype': genotype,
            'architecture': os.path.join(args.dir, 'genotype.json'),
            'model_path': args.model_path or os.path.join(args.dir, 'checkpoint.pth.tar' if imagenet else 'weights.pt'),
            'init_channels': saved['init_channels'], 'layers': saved['layers'],
            'image_size': saved.get('image_size') or info.get('image_size') or (224 if imagenet else 32),
            'mean': mean, 'std': std, 'dataset': dataset, 'data': data, 'synthetic_size': saved.get('synthetic_size'),
            'classes': info.get('classes') or _known_classes(dataset) or _folder_classes(data, dataset)}
    # (runs from before dataset.json held class names fall back to CIFAR-10's or the folder's own)


def _known_classes(dataset: str) -> Optional[List[str]]:
    return list(CIFAR10_CLASSES) if dataset == 'cifar10' else None


def _folder_classes(data: Optional[str], dataset: str) -> Optional[List[str]]:
    """The class names of an image-folder dataset: its train/ subfolders in sorted order, as training read them."""
    if dataset not in ('folder', 'imagenet') or not data or not os.path.isdir(os.path.join(data, 'train')):
        return None
    return sorted(e.name for e in os.scandir(os.path.join(data, 'train')) if e.is_dir())


def build(spec: Dict) -> nn.Module:
    """The eval-mode network with its weights (torch.nn layers only, so that the export holds standard ops)."""
    weights = read_weights_file(spec['model_path'])
    if 'classifier.weight' not in weights:
        raise utils.UserError(f"{spec['model_path']} holds no classifier.weight: not an evaluation network's weights")
    num_classes = weights['classifier.weight'].shape[0]
    cls = NetworkImageNet if spec['network'] == 'imagenet' else NetworkCIFAR
    model = cls(spec['init_channels'], num_classes, spec['layers'], False, spec['genotype'])
    load_weights_file(model, weights, f"{spec['architecture']} ({spec['network']}, C={spec['init_channels']}, "
                                      f"layers={spec['layers']}, classes={num_classes})")
    model.drop_path_prob = 0.
    return Logits(model).eval()


def parity_inputs(spec: Dict, count: int = 64) -> Tuple[torch.Tensor, str]:
    """Normalised images of the run's test set when it is there, else generated ones of the same size."""
    from inputs.data import load_dataset, make_synthetic
    size = spec['image_size']
    images, source = None, None
    if spec['network'] == 'cifar' and spec['dataset'] in ('cifar10', 'cifar100', 'synthetic', 'folder'):
        try:
            test = load_dataset(spec['dataset'], spec['data'] or '../data', train=False, download=False,
                                synthetic_size=spec.get('synthetic_size') or 2000, image_size=size,
                                stats=(spec['mean'], spec['std']))
            images, source = test.images[:count], f"{spec['dataset']} test images"
        except utils.UserError:
            pass
    if spec['network'] == 'imagenet' and spec['data'] and os.path.isdir(os.path.join(spec['data'], 'val')):
        from inputs.augmentation import imagenet_transforms
        from inputs.loaders import image_folder
        folder = image_folder(spec['data'], 'val', imagenet_transforms(False, size))
        step = max(len(folder) // count, 1)  # spread over the classes (the folder is sorted by class)
        picked = [folder[i][0] for i in range(0, len(folder), step)][:count]
        return torch.stack(picked), f"{len(picked)} ImageNet validation images"
    if images is None:
        images, source = make_synthetic(False, count, image_size=size).images, 'generated images'
    return normalize(images, spec['mean'], spec['std']), f"{len(images)} {source}"


# ----------------------------------------------------------------------------------------------------------
# Exports and their checks

def export_program(model: nn.Module, example: torch.Tensor, path: str):
    """model.pt2 with a dynamic batch; returns the program as read back from the file (what a user loads)."""
    batch = torch.export.Dim('batch', min=1, max=4096)
    program = torch.export.export(model, (example,), dynamic_shapes={'images': {0: batch}})
    torch.export.save(program, path)
    return torch.export.load(path)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str) -> Dict:
    """model.onnx, and its check with onnxruntime; {'skipped': why} where the packages are missing."""
    if importlib.util.find_spec('onnx') is None or importlib.util.find_spec('onnxscript') is None:
        return {'skipped': 'onnx and onnxscript are not installed (pip install onnx onnxscript onnxruntime)'}
    batch = torch.export.Dim('batch', min=1, max=4096)
    try:
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=['images'], output_names=['logits'],
                                    dynamic_shapes={'images': {0: batch}}, opset_version=ONNX_OPSET)
        program.save(path)
    except Exception as e:  # the exporter's failures are many and version-specific; the .pt2 stands on its own
        return {'failed': f"the ONNX exporter failed: {utils.reason(e).strip().splitlines()[-1][:300]}"}
    try:
        import onnxruntime
    except ImportError:
        return {'file': path, 'unchecked': 'onnxruntime is not installed (pip install onnxruntime)'}
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as torch's, so that --latency compares like with like
    session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    return {'file': path, 'run': lambda x: torch.from_numpy(session.run(['logits'], {'images': x.numpy()})[0])}


def check(name: str, run: Callable, reference: torch.Tensor, inputs: torch.Tensor, source: str, logger) -> Dict:
    """The largest |logit difference| of an export against the eager network, at batch 1 and the whole batch."""
    with torch.no_grad():
        difference = max((run(inputs) - reference).abs().max().item(),
                         (run(inputs[:1]) - reference[:1]).abs().max().item())
    logger.info(f"{name}: max |logit difference| from the eager network {difference:.2e} on {source}")
    return {'max_abs_logit_difference': difference, 'inputs': source, 'tolerance': TOLERANCE,
            'passed': difference <= TOLERANCE}


def latency(runs: Dict[str, Callable], image_size: int, repeats: int, device: torch.device) -> Dict:
    """Milliseconds per image at batch 1 and 64, median of `repeats` after latency.WARMUP warm-up runs (as
    latency_table.py times its parts and networks)."""
    out = {}
    for batch in (1, 64):
        x = torch.randn(batch, 3, image_size, image_size)
        for name, run in runs.items():
            inputs = x if name == 'onnxruntime' else x.to(device)
            runtime = 'onnxruntime' if name == 'onnxruntime' else 'eager'
            with torch.no_grad():
                times = time_calls(lambda: run(inputs), repeats, synchronize=synchronizer(device, runtime))
            out.setdefault(name, {})[f'batch_{batch}_ms_per_image'] = statistics.median(times) / batch
    return out


def predicted_latency(path: str, spec: Dict, num_classes: int, measured: Dict, device: torch.device,
                      logger) -> Dict:
    """The latency a table predicts for this network, beside the one measured in the table's runtime at batch 1;
    one line where the table was built for another network or measured elsewhere."""
    table = LatencyTable.read(path)
    mine = Network('darts', spec['network'], spec['init_channels'], spec['layers'], spec['image_size'], num_classes)
    out = {'table': path, 'table_sha256': table.sha256, 'table_target': table.target}
    if table.network != mine:
        out['skipped'] = f"the table is for {table.network.describe()}, this network is {mine.describe()}"
        logger.warning(f"no predicted latency: {out['skipped']}")
        return out
    runtime = table.target['runtime']
    name = 'onnxruntime' if runtime == 'onnxruntime' else 'eager'
    try:
        out['predicted_ms'] = table.predict(spec['genotype'])
    except TableError as e:  # an operation outside the search space (a published cell's sep_conv_7x7)
        out['skipped'] = str(e)
        logger.warning(f"no predicted latency: {out['skipped']}")
        return out
    if name in measured and int(table.target['batch_size']) == 1:
        here = this_target(torch.device('cpu') if name == 'onnxruntime' else device, runtime,
                           torch.get_num_threads(), 1)
        out['measured_ms'] = measured[name]['batch_1_ms_per_image']
        out['differs'] = table.differs_from(here)
        logger.info(f"latency predicted by {path}: {out['predicted_ms']:.3f} ms, measured {out['measured_ms']:.3f} ms "
                    f"({runtime}, batch 1)")
        if out['differs']:
            logger.warning(out['differs'])
    return out


def main(args: argparse.Namespace) -> Dict:
    logger = logs.setup_logger('export')
    device = devices.resolve_device(args.device)
    if args.latency:
        speed.configure_process(speed.default_config(device))  # the process settings every script runs with
    spec = describe_network(args)
    model = build(spec)
    out_dir = args.out or os.path.join(args.dir or '.', 'export')
    os.makedirs(out_dir, exist_ok=True)
    inputs, source = parity_inputs(spec)
    with torch.no_grad():
        reference = model(inputs)
    size = spec['image_size']
    logger.info(f"exporting {spec['architecture']} ({spec['network']} network, {reference.shape[1]} classes, "
                f"{size}x{size} images) to {out_dir}")

    pt2 = os.path.join(out_dir, 'model.pt2')
    program = export_program(model, inputs[:2], pt2)
    checks = {'pt2': {'file': pt2, **check('model.pt2', program.module(), reference, inputs, source, logger)}}
    runs = {'eager': model, 'exported': program}
    onnx_path = os.path.join(out_dir, 'model.onnx')
    onnx_result = export_onnx(model, inputs[:2], onnx_path)
    if 'run' in onnx_result:
        run = onnx_result.pop('run')
        onnx_result.update(check('model.onnx (onnxruntime)', run, reference, inputs, source, logger))
        runs['onnxruntime'] = run
    else:
        why = onnx_result.get('skipped') or onnx_result.get('unchecked') or onnx_result['failed']
        logger.warning(f"model.onnx: {why}")
    checks['onnx'] = onnx_result
    failed = [name for name, result in checks.items() if result.get('passed') is False]
    for name in failed:  # an export that computes something else must not be picked up by mistake
        os.remove(checks[name]['file'])

    network = model.network
    info = {
        'architecture': spec['architecture'], 'genotype': genotype_to_dict(spec['genotype']),
        'network': {'kind': spec['network'], 'init_channels': spec['init_channels'], 'layers': spec['layers']},
        'num_classes': int(reference.shape[1]), 'classes': spec['classes'],
        'input': {'shape': ['batch', 3, size, size], 'dtype': 'float32', 'layout': 'NCHW, RGB',
                  'resize': (f"shorter side to {round(size * 256 / 224)}, then the centre {size}x{size} crop"
                             if spec['network'] == 'imagenet' else f"to {size}x{size}"),
                  'preprocessing': 'pixel / 255, then (x - mean) / std per channel', 'image_size': size,
                  'mean': list(spec['mean']), 'std': list(spec['std'])},
        'output': 'logits (batch, num_classes); softmax gives probabilities',
        'params': utils.count_parameters(network), 'macs': count_macs(network, (1, 3, size, size)),
        'weights': spec['model_path'], 'torch': torch.__version__, 'checks': checks,
    }
    if args.latency and not failed:
        runs = {name: (run if name == 'onnxruntime' else _on(run, device)) for name, run in runs.items()}
        info['latency'] = {'device': {name: 'cpu' if name == 'onnxruntime' else str(device) for name in runs},
                           'threads': torch.get_num_threads(), 'repeats': args.repeats,
                           **latency(runs, size, args.repeats, device)}
        for name, figures in info['latency'].items():
            if name not in ('device', 'threads', 'repeats'):
                logger.info(f"latency {name} ({info['latency']['device'][name]}): "
                            + ', '.join(f"{k.replace('_ms_per_image', '')} {v:.3f} ms/image"
                                        for k, v in figures.items()))
        if args.latency_table is not None:
            info['latency']['predicted'] = predicted_latency(args.latency_table, spec, info['num_classes'],
                                                             info['latency'], device, logger)
    atomic_write_text(os.path.join(out_dir, 'export.json'), json.dumps(info, indent=1) + '\n')
    if failed:
        worst = max(checks[name]['max_abs_logit_difference'] for name in failed)
        raise utils.UserError(f"{' and '.join(os.path.basename(checks[n]['file']) for n in failed)} disagree(s) with "
                              f"the eager network: max |logit difference| {worst:.2e} > {TOLERANCE:g} on {source}; "
                              f"removed, see {os.path.join(out_dir, 'export.json')}")
    logger.info(f"wrote {pt2}" + (f", {onnx_path}" if 'file' in checks['onnx'] else '') +
                f" and {os.path.join(out_dir, 'export.json')}")
    return info


def _on(run, device: torch.device):
    """What runs on `device`: an eager network moved there, or the module of an exported program moved by
    torch.export's own pass (a program's constants and buffers are part of its graph; `.to()` on its module is not
    how PyTorch moves it). ONNX Runtime sessions stay as they are."""
    if isinstance(run, torch.export.ExportedProgram):
        from torch.export.passes import move_to_device_pass  # torch 2.3 and later; export.py needs 2.5
        return (move_to_device_pass(run, device) if device.type != 'cpu' else run).module()
    return run.to(device) if isinstance(run, nn.Module) and device.type != 'cpu' else run


if __name__ == '__main__':
    sys.exit(stopping.run_main(main, parse_args()))
