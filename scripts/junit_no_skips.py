"""Exit 1 when a pytest JUnit XML report shows a skipped test (or no tests): on the GPU machine a
skip means something that should have run did not."""

import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = list(root.iter("testsuite"))
tests = sum(int(s.get("tests", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(f"{tests} tests, {skipped} skipped")
sys.exit(1 if skipped or not tests else 0)
