"""The ground truth of a NAS-Bench-201 search: each generation's best architecture looked up in the benchmark.

Every one of the 15,625 architectures of NAS-Bench-201 was trained for 200 epochs on each dataset, so the
search's result can be read off as a true accuracy. The look-up goes through the benchmark's own API
(`pip install nas-bench-201`, an optional extra) and its file, v1_0 or v1_1 (--api_path). As the original
EvNAS reports it: on CIFAR-10 the test accuracy is `ori-test` of `cifar10` (trained on the whole training
set) and the validation accuracy `x-valid` of `cifar10-valid` (trained on its train half); on CIFAR-100 and
ImageNet16-120 `x-test` and `x-valid` of the dataset, both halves of its test set.
"""
import os
from typing import Any, Dict, List, Optional

from utils import UserError, reason

WHERE = ("the NAS-Bench-201 file (NAS-Bench-201-v1_0-e61699.pth, 2.1 GB, or NAS-Bench-201-v1_1-096897.pth, "
         "4.7 GB) is linked from https://github.com/D-X-Y/NAS-Bench-201; read it with `pip install nas-bench-201`")
# The benchmark dataset and set name of the true test and validation accuracies of a search dataset.
METRICS = {
    'cifar10': {'test': ('cifar10', 'ori-test'), 'valid': ('cifar10-valid', 'x-valid')},
    'cifar100': {'test': ('cifar100', 'x-test'), 'valid': ('cifar100', 'x-valid')},
    'ImageNet16-120': {'test': ('ImageNet16-120', 'x-test'), 'valid': ('ImageNet16-120', 'x-valid')},
}


class Benchmark:
    """The 200-epoch accuracies of architectures of the benchmark, for one search dataset."""

    def __init__(self, api: Any, dataset: str):
        """`api`: nas_201_api's NASBench201API, or anything with its get_more_info and query_index_by_arch."""
        self.api, self.metrics = api, METRICS[dataset]

    @classmethod
    def open(cls, api_path: str, dataset: str) -> 'Benchmark':
        """Read the benchmark file (minutes and tens of GB of memory for the real ones)."""
        if dataset not in METRICS:
            raise UserError(f"NAS-Bench-201 has no accuracies for --dataset {dataset} (it has "
                            f"{', '.join(METRICS)}); leave out --api_path")
        if not os.path.isfile(api_path):
            raise UserError(f"--api_path {api_path} is not a file; {WHERE}")
        try:
            from nas_201_api import NASBench201API
        except ImportError:
            raise UserError(f"--api_path needs the benchmark's API: pip install nas-bench-201 ({WHERE})") from None
        try:
            api = NASBench201API(api_path, verbose=False)
        except Exception as e:  # a damaged or foreign file: whatever torch.load or the API raises
            if 'weights_only' not in str(e):
                raise UserError(f"cannot read the NAS-Bench-201 file {api_path}: {reason(e)}") from None
            # The API calls torch.load(path) as torch before 2.6 did, unpickling everything; since 2.6 torch.load
            # admits only tensors and plain containers. The file is the one the user named, so it is read the way
            # its API was written to read it, and handed over as a dict.
            import torch
            try:
                api = NASBench201API(torch.load(api_path, map_location='cpu', weights_only=False), verbose=False)
            except Exception as e:
                raise UserError(f"cannot read the NAS-Bench-201 file {api_path}: {reason(e)}") from None
        return cls(api, dataset)

    def _results(self, index: int):
        try:
            return self.api.query_meta_info_by_index(index, hp='200')
        except TypeError:  # nas-bench-201 1.x: no hp argument, and the 200-epoch results by default
            return self.api.query_meta_info_by_index(index)

    def per_seed(self, arch: str) -> Optional[Dict]:
        """{'index', 'accuracies': the 200-epoch test accuracy of each of the benchmark's seeds, 'metric'} of an
        architecture string, or None when the benchmark does not hold it: the seeds' spread is the noise ceiling
        of any ranking measured against the benchmark."""
        index = self.api.query_index_by_arch(arch)
        if index < 0:
            return None
        dataset, setname = self.metrics['test']
        results = self._results(index)
        seeds = results.get_dataset_seeds(dataset)
        return {'index': int(index), 'metric': f"{setname} accuracy of {dataset} after 200 epochs",
                'accuracies': [float(results.get_metrics(dataset, setname, is_random=seed)['accuracy'])
                               for seed in seeds]}

    def every_test_accuracy(self) -> List[float]:
        """The 200-epoch test accuracy (mean over the benchmark's seeds) of every architecture it holds, in its
        index order: what a pick's percentile among all of them is read from."""
        dataset, setname = self.metrics['test']
        return [float(self._query(index).get_metrics(dataset, setname)['accuracy']) for index in range(len(self.api))]

    def _query(self, index: int):
        try:
            return self.api.query_by_index(index, hp='200')
        except TypeError:  # nas-bench-201 1.x: no hp argument, and the 200-epoch results by default
            return self.api.query_by_index(index)

    def lookup(self, arch: str) -> Optional[Dict[str, float]]:
        """{'index', 'test', 'valid'} of an architecture string (200 epochs, mean over the benchmark's seeds),
        or None when the benchmark does not hold it."""
        index = self.api.query_index_by_arch(arch)
        if index < 0:
            return None
        results = self._query(index)
        found = {'index': int(index)}
        for key, (dataset, setname) in self.metrics.items():
            found[key] = float(results.get_metrics(dataset, setname)['accuracy'])
        return found
