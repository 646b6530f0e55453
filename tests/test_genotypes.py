import json
import os
import pickle

import pytest

import genotypes
from conftest import FIXTURES
from genotypes import Genotype, GenotypeError
from operations import OPS


def _fixture():
    with open(os.path.join(FIXTURES, 'genotypes.json')) as f:
        return json.load(f)


class TestPublishedGenotypes:
    def test_primitives_in_original_order(self):
        assert genotypes.PRIMITIVES == _fixture()['PRIMITIVES']

    @pytest.mark.parametrize('name', ['NASNet', 'AmoebaNet', 'DARTS_V1', 'DARTS_V2', 'EvNASA', 'EvNASB', 'EvNASC'])
    def test_equal_to_fixture_with_edge_order(self, name):
        assert genotypes.genotype_to_dict(genotypes.get_genotype(name)) == _fixture()[name]

    def test_darts_alias_is_v2(self):
        assert _fixture()['aliases'] == {'DARTS': 'DARTS_V2'}
        assert genotypes.get_genotype('DARTS') is genotypes.DARTS_V2

    def test_unknown_name_lists_known_ones(self):
        with pytest.raises(GenotypeError, match="unknown architecture 'EvNASZ'.*EvNASA.*EvNASB.*EvNASC"):
            genotypes.get_genotype('EvNASZ')

    def test_lookup_never_evaluates_code(self):
        with pytest.raises(GenotypeError):
            genotypes.get_genotype("__import__('os').system('true')")


class TestSearchSpace:
    def test_none_is_the_first_primitive(self):
        # As in DARTS; decoding takes the best op among the columns after it.
        assert genotypes.NONE_INDEX == 0 == genotypes.PRIMITIVES.index('none')

    def test_every_operation_a_genotype_may_name_is_buildable(self):
        assert sorted(genotypes.OPERATIONS) == sorted(OPS)
        assert set(genotypes.PRIMITIVES) <= set(genotypes.OPERATIONS)

    @pytest.mark.parametrize('steps, edges', [(1, 2), (2, 5), (3, 9), (4, 14), (5, 20)])
    def test_edges_per_cell(self, steps, edges):
        assert genotypes.num_edges(steps) == edges and genotypes.num_steps(edges) == steps

    def test_a_row_count_that_is_no_cell_is_refused(self):
        with pytest.raises(ValueError, match='do not form a cell'):
            genotypes.num_steps(13)

    def test_an_operation_outside_the_table_is_refused(self):
        broken = genotypes.genotype_to_dict(genotypes.EvNASA)
        broken['normal'][0][0] = 'sep_conv_9x9'
        with pytest.raises(GenotypeError, match="unknown operation 'sep_conv_9x9'"):
            genotypes.genotype_from_dict(broken)


class TestGenotypeFiles:
    def test_json_round_trip(self, tmp_path):
        path = str(tmp_path / 'genotype.json')
        genotypes.save_genotype(genotypes.EvNASB, path)
        assert genotypes.load_genotype(path) == genotypes.EvNASB
        assert json.load(open(path))['normal'][0] == ['sep_conv_5x5', 0]

    def test_legacy_pickle_of_original_search_loads(self, tmp_path):
        # The original search pickled a genotypes.Genotype with list concat; pickle names it by module path.
        path = tmp_path / 'genotype.pickle'
        path.write_bytes(pickle.dumps(genotypes.EvNASA))
        assert b'genotypes' in path.read_bytes() and b'Genotype' in path.read_bytes()
        assert genotypes.load_genotype(str(path)) == genotypes.EvNASA

    def test_legacy_pickle_with_range_concat_loads(self, tmp_path):
        path = tmp_path / 'genotype.pickle'
        path.write_bytes(pickle.dumps(genotypes.EvNASA._replace(normal_concat=range(2, 6), reduce_concat=range(2, 6))))
        assert genotypes.load_genotype(str(path)) == genotypes.EvNASA

    def test_pickle_that_runs_code_is_refused_and_nothing_runs(self, tmp_path):
        marker = tmp_path / 'pwned'

        class Exploit:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        path = tmp_path / 'genotype.pickle'
        path.write_bytes(pickle.dumps(Exploit()))
        with pytest.raises(GenotypeError, match="refusing to load 'posix.system'|refusing to load 'os.system'"):
            genotypes.load_genotype(str(path))
        assert not marker.exists()

    def test_truncated_pickle_is_a_clear_error(self, tmp_path):
        path = tmp_path / 'genotype.pickle'
        path.write_bytes(pickle.dumps(genotypes.EvNASA)[:40])
        with pytest.raises(GenotypeError, match='not a genotype pickle'):
            genotypes.load_genotype(str(path))

    @pytest.mark.parametrize('mutate, message', [
        (lambda d: d['normal'].__setitem__(0, ['conv_9x9', 0]), "unknown operation 'conv_9x9'"),
        (lambda d: d['normal'].pop(), 'two edges per node, got 7'),
        (lambda d: d['reduce'].__setitem__(1, ['skip_connect', 2]), 'node 0 cannot take input 2'),
        (lambda d: d.pop('reduce_concat'), 'needs the keys'),
    ])
    def test_malformed_json_is_refused(self, tmp_path, mutate, message):
        data = genotypes.genotype_to_dict(genotypes.EvNASA)
        mutate(data)
        path = tmp_path / 'genotype.json'
        path.write_text(json.dumps(data))
        with pytest.raises(GenotypeError, match=message):
            genotypes.load_genotype(str(path))

    def test_not_json(self, tmp_path):
        path = tmp_path / 'genotype.json'
        path.write_text('Genotype(normal=[...])')
        with pytest.raises(GenotypeError, match='not valid JSON'):
            genotypes.load_genotype(str(path))

    def test_resolve_prefers_file_then_dir_then_name(self, tmp_path):
        genotypes.save_genotype(genotypes.EvNASC, str(tmp_path / 'genotype.json'))
        assert genotypes.resolve_genotype('EvNASA', search_dir=str(tmp_path))[0] == genotypes.EvNASC
        assert genotypes.resolve_genotype('EvNASA')[0] == genotypes.EvNASA
        with pytest.raises(GenotypeError, match='neither genotype.json nor genotype.pickle'):
            genotypes.resolve_genotype(search_dir=str(tmp_path / 'missing'))

    def test_genotype_namedtuple_fields(self):
        assert Genotype._fields == ('normal', 'normal_concat', 'reduce', 'reduce_concat')
