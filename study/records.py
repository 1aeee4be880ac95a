"""The study's records: a done-marker per run (``OUT/.done/<run>.json``: its wall time, start
and end, job slot, invocation, and the size and SHA-256 of the outputs later runs read) and the
account of each ``lskd-study`` invocation (``OUT/invocations.json``). A run whose marker or
recorded outputs are damaged is not done: it runs again, its damaged folder kept aside."""

import json
import os
import time
from typing import Dict, List, Optional

from lskd_fairseq import integrity
from lskd_fairseq.atomic import atomic_write_json


class Records:
    """Mixed into ``lskd_study.runner.Study``; uses its ``out``, ``by_id``, ``vision_dir`` and ``log``."""

    _damage: Dict[str, Optional[str]]

    def marker(self, rid: str) -> str:
        return os.path.join(self.out, ".done", rid.replace("/", "__") + ".json")

    def is_done(self, rid: str) -> bool:
        """A run is done when its marker exists and the outputs it records are intact; an analysis run also needs its marker to be
        newer than those of the runs it reads (a model trained since is analysed again)."""
        path = self.marker(rid)
        if not os.path.isfile(path) or self.damage(rid):
            return False
        r = self.by_id.get(rid)
        if r is not None and r.kind == "analysis":
            mine = os.path.getmtime(path)
            deps = [self.marker(dd) for dd in r.deps]
            if any(os.path.isfile(m) and os.path.getmtime(m) > mine for m in deps):
                return False
        return True

    def mark_done(self, rid: str, seconds: float, extra: Optional[Dict] = None, slot: str = "") -> None:
        """The done-marker: the run's wall time, its start and end (epoch seconds), the job slot and
        the invocation (start time of the lskd-study process) that ran it."""
        path = self.marker(rid)
        end = time.time()
        files = [f for f in self.outputs(rid) if os.path.isfile(f)]
        outputs = {os.path.relpath(f, self.out): integrity.file_record(f) for f in files}
        atomic_write_json(path, {"run": rid, "seconds": seconds, "start": end - seconds, "end": end,
                                 "slot": slot, "invocation": self.t0,
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)),
                                 "scale": self.scale_name, "outputs": outputs, **(extra or {})})
        self._damage.pop(rid, None)

    def outputs(self, rid: str) -> List[str]:
        """The files of a run that later runs and the report read, recorded (size, SHA-256) in its
        marker and checked before the run counts as done."""
        r = self.by_id.get(rid)
        if r is None:
            return []
        name = rid.split("/", 1)[1]
        if r.kind == "vision_train":
            return [os.path.join(self.vision_dir(name), f) for f in ("metrics.json", "config.json", "checkpoint_best.pt")]
        if r.kind == "vision_cache":
            return [os.path.join(self.vision_dir(name), "cache.json")]  # the cache's reader checks its epochs
        return []

    def damage(self, rid: str) -> Optional[str]:
        """Why a run with a marker is not done after all (its marker or a recorded output damaged),
        or None; said once in the study log."""
        if rid not in self._damage:
            why = None
            try:
                rec = integrity.load_json(self.marker(rid), "done-marker", required=False) or {}
                for rel, record in (rec.get("outputs") or {}).items():
                    integrity.check_file_record(os.path.join(self.out, rel), record)
            except integrity.ArtifactError as e:
                why = str(e)
                self.log(f"run {rid}: {why}; the run is not done and runs again")
            self._damage[rid] = why
        return self._damage[rid]

    def set_aside(self, rid: str) -> None:
        """Before a damaged run runs again: its folder is moved aside (kept, not deleted), so the
        rerun starts clean instead of resuming from a damaged checkpoint."""
        if not self.damage(rid):
            return
        for folder in {os.path.dirname(f) for f in self.outputs(rid)}:
            if os.path.isdir(folder) and not os.path.islink(folder):
                aside = f"{folder}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
                os.replace(folder, aside)
                self.log(f"run {rid}: its damaged folder is kept as {aside}")
        os.unlink(self.marker(rid))
        self._damage.pop(rid, None)

    def invocations_path(self) -> str:
        return os.path.join(self.out, "invocations.json")

    def record_invocation(self, n_run: int) -> None:
        """Append this invocation (start, end, runs it did) to OUT/invocations.json."""
        path = self.invocations_path()
        try:
            with open(path, encoding="utf-8") as f:
                past = json.load(f)
        except (OSError, ValueError):  # a damaged account: start a new one, keep the old file aside
            past = []
            if os.path.isfile(path):
                os.replace(path, path + ".damaged")
        past.append({"start": self.t0, "end": time.time(), "runs_done": n_run, "skipped": len(self.skipped),
                     "failed": len(self.failed), "jobs": self.jobs, "threads": self.threads,
                     "seeds": len(self.seeds)})
        atomic_write_json(path, past, indent=1)
