"""The plan to commands: the command line, environment and folders of each run of a study
(the ``Study``'s half that knows lskd-vision-train, lskd-vision-cache and the Multi30k recipe).
lskd-vision-train's options come from ``lskd_vision.option_table``, where each is declared once."""

import os
import shutil
import sys
from typing import Dict, List, Optional

from lskd_fairseq import integrity, warning_filters
from lskd_study import speeds, study_plan
from lskd_vision import option_table


class Commands:
    """Mixed into ``lskd_study.runner.Study``; uses its ``scale``, ``out``, ``data``, ``threads``,
    ``nmt_work``, ``reuse_vision`` and ``log``."""

    def env(self) -> Dict[str, str]:
        env = warning_filters.subprocess_env()  # library notices silenced by name, every other warning shown
        env["OMP_NUM_THREADS"] = str(self.threads)
        env["MKL_NUM_THREADS"] = str(self.threads)
        env["PYTHONUNBUFFERED"] = "1"
        bindir = os.path.dirname(sys.executable)
        if bindir not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        return env

    def env_updates(self) -> Dict[str, str]:
        """What ``env`` sets beyond this process's environment: what a Slurm job adds to its own."""
        return {k: v for k, v in self.env().items() if os.environ.get(k) != v}

    def vision_data(self) -> str:
        v = self.scale.vision
        if v.subset_train_per_class:
            return os.path.join(self.out, "data", f"cifar10-subset-{v.subset_train_per_class}-{v.subset_test_per_class}")
        return self.data["cifar10"]

    def vision_dir(self, name: str) -> str:
        return os.path.join(self.out, "vision", name)

    def vision_data_settings(self, a: Dict) -> Dict:
        """Training images per class and validation carve of a vision run (or of the students a
        cache is made for): long-tailed runs keep every image and carve nothing."""
        v = self.scale.vision
        lt = bool(a.get("imbalance_factor"))
        per_class = 0 if lt else (v.train_per_class if a.get("role") == "teacher" else v.student_train_per_class)
        return {"train_per_class": per_class, "val_fraction": v.long_tail_val_fraction if lt else v.val_fraction}

    def vision_settings(self, r: study_plan.Run) -> Dict:
        """The lskd-vision-train settings of a vision run, by option name (``option_table``): what
        its command line gives and what a reused run must have recorded."""
        v, a = self.scale.vision, r.args
        return {"arch": a["arch"], "epochs": a["epochs"], "label_smoothing": float(a["label_smoothing"]),
                "ls_convention": v.ls_convention, **self.vision_data_settings(a),
                "split_seed": 0, "seed": int(a.get("seed", 0)), "batch_size": v.batch_size, "lr": v.lr,
                "weight_decay": v.weight_decay, "sched": "cosine", "warmup_epochs": v.warmup_epochs,
                "nesterov": v.nesterov, "kd_alpha": 1.0 if a.get("teacher") else 0.0,
                "kd_temperature": float(a.get("kd_temperature", 1.0)), "kd_topk": 0,
                "small_input_stem": v.small_input_stem, "imbalance_factor": float(a.get("imbalance_factor") or 1.0),
                "shot_thresholds": list(v.shot_thresholds)}

    def vision_cmd(self, r: study_plan.Run) -> List[str]:
        v, a = self.scale.vision, r.args
        name = r.id.split("/", 1)[1]
        cmd = [os.path.join(os.path.dirname(sys.executable), "lskd-vision-train"), self.vision_data(),
               "--output", self.vision_dir(name), "--resume",
               *option_table.to_argv(self.vision_settings(r)),
               *option_table.to_argv({"workers": 0, "threads": self.threads, "progress": False})]
        if a.get("teacher") and v.teacher_cache:  # the teacher's soft labels for this seed's views
            cmd += option_table.to_argv({"teacher_cache": self.vision_dir(
                study_plan.cache_name(a["teacher"], int(a.get("seed", 0))))})
        elif a.get("teacher"):
            cmd += option_table.to_argv({"teacher": [os.path.join(self.vision_dir(a["teacher"]), "checkpoint_best.pt")]})
        return cmd + list(v.extra)

    def vision_cache_cmd(self, r: study_plan.Run) -> List[str]:
        """lskd-vision-cache of a teacher for the students of one seed: their data options, seed
        and epochs, so that they find exactly their views in it."""
        v, a = self.scale.vision, r.args
        data = {**self.vision_data_settings(a), "imbalance_factor": float(a.get("imbalance_factor") or 1.0)}
        cmd = [os.path.join(os.path.dirname(sys.executable), "lskd-vision-cache"), self.vision_data(),
               "--teacher", os.path.join(self.vision_dir(a["teacher"]), "checkpoint_best.pt"),
               "--out", self.vision_dir(r.id.split("/", 1)[1]), "--epochs", str(a["epochs"]),
               "--seed", str(a["seed"]), *option_table.to_argv({**data, "workers": 0, "threads": self.threads,
                                                                "progress": False})]
        return cmd + speeds.amp_args(v.extra)  # the teacher runs in the students' precision

    def recipe_cmd(self, r: study_plan.Run) -> List[str]:
        seed = r.args.get("seed")
        cmd = ["bash", study_plan.RECIPE, "--scale", self.scale.nmt.recipe_scale, "--work", self.nmt_work,
               "--data-dir", self.data["multi30k"],
               "--stage", r.args["stage"], "--stop-stage", r.args["stop_stage"]]
        if seed is not None:  # the students' seed; the recipe names them <name>_s<seed> beside the
            cmd += ["--seed", str(seed)]  # same teachers (seed 1: the plain names)
        n = self.scale.nmt
        if n.kd_sweep_temperatures:
            cmd += ["--kd-sweep-temperatures", " ".join(f"{t:g}" for t in n.kd_sweep_temperatures)]
        if n.teacher_cache:  # word-level KD students read the teachers' caches (stage teacher_cache)
            cmd += ["--teacher-cache", "1"]
        for key, value in sorted(n.recipe_options.items()):
            cmd += ["--" + key.lower().replace("_", "-"), str(value)]
        return cmd

    def _vision_subset(self, r: study_plan.Run, logpath: str) -> None:
        """Symlinked ImageFolder subset of the CIFAR-10 tarball (smoke scale only).

        A thin adapter over lskd_vision.data (which extracts the tarball once into
        its cache); the images are links, nothing is copied.
        """
        from lskd_vision import data as vision_data

        dest = self.vision_data()
        tmp = dest + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        splits = vision_data.find_splits(self.data["cifar10"])
        for split, samples, n in (("train", splits.train, r.args["train"]), ("test", splits.test, r.args["test"])):
            sub = vision_data.per_class_subset(samples, n, 0)
            for p, y in sub.samples:
                d = os.path.join(tmp, split, sub.classes[y])
                os.makedirs(d, exist_ok=True)
                os.symlink(os.path.realpath(p), os.path.join(d, os.path.basename(p)))
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        with open(logpath, "a") as f:
            f.write(f"subset of {splits.root}: {r.args['train']} train / {r.args['test']} test images a class -> {dest}\n")

    # names used by recipes/vision/cifar10_ls_kd.sh for the same runs
    REUSE_NAMES = {"teacher_nols": "teacher_ce", "teacher_ls": "teacher_ls",
                   "student_nols_T1": "student_from_ce", "student_ls_T1": "student_from_ls"}

    REUSE_KEYS = option_table.REUSE_KEYS  # the options a reused run must have recorded as ours

    def _try_reuse_vision(self, r: study_plan.Run) -> Optional[str]:
        """Link a finished run of recipes/vision/cifar10_ls_kd.sh with the same settings instead of training."""
        name = r.id.split("/", 1)[1]
        theirs = self.REUSE_NAMES.get(study_plan.split_seed_name(name)[0])
        if not self.reuse_vision or not theirs:
            return None
        src = os.path.join(self.reuse_vision, theirs)
        try:
            m = integrity.load_json(os.path.join(src, "metrics.json"), "metrics file", required=False)
        except integrity.ArtifactError as e:
            self.log(f"  {r.id}: not reusing {src}: {e}")
            return None
        if m is None:
            return None
        cfg = m.get("config", {})
        want = self.vision_settings(r)
        diff = [k for k in self.REUSE_KEYS if k in want and cfg.get(k) != want[k]]
        if os.path.realpath(str(cfg.get("data", ""))) != os.path.realpath(self.vision_data()):
            want["data"] = self.vision_data()
            diff.append("data")
        if diff:
            self.log(f"  {r.id}: not reusing {src}: settings differ ({', '.join(f'{k} {cfg.get(k)!r} != {want[k]!r}' for k in diff)})")
            return None
        dest = self.vision_dir(name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.lexists(dest):
            if os.path.islink(dest):
                os.unlink(dest)
            else:
                return None  # a run of our own exists: let it finish instead
        os.symlink(os.path.abspath(src), dest)
        return src
