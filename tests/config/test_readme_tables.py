"""README's config-group table lists every option of every group, so it cannot go stale; the demo presets
and the papers' presets do not share names."""

from __future__ import annotations

import re
from pathlib import Path

from kdrun.config.roles import ROLE_GROUPS
from kdrun.config.tree import config_dir

README = Path(__file__).resolve().parents[2] / "README.md"
SKIPPED_FOLDERS = {"hydra", "hydra/job_logging"}  # kdrun's own logging format: not a choice users make


def readme_table() -> dict[str, set[str]]:
    """{group: its options} from the table under '## Config groups' (role groups listed together)."""
    text = README.read_text()
    section = text[text.index("## Config groups"):]
    section = section[:section.index("\n## ", 1)]
    table: dict[str, set[str]] = {}
    for row in re.findall(r"^\| (`[^|]+) \| ([^|]+) \|", section, flags=re.M):
        groups = re.findall(r"`([^`]+)`", row[0])
        options = set(re.findall(r"`([^`]+)`", row[1]))
        for group in groups:
            table.setdefault(group, set()).update(options)
    return table


def config_folders() -> dict[str, set[str]]:
    """{group as the command line names it: its options}: every folder of configs/ holding option files."""
    root = config_dir()
    folders: dict[str, set[str]] = {}
    for folder in sorted(p for p in root.rglob("*") if p.is_dir()):
        name = folder.relative_to(root).as_posix()
        options = {p.stem for p in folder.glob("*.yaml")}
        if not options or name in SKIPPED_FOLDERS:
            continue
        if name.startswith("experiment/"):  # nested presets are options of `experiment`
            folders.setdefault("experiment", set()).update(f"{folder.relative_to(root / 'experiment')}/{o}"
                                                           for o in options)
            continue
        for group in ROLE_GROUPS.get(name, (name,)):
            folders.setdefault(group, set()).update(options)
    folders["hydra/launcher"] |= plugin_launchers()
    return folders


def plugin_launchers() -> set[str]:
    """The launchers kdrun's own Hydra plugins register in Hydra's ConfigStore (no file in configs/)."""
    import hydra_plugins.kdrun_packed_launcher.packed_launcher  # noqa: F401  (registers at import, as Hydra does)
    from hydra.core.config_store import ConfigStore

    launchers = ConfigStore.instance().repo["hydra"]["launcher"]
    return {name.removesuffix(".yaml") for name, node in launchers.items() if node.provider == "kdrun"}


def test_readme_lists_every_option_of_every_group():
    table, folders = readme_table(), config_folders()
    assert set(table) == set(folders), "groups differ from the folders of configs/"
    for group, options in folders.items():
        assert table[group] == options, f"{group}: README lists {sorted(table[group] - options)} that do not " \
                                        f"exist and misses {sorted(options - table[group])}"


def test_demo_presets_and_paper_presets_do_not_share_names():
    presets = config_folders()["experiment"]
    demos = {name for name in presets if "/" not in name}
    papers = {name.rsplit("/", 1)[1] for name in presets if "/" in name}
    assert demos and papers and not demos & papers
