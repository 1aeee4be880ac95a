"""Every NMT-side user mistake is refused clearly: a table of bad inputs.

Each row gives a command, a bad input and the message expected. Each asserts
three things: a non-zero exit (2, the usage-error status) with one line naming
the problem and the fix and no traceback; and that nothing a rerun would trust
is left behind (no checkpoint, no cache header; a resumed checkpoint unchanged).

The commands run through ``fork_cli`` (real entry points, real argv, forked from
one process that has imported fairseq once); ``test_one_line_from_the_console_script``
checks the same behaviour through the installed console script itself.
"""

import gzip
import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import PLUGIN, TINY_ARCH, _tokenize, require_data, run_cli, train_args
from fork_cli import fork_cli  # noqa: F401  (fixture)
from lskd_fairseq.fairseq_compat import allow_fairseq_checkpoint_globals

allow_fairseq_checkpoint_globals()  # fairseq checkpoints pickle an argparse.Namespace

KD_TASK = ["--user-dir", PLUGIN, "--task", "translation_kd"]
KD = [*KD_TASK, "--criterion", "label_smoothed_kd"]
JOINED_SIZE = 500  # --nwordssrc of the two joined-dictionary data-bins


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _text(dest: Path, first: int, n: int) -> Path:
    """Multi30k training pairs ``first .. first + n`` (tokenized as conftest does), and valid/test."""
    dest.mkdir(parents=True)
    src = require_data("multi30k", "Multi30k task 1 en-de: train/val/test_2016_flickr .en.gz/.de.gz")
    for lang in ("en", "de"):
        with gzip.open(src / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            lines = [_tokenize(line) for i, line in enumerate(f) if first <= i < first + n + 200]
        (dest / f"train.{lang}").write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")
        for split, part in (("valid", lines[n:n + 100]), ("test", lines[n + 100:])):
            (dest / f"{split}.{lang}").write_text("\n".join(part) + "\n", encoding="utf-8")
    return dest


def _preprocess(cli, text: Path, dest: Path, *extra):
    cli.run(["fairseq-preprocess", "--source-lang", "en", "--target-lang", "de", "--trainpref", text / "train",
             "--validpref", text / "valid", "--testpref", text / "test", "--destdir", dest, "--workers", "1",
             *extra])
    return dest


def _quick_train(cli, data, save, *extra):
    """One update, no validation: a checkpoint to be a teacher or to be resumed."""
    cli.run(train_args(data, save, 1, "--disable-validation", *extra))
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def env(nmt_data, nmt_teacher, fork_cli, tmp_path_factory):  # noqa: F811
    """Everything the rows need, built once (see each line)."""
    cli = fork_cli
    root = tmp_path_factory.mktemp("bad_inputs")
    e = SimpleNamespace(root=root, data=nmt_data, teacher=nmt_teacher, cli=cli)
    # unusable teacher files
    e.garbage = root / "garbage.pt"
    e.garbage.write_bytes(b"this is not a checkpoint")
    e.truncated = root / "truncated.pt"
    e.truncated.write_bytes(nmt_teacher.read_bytes()[: nmt_teacher.stat().st_size // 2])
    state = torch.load(nmt_teacher, weights_only=True)
    # a teacher whose data-bin (and so its dictionaries) has moved away
    moved = dict(state, cfg=dict(state["cfg"], task=dict(state["cfg"]["task"], data=str(root / "moved-away"))))
    e.moved_teacher = root / "moved_teacher.pt"
    torch.save(moved, e.moved_teacher)
    # another teacher with the same dictionaries (other weights)
    other = dict(state, model={k: (v + 0.01 if v.is_floating_point() else v) for k, v in state["model"].items()})
    e.other_teacher = root / "other_teacher.pt"
    torch.save(other, e.other_teacher)
    # two corpora with joined dictionaries of the same size but other symbols, and a teacher on the first
    e.joined_a = _preprocess(cli, _text(root / "text_a", 0, 1500), root / "joined_a", "--joined-dictionary",
                             "--nwordssrc", JOINED_SIZE)
    e.joined_b = _preprocess(cli, _text(root / "text_b", 3000, 1500), root / "joined_b", "--joined-dictionary",
                             "--nwordssrc", JOINED_SIZE)
    dict_a, dict_b = ((d / "dict.en.txt").read_text().splitlines() for d in (e.joined_a, e.joined_b))
    assert len(dict_a) == len(dict_b) and dict_a != dict_b  # the premise: same size, other symbols
    e.teacher_a = _quick_train(cli, e.joined_a, root / "teacher_a")
    # a top-k cache of the gold train and valid splits
    e.cache = root / "cache"
    for split in ("train", "valid"):
        cli.run(["lskd-teacher-cache", nmt_data, "--split", split, "--out", e.cache, "--teacher-path", nmt_teacher,
                 "--k", "4", "--cpu", "--no-progress-bar"])
    # a cache of other data binarized with the same dictionaries
    other_data = _preprocess(cli, root / "text_b", root / "other_data", "--srcdict", nmt_data / "dict.en.txt",
                             "--tgtdict", nmt_data / "dict.de.txt")
    e.cache_other_data = root / "cache_other_data"
    cli.run(["lskd-teacher-cache", other_data, "--out", e.cache_other_data, "--teacher-path", nmt_teacher,
             "--k", "4", "--cpu", "--no-progress-bar"])
    # the valid split's cache where the train split's should be
    e.cache_other_split = root / "cache_other_split"
    e.cache_other_split.mkdir()
    for f in e.cache.glob("valid.topk.*"):
        shutil.copy(f, e.cache_other_split / f.name.replace("valid.", "train.", 1))
    # an interrupted cache: its files, but not the header written last
    e.cache_interrupted = root / "cache_interrupted"
    shutil.copytree(e.cache, e.cache_interrupted)
    (e.cache_interrupted / "train.topk.json").unlink()
    # a KD run to resume (alpha 0.5, T 1, top-k 8) with its own copy of the teacher
    e.resume_teacher = root / "resume_teacher.pt"
    shutil.copy(nmt_teacher, e.resume_teacher)
    e.resumable = root / "resumable"
    _quick_train(cli, nmt_data, e.resumable, *KD, "--teacher-path", e.resume_teacher, "--kd-alpha", "0.5",
                 "--kd-topk", "8")
    return e


def _train(*extra, data=None):
    return lambda e, out: train_args(data(e) if data else e.data, out, 2, *extra)


def _kd(*extra, teacher=None, data=None):
    return _train(*KD, "--teacher-path", teacher or (lambda e: e.teacher), *extra, data=data)


def _resume(*extra):
    def build(e, out):
        shutil.copytree(e.resumable, out)
        return train_args(e.data, out, 2, "--disable-validation", *KD, "--teacher-path", e.resume_teacher,
                          "--kd-alpha", "0.5", "--kd-topk", "8", *extra)
    return build


def _cached(cache, *extra):
    """Training from a teacher cache (of the train split: no validation)."""
    return _train(*KD, "--teacher-cache", cache, "--kd-topk", "4", "--disable-validation", *extra)


def _cache_tool(data, teacher):
    return lambda e, out: ["lskd-teacher-cache", data(e), "--out", out, "--teacher-path", teacher(e),
                           "--k", "4", "--cpu", "--no-progress-bar"]


# (id, command (env, output dir) -> argv, expected problem, expected fix[, {file: replacement}])
ROWS = [
    ("teacher-missing", _kd(teacher=lambda e: e.root / "nope.pt"), "checkpoint not found", "--teacher-path"),
    ("teacher-unreadable", _kd(teacher=lambda e: e.garbage), "could not be read", "complete fairseq checkpoint"),
    ("teacher-truncated", _kd(teacher=lambda e: e.truncated), "could not be read", "complete fairseq checkpoint"),
    ("dictionary-by-size", _kd(data=lambda e: e.joined_a), "dictionary", "--srcdict/--tgtdict"),
    ("dictionary-by-content", _kd(teacher=lambda e: e.teacher_a, data=lambda e: e.joined_b),
     "differ, first at index", "--srcdict/--tgtdict"),
    ("dictionary-by-content-cache-tool", _cache_tool(lambda e: e.joined_b, lambda e: e.teacher_a),
     "differ, first at index", "--srcdict/--tgtdict"),
    ("teacher-data-moved", _kd(teacher=lambda e: e.moved_teacher), "dictionaries cannot be found",
     "--teacher-data DIR"),
    ("teacher-data-moved-cache-tool", _cache_tool(lambda e: e.data, lambda e: e.moved_teacher),
     "dictionaries cannot be found", "--teacher-data DIR"),
    ("alpha-out-of-range", _kd("--kd-alpha", "1.5"), "--kd-alpha must be in [0, 1]", "got 1.5"),
    ("temperature-out-of-range", _kd("--kd-temperature", "0"), "--kd-temperature must be > 0", "got 0"),
    ("topk-out-of-range", _kd("--kd-topk", "-2"), "--kd-topk must be", "got -2"),
    ("epsilon-out-of-range", _kd("--label-smoothing", "1.2"), "--label-smoothing must be in [0, 1)", "got 1.2"),
    ("topk-larger-than-vocabulary", _kd("--kd-topk", "5000"), "larger than the teacher's vocabulary",
     "--kd-topk <="),
    ("kd-without-teacher", _train(*KD, "--kd-alpha", "0.5"), "needs a teacher", "--teacher-path"),
    ("teacher-without-kd", _train(*KD_TASK, "--teacher-path", lambda e: e.teacher, "--criterion",
                                  "label_smoothed_cross_entropy"), "cannot use it", "--criterion label_smoothed_kd"),
    ("kd-criterion-without-task", _train("--user-dir", PLUGIN, "--criterion", "label_smoothed_kd",
                                         "--teacher-path", lambda e: e.teacher),
     "needs --task translation_kd", "add --task translation_kd"),
    ("cache-of-other-data", _cached(lambda e: e.cache_other_data), "made for other data", "remake the cache"),
    ("cache-of-another-split", _cached(lambda e: e.cache_other_split), "split 'valid'", "remake the cache"),
    ("cache-of-another-teacher", _cached(lambda e: e.cache, "--teacher-path", lambda e: e.other_teacher),
     "made by another teacher", "remake the cache"),
    ("cache-interrupted", _cached(lambda e: e.cache_interrupted), "no complete cache for split 'train'",
     "lskd-teacher-cache"),
    ("resume-other-alpha", _resume("--kd-alpha", "0.7"), "--kd-alpha 0.5 -> 0.7", "--kd-allow-changed-settings"),
    ("resume-other-temperature", _resume("--kd-temperature", "2"), "--kd-temperature 1.0 -> 2.0",
     "--kd-allow-changed-settings"),
    ("resume-other-topk", _resume("--kd-topk", "4"), "--kd-topk 8 -> 4", "--kd-allow-changed-settings"),
    # the same path, another file: teachers are compared by their SHA-256, not by name
    ("resume-other-teacher-same-path", _resume(), "teacher", "--kd-allow-changed-settings",
     {"resume_teacher": "other_teacher"}),
]


def _resolve(argv, e):
    return [str(a(e)) if callable(a) else str(a) for a in argv]


def _trusted_outputs(out: Path):
    """Files under ``out`` that a rerun would trust, with their hashes."""
    if not out.exists():
        return {}
    names = ("checkpoint*.pt", "*.topk.json", "*.distill.json")
    return {f.name: _sha(f) for pattern in names for f in out.glob(pattern)}


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_refused(env, tmp_path, row):
    name, command, problem, fix = row[:4]
    swap = row[4] if len(row) > 4 else {}
    out = tmp_path / "out"
    argv = _resolve(command(env, out), env)
    before = _trusted_outputs(out)
    saved = {}
    try:
        for target, source in swap.items():
            path = getattr(env, target)
            saved[path] = path.read_bytes()
            shutil.copy(getattr(env, source), path)
        proc = env.cli.run(argv, check=False)
    finally:
        for path, data in saved.items():
            path.write_bytes(data)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, (proc.returncode, text[-3000:])
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"{argv[0]}: error: "), text[-3000:]
    assert problem in last and fix in last, last
    assert "Traceback" not in text, text[-3000:]
    assert "train_inner" not in text  # nothing trained
    assert _trusted_outputs(out) == before  # nothing new, nothing changed


def test_one_line_from_the_console_script(env, tmp_path):
    """The same refusal through the installed ``fairseq-train`` script: exit 2, one line."""
    proc = run_cli(_resolve(_train(*KD_TASK, "--teacher-path", env.teacher, "--criterion", "cross_entropy")(
        env, tmp_path / "out"), env), check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("fairseq-train: error: --teacher-path given")


# ---------------------------------------------------------------- what the refusals point to works


def _kd_task(data, **task):
    import lskd_fairseq.tasks  # noqa: F401
    from fairseq import tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq import options

    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data), "--task", "translation_kd", "--criterion", "label_smoothed_kd", "--cpu", *TINY_ARCH,
        *[f"--{k.replace('_', '-')}={v}" for k, v in task.items()]])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    return task, cfg


