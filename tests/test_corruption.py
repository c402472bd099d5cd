"""The corruption matrix (loranb.faults, lesson engine/25): every kind of file loranb reads, damaged every way it can be,
read as the commands read it. Each case is read correctly, or refused with a LoranbError whose one paragraph names the
file; none ends in "unexpected error". As root, an unreadable file is read by a child process that gave up root."""
import contextlib, io
import pytest
from loranb.faults import CASES, make_bench, run_case


@pytest.fixture(scope="module")
def bench():
    return make_bench()


@pytest.mark.parametrize("kind,fault,expected", CASES, ids=[f"{k}-{f}" for k, f, _ in CASES])
def test_case(bench, kind, fault, expected):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        o = run_case(bench, kind, fault, expected)
    assert o.got != "unexpected", o.message
    assert o.got == expected, (o.got, o.message)
    if o.got == "refused": assert o.code in (1, 2) and " — " in o.message, o.message
