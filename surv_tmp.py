import json, sys
from tests.mutation.mutants import mutants_of
path = sys.argv[1]; prefix = sys.argv[2] if len(sys.argv) > 2 else "app/"
rs = {}
for l in open(path):
    r = json.loads(l); rs[r['key']] = r
surv = [r for r in rs.values() if r['status'] == 'survived' and r['key'].startswith(prefix)]
files = sorted({r['key'].split('::')[0] for r in surv})
ms = {m.key: m for f in files for m in mutants_of(f)}
from collections import Counter
print(Counter(r['status'] for r in rs.values() if r['key'].startswith(prefix)))
for r in surv:
    m = ms.get(r['key'])
    if not m: continue
    ch = [l for l in m.diff.splitlines()[3:] if l.startswith(('+', '-'))]
    print(f"{r['key']} L{m.line} tests={r.get('tests')} {r.get('reason','')}\n   " + "\n   ".join(ch))
