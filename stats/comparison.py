"""Was the search worth running: the picks of several searches against what picking at random with the same
supernet and the same cost found, and against the published cells, paired over search seeds (`trust.py
--compare`).

Each search and each `train_search.py --strategy random` run of the same seed must first be measured by
`trust.py --dir` with the same stand-alone recipe and seeds (or both against NAS-Bench-201). Per search seed, the
search's pick (mean reference over the training seeds) minus each comparator:
  (a) the random run's last-generation best: the GA without selection, at the same cost;
  (b) the random run's weight-sharing pick (Li & Talwalkar): the best of every draw on its final supernet;
  (c) a uniformly random architecture: the mean reference of the random run's uniform sample (its expected value);
  (d) the published cell with the highest mean reference (chosen once over all runs, so that no seed picks its
      luckiest one).
Over the seeds: the mean difference with a Student t interval, the sign-flip p-value (no normality assumed), the
smallest difference the design would find with 80 % power, and the equivalence margin (two one-sided tests):
where no difference shows, no difference larger than that margin is compatible with the data.
"""
import json
import math
import os
import statistics
from typing import Dict, Optional, Sequence

import utils
from runtime.checkpoint import atomic_write_text
from stats import rank_stats

ALPHA = 0.05
# What may differ between a search and the random run it is set against: the strategy, the GA's flags, and
# what does not change what a run computes.
MAY_DIFFER = {'strategy', 'tsize', 'num_elites', 'mutate_rate', 'run_dir', 'dir', 'resume', 'device', 'report_freq',
              'num_workers', 'data', 'cudnn_benchmark', 'api_path'}

COMPARATORS = (('random', "the random strategy's pick (the GA without selection)"),
               ('weight_sharing', 'random search with weight sharing'),
               ('uniform', 'a uniformly random architecture (sample mean)'),
               ('published', 'the best published cell'))


def _read(run_dir: str) -> Dict:
    path = os.path.join(run_dir, 'trust', 'trust.json')
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        raise utils.UserError(f"cannot read {path} ({utils.reason(e)}): run trust.py --dir {run_dir} first") from None
    if result.get('reference') is None:
        raise utils.UserError(f"{path} has no reference (it was measured with --no_reference)")
    if 'strategy' not in result:
        raise utils.UserError(f"{path} was written before trust.py recorded the search's strategy and seed: run "
                              f"trust.py --dir {run_dir} again (this version keeps trainings under new names, so "
                              f"those made before it are trained again)")
    return result


def _mean(values: Sequence[Optional[float]]) -> float:
    measured = [v for v in values if v is not None]
    return sum(measured) / len(measured) if measured else math.nan


def _by_seed(run_dirs: Sequence[str], strategy: str) -> Dict[int, Dict]:
    runs: Dict[int, Dict] = {}
    for run_dir in run_dirs:
        result = _read(run_dir)
        if result['strategy'] != strategy:
            raise utils.UserError(f"{run_dir} is a --strategy {result['strategy']} run, not {strategy}")
        if result['search_seed'] in runs:
            raise utils.UserError(f"{run_dir} and {runs[result['search_seed']]['run']} share the search seed "
                                  f"{result['search_seed']}: give each seed once")
        result['dir'] = run_dir
        runs[result['search_seed']] = result
    return runs


def _search_args(run_dir: str) -> Dict:
    try:
        with open(os.path.join(run_dir, 'args.json')) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise utils.UserError(f"cannot read {os.path.join(run_dir, 'args.json')}: {utils.reason(e)}") from None


def _check_same_search(search_dir: str, random_dir: str) -> None:
    """The two runs of a seed must differ only in their strategy: the same supernet, data, budget and cost."""
    ours, theirs = _search_args(search_dir), _search_args(random_dir)
    for name in sorted((set(ours) | set(theirs)) - MAY_DIFFER):
        if ours.get(name) != theirs.get(name):
            raise utils.UserError(f"{search_dir} and {random_dir} differ in --{name} ({ours.get(name)} and "
                                  f"{theirs.get(name)}): a random run must repeat its search's flags")


def _recipe(result: Dict) -> Dict:
    return {'training': result['training'], 'seeds': result['reference']['seeds'],
            'metric': result['reference']['metric']}


