"""Record the fingerprint of every compatibility-corpus network that tests/compat/manifest.json lacks.

    python scripts/compat_manifest.py            # add entries for networks new to the corpus
    python scripts/compat_manifest.py --check    # list the networks without an entry (exit 1 if any)

An existing entry is never changed or removed: it is what the network computed when it entered the corpus,
and every later commit must reproduce it (tests/test_compat.py). To add specs to the corpus, run
``python tests/compat/freeze.py`` (today's specs, examples and docs snippets) or copy a user's spec into
tests/compat/users/, then run this script and commit both. A network that does not build is reported and
left out (exit 1): the corpus holds only specs that work.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import compat_corpus as C


def main(argv: list[str]) -> int:
    import torch
    torch.set_num_threads(1)   # the tests run one thread per worker: record under the same conditions
    manifest = C.load_manifest()
    entries = manifest.setdefault("networks", {})
    missing = [a for a in C.corpus_networks() if a not in entries]
    if "--check" in argv:
        for a in missing:
            print(f"no manifest entry: {a}")
        return 1 if missing else 0
    failed = []
    for a in missing:
        t = time.perf_counter()
        try:
            if C.plugins_of(a):
                import subprocess
                # plugins register module names once per process: one process per plugin network
                r = subprocess.run([sys.executable, __file__, "--one", a], capture_output=True, text=True)
                if r.returncode:
                    raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
                entries[a] = json.loads(r.stdout)
            else:
                entries[a] = C.fingerprint(a)
        except Exception as e:   # noqa: BLE001 - report every network that cannot enter the corpus
            failed.append(a)
            print(f"cannot record {a}: {type(e).__name__}: {str(e).splitlines()[0]}", file=sys.stderr)
            continue
        print(f"recorded {a} ({time.perf_counter() - t:.1f} s)")
    manifest["networks"] = dict(sorted(entries.items()))
    C.MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(missing) - len(failed)} entr{'y' if len(missing) - len(failed) == 1 else 'ies'} added, "
          f"{len(entries)} in the manifest")
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        import torch
        torch.set_num_threads(1)
        print(json.dumps(C.fingerprint(sys.argv[2])))
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
