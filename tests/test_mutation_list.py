"""The mutation list stays true to the code: a mutant whose text moved away tests nothing.

``tests/mutations.py`` reports such a mutant as "stale" when it runs; this
catches it in every run of the suite, when the code is moved, not weeks later.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mutations import MUTANTS

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_each_mutant_names_text_found_once_and_tests_that_exist(mutant):
    source = (REPO / mutant.module).read_text(encoding="utf-8")
    assert source.count(mutant.old) == 1, f"{mutant.id}: {mutant.module} holds its text {source.count(mutant.old)} times"
    compile(source.replace(mutant.old, mutant.new), mutant.module, "exec")
    missing = [test for test in mutant.tests if not (REPO / test.split("::")[0]).is_file()]
    assert not missing, f"{mutant.id}: no such test file {missing}"