def pick_reference(result: Dict, role: str = 'pick') -> float:
    return _mean(next(a for a in result['architectures'] if a[role])['reference'])


def uniform_reference(result: Dict) -> float:
    """The mean reference of a random run's uniform sample (its architectures other than the two picks)."""
    return _mean([_mean(a['reference']) for a in result['architectures']
                  if not (a['pick'] or a['weight_sharing_pick'])])


def compare(search_dirs: Sequence[str], random_dirs: Sequence[str], out_dir: Optional[str] = None) -> Dict:
    """The table, printed (and written to OUT/compare.md and compare.json with `out_dir`)."""
    searches, randoms = _by_seed(search_dirs, 'evolution'), _by_seed(random_dirs, 'random')
    if set(searches) != set(randoms):
        raise utils.UserError(f"the searches' seeds {sorted(searches)} and the random runs' {sorted(randoms)} differ: "
                              f"each search needs the random run of its seed")
    seeds = sorted(searches)
    for seed in seeds:
        _check_same_search(searches[seed]['dir'], randoms[seed]['dir'])
    recipe = _recipe(searches[seeds[0]])
    for result in list(searches.values()) + list(randoms.values()):
        if _recipe(result) != recipe:
            raise utils.UserError(f"{result['run']} was measured with another recipe, seeds or data than "
                                  f"{searches[seeds[0]]['run']}: run trust.py on every run with the same flags")
    published = _best_published(searches.values())
    published_error = math.nan
    if published:  # one measurement over the training seeds, the same for every search seed
        seeds_of = searches[seeds[0]]['baselines'][published]['reference']
        published_error = statistics.stdev(seeds_of) / math.sqrt(len(seeds_of)) if len(seeds_of) > 1 else math.nan
    rows = []
    for seed in seeds:
        search, random_run = searches[seed], randoms[seed]
        row = {'seed': seed, 'pick': pick_reference(search), 'random': pick_reference(random_run),
               'weight_sharing': (pick_reference(random_run, 'weight_sharing_pick')
                                  if any(a['weight_sharing_pick'] for a in random_run['architectures']) else math.nan),
               'uniform': uniform_reference(random_run),
               'uniform_archs': sum(not (a['pick'] or a['weight_sharing_pick'])
                                    for a in random_run['architectures']),
               'published': _mean(search['baselines'][published]['reference']) if published else math.nan}
        rows.append(row)
    differences = {name: rank_stats.paired_differences([r['pick'] - r[name] for r in rows])
                   for name, _ in COMPARATORS}
    taus = [s['agreement'][s['estimators'][0]] for s in searches.values() if s.get('agreement')]
    result = {'searches': [searches[s]['run'] for s in seeds], 'random_runs': [randoms[s]['run'] for s in seeds],
              'recipe': recipe, 'published_cell': published, 'published_standard_error': published_error,
              'per_seed': rows, 'differences': differences,
              'fitness_tau': [{'run': s['run'], 'kendall_tau_b': t['kendall_tau_b'],
                               'interval': t['kendall_tau_b_interval'],
                               'perfect_supernet': t['perfect_supernet'],
                               'reliability_reference': t['reliability_reference'],
                               'reliability_reference_interval': t['reliability_reference_interval']}
                              for s, t in zip([s for s in searches.values() if s.get('agreement')], taus)]}
    text = markdown(result)
    print(text)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        atomic_write_text(os.path.join(out_dir, 'compare.md'), text + '\n')
        atomic_write_text(os.path.join(out_dir, 'compare.json'),
                          json.dumps(utils.json_numbers(result), indent=1, allow_nan=False) + '\n')
    return result


def _best_published(searches) -> Optional[str]:
    """The published cell with the highest mean reference over every search's measurement of it."""
    names = [name for name in next(iter(searches)).get('baselines') or {}
             if all(name in (s.get('baselines') or {}) for s in searches)]
    if not names:
        return None
    return max(names, key=lambda name: _mean([_mean(s['baselines'][name]['reference']) for s in searches]))


def _f(value, digits: int = 2) -> str:
    return 'n/a' if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    """A p-value to three places, and below that as a bound (the smallest sign-flip p of n seeds is 2 / 2^n)."""
    return '< 0.001' if value < 0.001 else _f(value, 3)


