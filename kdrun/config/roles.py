"""The role groups: one folder of architectures and one of recipes, each chosen per stage.

Hydra has no group aliases. Storing each file of configs/model/ under `teacher` and `student`
(packaged at teacher.model / student.model), and each file of configs/recipe/ under
`teacher_recipe` and `student_recipe` (merged into teacher / student), keeps a single zoo and a
single set of recipes while the command line reads `kdrun teacher=cnn student=mlp
student_recipe=sgd_cosine`. Registration is an explicit call (`register_role_groups`), made by
every entry point before Hydra composes a config.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from kdrun.config.tree import config_dir

# The folder each role group selects from, and the groups that serve it.
ROLE_GROUPS = {"model": ("teacher", "student"), "recipe": ("teacher_recipe", "student_recipe")}
_PACKAGES = {"teacher": "teacher.model", "student": "student.model",
             "teacher_recipe": "teacher", "student_recipe": "student"}
_registered: set[Path] = set()


def register_role_groups(configs: Path | None = None) -> None:
    """Store every zoo file and recipe under its role groups in Hydra's ConfigStore (once per tree)."""
    configs = Path(configs or config_dir())
    if configs in _registered:
        return
    store = ConfigStore.instance()
    for folder, groups in ROLE_GROUPS.items():
        for path in sorted((configs / folder).glob("*.yaml")):
            node = OmegaConf.load(path)
            for group in groups:
                store.store(group=group, name=path.stem, node=node, package=_PACKAGES[group])
    _registered.add(configs)
