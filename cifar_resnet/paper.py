"""The papers' numbers and the paper's recipe, written down once; nothing of the project imported.

He et al. 2016 ("Deep Residual Learning", Sec. 4.2 and Table 6) is "the paper"; He et al. 2016b
("Identity Mappings") and Xie et al. 2017 (ResNeXt) give the other published errors. The
sweep's model lists and Figures 6 and 7's panels are here too, since they are the paper's.
"""

from __future__ import annotations

import re

# The paper's recipe (Sec. 4.2) as train.py's defaults: every one of these flags takes its default
# from here (settings.build_parser), --recipe paper is exactly this, and --help's table of presets
# shows these rows.
RECIPE = {
    "model": "ResNet20",
    "epochs": 164,  # 164 x 390 steps: the paper's 64k iterations
    "batch_size": 128,
    "optimizer": "sgd",  # with momentum
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "schedule": "multistep",
    "milestones": None,  # 50% and 75% of --epochs: the paper's 32k and 48k of 64k iterations
    "step_size": None,  # --schedule step's, unused here
    "gamma": 0.1,
    "warmup": "auto",  # lr 0.01 until the training error is below 80%, for ResNet-110 and -1202
    "warmup_epochs": 0,
    "label_smoothing": 0.0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "color_jitter": 0.0,
    "random_erasing": 0.0,
    "normalize": "pixel",  # the per-pixel mean image subtracted
    "val_size": 0,  # the paper's 45k/5k split chose its schedule; its reported nets trained on all 50k
    "early_stop": None,
    "precision": "auto",  # not the paper's: bf16 where the hardware is fast at it (a listed difference)
}

# Table 6 of the paper, test error (%). ResNet-110: best of 5 runs, and their mean and std.
PAPER_ERROR = {"ResNet20": 8.75, "ResNet32": 7.51, "ResNet44": 7.17, "ResNet56": 6.97, "ResNet110": 6.43,
               "ResNet1202": 7.93}
PAPER_MEAN_ERROR = {"ResNet110": (6.61, 0.16)}
# Other published test errors (%) by data set: He et al. 2016b ("Identity Mappings") Table 3,
# median of 5 runs; Xie et al. 2017 (ResNeXt) Table 7, mean of 10 runs.
PUBLISHED_ERROR = {
    "cifar10": {"PreActResNet110": (6.37, "2016b"), "PreActResNet164": (5.46, "2016b"),
                "PreActResNet1001": (4.92, "2016b"), "ResNeXt29_8x64d": (3.65, "Xie"), "ResNeXt29_16x64d": (3.58, "Xie")},
    "cifar100": {"PreActResNet164": (24.33, "2016b"), "PreActResNet1001": (22.71, "2016b"),
                 "ResNeXt29_8x64d": (17.77, "Xie"), "ResNeXt29_16x64d": (17.31, "Xie")},
}
PUBLICATIONS = {"2016b": "He et al. 2016b, Table 3 (median of 5)", "Xie": "Xie et al. 2017, Table 7 (mean of 10)"}
# Published CIFAR-100 errors of nets this project does not build (the original, post-activation
# bottleneck ResNets of 2016b's Table 3), for the reader.
CIFAR100_OTHERS = "He et al. 2016b also give the original ResNet-164 25.16% and ResNet-1001 27.82% on CIFAR-100."
# What the project behind --recipe modern says it reached, not a paper's number and not checked by anyone here.
MODERN_PROJECT_CLAIMS = ("The PreActResNet project behind `--recipe modern` claims about 95% accuracy for its "
                         "PreActResNet and about 94% for ResNeXt29_8x64d (claims only).")

# The paper's ResNets and plain nets (Table 6, Figure 6), the seed repository's ImageNet-style
# extras, and ResNet-1202 last, since it takes longer than all the others together: run.sh's order.
SWEEP_MODELS = ("ResNet20", "ResNet32", "ResNet44", "ResNet56", "ResNet110", "Plain20", "Plain32", "Plain44",
                "Plain56", "ResNet18", "ResNet34", "ResNet50", "ResNet1202")
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)  # the paper's CIFAR nets; ResNet18-152 are another family
FIGURE6_PANELS = (
    ("plain nets", ("Plain20", "Plain32", "Plain44", "Plain56", "Plain110")),
    ("ResNets", ("ResNet20", "ResNet32", "ResNet44", "ResNet56", "ResNet110")),
    ("ResNet-110 and ResNet-1202", ("ResNet110", "ResNet1202")),
)
FIGURE7_MODELS = ("Plain20", "Plain56", "Plain110", "ResNet20", "ResNet56", "ResNet110")


def depth_of(model: str) -> int:
    """The first number in a model's name: 56 for ResNet56, 29 for ResNeXt29_8x64d."""
    return int(re.search(r"\d+", model).group())


def model_order(models) -> list[str]:
    """Models (or groups of runs, whose names start with their model's) in the sweep's order, then
    any others by name."""
    def position(name: str) -> tuple:
        model = name.split(" ")[0]
        return SWEEP_MODELS.index(model) if model in SWEEP_MODELS else len(SWEEP_MODELS), name

    return sorted(models, key=position)
