"""The published numbers lskd's report compares against, in one place.

Transcribed from ``../shared/paper/README.md`` (Shen et al., "Is Label Smoothing
Truly Incompatible with Knowledge Distillation: An Empirical Study", ICLR 2021,
arXiv 2104.00676, review version; plus the follow-up by Chandrasegaran et al.,
ICML 2022, and Müller et al., NeurIPS 2019, as quoted there). Accuracies in %,
1-S as a fraction. ``None`` where the paper has no entry.
"""

PAPER = "Shen et al., ICLR 2021 (arXiv 2104.00676)"

# Table 1: ImageNet-1K, torchvision models.
# (network, top1 w/o LS, top5 w/o LS, 1-S w/o LS, top1 w/ LS, top5 w/ LS, 1-S w/ LS)
TABLE1 = [
    ("ResNet-18", 69.758, 89.078, 0.3359, 69.774, 89.122, 0.3358),
    ("ResNet-50", 75.888, 92.642, 0.3217, 76.130, 92.936, 0.3106),
    ("ResNet-101", 77.374, 93.546, 0.3185, 77.726, 93.830, 0.3070),
    ("ResNeXt50 32x4d", 77.618, 93.698, 0.3229, 77.774, 93.642, 0.3182),
    ("Wide ResNet-50", 78.468, 94.086, 0.3201, 77.808, 93.682, 0.3155),
    ("ResNeXt101 32x8d", 79.312, 94.526, 0.3177, 79.698, 94.768, 0.3116),
    ("ResNet-50, long schedule", 76.526, 93.070, 0.3222, 77.106, 93.340, 0.3090),
    ("ResNet-50, long + CutMix", 76.874, 93.500, 0.2999, 77.274, 93.304, 0.2890),
    ("MobileNetV2", 71.878, 90.286, 0.3341, None, None, None),
    ("DenseNet-121", 74.434, 91.972, 0.3243, None, None, None),
]

# Table 2: KD at T=1, soft labels only, teacher ResNet-50, mean +- std of 3 runs.
# (data, teacher LS?, teacher top1, teacher top5, student, student top1, std, student top5)
TABLE2 = [
    ("ImageNet-1K", False, 76.056, 92.791, "ResNet-18", 71.425, 0.038, 90.185),
    ("ImageNet-1K", False, 76.056, 92.791, "ResNet-50", 76.325, 0.068, 92.984),
    ("ImageNet-1K", True, 76.128, 92.977, "ResNet-18", 71.816, 0.017, 90.466),
    ("ImageNet-1K", True, 76.128, 92.977, "ResNet-50", 77.052, 0.030, 93.376),
    ("CUB-200-2011", False, 79.931, 94.370, "ResNet-18", 77.116, 0.086, 93.241),
    ("CUB-200-2011", False, 79.931, 94.370, "ResNet-50", 80.910, 0.033, 94.738),
    ("CUB-200-2011", True, 81.497, 95.043, "ResNet-18", 78.382, 0.099, 93.621),
    ("CUB-200-2011", True, 81.497, 95.043, "ResNet-50", 82.355, 0.050, 95.440),
]

# Chandrasegaran et al. (ICML 2022): ImageNet ResNet-50 -> ResNet-18, student top-1.
# T -> (teacher w/o LS, teacher w/ LS 0.1)
TEMPERATURE = {1: (71.488, 71.666), 2: (71.360, 68.860), 3: (69.674, 67.752), 64: (66.194, 64.362)}

# NMT. Shen et al. report IWSLT14 De-En only as curves (no numbers to quote).
# Chandrasegaran et al., WMT En->De: (w/o LS, w/ LS)
NMT_WMT_TEACHER_BLEU = (26.46, 26.75)
NMT_WMT_STUDENT_BLEU_T1 = (24.91, 25.09)
# Kim & Rush (2016): sequence-level KD over a no-KD student, BLEU gain (greedy, beam).
SEQKD_GAIN = (4.2, 1.7)

# Müller et al. (2019), expected calibration error: (baseline, with LS)
ECE = {
    "CIFAR-100 ResNet-56 (LS 0.05)": (0.150, 0.024),
    "ImageNet Inception-v4 (LS 0.1)": (0.071, 0.035),
    "EN-DE Transformer (LS 0.1)": (0.056, 0.019),
}

# The claims the study checks, keyed for the report.
CLAIMS = {
    "erasure": (
        "A teacher trained with LS erases information: its 1-S (intra-class variance of "
        "the softmax outputs) is lower than that of the same network trained without LS "
        "(Table 1: lower with LS in all 8 ImageNet pairs that have both entries)."
    ),
    "kd_t1": (
        "With KD at T=1 and soft labels only, the LS teacher gives a student that is as "
        "good as or better than the no-LS teacher's student (Table 2)."
    ),
    "temperature": (
        "LS teachers are fine at T=1 but their students fall behind at larger "
        "temperatures (Chandrasegaran et al.; rule of thumb: LS teacher + low T)."
    ),
    "nmt_teacher": (
        "NMT: a teacher trained with LS reaches higher BLEU than the same model without LS "
        "(Shen et al., IWSLT14, curves; Chandrasegaran et al., WMT En-De: 26.75 vs 26.46)."
    ),
    "nmt_word_kd": (
        "NMT: the LS teacher's word-level-KD student reaches higher BLEU than the no-LS "
        "teacher's (Shen et al., IWSLT14, curves; Chandrasegaran et al., WMT: 25.09 vs "
        "24.91 at T=1)."
    ),
    "nmt_seq_kd": (
        "NMT: sequence-level KD improves over a no-KD student (Kim & Rush 2016: "
        "+4.2 BLEU greedy, +1.7 beam)."
    ),
    "calibration": (
        "LS lowers the expected calibration error (Müller et al. 2019)."
    ),
    "long_tail": (
        "LS loses effectiveness for long-tailed class distributions and when the number of "
        "classes grows (Shen et al., appendix: iNaturalist 2019, Places-LT, ImageNet-LT)."
    ),
}


