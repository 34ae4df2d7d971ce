#!/usr/bin/env python3
"""Turns Bazel test results (bazel-testlogs/**/test.xml) into RESULT lines.

One line per test case (gtest cases from the JUnit XML); a target whose XML has no test
case (crashed, timed out) counts as one failure, so nothing is silently lost.
"""
import pathlib
import sys
import xml.etree.ElementTree as ET

def main(testlogs: str, targets: list) -> int:
    failed = 0
    for target in targets:
        rel = target.lstrip("/").replace(":", "/")
        xml = pathlib.Path(testlogs, rel, "test.xml")
        if not xml.exists():
            print(f"RESULT FAIL {target} no test.xml (test did not run)")
            failed += 1
            continue
        try:
            cases = list(ET.parse(xml).iter("testcase"))
        except ET.ParseError as e:
            print(f"RESULT FAIL {target} unreadable test.xml: {e}")
            failed += 1
            continue
        if not cases:
            print(f"RESULT FAIL {target} no test case recorded")
            failed += 1
        for c in cases:
            name = f"{target}:{c.get('classname', '')}.{c.get('name')}"
            if c.find("failure") is not None or c.find("error") is not None:
                print(f"RESULT FAIL {name}")
                failed += 1
            elif c.get("status") == "notrun" or c.find("skipped") is not None:
                print(f"RESULT FAIL {name} skipped (skips are not passes)")
                failed += 1
            else:
                print(f"RESULT PASS {name}")
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
