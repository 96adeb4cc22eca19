"""Policy compiler against Tailscale's own answers (shared/testdata/policy-conformance), through
`headscale debug policy`: see policy_conformance.py for what is compared and how. Needs no
database, so it runs once whatever --db says (no `db` fixture)."""

import pytest

import helpers
import policy_conformance as pc

PASS_RATE_MIN = 99.0  # per cent of all cases, accepted and rejected


def test_policy_conformance():
    cases = pc.load_cases()
    if not cases:
        pytest.skip(f"no conformance corpus in {pc.CORPUS_DIR}")
    results = pc.run_all(cases, helpers.HS_BIN, jobs=2)
    rate = pc.pass_rate(results)
    failed = sorted(r.id for r in results if not r.passed)
    if failed:
        print(f"\n{len(failed)} of {len(results)} cases fail ({rate:.1f} % pass); run "
              "tests/system/policy_conformance.py for the differences:")
        for r in sorted(results, key=lambda r: r.id):
            if not r.passed:
                print(f"  {r.id}: {r.summary()}")
    assert rate >= PASS_RATE_MIN, (f"policy conformance {rate:.1f} % < {PASS_RATE_MIN} % "
                                   f"({len(failed)} failing: {', '.join(failed[:40])}"
                                   f"{' ...' if len(failed) > 40 else ''})")


def test_normaliser_self_check():
    """The comparison itself: every capture equals itself, also written in another order."""
    results = pc.self_check(pc.load_cases())
    assert all(r.passed for r in results), [r.id for r in results if not r.passed]