def markdown(result: Dict) -> str:
    rows, differences = result['per_seed'], result['differences']
    training = result['recipe']['training']
    what = (f"stand-alone reference: {training['epochs']} epochs, C={training['init_channels']}, {training['layers']} "
            f"layers, batch {training['batch_size']}, {len(result['recipe']['seeds'])} training seeds"
            if training else result['recipe']['metric'])
    labels = dict(COMPARATORS)
    published = result['published_cell'] or 'n/a'
    lines = [f"{len(rows)} search seeds; {what}.", '',
             '| search seed | the pick | random pick | weight-sharing pick | uniform (archs) | '
             f'{published} |', '| ---: | ---: | ---: | ---: | ---: | ---: |']
    lines += [f"| {r['seed']} | {_f(r['pick'])} | {_f(r['random'])} | {_f(r['weight_sharing'])} | "
              f"{_f(r['uniform'])} ({r['uniform_archs']}) | {_f(r['published'])} |" for r in rows]
    lines += ['', 'The pick minus each comparator, over the search seeds:', '',
              '| comparator | mean difference [95 % t interval] | sign-flip p | smallest difference 80 % power finds '
              '| equivalent within +- (TOST, 5 %) |', '| --- | --- | ---: | ---: | ---: |']
    for name, d in differences.items():
        label = labels[name] + (f" ({published})" if name == 'published' else '')
        shows = d['low'] > 0 or d['high'] < 0
        lines.append(f"| {label} | {_f(d['mean'])} [{_f(d['low'])}, {_f(d['high'])}] | {_p(d['p'])} "
                     f"| {_f(d['detectable'])} | {'a difference shows' if shows else _f(d['equivalence'])} |")
    if result['published_cell']:
        lines += ['', f"The published cell's reference is one measurement over the training seeds, the same for every "
                      f"search seed: the interval holds the picks' spread, not its standard error of "
                      f"{_f(result['published_standard_error'])} points; and it is the best of the cells measured, "
                      f"which favours it by about that much."]
    lines += ['', _verdict(differences)]
    if result['fitness_tau']:
        lines += ['', 'Fitness against the reference in the searches trust.py sampled (Kendall tau-b [95 %]; a '
                      'perfect supernet\'s expected tau [95 %]; the reference\'s reliability [95 %]):', '']
        for t in result['fitness_tau']:
            perfect = t['perfect_supernet'] or {'tau': None, 'interval': [None, None]}
            lines.append(f"- {os.path.basename(t['run'])}: tau {_f(t['kendall_tau_b'])} [{_f(t['interval'][0])}, "
                         f"{_f(t['interval'][1])}]; perfect {_f(perfect['tau'])} [{_f(perfect['interval'][0])}, "
                         f"{_f(perfect['interval'][1])}]; reliability {_f(t['reliability_reference'])} "
                         f"[{_f(t['reliability_reference_interval'][0])}, "
                         f"{_f(t['reliability_reference_interval'][1])}]")
    return '\n'.join(lines)


def _verdict(differences: Dict) -> str:
    """One sentence per comparator, carried only by the intervals: a difference counts where the t interval
    excludes 0 and the sign-flip test agrees (p < 0.05, which needs at least 6 seeds)."""
    sentences = []
    for name, label in COMPARATORS:
        d = differences[name]
        if math.isnan(d['low']):
            continue
        decided = (d['low'] > 0 or d['high'] < 0) and d['p'] < ALPHA
        if decided and d['low'] > 0:
            sentences.append(f"the search beat {label} by {_f(d['mean'])} points")
        elif decided:
            sentences.append(f"{label} beat the search by {_f(-d['mean'])} points")
        elif d['low'] > 0 or d['high'] < 0:
            sentences.append(f"against {label} the t interval excludes 0 but the sign-flip test does not "
                             f"(p {_p(d['p'])}): more seeds are needed")
        else:
            sentences.append(f"no difference from {label} shows; differences beyond +-{_f(d['equivalence'])} "
                             f"points are ruled out")
    return ('Verdict: ' + '; '.join(sentences) + '.') if sentences else 'Verdict: too few seeds for an interval.'