def test_teacher_data_finds_moved_dictionaries_and_still_compares_them(env):
    task, cfg = _kd_task(env.data, teacher_path=env.moved_teacher, teacher_data=env.data)
    task.build_criterion(cfg.criterion)
    assert task.teacher is not None
    from lskd_fairseq.teacher import TeacherError

    # pointing at another data-bin is still checked, symbol by symbol
    task, cfg = _kd_task(env.joined_b, teacher_path=env.teacher_a, teacher_data=env.joined_b)
    task.build_criterion(cfg.criterion)  # the teacher's own dictionaries: accepted
    task, cfg = _kd_task(env.joined_b, teacher_path=env.moved_teacher, teacher_data=env.joined_a)
    with pytest.raises(TeacherError, match="embedding has"):
        task.build_criterion(cfg.criterion)


def test_size_only_is_an_explicit_logged_opt_out(env, caplog):
    task, cfg = _kd_task(env.joined_b, teacher_path=env.teacher_a, teacher_dict_check="size-only")
    with caplog.at_level("WARNING"):
        task.build_criterion(cfg.criterion)  # same sizes: accepted, as asked
    assert "--teacher-dict-check size-only" in caplog.text


def test_kd_allow_changed_settings_continues_and_is_recorded(env, tmp_path):
    out = tmp_path / "out"
    argv = _resolve(_resume("--kd-alpha", "0.7", "--kd-allow-changed-settings")(env, out), env)
    proc = env.cli.run(argv)
    assert "--kd-allow-changed-settings: resuming" in proc.stdout + proc.stderr
    state = torch.load(out / "checkpoint_last.pt", weights_only=True)
    kd = state["task_state"]["lskd_kd"]
    assert kd["settings"]["kd_alpha"] == 0.7
    assert kd["changes"][-1]["changed"] == ["--kd-alpha 0.5 -> 0.7"] and kd["changes"][-1]["num_updates"] == 1
    assert state["optimizer_history"][-1]["num_updates"] == 2


def test_the_one_dictionary_comparison():
    from lskd_fairseq.artifacts import dictionary_difference, dictionary_fingerprint

    class Dictionary:
        def __init__(self, symbols):
            self.symbols = symbols

    a = Dictionary(["<s>", "<pad>", "</s>", "<unk>", "a", "b", "c"])
    same = Dictionary(list(a.symbols))
    swapped = Dictionary(["<s>", "<pad>", "</s>", "<unk>", "b", "a", "c"])
    longer = Dictionary(a.symbols + ["d"])
    assert dictionary_difference(a, same) is None
    assert dictionary_difference(a, swapped) == "7 vs 7 symbols, 2 differ, first at index 4: 'a' vs 'b'"
    assert "the longer one continues with 'd'" in dictionary_difference(a, longer)
    # a header's fingerprint against a dictionary
    assert dictionary_difference(dictionary_fingerprint(a), same) is None
    assert "other symbols" in dictionary_difference(dictionary_fingerprint(a), swapped)
    # sizes only, when asked
    assert dictionary_difference(a, swapped, size_only=True) is None
    assert dictionary_difference(7, longer, size_only=True) == "7 vs 8 symbols"
