"""Keep a published study's report and run records in the repository (docs/studies/DATE/).

    python scripts/archive_study.py runs/study-cpu docs/studies/2026-12-06

Copies what every number of the report comes from, and nothing large: report.md and its
figures, the study log, the done-markers (each run's wall time, start and end), the
invocations, every vision run's config.json / metrics.json / metrics.csv, every cache's
cache.json, the analysis JSON and the NMT results (one JSON per model, table.md).
No checkpoints, caches' logits, features or data. Refuses to
overwrite a folder that exists (pick another DATE or remove it first).
"""

import os
import shutil
import sys

KEEP_NAMES = {"config.json", "metrics.json", "metrics.csv", "cache.json"}
MAX_BYTES = 2_000_000  # one file larger than this is not a run record: leave it out


def wanted(rel: str) -> bool:
    parts = rel.split(os.sep)
    name = parts[-1]
    if len(parts) == 1:
        return name in ("report.md", "invocations.json") or name.endswith(".png")
    top = parts[0]
    if top == ".done":
        return name.endswith(".json")
    if top == "analysis":
        return name.endswith(".json")
    if top == "vision":
        return len(parts) == 3 and name in KEEP_NAMES
    if top == "logs":
        return name == "study.log"
    if top == "nmt":
        return (len(parts) >= 3 and parts[-2] == "results" and (name.endswith(".json") or name == "table.md")) \
            or rel == os.path.join("nmt", "table.md")
    return False


def archive(src: str, dest: str) -> int:
    if not os.path.isfile(os.path.join(src, "report.md")):
        print(f"archive_study: error: {src!r} holds no report.md: give a study's --out folder", file=sys.stderr)
        return 2
    if os.path.exists(dest):
        print(f"archive_study: error: {dest!r} exists: remove it or pick another folder", file=sys.stderr)
        return 2
    tmp = dest.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    n = size = 0
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d not in ("models", "teacher_cache", "bin", "raw", "spm", "data")
                   and not d.startswith("distill_")]
        for f in files:
            full = os.path.join(root, f)
            rel = os.path.relpath(full, src)
            if os.path.islink(full) or not wanted(rel) or os.path.getsize(full) > MAX_BYTES:
                continue
            if rel.startswith(".done" + os.sep):  # a visible name in the repository
                rel = os.path.join("done", rel[len(".done" + os.sep):])
            out = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copy2(full, out)
            n += 1
            size += os.path.getsize(full)
    os.replace(tmp, dest)
    print(f"archived {n} files ({size / 1e6:.1f} MB) from {src} into {dest}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(archive(sys.argv[1], sys.argv[2]))
