"""Writes a table into BENCHMARKS.md between its <!-- bench:NAME:begin/end --> markers
(appended when the markers are not there yet): `write_block.py TABLE_FILE NAME`."""
import re
import sys

table = open(sys.argv[1]).read()
name = sys.argv[2]
path = "BENCHMARKS.md"
begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
try:
    doc = open(path).read()
except FileNotFoundError:
    doc = "# Benchmarks\n\n"
block = f"{begin}\n{table}{end}"
if begin in doc and end in doc:
    doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
else:
    doc += f"\n{block}\n"
open(path, "w").write(doc)
print(f"written to {path}", file=sys.stderr)
