"""A strict reader of JUnit XML (the schema CI systems share: Jenkins' junit-10.xsd, the
subset baomi writes): every element, attribute and count checked, anything else refused.

No XSD validator is installed (no lxml/xmlschema on the controller), so the schema's rules are
written here once and used by the unit and integration tests of `baomi audit`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

SUITE_ATTRS = {"name", "tests", "failures", "errors", "skipped", "time", "timestamp"}
CASE_ATTRS = {"name", "classname", "time"}
OUTCOMES = {"failure", "error", "skipped"}


def _number(value: str | None, what: str, real: bool = False) -> float:
    assert value is not None, f"{what}: missing"
    n = float(value) if real else int(value)
    assert n >= 0, f"{what}: negative"
    return n


def validate(data: bytes) -> dict[str, int]:
    """Raise AssertionError naming the first rule broken; return the totals."""
    root = ET.fromstring(data)  # noqa: S314 (our own output)
    assert root.tag == "testsuites", f"root is <{root.tag}>"
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for suite in root:
        assert suite.tag == "testsuite", f"<{suite.tag}> under <testsuites>"
        extra = set(suite.attrib) - SUITE_ATTRS
        assert not extra and SUITE_ATTRS - {"timestamp"} <= set(suite.attrib), \
            f"testsuite attributes {sorted(suite.attrib)}"
        _number(suite.get("time"), "testsuite time", real=True)
        counts = dict.fromkeys(totals, 0)
        for case in suite:
            assert case.tag == "testcase", f"<{case.tag}> under <testsuite>"
            assert set(case.attrib) == CASE_ATTRS, f"testcase attributes {sorted(case.attrib)}"
            _number(case.get("time"), "testcase time", real=True)
            counts["tests"] += 1
            kinds = [c.tag for c in case if c.tag in OUTCOMES]
            assert len(kinds) <= 1, f"{case.get('name')}: more than one outcome {kinds}"
            for child in case:
                assert child.tag in OUTCOMES | {"properties", "system-out", "system-err"}, \
                    f"<{child.tag}> in a testcase"
                if child.tag in OUTCOMES:
                    assert "message" in child.attrib, f"<{child.tag}> without message"
                if child.tag == "properties":
                    for p in child:
                        assert p.tag == "property" and set(p.attrib) == {"name", "value"}
            for kind in kinds:
                counts[{"failure": "failures", "error": "errors", "skipped": "skipped"}[kind]] += 1
        for key, n in counts.items():
            assert int(suite.get(key, "-1")) == n, f"testsuite {suite.get('name')}: {key} " \
                f"says {suite.get(key)}, counted {n}"
            totals[key] += n
    for key, n in totals.items():
        assert int(root.get(key, "-1")) == n, f"testsuites {key} says {root.get(key)}, counted {n}"
    return totals
