"""Bad input stops the run before training with a message naming the value and what is allowed,
and leaves the teacher store and earlier runs untouched."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from support import compose_config, run_in_process
from kdrun.errors import ConfigError
from kdrun.pipeline import run
from kdrun.config.validate import check_trainer_settings, check_trainer_values, validate_config

SEED_RANGE = "[0, 4294967295]"
GAUSSIAN = ["data=gaussian_binary", "teacher=mlp"]

# Settings each stage has: every case runs as `teacher` and as `student` ({stage}).
STAGE_CASES = [
    (["{stage}.optimizer.lr=-1"], ["{stage}.optimizer.lr=-1", "> 0"]),
    (["{stage}.optimizer.lr=0"], ["{stage}.optimizer.lr=0", "> 0"]),
    (["{stage}.optimizer.lr=abc"], ["{stage}.optimizer.lr='abc'", "not a number"]),
    (["{stage}.optimizer.lr=nan"], ["{stage}.optimizer.lr=nan", "not a finite number"]),
    (["{stage}.optimizer.lr=1e999"], ["{stage}.optimizer.lr=inf", "not a finite number"]),
    (["{stage}.optimizer.name=nope"], ["{stage}.optimizer.name='nope'", "allowed: sgd, adam, adamw"]),
    (["{stage}.optimizer.weight_decay=-1"], ["{stage}.optimizer.weight_decay=-1", ">= 0"]),
    (["{stage}.optimizer.weight_decay=abc"], ["{stage}.optimizer.weight_decay='abc'"]),
    (["{stage}.optimizer.momentum=-1"], ["{stage}.optimizer.momentum=-1", "[0, 1)"]),
    (["{stage}.optimizer.momentum=abc"], ["{stage}.optimizer.momentum='abc'", "[0, 1)"]),
    (["{stage}.optimizer.betas=abc"], ["{stage}.optimizer.betas='abc'", "not a list"]),
    (["{stage}.optimizer.betas=[0.9,1.5]"], ["{stage}.optimizer.betas[1]=1.5", "[0, 1)"]),
    (["{stage}.optimizer.betas=[0.9]"], ["{stage}.optimizer.betas=[0.9]", "2 items"]),
    (["{stage}.optimizer.nesterov=abc"], ["{stage}.optimizer.nesterov='abc'", "true or false"]),
    (["{stage}.optimizer.name=sgd", "{stage}.optimizer.momentum=0", "{stage}.optimizer.nesterov=true"],
     ["{stage}.optimizer.nesterov=true needs momentum > 0"]),
    (["{stage}.optimizer.decay_norm_and_bias=abc"], ["{stage}.optimizer.decay_norm_and_bias='abc'", "true or false"]),
    (["+{stage}.optimizer.foo=1"], ["{stage}.optimizer.foo=1", "allowed: name, lr"]),
    (["{stage}.lr_schedule.name=abc"], ["{stage}.lr_schedule.name='abc'", "allowed: constant, step"]),
    (["{stage}.lr_schedule.gamma=0"], ["{stage}.lr_schedule.gamma=0", "> 0"]),
    (["{stage}.lr_schedule.gamma=abc"], ["{stage}.lr_schedule.gamma='abc'", "not a number"]),
    (["{stage}.lr_schedule.final_lr_factor=2"], ["{stage}.lr_schedule.final_lr_factor=2", "[0, 1]"]),
    (["{stage}.lr_schedule.final_lr_factor=nan"], ["{stage}.lr_schedule.final_lr_factor=nan", "finite"]),
    (["{stage}.lr_schedule.warmup_epochs=nan"], ["{stage}.lr_schedule.warmup_epochs=nan", "finite"]),
    (["{stage}.lr_schedule.warmup_epochs=1e999"], ["{stage}.lr_schedule.warmup_epochs=inf", "finite"]),
    (["{stage}.lr_schedule.warmup_steps=-1"], ["{stage}.lr_schedule.warmup_steps=-1", ">= 0"]),
    (["{stage}.lr_schedule.milestones=abc"], ["{stage}.lr_schedule.milestones='abc'", "not a list"]),
    (["{stage}.lr_schedule.milestones=[5,abc]"], ["{stage}.lr_schedule.milestones[1]='abc'", "> 0"]),
    (["{stage}.lr_schedule.milestones=[5,2]"], ["{stage}.lr_schedule.milestones=[5, 2]", "must increase"]),
    (["{stage}.gradient_clip_val=0"], ["{stage}.gradient_clip_val=0", "> 0, or null"]),
    (["{stage}.gradient_clip_val=-1"], ["{stage}.gradient_clip_val=-1", "> 0, or null"]),
    (["{stage}.gradient_clip_val=nan"], ["{stage}.gradient_clip_val=nan", "finite"]),
    (["{stage}.gradient_clip_val=abc"], ["{stage}.gradient_clip_val='abc'", "not a number"]),
    (["{stage}.epochs=abc"], ["{stage}.epochs='abc'", "whole number >= 1"]),
    (["{stage}.max_steps=2.5"], ["{stage}.max_steps=2.5", "whole number >= 1"]),
    (["{stage}.batch_size=abc"], ["{stage}.batch_size='abc'", "whole number >= 1"]),
    (["{stage}.drop_last=abc"], ["{stage}.drop_last='abc'", "true or false"]),
    (["{stage}=cnn", "{stage}.model.width=nan"], ["{stage}.model.width=nan", "finite", "cnn"]),
    (["{stage}=cnn", "{stage}.model.width=1e999"], ["{stage}.model.width=inf", "finite"]),
    (["{stage}=cnn", "{stage}.model.width=abc"], ["{stage}.model.width='abc'", "not a number"]),
    (["{stage}=cnn", "{stage}.model.width=0"], ["{stage}.model.width=0", "> 0"]),
    (["{stage}=mlp", "{stage}.model.depth=-1"], ["{stage}.model.depth=-1", ">= 0", "mlp"]),
    (["{stage}=mlp", "{stage}.model.width=2.5"], ["{stage}.model.width=2.5", "whole number >= 1", "mlp"]),
    (["{stage}=mlp", "{stage}.model.dropout=-1"], ["{stage}.model.dropout=-1", "[0, 1)"]),
    (["{stage}=mlp", "{stage}.model.dropout=1"], ["{stage}.model.dropout=1", "[0, 1)"]),
    (["{stage}=mlp", "{stage}.model.dropout=nan"], ["{stage}.model.dropout=nan", "finite"]),
    (["{stage}=mlp", "{stage}.model.activation=abc"], ["{stage}.model.activation='abc'", "allowed: relu, gelu"]),
    (["{stage}=cnn", "{stage}.model.batchnorm=abc"], ["{stage}.model.batchnorm='abc'", "true or false", "cnn"]),
    (["{stage}=cnn", "{stage}.model.batchnorm=0"], ["{stage}.model.batchnorm=0", "true or false"]),
    (["{stage}=cnn", "{stage}.model.channels=abc"], ["{stage}.model.channels='abc'", "not a list"]),
    (["{stage}=cnn", "{stage}.model.channels=[8,0]"], ["{stage}.model.channels[1]=0", ">= 1"]),
    (["{stage}=cnn", "{stage}.model.final_pool=abc"], ["{stage}.model.final_pool='abc'", "allowed: max, avg"]),
    (["{stage}=vit", "{stage}.model.patch_size=2", "{stage}.model.depth=abc"], ["{stage}.model.depth='abc'"]),
    (["{stage}=vit", "{stage}.model.patch_size=2", "{stage}.model.mlp_ratio=nan"], ["{stage}.model.mlp_ratio=nan"]),
    (["{stage}=resnet_cifar", "{stage}.model.depth=abc"], ["{stage}.model.depth='abc'", "6n+2"]),
    (["{stage}=random_features", "{stage}.model.feature_seed=-1"],
     ["{stage}.model.feature_seed=-1", SEED_RANGE]),
    (["{stage}=logistic_regression", "{stage}.model.bias=abc"], ["{stage}.model.bias='abc'", "true or false"]),
]


def for_stage(stage: str, cases=STAGE_CASES) -> list:
    return [([o.replace("{stage}", stage) for o in overrides], [f.replace("{stage}", stage) for f in fragments])
            for overrides, fragments in cases]


STUDENT_CASES = for_stage("student")

CASES = [
    (["data.kappa=0"], ["data.kappa=0", "> 0"]),
    (["data.kappa=-0.5"], ["data.kappa=-0.5", "> 0"]),
    (["data.kappa=0.001"], ["data.kappa=0.001", "fewer than one per class", "kappa >="]),
    (["data.kappa=3.0"], ["data.kappa=3.0", "pool has only", "kappa <="]),
    (["loss.alpha=1.5"], ["alpha=1.5", "[0, 1]"]),
    (["loss.alpha=-0.1"], ["alpha=-0.1", "[0, 1]"]),
    (["loss.temperature=0"], ["temperature=0", "> 0"]),
    (["loss.temperature=-2"], ["temperature=-2", "> 0"]),
    (["schedule=late_switch", "schedule.at=1.5"], ["schedule.at=1.5", "[0, 1]"]),
    (["schedule=late_switch", "schedule.at=100000"], ["schedule.at=100000", "steps 0.."]),
    (["schedule=late_switch", "schedule.at=-3"], ["schedule.at=-3", "steps 0.."]),
    (["teacher.model.num_classes=5"], ["teacher.model.num_classes=5", "student.model.num_classes=10"]),
    (["teacher.model.num_classes=5", "student.model.num_classes=5"], ["5 classes", "allowed: 10"]),
    (["teacher.checkpoint=/nonexistent/teacher.pt"], ["/nonexistent/teacher.pt", "no such file"]),
    (["schedule=late_switch", "schedule.to=kdd"], ["schedule.to='kdd'", "allowed: ce, ", "kd, ", "mse_logits"]),
    (["schedule=phases", "schedule.phases=[{loss: ce, until: 0.5}, {loss: nope}]"], ["'nope'", "allowed:"]),
    (["+loss.beta=3"], ["beta", "allowed: alpha, t_squared, temperature"]),
    (["student.model.name=resnet9000"], ["resnet9000", "allowed: ", "cnn, gpt, hf_classifier, hf_t5_classifier, logistic_regression, mlp"]),
    (["data=gaussian_binary", "student=cnn", "teacher=mlp"], ["cnn needs image input"]),
    (["student.epochs=0"], ["student.epochs=0", ">= 1"]),
    (["+model=cnn"], ["model=cnn", "teacher=", "student="]),
    *for_stage("teacher"),
    *STUDENT_CASES,
    # seeds: whole numbers in [0, 2**32 - 1] (null: derived, where the key allows it)
    (["seed=-1"], ["seed=-1", SEED_RANGE]),
    (["seed=abc"], ["seed='abc'", "not a whole number", SEED_RANGE]),
    (["seed=nan"], ["seed=nan", "not a whole number"]),
    (["seed=1e999"], ["seed=inf", "not a whole number"]),
    (["seed=4294967296"], ["seed=4294967296", "too large", SEED_RANGE]),
    (["seeds.init=abc"], ["seeds.init='abc'", "or null"]),
    (["seeds.data_order=-1"], ["seeds.data_order=-1", SEED_RANGE]),
    (["seeds.subset=nan"], ["seeds.subset=nan", SEED_RANGE]),
    (["seeds=abc"], ["seeds='abc'", "not a mapping"]),
    (["+seeds.teacher=1"], ["seeds.teacher=1", "allowed: init, data_order, subset"]),
    (["teacher.seed=-1"], ["teacher.seed=-1", SEED_RANGE]),
    (["teacher.seed=abc"], ["teacher.seed='abc'", SEED_RANGE]),
    (["data.split_seed=-1"], ["data.split_seed=-1", SEED_RANGE]),
    (["data.split_seed=abc"], ["data.split_seed='abc'", SEED_RANGE]),
    (["data.pool_seed=-1"], ["data.pool_seed=-1", SEED_RANGE]),
    (["data.pool_seed=nan"], ["data.pool_seed=nan", SEED_RANGE]),
    (["data.label_noise.seed=abc"], ["data.label_noise.seed='abc'", SEED_RANGE]),
    (["teacher.oracle_options.seed=-1"], ["teacher.oracle_options.seed=-1", SEED_RANGE]),
    (["analysis.eigenspace.seed=1e999"], ["analysis.eigenspace.seed=inf", SEED_RANGE]),
    # data: kappa subsets, splits, loaders, augmentation, label noise, shape
    (["data.kappa=abc"], ["data.kappa='abc'", "not a number"]),
    (["data.kappa=nan"], ["data.kappa=nan", "finite"]),
    (["data.kappa=1e999"], ["data.kappa=inf", "finite"]),
    (["data.teacher_size=abc"], ["data.teacher_size='abc'", "whole number"]),
    (["data.teacher_size=nan"], ["data.teacher_size=nan", "whole number"]),
    (["data.teacher_size=0"], ["data.teacher_size=0", ">= 1"]),
    (["data.student_size=abc"], ["data.student_size='abc'", "whole number"]),
    (["data.student_size=1e999"], ["data.student_size=inf", "whole number"]),
    (["data.student_size=100", "data.kappa=0.5"], ["data.kappa (0.5)", "data.student_size (100)", "not both"]),
    (["data.val_fraction=abc"], ["data.val_fraction='abc'", "(0, 1)"]),
    (["data.val_fraction=0"], ["data.val_fraction=0", "(0, 1)"]),
    (["data.test_fraction=abc"], ["data.test_fraction='abc'", "(0, 1)"]),
    (["data.test_fraction=1"], ["data.test_fraction=1", "(0, 1)"]),
    (["data.distill_fraction=abc"], ["data.distill_fraction='abc'", "(0, 1)"]),
    (["data.distill_fraction=0"], ["data.distill_fraction=0", "(0, 1)"]),
    (["data.num_workers=abc"], ["data.num_workers='abc'", "whole number >= 0"]),
    (["data.num_workers=-1"], ["data.num_workers=-1", "whole number >= 0"]),
    (["data.num_workers=nan"], ["data.num_workers=nan", "whole number >= 0"]),
    (["data.batch_size=abc"], ["data.batch_size='abc'", "whole number >= 1"]),
    (["data.normalize=abc"], ["data.normalize='abc'", "true or false"]),
    (["data.normalize=0"], ["data.normalize=0", "true or false"]),
    (["data.stratified=abc"], ["data.stratified='abc'", "true or false"]),
    (["data.stratified=1"], ["data.stratified=1", "true or false"]),
    (["data.augment=0"], ["data.augment=0", "allowed: none, cifar_standard"]),
    (["data.augment=abc"], ["data.augment='abc'", "allowed: none, cifar_standard"]),
    (["data.fast_path=0"], ["data.fast_path=0", "allowed: auto, true, false"]),
    (["data.split=abc"], ["data.split='abc'", "allowed: standard, distill4"]),
    (["data.label_noise.kind=abc"], ["data.label_noise.kind='abc'", "allowed: none, symmetric"]),
    (["data.label_noise.fraction=-1"], ["data.label_noise.fraction=-1", "[0, 1]"]),
    (["data.label_noise.fraction=abc"], ["data.label_noise.fraction='abc'", "[0, 1]"]),
    (["data.label_noise.fraction=nan"], ["data.label_noise.fraction=nan", "[0, 1]"]),
    (["data.label_noise.mapping=abc"], ["data.label_noise.mapping='abc'", "not a list"]),
    (["data.label_noise.mapping=[1,-1]"], ["data.label_noise.mapping[1]=-1", ">= 0"]),
    (["data.label_noise=abc"], ["data.label_noise='abc'", "not a mapping"]),
    (["data.input_shape=abc"], ["data.input_shape='abc'", "not a list"]),
    (["data.input_shape=[1,0,8]"], ["data.input_shape[1]=0", ">= 1"]),
    (["data.input_shape=[1,8]"], ["data.input_shape=[1, 8]", "allowed: [1, 8, 8]"]),
    (["data.source=abc"], ["data.source='abc'", "allowed: ", "digits"]),
    # the synthetic and torchvision sources' own options (configs/data/*.yaml)
    ([*GAUSSIAN, "data.dim=abc"], ["data.dim='abc'", "whole number >= 1"]),
    ([*GAUSSIAN, "data.n_train=nan"], ["data.n_train=nan", "whole number >= 1"]),
    ([*GAUSSIAN, "data.mean_scale=nan"], ["data.mean_scale=nan", "finite"]),
    ([*GAUSSIAN, "data.separation=-1"], ["data.separation=-1", ">= 0"]),
    ([*GAUSSIAN, "data.separation_mode=abc"], ["data.separation_mode='abc'", "allowed: mean_scale"]),
    ([*GAUSSIAN, "data.prior=1"], ["data.prior=1", "(0, 1)"]),
    ([*GAUSSIAN, "data.generator_seed=-1"], ["data.generator_seed=-1", SEED_RANGE]),
    (["data=linf_slab_2d", "teacher=mlp", "data.scale=0"], ["data.scale=0", "> 0"]),
    (["data=linf_slab_2d", "teacher=mlp", "data.sharpness=abc"], ["data.sharpness='abc'"]),
    (["data=linf_slab_2d", "teacher=mlp", "data.offset=1e999"], ["data.offset=inf", "finite"]),
    (["data=gaussian_mixture", "teacher=mlp", "data.sigma=0"], ["data.sigma=0", "> 0"]),
    (["data=gaussian_mixture", "teacher=mlp", "data.means_seed=abc"], ["data.means_seed='abc'", SEED_RANGE]),
    (["data=kchannel", "teacher=mlp", "data.alpha=2"], ["data.alpha=2", "[0, 1]"]),
    (["data=kchannel", "teacher=mlp", "data.num_similar=abc"], ["data.num_similar='abc'", "[0, 9]"]),
    (["data=kchannel", "teacher=mlp", "data.beta_a=0"], ["data.beta_a=0", "> 0"]),
    (["data=kchannel", "teacher=mlp", "data.similar_scaling=abc"], ["data.similar_scaling='abc'", "literal, margin"]),
    (["data=cifar10", "data.download=abc"], ["data.download='abc'", "true or false"]),
    (["data=svhn", "data.verify_checksums=0"], ["data.verify_checksums=0", "true or false"]),
    (["data=image_folder", "data.num_classes=10", "data.image_size=abc"], ["data.image_size='abc'", ">= 1"]),
    (["data=image_folder", "data.num_classes=10", "data.std=[0.2,0,0.2]"], ["data.std[1]=0", "> 0"]),
    (["data=image_folder", "data.num_classes=10", "data.mean=abc"], ["data.mean='abc'", "not a list"]),
    # the teacher: oracle, store, cached outputs; the student's initial weights
    (["teacher.oracle=0"], ["teacher.oracle=0", "allowed: null, bayes"]),
    (["teacher.oracle_options.bias=abc"], ["teacher.oracle_options.bias='abc'", "[0, 1]"]),
    (["teacher.oracle_options.bias=2"], ["teacher.oracle_options.bias=2", "[0, 1]"]),
    (["teacher.oracle_options.sigma=-1"], ["teacher.oracle_options.sigma=-1", ">= 0"]),
    (["teacher.oracle_options.sigma=nan"], ["teacher.oracle_options.sigma=nan", "finite"]),
    (["teacher.oracle_options.noise_scale=abc"], ["teacher.oracle_options.noise_scale='abc'", "sigma_squared"]),
    (["teacher.oracle_options.distortion=0"], ["teacher.oracle_options.distortion=0", ">= 1"]),
    (["teacher.oracle_options.psi_form=abc"], ["teacher.oracle_options.psi_form='abc'", "corrected, printed"]),
    (["teacher.store=-1"], ["teacher.store=-1", "non-empty string"]),
    (["teacher.cache_outputs=0"], ["teacher.cache_outputs=0", "allowed: auto, true, false"]),
    # checked on every run, also one without augmentation (where the view cache is never used)
    (["teacher.view_cache_max_gb=-1"], ["teacher.view_cache_max_gb=-1", ">= 0"]),
    (["teacher.view_cache_max_gb=lots"], ["teacher.view_cache_max_gb='lots'", "is not a number"]),
    (["student.init=abc"], ["student.init='abc'", "allowed: own, teacher"]),
    # loss
    (["loss.temperature=1e999"], ["temperature=inf", "finite"]),
    (["loss.t_squared=abc"], ["t_squared='abc'", "true or false"]),
    # evaluation and analysis
    (["evaluation=abc"], ["evaluation='abc'", "not a mapping"]),
    (["evaluation.ece_bins=abc"], ["evaluation.ece_bins='abc'", "whole number >= 1"]),
    (["evaluation.ece_bins=nan"], ["evaluation.ece_bins=nan", "whole number >= 1"]),
    (["evaluation.ece_bins=0"], ["evaluation.ece_bins=0", "whole number >= 1"]),
    (["evaluation.precision_at_k=abc"], ["evaluation.precision_at_k='abc'", "not a list"]),
    (["evaluation.precision_at_k=-1"], ["evaluation.precision_at_k=-1", "not a list"]),
    (["evaluation.precision_at_k=[1,0]"], ["evaluation.precision_at_k[1]=0", ">= 1"]),
    (["evaluation.cka_samples=abc"], ["evaluation.cka_samples='abc'", "whole number >= 0"]),
    (["evaluation.cka_samples=1e999"], ["evaluation.cka_samples=inf", "whole number >= 0"]),
    (["evaluation.auroc_average=abc"], ["evaluation.auroc_average='abc'", "allowed: macro, weighted"]),
    (["+evaluation.bins=3"], ["evaluation.bins=3", "allowed: ece_bins"]),
    (["analysis=abc"], ["analysis='abc'", "not a mapping"]),
    (["analysis.snapshots.at=-1"], ["analysis.snapshots.at=-1", "not a list"]),
    (["analysis.snapshots.at=0"], ["analysis.snapshots.at=0", "not a list"]),
    (["analysis.snapshots.at=[abc]"], ["analysis.snapshots.at: 'abc' must be a step"]),
    (["analysis.snapshots.at=[-1]"], ["analysis.snapshots.at: -1 is outside the training run"]),
    (["analysis.snapshots.at=[100000]"], ["analysis.snapshots.at: 100000 is outside the training run: steps 0.."]),
    (["analysis.snapshots.splits=abc"], ["analysis.snapshots.splits='abc'", "train, val, test"]),
    (["analysis.snapshots.splits=[]"], ["analysis.snapshots.splits=[]", "non-empty list"]),
    (["analysis.snapshots.splits=[train,dev]"], ["analysis.snapshots.splits=['train', 'dev']", "train, val, test"]),
    (["analysis.eigenspace.enabled=abc"], ["analysis.eigenspace.enabled='abc'", "true or false"]),
    (["analysis.eigenspace.center=0"], ["analysis.eigenspace.center=0", "true or false"]),
    (["analysis.eigenspace.top=0"], ["analysis.eigenspace.top=0", ">= 1"]),
    (["analysis.eigenspace.top=abc"], ["analysis.eigenspace.top='abc'", ">= 1"]),
    (["analysis.eigenspace.num_bottom=nan"], ["analysis.eigenspace.num_bottom=nan", ">= 1"]),
    (["analysis.eigenspace.every_n_steps=0"], ["analysis.eigenspace.every_n_steps=0", ">= 1"]),
    (["analysis.eigenspace.bottom_range=abc"], ["analysis.eigenspace.bottom_range='abc'", "2 items"]),
    (["analysis.eigenspace.bottom_range=[5]"], ["analysis.eigenspace.bottom_range=[5]", "2 items"]),
    (["analysis.eigenspace.bottom_range=[5,abc]"], ["analysis.eigenspace.bottom_range[1]='abc'", ">= 0"]),
    (["analysis.eigenspace.bottom_range=[9,5]"], ["analysis.eigenspace.bottom_range=[9, 5]", "low <= high"]),
    (["+analysis.eigenspaces.top=1"], ["analysis.eigenspaces=", "allowed: snapshots, eigenspace"]),
    (["objective=abc"], ["objective='abc'", "student/val/acc"]),
    (["objective=0"], ["objective=0", "non-empty string"]),
    # the Trainer: kdrun's own reading of it, then Lightning's (a throwaway Trainer)
    (["trainer.gradient_clip_val=abc"], ["trainer.gradient_clip_val='abc'", "not a number"]),
    (["trainer.gradient_clip_val=-1"], ["trainer.gradient_clip_val=-1", "> 0, or null"]),
    (["trainer.gradient_clip_val=1e999"], ["trainer.gradient_clip_val=inf", "finite"]),
    (["trainer.devices=abc"], ["trainer.devices='abc'", "a whole number >= 1, -1 or auto"]),
    (["trainer.devices=nan"], ["trainer.devices=nan", "a whole number >= 1, -1 or auto"]),
    (["trainer.devices=0"], ["trainer.devices=0", "a whole number >= 1, -1 or auto"]),
    (["trainer.devices=[]"], ["trainer.devices=[]", "a whole number >= 1, -1 or auto"]),
    (["+trainer.num_nodes=0"], ["trainer.num_nodes=0", ">= 1"]),
    (["trainer.log_every_n_steps=0"], ["trainer.log_every_n_steps=0", ">= 1"]),
    (["trainer.log_every_n_steps=abc"], ["trainer.log_every_n_steps='abc'", ">= 1"]),
    (["trainer.deterministic=abc"], ["trainer.deterministic='abc'", "allowed: false, true, warn"]),
    (["trainer.accelerator=abc"], ["trainer: ", "accelerator='abc'", "allowed: values lightning.Trainer accepts"]),
    (["trainer.precision=abc"], ["trainer: ", "Precision 'abc' is invalid", "precision='abc'"]),
    (["trainer.accelerator=cpu", "trainer.devices=-1"], ["trainer: ", "devices=-1"]),
    (["+trainer.foo=1"], ["trainer: ", "unexpected keyword argument 'foo'"]),
]


# Composing takes Hydra a tenth of a second or more, so the hundreds of cases below share one composition
# per choice of config groups (data=, teacher=, ...): each case copies it and sets its values as Hydra's
# own override parser reads them (`abc` a string, `nan` and `1e999` floats), which is what composing does.
GROUPS = {"data", "teacher", "student", "teacher_recipe", "student_recipe", "loss", "schedule", "trainer", "logger",
          "paths", "experiment", "model"}
PARSER = OverridesParser.create()


@functools.lru_cache(maxsize=None)
def _composed(groups: tuple[str, ...]):
    return compose_config(Path("/nonexistent-output-root"), ["teacher.epochs=1", "student.epochs=1", *groups])


def compose_case(root: Path, overrides: list[str]):
    """compose_config(root, ["teacher.epochs=1", "student.epochs=1", *overrides])"""
    parsed = PARSER.parse_overrides(list(overrides))
    groups = tuple(text for text, override in zip(overrides, parsed)
                   if override.key_or_group.lstrip("+~").split("@")[0] in GROUPS)
    cfg = copy.deepcopy(_composed(groups))
    with open_dict(cfg):
        cfg.paths.output_root = str(root)
    for text, override in zip(overrides, parsed):
        if text in groups:
            continue
        if override.is_add():
            with open_dict(cfg):
                OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
        else:  # struct mode, as in composing: only keys that exist
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
    return cfg


@pytest.mark.parametrize("overrides", [
    ["student=cnn", "student.model.batchnorm=abc", "data.kappa=nan"],
    ["data=gaussian_binary", "teacher=mlp", "data.input_shape=[1,8]", "+trainer.foo=1"],
    ["schedule=phases", "schedule.phases=[{loss: ce, until: 0.5}, {loss: nope}]", "evaluation=abc"],
    ["+model=cnn", "seeds.init=1e999", "student.lr_schedule.milestones=[5,abc]"],
])
def test_compose_case_is_composing(tmp_path, overrides):
    expected = compose_config(tmp_path, ["teacher.epochs=1", "student.epochs=1", *overrides])
    assert OmegaConf.to_yaml(compose_case(tmp_path, overrides)) == OmegaConf.to_yaml(expected)  # nan != nan


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """An output root holding a finished run and its stored teacher."""
    root = tmp_path_factory.mktemp("outputs")
    metrics, _ = run_in_process(root, name="earlier", overrides=["teacher.epochs=1", "student.epochs=1"])
    return root, metrics


@pytest.mark.parametrize("overrides, expected", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_rejected_before_training(earlier_run, overrides, expected, tree_snapshot):
    root, earlier = earlier_run
    before = tree_snapshot(root)
    cfg = compose_case(root, overrides)
    with pytest.raises(ConfigError) as error:
        run(cfg, root / "runs" / "bad")
    for fragment in expected:
        assert fragment in str(error.value)
    assert tree_snapshot(root) == before, "a rejected run changed files on disk"
    assert not (root / "runs" / "bad").exists()
    assert (root / "teacher_store" / earlier["teacher/key"] / "teacher.pt").is_file()


@pytest.mark.parametrize("overrides, expected", STUDENT_CASES, ids=[" ".join(c[0]) for c in STUDENT_CASES])
def test_student_errors_come_before_the_teacher_trains(tmp_path, monkeypatch, overrides, expected, tree_snapshot):
    """With an empty store the teacher would train first: a student setting must stop the run before it."""

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(L.Trainer, "fit", no_training)
    cfg = compose_case(tmp_path, overrides)
    with pytest.raises(ConfigError) as error:
        run(cfg, tmp_path / "runs" / "bad")
    for fragment in expected:
        assert fragment in str(error.value)
    assert tree_snapshot(tmp_path) == {} and not (tmp_path / "runs").exists()


def test_enable_progress_bar_must_be_a_boolean(tmp_path):
    cfg = compose_config(tmp_path)  # composing sets it to false (conftest), so the bad value is set here
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = "abc"
    with pytest.raises(ConfigError, match="trainer.enable_progress_bar='abc' is not true or false"):
        validate_config(cfg)


@pytest.mark.parametrize("teacher", [["data=gaussian_binary", "teacher=mlp", "teacher.oracle=bayes"], "checkpoint"])
def test_an_unused_teacher_recipe_need_not_be_valid(tmp_path, teacher):
    """An imported or oracle teacher never trains, so its recipe and seed are not checked; a trained one's are."""
    if teacher == "checkpoint":
        (tmp_path / "teacher.pt").write_bytes(b"weights")
        teacher = [f"teacher.checkpoint={tmp_path / 'teacher.pt'}"]
    bad_recipe = ["teacher.optimizer.lr=-1", "teacher.lr_schedule.gamma=abc", "teacher.seed=-1", "teacher.epochs=0"]
    validate_config(compose_config(tmp_path, [*teacher, *bad_recipe]))
    with pytest.raises(ConfigError, match="teacher.seed=-1"):
        validate_config(compose_config(tmp_path, bad_recipe))


def test_check_trainer_settings_turns_lightnings_errors_into_config_errors(tmp_path, monkeypatch, tree_snapshot):
    monkeypatch.chdir(tmp_path)
    good = {"accelerator": "cpu", "devices": 1, "precision": "32-true", "log_every_n_steps": 1,
            "deterministic": True, "gradient_clip_val": None, "enable_progress_bar": False}
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    check_trainer_settings(good)
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before  # the throwaway left no trace
    for bad, fragment in [({"accelerator": "abc"}, "invalid accelerator name"),
                          ({"precision": "17"}, "Precision '17' is invalid"),
                          ({"foo": 1}, "unexpected keyword argument 'foo'")]:
        with pytest.raises(ConfigError, match=fragment):
            check_trainer_settings({**good, **bad})
    for bad, fragment in [({"log_every_n_steps": 0}, "trainer.log_every_n_steps=0"),  # Lightning would accept these
                          ({"enable_progress_bar": 1}, "trainer.enable_progress_bar=1")]:
        with pytest.raises(ConfigError, match=fragment):
            check_trainer_values({**good, **bad})
    assert tree_snapshot(tmp_path) == {}, "constructing the throwaway Trainer wrote files"
