"""lskd-vision-train's options are declared once (lskd_vision.option_table); the parser, the
resume check, the study's command lines and its reuse check all come from that table."""

import json

import pytest

from lskd_vision import option_table as T
from lskd_vision.cache import build_parser as cache_parser
from lskd_vision.synthetic import make_image_folder
from lskd_vision.train import RESUME_KEYS, build_parser, main

FAST = ["--workers", "0", "--no-progress", "--cache-images", "yes", "--batch-size", "8", "--model", "mlp"]


def _dests(parser):
    return {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}


def test_the_parsers_are_the_table():
    train = build_parser()
    assert _dests(train) == {o.dest for o in T.OPTIONS} | {"output"}
    assert {o.dest for o in T.OPTIONS if "cache" in o.commands} <= _dests(cache_parser())
    for o in T.OPTIONS:  # flags, default and help exactly as declared
        action = next(a for a in train._actions if a.dest == o.dest)
        assert tuple(action.option_strings) == o.flags
        assert action.default == o.kwargs.get("default", False if o.kwargs.get("action") == "store_true" else
                                              True if o.kwargs.get("action") == "store_false" else None)
        assert action.help == o.kwargs.get("help")
    groups = {g.title: {a.dest for a in g._group_actions} for g in train._action_groups}
    for o in T.OPTIONS:
        assert o.dest in groups[o.group], o.dest


def test_derived_lists_agree_with_the_table():
    assert RESUME_KEYS == [o.dest for o in T.OPTIONS if o.resume] + [d.key for d in T.DERIVED if d.resume]
    assert set(T.REUSE_KEYS) == {o.dest for o in T.OPTIONS if o.reuse}
    assert len(set(RESUME_KEYS)) == len(RESUME_KEYS) and len(set(T.REUSE_KEYS)) == len(T.REUSE_KEYS)


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("opt")
    data = make_image_folder(str(base / "data"), num_classes=3, per_class=6, test_per_class=1, size=8)
    out = base / "run"
    assert main([data, "--output", str(out), "--epochs", "1", *FAST]) == 0
    return data, out


def test_every_resume_and_reuse_key_is_recorded_by_a_run(one_run):
    """A key the checks compare but a run never records would compare None with None: a check
    that cannot fail. Each one is in config.json (and in metrics.json's config, which the study
    reads); the options that are not recorded are not."""
    _, out = one_run
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())["config"]
    for key in RESUME_KEYS + list(T.REUSE_KEYS):
        assert key in config and key in metrics, key
    for key in set(T.NOT_RECORDED) - {d.key for d in T.DERIVED}:  # teacher_cache: recorded as derived
        assert key not in config, key


# kd_alpha > 0 needs a teacher, which this run has not: refused before the resume check is reached
@pytest.mark.parametrize("opt", [o for o in T.OPTIONS if o.resume and o.kwargs.get("type") in (int, float)
                                 and o.dest != "kd_alpha"], ids=lambda o: o.dest)
def test_a_numeric_resume_option_changed_is_refused_on_resume(opt, one_run, tmp_path, capsys):
    """Each numeric option the table marks ``resume``: --resume with another value is refused,
    naming it (the check is derived from the table, not a list kept beside it)."""
    import shutil

    data, out = one_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    config = json.loads((run / "config.json").read_text())
    old = config[opt.dest]
    new = (old or 0) + (1 if opt.kwargs["type"] is int else 0.05)
    new = {"val_fraction": 0.2, "train_per_class": 5}.get(opt.dest, new)
    argv = [data, "--output", str(run), "--epochs", "1", *FAST, "--resume", opt.flags[0], str(new)]
    rc = main(argv)  # (--epochs given twice: the last one counts)
    err = capsys.readouterr().err
    assert rc == 2 and "cannot resume" in err and opt.dest in err, (opt.dest, err)


def test_the_study_commands_parse_back_to_its_settings(tmp_path):
    """Every vision run of the cpu study: its command line, parsed by lskd-vision-train's own
    parser, gives exactly the settings the study means it to (and checks reused runs against)."""
    from lskd_study.runner import Study

    st = Study("cpu", str(tmp_path / "out"), seeds=2)
    n = 0
    for r in st.runs:
        if r.kind != "vision_train":
            continue
        cmd = st.vision_cmd(r)
        args = build_parser().parse_args(cmd[1:])
        for key, want in st.vision_settings(r).items():
            assert getattr(args, key) == want, (r.id, key, getattr(args, key), want)
        n += 1
    assert n > 10


def test_to_argv_refuses_what_is_not_an_option():
    with pytest.raises(KeyError, match="not options of lskd-vision-train: temperature"):
        T.to_argv({"temperature": 2.0})
