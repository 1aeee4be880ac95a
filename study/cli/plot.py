"""lskd-plot: the study's figures from checkpoints, stability JSONs and run folders.

Sub-commands (each writes one PNG with ``-o``):

  projection    Müller-style projection of penultimate activations of three classes
                onto the plane of their classifier templates, LS vs no-LS teacher
                (paper Fig. 1). Vision checkpoints.
  mean-softmax  per-class mean softmax vectors, LS vs no-LS (Fig. 4). Vision
                checkpoints or ``lskd-stability --json`` files.
  reliability   reliability diagrams with ECE. Checkpoints or stability JSONs, NAME=SRC.
  curves        training loss and validation accuracy/BLEU per epoch (Fig. 5), NAME=SRC
                where SRC is an lskd-vision-train run folder or a fairseq-train log.
  temperature   student accuracy/BLEU against KD temperature, NAME=T:VALUE,T:VALUE,...

Examples::

  lskd-plot projection --with-ls runs/t_ls/checkpoint_best.pt \
      --without-ls runs/t_nols/checkpoint_best.pt --classes cat,dog,ship -o fig1.png
  lskd-plot curves "LS teacher=runs/s_ls" "no-LS teacher=runs/s_nols" -o fig5.png
  lskd-plot temperature "LS teacher=1:80.1,2:79.0,4:77.5" "no-LS teacher=1:79.8,2:79.9,4:79.6" -o t.png
"""

import argparse
import os
import sys
from lskd_fairseq import console


def _pairs(items):
    out = []
    for it in items:
        if "=" not in it:
            raise ValueError(f"expected NAME=SOURCE, got {it!r}")
        name, src = it.split("=", 1)
        out.append((name, src))
    return out


def build_parser():
    p = argparse.ArgumentParser(prog="lskd-plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("projection", help="Müller projection, LS vs no-LS (Fig. 1)")
    s.add_argument("--with-ls", required=True, help="vision checkpoint of the teacher trained with LS")
    s.add_argument("--without-ls", required=True, help="vision checkpoint of the teacher trained without LS")
    s.add_argument("--classes", default=None, help="three class names or indices, comma-separated "
                   "(default cat,dog,ship on CIFAR-10: two similar classes and one not)")
    s.add_argument("--data", default=None)
    s.add_argument("--split", default="test")
    s.add_argument("--max-per-class", type=int, default=300)
    s.add_argument("-o", "--output", required=True)

    s = sub.add_parser("mean-softmax", help="per-class mean softmax vectors (Fig. 4)")
    s.add_argument("--with-ls", required=True, help="vision checkpoint or stability JSON")
    s.add_argument("--without-ls", required=True, help="vision checkpoint or stability JSON")
    s.add_argument("--data", default=None)
    s.add_argument("--split", default="test")
    s.add_argument("-o", "--output", required=True)

    s = sub.add_parser("reliability", help="reliability diagrams with ECE")
    s.add_argument("models", nargs="+", help="NAME=checkpoint-or-stability-JSON")
    s.add_argument("--data", default=None, help="dataset (vision) or data-bin (fairseq)")
    s.add_argument("--split", default=None)
    s.add_argument("-o", "--output", required=True)

    s = sub.add_parser("curves", help="training loss and validation metric per epoch (Fig. 5)")
    s.add_argument("runs", nargs="+", help="NAME=vision run folder or fairseq-train log file")
    s.add_argument("-o", "--output", required=True)

    s = sub.add_parser("temperature", help="student metric against KD temperature")
    s.add_argument("series", nargs="+", help="NAME=T:VALUE,T:VALUE,...")
    s.add_argument("--metric", default="student test accuracy (%)")
    s.add_argument("-o", "--output", required=True)
    return p


def run(args) -> str:
    from lskd_study import figures as figure_data
    from lskd_study import plots

    if args.cmd == "projection":
        from lskd_study.stability import vision_stability
        from lskd_vision.engine import load_checkpoint

        classes_all = load_checkpoint(args.with_ls)["config"]["classes"]
        names = args.classes.split(",") if args.classes else figure_data.default_projection_classes(classes_all)
        idx = figure_data.class_indices(names, classes_all)
        panels = []
        for title, ck in (("teacher trained with LS", args.with_ls), ("teacher trained without LS", args.without_ls)):
            r = vision_stability(ck, data=args.data, split=args.split, keep_features_of=idx,
                                 max_features_per_class=args.max_per_class)
            panels.append(figure_data.projection_panel(r, idx, f"{title}\n{os.path.basename(os.path.dirname(ck))}"))
        return plots.plot_projection(panels, args.output, class_names=classes_all)
    if args.cmd == "mean-softmax":
        panels = []
        for title, src in (("with LS", args.with_ls), ("without LS", args.without_ls)):
            r = figure_data.stability_result(src, data=args.data, split=args.split)
            if r.get("kind") != "vision":
                raise ValueError(f"{src}: mean-softmax plots need a vision model (class x class means)")
            panels.append({"title": f"{title} (1-S = {r['one_minus_S']:.4f})", "class_means": r["class_means"]})
        return plots.plot_mean_softmax(panels, args.output, class_names=r["classes"])
    if args.cmd == "reliability":
        panels = []
        for name, src in _pairs(args.models):
            kw = {"split": args.split} if args.split else {}
            r = figure_data.stability_result(src, data=args.data, data_bin=args.data, **kw)
            panels.append({"title": name, "calibration": r["calibration"]})
        return plots.plot_reliability(panels, args.output)
    if args.cmd == "curves":
        series = []
        metric = "validation accuracy (%)"
        for name, src in _pairs(args.runs):
            if os.path.isdir(src):
                series.append(figure_data.vision_curve(src, name))
            else:
                c = figure_data.fairseq_curve(src, name)
                metric = {"bleu": "validation BLEU", "loss": "validation loss"}.get(c["metric"], metric)
                series.append(c)
        return plots.plot_curves(series, args.output, metric_name=metric)
    if args.cmd == "temperature":
        series = []
        for name, spec in _pairs(args.series):
            Ts, vals = [], []
            for pt in spec.split(","):
                t, v = pt.split(":")
                Ts.append(float(t))
                vals.append(float(v))
            series.append({"label": name, "T": Ts, "value": vals})
        return plots.plot_temperature(series, args.output, metric_name=args.metric)
    raise ValueError(args.cmd)


def main(argv=None):
    from lskd_fairseq.warning_filters import silence_known_warnings

    silence_known_warnings()  # fairseq/torch deprecation notices only
    args = build_parser().parse_args(argv)
    try:
        out = run(args)
    except (ValueError, FileNotFoundError) as e:
        console.error("lskd-plot", str(e))
        return 2
    console.result(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
