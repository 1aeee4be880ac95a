"""lskd: label smoothing x knowledge distillation for fairseq NMT and vision."""

import sys

from setuptools import find_packages, setup

# fairseq 0.12.2 does not install on Python >= 3.11; fairseq-fixed 0.12.3.1 is the
# same code base patched for it and imports as ``fairseq``. Install torch, cython
# and numpy first, then fairseq with --no-build-isolation (scripts/setup_env.sh).
FAIRSEQ = "fairseq-fixed==0.12.3.1" if sys.version_info >= (3, 11) else "fairseq==0.12.2"

setup(
    name="lskd",
    version="0.1.0",
    description=(
        "Label smoothing and knowledge distillation: a fairseq plugin and a vision "
        "package sharing one loss module (after Shen et al., ICLR 2021)"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.8",
    packages=find_packages(include=["lskd_fairseq", "lskd_fairseq.*"])
    + ["lskd_vision"]
    + ["lskd_vision." + p for p in find_packages(where="vision")]
    + ["lskd_study"]
    + ["lskd_study." + p for p in find_packages(where="study")],
    package_dir={"lskd_vision": "vision", "lskd_study": "study"},
    install_requires=[
        "torch",
        "torchvision",
        "numpy",
        "sacrebleu>=2.0",
        "sentencepiece",
        "matplotlib",
        FAIRSEQ,
        "submitit==1.5.4",  # lskd-study --launcher slurm
    ],
    # timm: --model/--teacher-arch timm:NAME and .safetensors weights (lskd_vision)
    extras_require={"test": ["pytest", "pytest-xdist==3.8.0"], "timm": ["timm==1.0.29", "safetensors"]},
    entry_points={
        "console_scripts": [
            "lskd-distill-data = lskd_fairseq.cli.distill_data:main",
            "lskd-teacher-cache = lskd_fairseq.cli.teacher_cache:main",
            "lskd-bleu = lskd_fairseq.cli.bleu:main",
            "lskd-stability = lskd_study.cli.stability:main",
            "lskd-plot = lskd_study.cli.plot:main",
            "lskd-study = lskd_study.cli.study:main",
            "lskd-vision-train = lskd_vision.train:main",
            "lskd-vision-report = lskd_vision.report:main",
            "lskd-vision-cache = lskd_vision.cache:main",
        ]
    },
)
