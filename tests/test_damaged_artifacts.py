"""Damaged artifacts and wrong output paths (issue 20 §1): every artifact lskd reads is checked
against what its header, manifest or done-marker promises, and a damaged one is refused in one
line naming the file, what is wrong and the command that rebuilds it; every output folder is
checked before work starts; a full disk during a write is one line with nothing half-written
left under a final name.

Rows: (what, how it is damaged, the command that reads it, the message expected). The small
filesystems (a full one, a read-only one) are tmpfs mounts, which need root, as in CI here.
"""

import json
import os
import subprocess

import pytest

from conftest import run_cli
from lskd_vision import cache as vision_cache
from lskd_vision.synthetic import make_image_folder
from lskd_vision.train import main as train_main

FAST = ["--workers", "0", "--no-progress", "--cache-images", "yes", "--batch-size", "16"]


def _truncate(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


def _flip_a_byte(path):
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        b = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.fixture(scope="module")
def vx(tmp_path_factory):
    """A tiny dataset, a teacher trained one epoch, and a cache of its soft labels."""
    base = tmp_path_factory.mktemp("damaged")
    data = make_image_folder(str(base / "data"), num_classes=4, per_class=10, test_per_class=2, size=8)
    run = base / "teacher"
    assert train_main([data, "--output", str(run), "--model", "mlp", "--epochs", "1", *FAST]) == 0
    cache = base / "cache"
    assert vision_cache.main([data, "--teacher", str(run / "checkpoint_best.pt"), "--out", str(cache),
                              "--epochs", "2", "--seed", "3", *FAST]) == 0
    return {"base": base, "data": data, "run": run, "cache": cache}


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _student(vx, cache, out, capsys):
    rc = train_main([vx["data"], "--output", str(out), "--model", "mlp", "--epochs", "2", "--seed", "3",
                     "--teacher-cache", str(cache), *FAST])
    return rc, capsys.readouterr().err


# (row id, damage applied to a copy of the cache, fragments of the one-line message)
CACHE_ROWS = [
    ("epoch file truncated", lambda c: _truncate(c / "epoch_0001.logits.npy"),
     ["epoch_0001.logits.npy is damaged", "bytes, its .npy header implies", "(truncated?)",
      "rebuild it with `lskd-vision-cache"]),
    ("epoch file changed in place", lambda c: _flip_a_byte(c / "epoch_0000.logits.npy"),
     ["epoch_0000.logits.npy is damaged", "SHA-256 differs", "rebuild it with `lskd-vision-cache"]),
    ("header truncated", lambda c: _truncate(c / "cache.json"),
     ["cache.json is damaged: not valid JSON", "rebuild it with `lskd-vision-cache"]),
]


@pytest.mark.parametrize("row", CACHE_ROWS, ids=[r[0] for r in CACHE_ROWS])
def test_a_damaged_vision_cache_is_refused_in_one_line(row, vx, tmp_path, capsys):
    _, damage, fragments = row
    cache = _copy(vx["cache"], tmp_path / "cache")
    damage(cache)
    rc, err = _student(vx, cache, tmp_path / "student", capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("lskd-vision-train: error: "), err
    for frag in fragments:
        assert frag in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "student" / "checkpoint_last.pt").exists()


def test_the_rebuild_command_in_the_message_rebuilds_the_cache(vx, tmp_path, capsys):
    """The command a damaged cache names is the one that made it: rerun, it writes the damaged
    epoch again (the complete ones are kept), and the student then trains."""
    import shlex

    cache = _copy(vx["cache"], tmp_path / "cache")
    header = json.loads((cache / "cache.json").read_text())
    _truncate(cache / "epoch_0001.logits.npy")
    rc, err = _student(vx, cache, tmp_path / "student", capsys)
    assert rc == 2 and header["command"] in err
    argv = shlex.split(header["command"])
    assert argv[0] == "lskd-vision-cache"
    out = argv.index("--out") + 1
    argv[out] = str(cache)  # the copy, not the fixture's cache
    assert vision_cache.main(argv[1:]) == 0
    rc, err = _student(vx, cache, tmp_path / "student", capsys)
    assert rc == 0, err


def test_a_damaged_resume_checkpoint_is_refused(vx, tmp_path, capsys):
    run = _copy(vx["run"], tmp_path / "run")
    _truncate(run / "checkpoint_last.pt")
    rc = train_main([vx["data"], "--output", str(run), "--model", "mlp", "--epochs", "1", "--resume", *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "truncated or corrupt" in err, err


# ---------------------------------------------------------------- NMT artifacts
@pytest.fixture(scope="module")
def topk_cache(nmt_data, nmt_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("topk") / "cache"
    run_cli(["lskd-teacher-cache", nmt_data, "--split", "valid", "--teacher-path", nmt_teacher, "--k", "4",
             "--out", out, "--cpu", "--no-progress-bar"])
    return out


NMT_ROWS = [
    ("logits truncated", "valid.topk.logits", _truncate, ["valid.topk.logits is damaged", "bytes, its header promises"]),
    ("ids changed in place", "valid.topk.ids", _flip_a_byte, ["valid.topk.ids is damaged", "SHA-256 differs"]),
    ("offsets truncated", "valid.topk.offsets", _truncate, ["valid.topk.offsets is damaged"]),
    ("header truncated", "valid.topk.json", _truncate, ["valid.topk.json is damaged: not valid JSON"]),
]


@pytest.mark.parametrize("row", NMT_ROWS, ids=[r[0] for r in NMT_ROWS])
def test_a_damaged_topk_cache_is_refused_naming_its_rebuild_command(row, topk_cache, tmp_path):
    from lskd_fairseq.artifacts import ArtifactError, TopKCache

    _, name, damage, fragments = row
    cache = _copy(topk_cache, tmp_path / "cache")
    damage(cache / name)
    with pytest.raises(ArtifactError) as e:
        TopKCache(str(cache), "valid")
    msg = str(e.value)
    for frag in fragments + ["rebuild it with `lskd-teacher-cache"]:
        assert frag in msg, msg
    assert "\n" not in msg


def test_fairseq_train_refuses_a_damaged_topk_cache_in_one_line(nmt_data, nmt_teacher, topk_cache, tmp_path):
    from conftest import PLUGIN, train_args

    cache = _copy(topk_cache, tmp_path / "cache")
    (cache / "train.topk.json").write_text((cache / "valid.topk.json").read_text())  # the valid split as train
    for suffix in ("ids", "logits", "offsets"):
        (cache / f"train.topk.{suffix}").write_bytes((cache / f"valid.topk.{suffix}").read_bytes())
    _truncate(cache / "train.topk.logits")
    proc = run_cli(train_args(nmt_data, tmp_path / "ck", 2, "--user-dir", PLUGIN, "--task", "translation_kd",
                              "--teacher-cache", cache, "--criterion", "label_smoothed_kd", "--kd-topk", "4"),
                   check=False)
    err = proc.stderr
    assert proc.returncode == 2, err[-2000:]
    assert "train.topk.logits is damaged" in err and "Traceback" not in err
    assert not (tmp_path / "ck" / "checkpoint_last.pt").exists()


def test_fairseq_train_refuses_to_resume_from_a_damaged_kd_checkpoint(nmt_data, nmt_teacher, tmp_path):
    from conftest import PLUGIN, train_args

    save = tmp_path / "ck"
    kd = ["--user-dir", PLUGIN, "--task", "translation_kd", "--teacher-path", nmt_teacher,
          "--criterion", "label_smoothed_kd", "--kd-alpha", "0.5"]
    run_cli(train_args(nmt_data, save, 2, *kd))
    _truncate(save / "checkpoint_last.pt")
    proc = run_cli(train_args(nmt_data, save, 4, *kd), check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "checkpoint_last.pt is damaged: it cannot be read as a checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_truncated_fairseq_teacher_is_refused(nmt_teacher, tmp_path):
    from lskd_fairseq.teacher import TeacherError, load_checkpoint_state

    bad = tmp_path / "teacher.pt"
    bad.write_bytes(nmt_teacher.read_bytes()[:1000])
    with pytest.raises(TeacherError, match="could not be read .*is it a complete fairseq checkpoint"):
        load_checkpoint_state(str(bad))


# ---------------------------------------------------------------- a study's run folders
def test_a_study_run_with_a_damaged_output_is_not_done_and_is_set_aside(tmp_path):
    from lskd_study.runner import Study

    st = Study("smoke", str(tmp_path / "out"), quiet=True)
    st.make_dirs()
    rid = "vision/teacher_ls"
    folder = tmp_path / "out" / "vision" / "teacher_ls"
    folder.mkdir(parents=True)
    for name in ("metrics.json", "config.json"):
        (folder / name).write_text(json.dumps({"test_top1": 50.0, "pad": "x" * 200}))
    (folder / "checkpoint_best.pt").write_bytes(b"\0" * 4096)
    st.mark_done(rid, 1.0)
    marker = json.loads(open(st.marker(rid)).read())
    assert set(marker["outputs"]) == {f"vision/teacher_ls/{n}" for n in ("metrics.json", "config.json",
                                                                         "checkpoint_best.pt")}
    assert Study("smoke", str(tmp_path / "out"), quiet=True).is_done(rid)
    _truncate(folder / "metrics.json")
    again = Study("smoke", str(tmp_path / "out"), quiet=True)
    again.make_dirs()
    assert not again.is_done(rid)
    log = (tmp_path / "out" / "logs" / "study.log").read_text()
    assert "metrics.json is damaged" in log and "runs again" in log
    again.set_aside(rid)
    kept = [p for p in (tmp_path / "out" / "vision").iterdir() if p.name.startswith("teacher_ls.damaged-")]
    assert len(kept) == 1 and (kept[0] / "checkpoint_best.pt").is_file()  # nothing deleted
    assert not folder.exists() and not os.path.exists(st.marker(rid))


# ---------------------------------------------------------------- output paths
def _one_line(proc_or_err, prog):
    err = proc_or_err if isinstance(proc_or_err, str) else proc_or_err.stderr
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(f"{prog}: error: "), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return lines[-1]


def test_an_output_that_is_a_file_is_refused_by_every_command(vx, nmt_data, nmt_teacher, tmp_path, capsys):
    afile = tmp_path / "a_file"
    afile.write_text("keep me\n")
    line = _one_line(run_cli(["lskd-study", "--scale", "smoke", "--out", afile], check=False), "lskd-study")
    assert f"--out {afile} exists and is not a folder" in line
    assert train_main([vx["data"], "--output", str(afile), "--model", "mlp", "--epochs", "1", *FAST]) == 2
    assert f"--output {afile} exists and is not a folder" in _one_line(capsys.readouterr().err, "lskd-vision-train")
    assert vision_cache.main([vx["data"], "--teacher", str(vx["run"] / "checkpoint_best.pt"), "--out", str(afile),
                              "--epochs", "1", "--seed", "0", *FAST]) == 2
    assert f"--out {afile} exists and is not a folder" in _one_line(capsys.readouterr().err, "lskd-vision-cache")
    for tool, extra in (("lskd-teacher-cache", []), ("lskd-distill-data", [])):
        proc = run_cli([tool, nmt_data, "--teacher-path", nmt_teacher, "--out", afile, "--cpu", *extra], check=False)
        assert proc.returncode == 2 and f"--out {afile} exists and is not a folder" in _one_line(proc, tool)
    assert afile.read_text() == "keep me\n"


def _mount_tmpfs(path, options):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI here runs as root)")
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


@pytest.fixture
def readonly_dir(tmp_path):
    path = tmp_path / "ro"
    _mount_tmpfs(path, "ro,size=64k")
    yield path
    subprocess.run(["umount", str(path)], check=False)


@pytest.fixture
def small_fs(tmp_path):
    path = tmp_path / "small"
    _mount_tmpfs(path, "size=24k")  # six pages
    yield path
    subprocess.run(["umount", str(path)], check=False)


def test_an_output_that_cannot_be_written_is_refused_before_work(vx, readonly_dir, capsys):
    out = readonly_dir / "run"
    assert train_main([vx["data"], "--output", str(out), "--model", "mlp", "--epochs", "1", *FAST]) == 2
    line = _one_line(capsys.readouterr().err, "lskd-vision-train")
    assert f"{readonly_dir} is not writable by this user" in line
    proc = run_cli(["lskd-study", "--scale", "smoke", "--out", out], check=False)
    assert proc.returncode == 2 and "is not writable" in _one_line(proc, "lskd-study")


def test_a_full_filesystem_during_a_cache_write_is_one_line_and_leaves_nothing_complete(small_fs, tmp_path):
    """24 KiB of tmpfs (six pages) and epoch files of three pages each (540 views x 10 classes x
    2 bytes): the pending record and the first epoch fit; of the second, the header and the last
    page fit, the middle does not. Its memory map is reserved before it is filled, so the full
    disk is an error, not a SIGBUS half way through (without the reservation: exit -7). In a
    subprocess, so that such a crash cannot take the test run with it."""
    data = make_image_folder(str(tmp_path / "data"), num_classes=10, per_class=60, test_per_class=1, size=8)
    teacher = tmp_path / "teacher"
    assert train_main([data, "--output", str(teacher), "--model", "mlp", "--epochs", "1", *FAST]) == 0
    out = small_fs / "cache"
    proc = run_cli(["lskd-vision-cache", data, "--teacher", teacher / "checkpoint_best.pt", "--out", out,
                    "--epochs", "6", "--seed", "3", *FAST], check=False)
    line = _one_line(proc, "lskd-vision-cache")
    assert proc.returncode == 2 and "no space left while writing" in line and "nothing was left under that name" in line
    names = sorted(os.listdir(out))
    assert "cache.json" not in names  # not marked complete
    assert not [n for n in names if ".tmp" in n], names  # no half-written file left
    done = [n for n in names if n.startswith("epoch_")]
    assert 0 < len(done) < 6, names
    from lskd_fairseq import integrity

    for n in done:  # the epochs that were written are complete (a rerun with space keeps them)
        integrity.check_npy(str(out / n))
